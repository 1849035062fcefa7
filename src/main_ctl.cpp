// hastnbd-ctl: the admin's (and the cluster manager's) interface.
//   create [--force] RESOURCE   write fresh metadata (offline)
//   role init|secondary|primary RESOURCE  change the running daemon's role
//   status [--json] [--watch] [RESOURCE]  role, peer, sync progress, dirty extents, NBD clients
//   discard-my-data RESOURCE    make this node's data fresh: the next connect copies all from the primary
//   reload RESOURCE             the running daemon re-reads the configuration (as SIGHUP)
//   list                        every configured resource and its state
//   dump [--json] RESOURCE      metadata header and dirty extents (offline or live)
//   genkey FILE                 write a new peer key file (mode 0600, never replaces one)
//   verify [--range OFF:LEN] [--repair] [--resume] [--stop] [--wait] RESOURCE
//                               online comparison of both nodes' copies (on the primary)
// Exit codes: 0 done, 1 the operation failed, 2 usage or configuration
// error, 3 the daemon for the resource is not running, 4 the role is now
// primary but the configured kernel device (nbd.device) could not be attached,
// 5 verify --wait: the copies differ (the ranges are printed and marked for sync).
#include <boost/program_options.hpp>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <iostream>
#include <thread>

#include <unistd.h>

#include "hastnbd/base/files.h"
#include "hastnbd/disk/activemap.h"
#include "hastnbd/config/config.h"
#include "hastnbd/daemon/control.h"
#include "hastnbd/disk/metadata.h"
#include "hastnbd/daemon/resource.h"
#include "hastnbd/base/role.h"
#include "hastnbd/replication/transitions.h"

namespace po = boost::program_options;
using namespace hastnbd;

