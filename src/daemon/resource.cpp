#include "hastnbd/daemon/resource.h"

#include <spdlog/spdlog.h>

#include <filesystem>
#include <fstream>

#include "hastnbd/base/files.h"
#include "hastnbd/disk/fine_file.h"
#include "hastnbd/daemon/commands.h"
#include "hastnbd/daemon/role_change.h"
#include "hastnbd/daemon/sd_notify.h"
#include "hastnbd/peer/tls.h"
#include "hastnbd/replication/transitions.h"

namespace hastnbd {

Result<uint64_t> resource_data_size(const ResourceConfig& config) {
  asio::io_context io;
  auto uring = Uring::create(io, 4);
  if (!uring.ok()) return uring.status();
  BufferPool pool;
  auto disk = LocalDisk::open(io, **uring, pool, config.local, config.size);
  if (!disk.ok()) return disk.status();
  return (*disk)->size();
}

Resource::Resource(asio::io_context& io, ResourceConfig config, ResourceSeams seams)
    : io_(io), config_(std::move(config)), seams_(std::move(seams)) {}

Resource::~Resource() = default;

// The TLS files, read and tried as a context now, so a bad certificate or a
// key that does not match fails the start or the reload, not the next
// connection.
Status Resource::load_tls(ResourceConfig& c) {
  auto material = load_tls_material(c);
  if (!material.ok()) return material.status();
  c.tls_material = std::move(*material);
  if (!c.tls.enabled()) return Status::Ok();
  auto ctx = make_tls_context(c);
  return ctx.ok() ? Status::Ok() : ctx.status();
}

Result<std::unique_ptr<Resource>> Resource::open(asio::io_context& io, ResourceConfig config, ResourceSeams seams) {
  std::unique_ptr<Resource> r(new Resource(io, std::move(config), std::move(seams)));
  const ResourceConfig& c = r->config_;
  auto key = load_peer_key(c);
  if (!key.ok()) return key.status();
  r->config_.peer_key = std::move(*key);
  if (Status s = r->load_tls(r->config_); !s.ok()) return s;
  if (Status s = make_directories(c.run_dir, 0750); !s.ok()) return s;
  auto uring = Uring::create(io);
  if (!uring.ok()) return uring.status();
  r->uring_ = std::move(*uring);
  auto meta = MetadataFile::open(c.meta, /*lock=*/true, /*writable=*/true);
  if (!meta.ok()) return meta.status();
  Result<std::unique_ptr<Disk>> disk = Status::Error(EINVAL, "no disk");
  if (r->seams_.open_disk) {
    disk = r->seams_.open_disk(io, *r->uring_, r->pool_, c);
  } else if (auto local = LocalDisk::open(io, *r->uring_, r->pool_, c.local, c.size); local.ok()) {
    disk = std::unique_ptr<Disk>(std::move(*local));
  } else {
    disk = local.status();
  }
  if (!disk.ok()) return disk.status();
  r->disk_ = std::move(*disk);
  if (Status s = (*meta)->check_matches(c.name, r->disk_->size(), c.extent_size); !s.ok()) return s;
  if (MetaHeader h = meta::set_keepdirty((*meta)->header(), c.keepdirty); !(h == (*meta)->header()))
    if (Status s = (*meta)->write_header_now(h); !s.ok()) return s;
  r->store_ = std::make_unique<MetaStore>(io, *r->uring_, std::move(*meta), c.keepdirty);
  r->restore_fine_records();
  r->hooks_ = std::make_unique<Hooks>(io, c.name, c.exec);
  r->sync_target_ = std::make_unique<SyncTarget>(c, *r->store_, *r->hooks_);
  if (c.remote)
    r->replicator_ = std::make_unique<Replicator>(
        io, r->pool_, c, [raw = r.get()] { return raw->hello(); }, r->seams_.connect);
  if (c.listen)
    r->secondary_ = std::make_unique<Secondary>(
        io, r->pool_, c, *r->disk_, [raw = r.get()] { return raw->hello(); }, r->seams_.peer_listener);
  r->write_path_ = std::make_unique<WritePath>(io, *r->disk_, *r->store_, c, r->replicator_.get());
  if (r->replicator_) {
    r->syncer_ = std::make_unique<Syncer>(io, r->pool_, c, *r->disk_, *r->store_, *r->write_path_, *r->replicator_);
    r->verifier_ =
        std::make_unique<Verifier>(io, r->pool_, c, *r->disk_, *r->store_, *r->write_path_, *r->replicator_);
    r->verifier_->load();
  }
  r->nbd_ = std::make_unique<NbdServer>(io, r->pool_, *r->write_path_, c.name);
  r->device_ = std::make_unique<KernelDevice>(io, c, *r->nbd_);
  r->wire_peer_events();
  r->started_ = r->role_since_ = std::chrono::system_clock::now();
  const MetaHeader& h = r->store_->header();
  spdlog::info(
      "resource {}: node {}, local {} ({} bytes, O_DIRECT block {}), metadata {} (uuid {}, localcnt {}, "
      "remotecnt {}, {} dirty extents{}{})",
      c.name, c.node, c.local, r->disk_->size(), r->disk_->block_size(), c.meta, h.uuid_string(), h.localcnt,
      h.remotecnt, r->store_->map().dirty_count(), meta::is_fresh(h) ? ", fresh" : "",
      meta::is_sync_target(h)   ? ", target of an unfinished sync: inconsistent"
      : meta::is_sync_source(h) ? ", source of an unfinished sync"
                                : "");
  return r;
}

std::string Resource::fine_path() const { return config_.state_dir + "/" + config_.name + ".fine"; }

// docs/design.md, "Fine-grained tracking": the records of a clean stop
// narrow the extents that need a sync; anything that does not match the
// metadata exactly is not used.
void Resource::restore_fine_records() {
  ActiveMap& map = store_->map();
  map.set_granule(config_.track_granule);
  auto taken = take_fine(fine_path());
  if (!taken.ok()) {
    spdlog::warn("resource {}: fine-tracking records not used: {}", config_.name, taken.status().message());
    return;
  }
  if (!taken->has_value()) return;
  const FineSnapshot& s = **taken;
  const MetaHeader& h = store_->header();
  if (s.uuid != h.uuid || s.localcnt != h.localcnt || s.remotecnt != h.remotecnt || s.data_size != h.data_size ||
      s.extent_size != h.extent_size || s.granule != config_.track_granule) {
    spdlog::warn("resource {}: fine-tracking records of {} are from other metadata or another track_granule; "
                 "the extents that need a sync are synchronised whole",
                 config_.name, fine_path());
    return;
  }
  uint64_t restored = 0;
  for (const auto& [extent, bits] : s.records) restored += map.restore_fine(extent, bits) ? 1 : 0;
  spdlog::info("resource {}: fine-tracking records of the last clean stop: {} of {} extents, {} bytes to copy",
               config_.name, restored, s.records.size(), map.fine_bytes());
}

void Resource::save_fine_records() {
  const ActiveMap& map = store_->map();
  if (map.fine_records().empty()) return;
  const MetaHeader& h = store_->header();
  FineSnapshot s{h.uuid, h.localcnt, h.remotecnt, h.data_size, h.extent_size, map.granule(), {}};
  for (const auto& [extent, bits] : map.fine_records()) s.records.emplace_back(extent, bits);
  Status st = make_directories(config_.state_dir, 0700);
  if (st.ok()) st = save_fine(fine_path(), s);
  if (!st.ok())
    spdlog::warn("resource {}: fine-tracking records not saved ({}); after the restart the extents that need a "
                 "sync are synchronised whole",
                 config_.name, st.message());
  else
    spdlog::info("resource {}: fine-tracking records of {} extents saved to {}", config_.name, s.records.size(),
                 fine_path());
}

void Resource::wire_peer_events() {
  if (replicator_) {
    replicator_->on_hello = [this](const peer::Hello& ours, const peer::Hello& theirs) {
      return sync_target_->on_hello(ours, theirs, role_, &plan_);
    };
    replicator_->on_connected = [this] {
      write_path_->peer_connected();
      hooks_->run("connect", {config_.peer_node});
      syncer_->start(std::move(plan_));
    };
    replicator_->on_disconnected = [this](const std::string& why) {
      syncer_->interrupt(why);
      verifier_->interrupt("the link to the secondary went down: " + why);
      hooks_->run("disconnect", {config_.peer_node, why});
    };
    syncer_->on_start = [this](bool from_peer, uint64_t total) {
      hooks_->run("syncstart", {from_peer ? "from-peer" : "to-peer", std::to_string(total)});
    };
    syncer_->on_done = [this](uint64_t copied, uint64_t compared) {
      hooks_->run("syncdone", {std::to_string(copied), std::to_string(compared)});
    };
    syncer_->on_interrupted = [this](const std::string& why) { hooks_->run("syncintr", {why}); };
    verifier_->on_start = [this](uint64_t offset, uint64_t length) {
      hooks_->run("verifystart", {std::to_string(offset), std::to_string(length)});
    };
    verifier_->on_mismatch = [this](const VerifyRange& r) {
      hooks_->run("verify-mismatch", {std::to_string(r.offset), std::to_string(r.length)});
    };
    verifier_->on_done = [this](uint64_t checked, uint64_t mismatched, uint64_t ranges) {
      hooks_->run("verifydone", {std::to_string(checked), std::to_string(mismatched), std::to_string(ranges)});
    };
    verifier_->on_interrupted = [this](const std::string& why) { hooks_->run("verifyintr", {why}); };
    verifier_->on_repair = [this] {
      // The marked extents go to the secondary as in any sync; the copies
      // are in step otherwise, so remotecnt stays what it is.
      SyncPlan plan;
      plan.peer_localcnt = store_->header().remotecnt;
      if (!replicator_->connected() || syncer_->running() || meta::is_sync_target(store_->header())) {
        spdlog::warn("verify: not repairing now (link down, a sync running, or this node is a sync target); the "
                     "marked extents are synchronised at the next connect");
        return;
      }
      syncer_->start(std::move(plan));
    };
  }
  if (secondary_) {
    secondary_->on_hello = [this](const peer::Hello& ours, const peer::Hello& theirs) {
      return sync_target_->on_hello(ours, theirs, role_, /*plan=*/nullptr);
    };
    secondary_->on_connected = [this] { hooks_->run("connect", {config_.peer_node}); };
    secondary_->on_disconnected = [this](const std::string& why) {
      sync_target_->secondary_disconnected(why);
      hooks_->run("disconnect", {config_.peer_node, why});
    };
    secondary_->on_sync_done = [this](uint64_t localcnt) { return sync_target_->on_sync_done(localcnt); };
    secondary_->on_resync_bytes = [this](uint64_t n) { sync_target_->add_resync_bytes(n); };
  }
}

Status Resource::accept_peer(PeerConnection::Socket socket, std::string who) {
  if (!secondary_ || role_ == Role::kInit || changing_role_)
    return Status::Error(ECONNREFUSED, "resource " + config_.name + " is not listening for its peer");
  secondary_->serve_connection(std::move(socket), std::move(who));
  return Status::Ok();
}

Status Resource::start() {
  control_ = std::make_unique<ControlServer>(io_, [this](const json& req) { return handle_command(*this, req); });
  if (Status s = control_->listen(config_.control_path()); !s.ok()) return s;
  if (config_.metrics_listen) {
    metrics_ = std::make_unique<MetricsServer>(io_, [this] { return prometheus_text(status(), nbd_->op_metrics()); });
    if (Status s = metrics_->listen(*config_.metrics_listen); !s.ok()) return s;
  }
  spdlog::info("resource {}: role init; control socket {}", config_.name, config_.control_path());
  hooks_->run("start");
  // docs/design.md, "Roles across a restart": a device still attached with
  // this resource's identifier means this node was primary when its daemon
  // stopped or died, and a file system may be mounted on it, waiting.
  const std::optional<Role> before = recorded_role();
  if (device_->configured() && device_->left_attached()) {
    spdlog::warn("resource {}: {} is still attached by an earlier run of this daemon: resuming as primary",
                 config_.name, config_.nbd.device);
    resume(resume_primary());
  } else if (before == Role::kSecondary && secondary_) {
    spdlog::warn("resource {}: this node was secondary when its daemon last stopped ({}): resuming as secondary",
                 config_.name, role_path());
    resume(resume_secondary());
  } else if (before == Role::kPrimary) {
    spdlog::warn("resource {}: this node was primary when its daemon last stopped, but no kernel device of this "
                 "resource is attached (none configured, or it was released): staying in role init",
                 config_.name);
  } else {
    record_role();
  }
  return Status::Ok();
}

void Resource::resume(awaitable<void> how) {
  // Role requests wait on resumed_ (change_role). Made before co_spawn, which
  // may run the coroutine at once when called on the loop.
  resumed_ = std::make_unique<Latch>(io_.get_executor());
  asio::co_spawn(io_, resumed_after(std::move(how)), asio::detached);
}

awaitable<void> Resource::resumed_after(awaitable<void> how) {
  co_await std::move(how);
  resumed_->set();
}

awaitable<void> Resource::resume_secondary() {
  if (Status s = co_await apply_role(Role::kSecondary, /*force=*/false); !s.ok())
    spdlog::error("resource {}: could not resume as secondary: {}", config_.name, s.message());
}

std::string Resource::role_path() const { return config_.run_dir + "/" + config_.name + ".role"; }

std::optional<Role> Resource::recorded_role() const {
  std::ifstream in(role_path());
  std::string word;
  if (!(in >> word)) return std::nullopt;
  return parse_role(word);
}

void Resource::record_role() const {
  // RUN_DIR is a tmpfs under systemd (kept across restarts of the unit by
  // RuntimeDirectoryPreserve=, gone at a reboot): a role outlives a
  // restart of the daemon, never a reboot (docs/design.md, "Roles across a
  // restart").
  if (Status s = write_private_file(role_path(), std::string(to_string(role_)) + "\n"); !s.ok())
    spdlog::warn("resource {}: cannot record the role: {}", config_.name, s.message());
}

awaitable<void> Resource::resume_primary() {
  const auto fail = [this](const std::string& why) {
    spdlog::error("resource {}: not resuming as primary: {}; I/O on {} fails once its reconnect timeout ({} s) has "
                  "passed",
                  config_.name, why, config_.nbd.device, config_.nbd.reconnect_timeout);
  };
  // The device is re-taken below, once the peer has answered.
  if (Status s = co_await apply_role(Role::kPrimary, /*force=*/false, /*attach_device=*/false); !s.ok())
    co_return fail(s.message());
  // Another node promoted while this daemon was down (a failover) owns the
  // data now: this file system must not go on writing. Wait for the first
  // answer from the peer, for a few seconds at most: an unreachable peer
  // cannot be told from a dead one, as at any promotion.
  if (replicator_) {
    asio::steady_timer timer(io_);
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(std::min(5u, config_.timeout));
    while (replicator_->attempts() == 0 && std::chrono::steady_clock::now() < until && role_ == Role::kPrimary) {
      timer.expires_after(std::chrono::milliseconds(50));
      co_await timer.async_wait(use_nothrow);
    }
    if (replicator_->peer_was_primary()) {
      co_await apply_role(Role::kInit, /*force=*/true);
      co_return fail("peer '" + config_.peer_node + "' is primary now (it was promoted while this daemon was down)");
    }
  }
  if (role_ == Role::kPrimary) co_await device_->attach(store_->header().data_size);
}

awaitable<Status> Resource::discard_my_data() {
  if (role_ == Role::kPrimary)
    co_return Status::Error(EBUSY,
                            "discard-my-data is for the node whose data is to be replaced; this node is "
                            "primary: make it secondary (or init) first");
  if (changing_role_) co_return Status::Error(EBUSY, "a role change is in progress");
  changing_role_ = true;
  const bool was_secondary = role_ == Role::kSecondary;
  if (was_secondary) co_await secondary_->stop();
  Status s = co_await sync_target_->discard_my_data();
  if (was_secondary) {
    Status r = secondary_->start();
    if (!r.ok()) {
      role_ = Role::kInit;
      record_role();
      if (s.ok()) s = r;
    }
  }
  changing_role_ = false;
  co_return s;
}

Status Resource::verify(const VerifyRequest& req) {
  if (role_ != Role::kPrimary || !verifier_)
    return Status::Error(EINVAL, "verify runs on the primary, which compares its copy with the secondary's; this "
                                 "node is " + std::string(to_string(role_)) +
                                 (verifier_ ? "" : " and has no peer (no 'remote')"));
  // The copy here is older than the secondary's where a sync from it is
  // unfinished: comparing against it, let alone repairing from it, would
  // push old data over new.
  if (meta::is_sync_target(store_->header()))
    return Status::Error(EBUSY, "this node is the target of an unfinished synchronisation from the secondary; "
                                "verify once it is done (it resumes at the next connect)");
  return verifier_->start(req, syncer_->running());
}

Status Resource::stop_verify() {
  if (!verifier_) return Status::Error(EINVAL, "this node has no peer to verify against");
  return verifier_->stop();
}

json Resource::reload() {
  sd::reloading();
  auto next = load_resource_config(config_.config_path, config_.name, config_.node);
  if (next.ok()) {
    // The key file is read again even when its path did not change: a
    // reload is how a new key takes effect (at the next connection).
    auto key = load_peer_key(*next);
    Status tls = key.ok() ? load_tls(*next) : key.status();
    if (key.ok()) next->peer_key = std::move(*key);
    if (!tls.ok()) next = tls;
  }
  if (!next.ok()) {
    spdlog::error("reload: {}; nothing changed", next.status().message());
    sd::ready(std::string("role ") + to_string(role_) + "; the last reload failed: " + next.status().message());
    return control_error(Status::Error(next.status().code(), next.status().message() + "; nothing changed"));
  }
  const std::optional<Address> remote = config_.remote, source = config_.source;
  ReloadDiff d = apply_reload(config_, *next);
  for (const std::string& line : d.applied) spdlog::info("reload: {}", line);
  for (const std::string& line : d.refused) spdlog::warn("reload: not changed, needs a restart: {}", line);
  if (d.applied.empty() && d.refused.empty()) spdlog::info("reload: {}: nothing changed", config_.config_path);
  hooks_->set_program(config_.exec);
  if (syncer_) syncer_->set_rate(config_.sync_rate);
  if (verifier_) verifier_->set_rate(config_.verify_rate);
  if (store_->map().granule() != config_.track_granule) store_->map().set_granule(config_.track_granule);
  if (secondary_) secondary_->reconfigure();
  if (replicator_) replicator_->reconfigure(config_.remote != remote || config_.source != source);
  hooks_->run("reload");
  sd::ready(std::string("role ") + to_string(role_));
  return json{{"ok", true}, {"applied", d.applied}, {"refused", d.refused}};
}

awaitable<Status> Resource::change_role(Role to, bool force) {
  // A request that arrives while the daemon resumes its role after a
  // restart (start()) waits for that, then applies to the resumed role: a
  // cluster manager's `role secondary` right after the start is no error.
  if (resumed_) co_await resumed_->wait();
  co_return co_await apply_role(to, force);
}

awaitable<Status> Resource::apply_role(Role to, bool force, bool attach_device) {
  if (shutting_down_) co_return Status::Error(ESHUTDOWN, "hastnbd is shutting down");
  if (changing_role_) co_return Status::Error(EBUSY, "a role change is already in progress");
  const bool target = meta::is_sync_target(store_->header());
  RoleContext ctx{nbd_->clients() - nbd_->kernel_clients(), /*secondary_available=*/secondary_ != nullptr, force,
                  target};
  if (role_ == Role::kPrimary && to != role_ && device_->attached()) {
    changing_role_ = true;  // no other role change while we look
    ctx.device_users = co_await device_->users();
    changing_role_ = false;
  }
  if (Status s = check_role_change(role_, to, ctx); !s.ok()) co_return s;
  if (to == role_) co_return Status::Ok();
  changing_role_ = true;
  const Role from = role_;
  if (from == Role::kPrimary) {
    if (!ctx.device_users.empty())
      spdlog::warn("resource {}: --force: detaching {} while in use: {}", config_.name, config_.nbd.device,
                   ctx.device_users);
    co_await leave_primary();
  }
  if (from == Role::kSecondary) co_await secondary_->stop();
  Status s;
  if (to == Role::kPrimary && target) {
    // Forced: the operator takes this node's data as it is.
    s = co_await store_->update(meta::take_data_as_is);
    spdlog::warn(
        "resource {}: forced to primary while the target of an unfinished sync: its data may be "
        "inconsistent (run fsck)",
        config_.name);
  }
  if (s.ok() && to == Role::kPrimary) s = become_primary();
  if (to == Role::kSecondary) s = secondary_->start();
  changing_role_ = false;
  if (!s.ok()) {
    role_ = Role::kInit;
    role_since_ = std::chrono::system_clock::now();
    record_role();
    spdlog::error("resource {}: role {} failed: {}", config_.name, to_string(to), s.message());
    co_return s;
  }
  role_ = to;
  role_since_ = std::chrono::system_clock::now();
  record_role();
  spdlog::info("resource {}: role {} -> {}", config_.name, to_string(from), to_string(to));
  sd::status(std::string("role ") + to_string(to));
  if (to == Role::kPrimary && device_->configured() && attach_device)
    co_await device_->attach(store_->header().data_size);
  hooks_->run("role", {to_string(from), to_string(to)});
  co_return Status::Ok();
}

Status Resource::become_primary() {
  if (Status s = make_directories(std::filesystem::path(config_.nbd.socket).parent_path().string(), 0750); !s.ok())
    return s;
  if (Status s = nbd_->listen_unix(config_.nbd.socket); !s.ok()) return s;
  if (config_.nbd.listen) {
    if (Status s = nbd_->listen_tcp(*config_.nbd.listen); !s.ok()) {
      nbd_->stop_listening();
      return s;
    }
  }
  sync_target_->clear_split_brain();
  // A primary listens too, only to tell a peer that is also primary whether
  // the two diverged (split-brain) and to refuse it either way.
  if (secondary_) {
    if (Status s = secondary_->start(/*as_primary=*/true); !s.ok()) {
      nbd_->stop_listening();
      return s;
    }
  }
  if (replicator_) replicator_->start();
  return Status::Ok();
}

awaitable<void> Resource::leave_primary() {
  co_await device_->detach();
  co_await nbd_->shutdown();
  co_await write_path_->drain();
  Status s = co_await write_path_->flush();
  if (!s.ok()) spdlog::error("resource {}: flush on leaving primary: {}", config_.name, s.message());
  if (verifier_) co_await verifier_->halt("this node left the primary role");
  if (syncer_) co_await syncer_->stop();
  if (replicator_) co_await replicator_->stop();
  if (secondary_) co_await secondary_->stop();
  sync_target_->clear_split_brain();
}

peer::Hello Resource::hello() const {
  const MetaHeader& h = store_->header();
  peer::Hello hello;
  hello.resource = config_.name;
  hello.node = config_.node;
  hello.role = uint8_t(role_);
  hello.data_size = h.data_size;
  hello.extent_size = h.extent_size;
  hello.uuid = h.uuid;
  hello.localcnt = h.localcnt;
  hello.remotecnt = h.remotecnt;
  hello.meta_flags = h.flags;
  hello.generation_time = h.generation_time;  // sent only if the peer knows the field (handshake)
  auto bm = store_->file().bitmap();
  hello.dirty_map.assign(bm.begin(), bm.begin() + long((h.extents() + 7) / 8));
  return hello;
}

awaitable<void> Resource::shutdown() {
  shutting_down_ = true;
  spdlog::info("resource {}: shutting down ({} NBD client(s), {} request(s) in flight)", config_.name, nbd_->clients(),
               nbd_->requests_in_flight());
  if (control_) control_->close();
  if (metrics_) metrics_->stop();
  if (device_->attached()) {
    // A restart (an upgrade, systemd's Restart=) must not fail the file
    // system above: the device stays attached and the kernel holds its I/O
    // for nbd.reconnect_timeout; the next start re-takes it. 'role init'
    // (or secondary) is what releases it.
    device_->keep_for_restart();
    spdlog::warn("resource {}: stopping with {} attached: it stays attached and holds its I/O for {} s; start the "
                 "daemon again to go on, or run 'hastnbd-ctl role init {}' first to release it",
                 config_.name, config_.nbd.device, config_.nbd.reconnect_timeout, config_.name);
  }
  co_await nbd_->shutdown();
  co_await write_path_->drain();
  if (verifier_) co_await verifier_->halt("the daemon is stopping");
  if (syncer_) co_await syncer_->stop();
  if (replicator_) co_await replicator_->stop();
  if (secondary_ && role_ != Role::kInit) co_await secondary_->stop();
  if (Status s = co_await disk_->flush(); !s.ok()) spdlog::error("shutdown: {}", s.message());
  if (Status s = co_await store_->bitmap_durable(); !s.ok())
    spdlog::error("shutdown: {}", s.message());
  else
    save_fine_records();  // only on top of a durable bitmap
  spdlog::info("resource {}: stopped cleanly; {} dirty extents", config_.name, store_->map().dirty_count());
  hooks_->run("stop");
  co_await hooks_->drain();
}

StatusSources Resource::status_sources() const {
  return StatusSources{config_,       role_,         role_since_,  started_,          *store_,
                       *disk_,        *nbd_,         *write_path_, replicator_.get(), secondary_.get(),
                       syncer_.get(), verifier_.get(), *sync_target_, *hooks_, *device_};
}

json Resource::status() const { return status_report(status_sources()); }

}  // namespace hastnbd
