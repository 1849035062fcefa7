#include "hastnbd/resource.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>

#include "hastnbd/logging.h"
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

namespace hastnbd {

namespace {


Status make_dir(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return Status::Error(ec.value(), "cannot create directory " + dir + ": " + ec.message());
  return Status::Ok();
}

}  // namespace

Result<uint64_t> resource_data_size(const ResourceConfig& config) {
  asio::io_context io;
  auto uring = Uring::create(io, 4);
  if (!uring.ok()) return uring.status();
  BufferPool pool;
  auto disk = LocalDisk::open(io, **uring, pool, config.local, config.size);
  if (!disk.ok()) return disk.status();
  return (*disk)->size();
}

Resource::Resource(asio::io_context& io, ResourceConfig config) : io_(io), config_(std::move(config)) {}

Resource::~Resource() = default;

Result<std::unique_ptr<Resource>> Resource::open(asio::io_context& io, ResourceConfig config) {
  std::unique_ptr<Resource> r(new Resource(io, std::move(config)));
  const ResourceConfig& c = r->config_;
  if (Status s = make_dir(c.run_dir); !s.ok()) return s;
  auto uring = Uring::create(io);
  if (!uring.ok()) return uring.status();
  r->uring_ = std::move(*uring);
  auto meta = MetadataFile::open(c.meta, /*lock=*/true, /*writable=*/true);
  if (!meta.ok()) return meta.status();
  r->meta_ = std::move(*meta);
  auto disk = LocalDisk::open(io, *r->uring_, r->pool_, c.local, c.size);
  if (!disk.ok()) return disk.status();
  r->disk_ = std::move(*disk);
  if (Status s = r->meta_->check_matches(c.name, r->disk_->size(), c.extent_size); !s.ok()) return s;
  if (r->meta_->header().keepdirty != c.keepdirty) {
    MetaHeader h = r->meta_->header();
    h.keepdirty = c.keepdirty;
    if (Status s = r->meta_->write_header_now(h); !s.ok()) return s;
  }
  const MetaHeader& h = r->meta_->header();
  r->map_ = std::make_unique<ActiveMap>(r->meta_->bitmap(), h.data_size, h.extent_size, c.keepdirty);
  if (c.remote) {
    r->replicator_ = std::make_unique<Replicator>(io, r->pool_, c, [raw = r.get()] { return raw->hello(); });
  }
  if (c.listen) {
    r->secondary_ = std::make_unique<Secondary>(io, r->pool_, c, *r->disk_, [raw = r.get()] { return raw->hello(); });
  }
  r->primary_ = std::make_unique<Primary>(io, *r->disk_, *r->meta_, *r->map_, *r->uring_, c, r->replicator_.get());
  if (r->replicator_) r->replicator_->on_connected = [raw = r.get()] { raw->primary_->peer_connected(); };
  r->nbd_ = std::make_unique<NbdServer>(io, r->pool_, *r->primary_, c.name);
  r->started_ = r->role_since_ = std::chrono::system_clock::now();
  spdlog::info("resource {}: node {}, local {} ({} bytes, O_DIRECT block {}), metadata {} (uuid {}, localcnt {}, "
               "remotecnt {}, {} dirty extents)",
               c.name, c.node, c.local, r->disk_->size(), r->disk_->block_size(), c.meta, h.uuid_string(), h.localcnt,
               h.remotecnt, r->map_->dirty_count());
  return r;
}

Status Resource::start() {
  control_ = std::make_unique<ControlServer>(io_, [this](const json& req) { return handle_command(req); });
  if (Status s = control_->listen(config_.control_path()); !s.ok()) return s;
  spdlog::info("resource {}: role init; control socket {}", config_.name, config_.control_path());
  return Status::Ok();
}

awaitable<json> Resource::handle_command(const json& request) {
  const std::string cmd = request["cmd"];
  if (cmd == "ping") co_return json{{"ok", true}};
  if (cmd == "status") {
    json s = status();
    s["ok"] = true;
    co_return s;
  }
  if (cmd == "role") {
    auto role = parse_role(request.value("role", ""));
    if (!role) co_return control_error(Status::Error(EINVAL, "role must be init, secondary or primary"));
    Status s = co_await change_role(*role, request.value("force", false));
    if (!s.ok()) co_return control_error(s);
    co_return json{{"ok", true}, {"role", to_string(role_)}};
  }
  co_return control_error(Status::Error(EINVAL, "unknown command '" + cmd + "'"));
}

awaitable<Status> Resource::change_role(Role to, bool force) {
  if (shutting_down_) co_return Status::Error(ESHUTDOWN, "hastnbd is shutting down");
  if (changing_role_) co_return Status::Error(EBUSY, "a role change is already in progress");
  RoleContext ctx{nbd_->clients(), /*secondary_available=*/secondary_ != nullptr, force};
  if (Status s = check_role_change(role_, to, ctx); !s.ok()) co_return s;
  if (to == role_) co_return Status::Ok();
  changing_role_ = true;
  Role from = role_;
  if (from == Role::kPrimary) co_await leave_primary();
  if (from == Role::kSecondary) co_await secondary_->stop();
  Status s;
  if (to == Role::kPrimary) s = become_primary();
  if (to == Role::kSecondary) s = secondary_->start();
  changing_role_ = false;
  if (!s.ok()) {
    role_ = Role::kInit;
    role_since_ = std::chrono::system_clock::now();
    spdlog::error("resource {}: role {} failed: {}", config_.name, to_string(to), s.message());
    co_return s;
  }
  role_ = to;
  role_since_ = std::chrono::system_clock::now();
  spdlog::info("resource {}: role {} -> {}", config_.name, to_string(from), to_string(to));
  co_return Status::Ok();
}

Status Resource::become_primary() {
  if (Status s = make_dir(std::filesystem::path(config_.nbd.socket).parent_path().string()); !s.ok()) return s;
  if (Status s = nbd_->listen_unix(config_.nbd.socket); !s.ok()) return s;
  if (config_.nbd.listen) {
    if (Status s = nbd_->listen_tcp(*config_.nbd.listen); !s.ok()) {
      nbd_->stop_listening();
      return s;
    }
  }
  if (replicator_) replicator_->start();
  return Status::Ok();
}

awaitable<void> Resource::leave_primary() {
  co_await nbd_->shutdown();
  co_await primary_->drain();
  Status s = co_await primary_->flush();
  if (!s.ok()) spdlog::error("resource {}: flush on leaving primary: {}", config_.name, s.message());
  if (replicator_) co_await replicator_->stop();
}

peer::Hello Resource::hello() const {
  const MetaHeader& h = meta_->header();
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
  auto bm = meta_->bitmap();
  hello.dirty_map.assign(bm.begin(), bm.begin() + long((h.extents() + 7) / 8));
  return hello;
}

json Resource::peer_status() const {
  if (role_ == Role::kPrimary && replicator_) return replicator_->status();
  if (role_ == Role::kSecondary && secondary_) return secondary_->status();
  json p = {{"state", (replicator_ || secondary_) ? "disconnected" : "standalone"},
            {"node", config_.peer_node},
            {"remote", config_.remote ? config_.remote->to_string() : ""}};
  return p;
}

awaitable<void> Resource::shutdown() {
  shutting_down_ = true;
  spdlog::info("resource {}: shutting down ({} NBD client(s), {} request(s) in flight)", config_.name,
               nbd_->clients(), nbd_->requests_in_flight());
  if (control_) control_->close();
  co_await nbd_->shutdown();
  co_await primary_->drain();
  if (replicator_) co_await replicator_->stop();
  if (secondary_ && role_ == Role::kSecondary) co_await secondary_->stop();
  if (Status s = co_await disk_->flush(); !s.ok()) spdlog::error("shutdown: {}", s.message());
  if (Status s = co_await meta_->sync_bitmap(*uring_); !s.ok()) spdlog::error("shutdown: {}", s.message());
  spdlog::info("resource {}: stopped cleanly; {} dirty extents", config_.name, map_->dirty_count());
}

json Resource::status() const {
  const MetaHeader& h = meta_->header();
  const NbdStats& ns = nbd_->stats();
  json dirty_runs = json::array();
  json s;
  s["resource"] = config_.name;
  s["node"] = config_.node;
  s["pid"] = ::getpid();
  s["version"] = HASTNBD_VERSION;
  s["role"] = to_string(role_);
  s["role_since"] = iso_time(role_since_);
  s["started"] = iso_time(started_);
  s["replication"] = to_string(config_.replication);
  s["peer"] = peer_status();
  s["local"] = {{"path", disk_->path()},
                {"size", disk_->size()},
                {"block_size", disk_->block_size()},
                {"block_device", disk_->is_block_device()}};
  s["metadata"] = {{"path", meta_->path()},
                   {"uuid", h.uuid_string()},
                   {"localcnt", h.localcnt},
                   {"remotecnt", h.remotecnt},
                   {"fresh", (h.flags & kMetaFresh) != 0}};
  s["extent_size"] = h.extent_size;
  s["dirty"] = {{"extents", map_->dirty_count()},
                {"bytes", std::min(map_->dirty_count() * h.extent_size, h.data_size)},
                {"keepdirty", config_.keepdirty}};
  s["nbd"] = {{"socket", role_ == Role::kPrimary ? config_.nbd.socket : ""},
              {"tcp", (role_ == Role::kPrimary && config_.nbd.listen) ? config_.nbd.listen->to_string() : ""},
              {"clients", nbd_->clients()},
              {"connections_total", ns.connections_total},
              {"requests", ns.requests},
              {"requests_in_flight", nbd_->requests_in_flight()},
              {"bytes_read", ns.bytes_read},
              {"bytes_written", ns.bytes_written},
              {"errors", ns.errors}};
  s["metaflush"] = {{"enabled", config_.metaflush}, {"bitmap_syncs", primary_->stats().bitmap_syncs}};
  const PrimaryStats& ps = primary_->stats();
  s["writes"] = {{"in_flight", ps.writes_in_flight},
                 {"degraded", ps.degraded_writes},
                 {"generation_bumps", ps.generation_bumps},
                 {"remote_reads", ps.remote_reads}};
  s["compression"] = to_string(config_.compression);
  s["checksum"] = to_string(config_.checksum);
  return s;
}

}  // namespace hastnbd