namespace {

constexpr int kExitFailed = 1;
constexpr int kExitUsage = 2;
constexpr int kExitNotRunning = 3;
constexpr int kExitNoDevice = 4;
constexpr int kExitDiffer = 5;
constexpr int kControlTimeoutMs = 120000;  // a role change drains in-flight I/O

const char* kUsage =
    "Usage: hastnbd-ctl [-c CONFIG] [--node NAME] COMMAND [ARGS]\n"
    "Commands:\n"
    "  create [--force] RESOURCE    write fresh metadata for RESOURCE\n"
    "  role init|secondary|primary [--force] RESOURCE\n"
    "  status [--json] [RESOURCE]   state of one or all running resources\n"
    "  status --watch [--interval S] [--count N] [RESOURCE]\n"
    "                               redraw the status every S seconds (default 1)\n"
    "  discard-my-data RESOURCE     split-brain victim: forget this node's data; the next\n"
    "                               connect synchronises everything from the primary\n"
    "  reload RESOURCE              the daemon re-reads the configuration file (as on SIGHUP)\n"
    "  list                         configured resources and whether they run\n"
    "  dump [--json] RESOURCE       metadata header and dirty extents\n"
    "  genkey FILE                  write a new random peer key (psk_file), mode 0600;\n"
    "                               copy the same file to the other node\n"
    "  verify [--range OFF:LEN] [--repair] [--wait] RESOURCE\n"
    "                               on the primary: compare both nodes' copies online\n"
    "                               (OFF and LEN like 0, 4096, 1GiB; LEN 0 = to the end);\n"
    "                               --repair copies what differs to the secondary; --wait\n"
    "                               follows it and exits 5 if the copies differ\n"
    "  verify --stop|--resume [--wait] RESOURCE\n"
    "                               end the running verify, or continue the last one\n";

std::string human(uint64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  double v = double(bytes);
  int u = 0;
  while (v >= 1024 && u < 5) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", v, units[u]);
  return buf;
}

int fail(const Status& s) {
  std::cerr << "hastnbd-ctl: " << s.message() << "\n";
  return kExitFailed;
}

bool not_running(const Status& s) { return s.code() == ENOENT || s.code() == ECONNREFUSED; }

struct Ctx {
  std::string config_path;
  std::string node;
  bool force = false;
  bool as_json = false;
  bool watch = false;
  double interval = 1.0;
  long count = 0;  // --watch: stop after this many redraws (0 = until interrupted)
  std::string range;  // verify --range OFF:LEN
  bool repair = false, resume = false, stop = false, wait = false;
};

Result<ResourceConfig> config_for(const Ctx& c, const std::string& resource) {
  return load_resource_config(c.config_path, resource, c.node);
}

int cmd_create(const Ctx& c, const std::string& resource) {
  auto cfg = config_for(c, resource);
  if (!cfg.ok()) return std::cerr << "hastnbd-ctl: " << cfg.status().message() << "\n", kExitUsage;
  auto size = resource_data_size(*cfg);
  if (!size.ok()) return fail(size.status());
  if (Status s = make_directories(std::filesystem::path(cfg->meta).parent_path().string(), 0700); !s.ok())
    return fail(s);
  const MetaHeader h =
      meta::create(cfg->name, *size, cfg->extent_size, cfg->keepdirty, random_uuid(), uint64_t(std::time(nullptr)));
  if (Status s = MetadataFile::create(cfg->meta, h, c.force); !s.ok()) return fail(s);
  std::cout << "created " << cfg->meta << ": resource " << h.resource << ", " << human(h.data_size) << " in "
            << h.extents() << " extents of " << human(h.extent_size) << ", uuid " << h.uuid_string() << "\n";
  return 0;
}

int cmd_genkey(const std::string& path) {
  if (Status s = write_new_key_file(path); !s.ok()) return fail(s);
  std::cout << "wrote a new key to " << path
            << " (mode 0600). Copy it to the other node with the same mode, set psk_file: " << path
            << " for the resource, and reload or restart both daemons.\n";
  return 0;
}

int cmd_role(const Ctx& c, const std::string& role, const std::string& resource) {
  if (!parse_role(role)) {
    std::cerr << "hastnbd-ctl: unknown role '" << role << "': init, secondary or primary\n";
    return kExitUsage;
  }
  auto cfg = config_for(c, resource);
  if (!cfg.ok()) return std::cerr << "hastnbd-ctl: " << cfg.status().message() << "\n", kExitUsage;
  auto reply = control_call(cfg->control_path(), json{{"cmd", "role"}, {"role", role}, {"force", c.force}},
                            kControlTimeoutMs);
  if (!reply.ok()) {
    fail(reply.status());
    return not_running(reply.status()) ? kExitNotRunning : kExitFailed;
  }
  if (!(*reply)["ok"].get<bool>()) return fail(Status::Error(EIO, (*reply)["error"].get<std::string>()));
  const json& dev = (*reply)["device"];
  const std::string path = dev.is_object() ? dev.value("path", "") : "";
  std::cout << resource << ": role " << (*reply)["role"].get<std::string>();
  if ((*reply)["role"] == "primary" && !path.empty()) {
    if (!dev.value("attached", false)) {
      std::cout << "\n";
      std::cerr << "hastnbd-ctl: " << path << " is NOT attached: " << dev.value("error", "") << "\n";
      return kExitNoDevice;
    }
    std::cout << ", " << path << " attached";
  }
  std::cout << "\n";
  return 0;
}

std::string duration(int64_t secs) {
  char buf[32];
  if (secs >= 3600) std::snprintf(buf, sizeof buf, "%lldh%02lldm", (long long)secs / 3600, (long long)secs / 60 % 60);
  else if (secs >= 60) std::snprintf(buf, sizeof buf, "%lldm%02llds", (long long)secs / 60, (long long)secs % 60);
  else std::snprintf(buf, sizeof buf, "%llds", (long long)secs);
  return buf;
}

// "DONE of TOTAL (P%)", and while running ", RATE/s, ETA T": a sync's or a
// verify's progress object (SyncProgress::to_json).
std::string progress_text(const json& p, uint64_t total) {
  const uint64_t done = p["done_bytes"];
  std::string out = human(done) + " of " + human(total);
  char buf[64];
  if (total > 0) {
    std::snprintf(buf, sizeof buf, " (%.1f%%)", 100.0 * double(done) / double(total));
    out += buf;
  }
  if (p.value("state", "") == "running") {
    out += ", " + human(p["rate"]) + "/s";
    if (p["eta_seconds"].get<int64_t>() >= 0) out += ", ETA " + duration(p["eta_seconds"]);
  }
  return out;
}

void print_sync(const json& s) {
  if (!s.contains("sync")) return;
  const json& y = s["sync"];
  const std::string state = y.value("state", "none");
  if (state == "none") return;
  std::cout << "  sync:        " << state << ", " << (y["full"].get<bool>() ? "full, " : "")
            << (y["direction"] == "from-peer" ? "from the peer" : "to the peer") << ": "
            << progress_text(y, y["total_bytes"]);
  char buf[64];
  if (state != "running" && y.contains("elapsed_seconds")) {
    std::snprintf(buf, sizeof buf, " in %.1f s", y["elapsed_seconds"].get<double>());
    std::cout << buf;
  }
  if (!y.value("last_error", std::string()).empty()) std::cout << " (" << y["last_error"].get<std::string>() << ")";
  std::cout << "\n";
}

std::string verify_ranges(const json& v, size_t most) {
  std::string out;
  size_t n = 0;
  for (const auto& r : v.value("mismatches", json::array())) {
    if (n++ == most) return out + ", ...";
    out += (out.empty() ? "" : ", ") + std::to_string(r["offset"].get<uint64_t>()) + "+" +
           std::to_string(r["length"].get<uint64_t>());
  }
  return out;
}

void print_verify(const json& s) {
  if (!s.contains("verify")) return;
  const json& v = s["verify"];
  const std::string state = v.value("state", "none");
  if (state == "none") return;
  std::cout << "  verify:      " << state << ", " << progress_text(v, v["length"]);
  if (!v.value("started", std::string()).empty()) std::cout << ", started " << v["started"].get<std::string>();
  const uint64_t bad = v["mismatched_bytes"];
  if (bad == 0) std::cout << "; no difference" << (state == "done" ? ": the copies are identical" : " so far");
  else
    std::cout << "; " << v["mismatched_ranges"] << " range(s), " << human(bad) << " DIFFER ("
              << verify_ranges(v, 4) << ")" << (v.value("repair", false) ? ", repairing" : ", marked for sync");
  if (v["skipped_bytes"].get<uint64_t>() > 0) std::cout << "; " << human(v["skipped_bytes"]) << " skipped (awaiting sync)";
  if (state != "running" && state != "done")
    std::cout << "; at " << v["position"] << (v.value("last_error", "").empty() ? "" : ": " + v["last_error"].get<std::string>());
  std::cout << "\n";
}

void print_status(const json& s) {
  auto& nbd = s["nbd"];
  auto& meta = s["metadata"];
  auto& local = s["local"];
  auto& dirty = s["dirty"];
  std::cout << s["resource"].get<std::string>() << ":\n"
            << "  role:        " << s["role"].get<std::string>() << " (since " << s["role_since"].get<std::string>()
            << "), node " << s["node"].get<std::string>() << ", pid " << s["pid"] << "\n"
            << "  replication: " << s["replication"].get<std::string>() << "\n"
            << "  peer:        " << s["peer"]["state"].get<std::string>();
  const json& p = s["peer"];
  if (p.contains("since")) std::cout << " since " << p["since"].get<std::string>();
  if (!p.value("node", std::string()).empty()) std::cout << ", node " << p["node"].get<std::string>();
  if (!p.value("remote", std::string()).empty()) std::cout << " (" << p["remote"].get<std::string>() << ")";
  if (p.contains("listen")) std::cout << ", listening on " << p["listen"].get<std::string>();
  if (p.contains("auth")) std::cout << ", link auth " << p["auth"].get<std::string>();
  if (s.value("in_sync", false)) std::cout << ", in sync";
  std::cout << "\n";
  if (!p.value("last_refused", std::string()).empty())
    std::cout << "  last refused: " << p["last_refused"].get<std::string>() << "\n";
  if (p.value("split_brain", false))
    std::cout << "  SPLIT-BRAIN: both nodes wrote without the other; peer localcnt " << p["localcnt"] << " remotecnt "
              << p["remotecnt"] << ", here localcnt " << s["metadata"]["localcnt"] << " remotecnt "
              << s["metadata"]["remotecnt"] << ". Run 'hastnbd-ctl discard-my-data " << s["resource"].get<std::string>()
              << "' on the node whose changes are to be dropped.\n";
  if (!p.value("last_error", std::string()).empty() && p["state"] != "connected")
    std::cout << "  last error:  " << p["last_error"].get<std::string>() << "\n";
  print_sync(s);
  print_verify(s);
  if (p.contains("data_bytes_sent")) {
    std::cout << "  traffic:     " << p["records_sent"] << " records sent, " << human(p["data_bytes_sent"])
              << " of data as " << human(p["bytes_sent"]) << " on the wire; " << p["inflight_records"]
              << " records (" << human(p["inflight_bytes"]) << ") awaiting the secondary, " << human(p["queued_bytes"])
              << " queued to send\n";
  } else if (p.contains("records_applied")) {
    std::cout << "  traffic:     " << p["records_applied"] << " records applied (" << human(p["data_bytes_received"])
              << " of data, " << human(p["bytes_received"]) << " on the wire), " << p["apply_errors"]
              << " failed, " << p["refused"] << " connections refused\n";
  }
  std::cout
            << "  local:       " << local["path"].get<std::string>() << ", " << human(local["size"]) << ", block "
            << local["block_size"] << "\n"
            << "  metadata:    " << meta["path"].get<std::string>() << ", uuid " << meta["uuid"].get<std::string>()
            << ", localcnt " << meta["localcnt"] << ", remotecnt " << meta["remotecnt"]
            << (meta["fresh"].get<bool>() ? ", fresh" : "")
            << (meta.value("inconsistent", false) ? ", INCONSISTENT (target of an unfinished sync)" : "") << "\n"
            << "  dirty:       " << dirty["extents"] << " extents, " << human(dirty["bytes"]) << " (extent "
            << human(s["extent_size"]) << ", keepdirty " << dirty["keepdirty"] << ")\n"
            << "  nbd:         ";
  if (nbd["socket"].get<std::string>().empty()) std::cout << "not serving";
  else std::cout << nbd["socket"].get<std::string>();
  if (!nbd["tcp"].get<std::string>().empty()) std::cout << ", tcp " << nbd["tcp"].get<std::string>();
  std::cout << ", " << nbd["clients"] << " client(s), " << nbd["requests"] << " requests ("
            << nbd["requests_in_flight"] << " in flight), read " << human(nbd["bytes_read"]) << ", written "
            << human(nbd["bytes_written"]) << ", " << nbd["errors"] << " errors\n";
  const json& dev = nbd.value("device", json::object());
  if (!dev.value("path", "").empty()) {
    std::cout << "  device:      " << dev["path"].get<std::string>() << " "
              << (dev.value("attached", false) ? "attached, " + std::to_string(dev.value("connections", 0)) +
                                                     " connection(s), since " + dev.value("since", "")
                                               : std::string("not attached"));
    if (!dev.value("error", "").empty()) std::cout << " (" << dev["error"].get<std::string>() << ")";
    std::cout << "\n";
  }
}

int cmd_status_once(const Ctx& c, std::vector<std::string> resources) {
  if (resources.empty()) {
    auto names = load_resource_names(c.config_path);
    if (!names.ok()) return std::cerr << "hastnbd-ctl: " << names.status().message() << "\n", kExitUsage;
    resources = *names;
  }
  int rc = 0;
  json all = json::array();
  for (const auto& name : resources) {
    auto cfg = config_for(c, name);
    if (!cfg.ok()) return std::cerr << "hastnbd-ctl: " << cfg.status().message() << "\n", kExitUsage;
    auto reply = control_call(cfg->control_path(), json{{"cmd", "status"}}, kControlTimeoutMs);
    if (!reply.ok()) {
      if (not_running(reply.status())) {
        std::cerr << "hastnbd-ctl: " << name << ": not running (no daemon on " << cfg->control_path() << ")\n";
        rc = rc ? rc : kExitNotRunning;
      } else {
        rc = fail(reply.status());
      }
      continue;
    }
    reply->erase("ok");
    if (c.as_json) all.push_back(*reply);
    else print_status(*reply);
  }
  if (c.as_json) std::cout << (resources.size() == 1 && all.size() == 1 ? all[0] : all).dump(2) << "\n";
  return rc;
}

int cmd_status(const Ctx& c, const std::vector<std::string>& resources) {
  if (!c.watch) return cmd_status_once(c, resources);
  const bool tty = ::isatty(STDOUT_FILENO);
  int rc = 0;
  for (long n = 1;; ++n) {
    if (tty) std::cout << "\033[H\033[2J";  // home, clear screen
    else if (n > 1) std::cout << "\n";
    std::time_t now = std::time(nullptr);
    char stamp[32];
    std::strftime(stamp, sizeof stamp, "%H:%M:%S", std::localtime(&now));
    std::cout << "every " << c.interval << " s, " << stamp << "\n";
    rc = cmd_status_once(c, resources);
    std::cout.flush();
    if (c.count > 0 && n >= c.count) return rc;
    std::this_thread::sleep_for(std::chrono::duration<double>(c.interval));
  }
}

int cmd_reload(const Ctx& c, const std::string& resource) {
  // Parsed here first: an error is shown to whoever edited the file.
  auto cfg = config_for(c, resource);
  if (!cfg.ok()) return std::cerr << "hastnbd-ctl: " << cfg.status().message() << "\n", kExitUsage;
  auto reply = control_call(cfg->control_path(), json{{"cmd", "reload"}}, kControlTimeoutMs);
  if (!reply.ok() && not_running(reply.status()))
    return std::cerr << "hastnbd-ctl: " << resource << ": not running\n", kExitNotRunning;
  if (!reply.ok()) return fail(reply.status());
  if (!(*reply)["ok"].get<bool>()) return fail(Status::Error(EIO, (*reply)["error"].get<std::string>()));
  const json& applied = (*reply)["applied"];
  const json& refused = (*reply)["refused"];
  if (applied.empty() && refused.empty()) std::cout << resource << ": reloaded, nothing changed\n";
  for (const auto& line : applied) std::cout << resource << ": changed " << line.get<std::string>() << "\n";
  for (const auto& line : refused)
    std::cout << resource << ": NOT changed (needs a restart) " << line.get<std::string>() << "\n";
  return 0;
}

int cmd_discard(const Ctx& c, const std::string& resource) {
  auto cfg = config_for(c, resource);
  if (!cfg.ok()) return std::cerr << "hastnbd-ctl: " << cfg.status().message() << "\n", kExitUsage;
  auto reply = control_call(cfg->control_path(), json{{"cmd", "discard-my-data"}}, kControlTimeoutMs);
  if (reply.ok()) {
    if (!(*reply)["ok"].get<bool>()) return fail(Status::Error(EIO, (*reply)["error"].get<std::string>()));
  } else if (not_running(reply.status())) {
    // The daemon is stopped: change the metadata file directly (the lock
    // keeps a daemon from starting meanwhile).
    auto meta = MetadataFile::open(cfg->meta, /*lock=*/true, /*writable=*/true);
    if (!meta.ok()) return fail(meta.status());
    auto bm = (*meta)->bitmap();
    std::fill(bm.begin(), bm.end(), 0);
    if (Status s = (*meta)->sync_now(); !s.ok()) return fail(s);
    if (Status s = (*meta)->write_header_now(meta::discard_my_data((*meta)->header())); !s.ok()) return fail(s);
  } else {
    return fail(reply.status());
  }
  std::cout << resource << ": local data discarded; the next connect to the primary synchronises everything\n";
  return 0;
}

int cmd_verify(const Ctx& c, const std::string& resource) {
  auto cfg = config_for(c, resource);
  if (!cfg.ok()) return std::cerr << "hastnbd-ctl: " << cfg.status().message() << "\n", kExitUsage;
  json req = {{"cmd", "verify"}, {"repair", c.repair}, {"resume", c.resume}, {"stop", c.stop}};
  if (!c.range.empty()) {
    const size_t colon = c.range.find(':');
    auto off = parse_size(c.range.substr(0, colon));
    auto len = colon == std::string::npos ? Result<uint64_t>(0) : parse_size(c.range.substr(colon + 1));
    if (colon == std::string::npos || !off.ok() || !len.ok()) {
      std::cerr << "hastnbd-ctl: --range takes OFFSET:LENGTH in bytes or with a unit (1GiB:512MiB; LENGTH 0 = to the "
                   "end), not '" << c.range << "'\n";
      return kExitUsage;
    }
    req["offset"] = *off;
    req["length"] = *len;
  }
  auto reply = control_call(cfg->control_path(), req, kControlTimeoutMs);
  if (!reply.ok()) {
    fail(reply.status());
    return not_running(reply.status()) ? kExitNotRunning : kExitFailed;
  }
  if (!(*reply)["ok"].get<bool>()) return fail(Status::Error(EIO, (*reply)["error"].get<std::string>()));
  if (c.stop) std::cout << resource << ": verify stopping\n";
  else if (!c.wait)
    std::cout << resource << ": verify " << (c.resume ? "resumed" : "started") << " at " << (*reply)["verify"]["position"]
              << " (" << human((*reply)["verify"]["length"]) << " in all); follow it with 'hastnbd-ctl status "
              << resource << "'\n";
  if (!c.wait) return 0;
  // Follow the run until it ends; the exit status says what it found.
  for (;;) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    auto st = control_call(cfg->control_path(), json{{"cmd", "status"}}, kControlTimeoutMs);
    if (!st.ok()) return fail(st.status());
    if (!st->contains("verify")) return fail(Status::Error(EIO, "the daemon no longer reports a verify"));
    const json& v = (*st)["verify"];
    const std::string state = v.value("state", "");
    if (state == "running") continue;
    print_verify(*st);
    if (state != "done") return kExitFailed;
    return v["mismatched_bytes"].get<uint64_t>() == 0 ? 0 : kExitDiffer;
  }
}

int cmd_list(const Ctx& c) {
  auto names = load_resource_names(c.config_path);
  if (!names.ok()) return std::cerr << "hastnbd-ctl: " << names.status().message() << "\n", kExitUsage;
  std::printf("%-16s %-10s %-10s %-14s %s\n", "RESOURCE", "ROLE", "PEER", "DIRTY", "LOCAL");
  for (const auto& name : *names) {
    auto cfg = config_for(c, name);
    if (!cfg.ok()) {
      std::printf("%-16s %-10s %s\n", name.c_str(), "-", cfg.status().message().c_str());
      continue;
    }
    auto reply = control_call(cfg->control_path(), json{{"cmd", "status"}}, 5000);
    if (!reply.ok()) {
      std::printf("%-16s %-10s %-10s %-14s %s\n", name.c_str(), "stopped", "-", "-", cfg->local.c_str());
      continue;
    }
    const json& s = *reply;
    std::printf("%-16s %-10s %-10s %-14s %s\n", name.c_str(), s["role"].get<std::string>().c_str(),
                s["peer"]["state"].get<std::string>().c_str(), human(s["dirty"]["bytes"]).c_str(),
                cfg->local.c_str());
  }
  return 0;
}

int cmd_dump(const Ctx& c, const std::string& resource) {
  auto cfg = config_for(c, resource);
  if (!cfg.ok()) return std::cerr << "hastnbd-ctl: " << cfg.status().message() << "\n", kExitUsage;
  // Read-only and unlocked: the daemon may be running; the bitmap is shared
  // page cache, so this shows its current state.
  auto meta = MetadataFile::open(cfg->meta, /*lock=*/false, /*writable=*/false);
  if (!meta.ok()) return fail(meta.status());
  const MetaHeader& h = (*meta)->header();
  auto runs = bitmap_dirty_runs((*meta)->bitmap(), h.extents());
  uint64_t dirty = 0;
  for (auto [a, b] : runs) dirty += b - a + 1;
  if (c.as_json) {
    json j = {{"path", cfg->meta},        {"resource", h.resource}, {"data_size", h.data_size},
              {"extent_size", h.extent_size}, {"extents", h.extents()}, {"keepdirty", h.keepdirty},
              {"uuid", h.uuid_string()},  {"localcnt", h.localcnt}, {"remotecnt", h.remotecnt},
              {"fresh", meta::is_fresh(h)}, {"synchronising", (h.flags & kMetaSynchronising) != 0},
              {"sequence", h.sequence},   {"dirty_extents", dirty}, {"dirty", json::array()}};
    for (auto [a, b] : runs) j["dirty"].push_back({a, b});
    std::cout << j.dump(2) << "\n";
    return 0;
  }
  std::time_t created = std::time_t(h.created);
  char when[32];
  std::strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S UTC", std::gmtime(&created));
  std::cout << "metadata:      " << cfg->meta << " (header sequence " << h.sequence << ")\n"
            << "resource:      " << h.resource << "\n"
            << "uuid:          " << h.uuid_string() << "\n"
            << "created:       " << when << "\n"
            << "data size:     " << h.data_size << " (" << human(h.data_size) << ")\n"
            << "extent size:   " << h.extent_size << " (" << human(h.extent_size) << "), " << h.extents()
            << " extents\n"
            << "keepdirty:     " << h.keepdirty << "\n"
            << "localcnt:      " << h.localcnt << "\n"
            << "remotecnt:     " << h.remotecnt << "\n"
            << "flags:         " << ((h.flags & kMetaFresh) ? "fresh " : "")
            << ((h.flags & kMetaSynchronising) ? "synchronising " : "") << (h.flags ? "" : "none") << "\n"
            << "dirty extents: " << dirty << " (" << human(std::min(dirty * h.extent_size, h.data_size)) << ")\n";
  for (auto [a, b] : runs) {
    uint64_t end = std::min((b + 1) * h.extent_size, h.data_size);
    if (a == b) std::printf("  extent %llu", (unsigned long long)a);
    else std::printf("  extents %llu-%llu", (unsigned long long)a, (unsigned long long)b);
    std::printf("  bytes %llu-%llu\n", (unsigned long long)(a * h.extent_size), (unsigned long long)(end - 1));
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Ctx c;
  c.config_path = kDefaultConfigPath;
  std::string command;
  std::vector<std::string> args;
  po::options_description opts("Options");
  opts.add_options()("help,h", "show this help")("config,c", po::value(&c.config_path), "configuration file")(
      "node", po::value(&c.node), "this node's name (default: short hostname)")(
      "force,f", "create: overwrite; role: proceed with clients attached, or promote an inconsistent node")(
      "json", "machine-readable output")("watch,w", "status: redraw until interrupted")(
      "interval", po::value(&c.interval), "status --watch: seconds between redraws")(
      "count", po::value(&c.count), "status --watch: stop after this many redraws")(
      "range", po::value(&c.range), "verify: OFFSET:LENGTH")("repair", "verify: copy what differs to the secondary")(
      "resume", "verify: continue the last stopped or interrupted run")("stop", "verify: end the running verify")(
      "wait", "verify: follow the run; exit 5 if the copies differ")(
      "command", po::value(&command))("args", po::value(&args));
  po::positional_options_description pos;
  pos.add("command", 1).add("args", -1);
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(argc, argv).options(opts).positional(pos).run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    std::cerr << "hastnbd-ctl: " << e.what() << "\n" << kUsage;
    return kExitUsage;
  }
  if (vm.count("help") || command.empty()) {
    std::cout << kUsage;
    return command.empty() && !vm.count("help") ? kExitUsage : 0;
  }
  c.force = vm.count("force") > 0;
  c.as_json = vm.count("json") > 0;
  c.watch = vm.count("watch") > 0;
  c.repair = vm.count("repair") > 0;
  c.resume = vm.count("resume") > 0;
  c.stop = vm.count("stop") > 0;
  c.wait = vm.count("wait") > 0;
  if (c.interval < 0.1 || c.interval > 3600) {
    std::cerr << "hastnbd-ctl: --interval must be between 0.1 and 3600 seconds\n";
    return kExitUsage;
  }
  auto want = [&](size_t n) {
    if (args.size() == n) return true;
    std::cerr << "hastnbd-ctl: " << command << ": expected " << n << " argument(s)\n" << kUsage;
    return false;
  };
  if (command == "create") return want(1) ? cmd_create(c, args[0]) : kExitUsage;
  if (command == "role") return want(2) ? cmd_role(c, args[0], args[1]) : kExitUsage;
  if (command == "status") return cmd_status(c, args);
  if (command == "list") return want(0) ? cmd_list(c) : kExitUsage;
  if (command == "dump") return want(1) ? cmd_dump(c, args[0]) : kExitUsage;
  if (command == "discard-my-data") return want(1) ? cmd_discard(c, args[0]) : kExitUsage;
  if (command == "reload") return want(1) ? cmd_reload(c, args[0]) : kExitUsage;
  if (command == "genkey") return want(1) ? cmd_genkey(args[0]) : kExitUsage;
  if (command == "verify") {
    if (c.stop && (c.resume || c.repair || !c.range.empty() || c.wait)) {
      std::cerr << "hastnbd-ctl: verify --stop takes no other option\n";
      return kExitUsage;
    }
    if (c.resume && !c.range.empty()) {
      std::cerr << "hastnbd-ctl: verify --resume continues the last run's range; --range does not apply\n";
      return kExitUsage;
    }
    return want(1) ? cmd_verify(c, args[0]) : kExitUsage;
  }
  std::cerr << "hastnbd-ctl: unknown command '" << command << "'\n" << kUsage;
  return kExitUsage;
}
