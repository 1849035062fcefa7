#include "hastnbd/resource.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include <sys/socket.h>

#include "hastnbd/logging.h"
#include "hastnbd/nbd_kernel.h"
#include "hastnbd/sd_notify.h"

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
  r->hooks_ = std::make_unique<Hooks>(io, c.name, c.exec);
  if (c.remote) {
    r->replicator_ = std::make_unique<Replicator>(io, r->pool_, c, [raw = r.get()] { return raw->hello(); });
  }
  if (c.listen) {
    r->secondary_ = std::make_unique<Secondary>(io, r->pool_, c, *r->disk_, [raw = r.get()] { return raw->hello(); });
  }
  r->primary_ = std::make_unique<Primary>(io, *r->disk_, *r->meta_, *r->map_, *r->uring_, c, r->replicator_.get());
  if (r->replicator_)
    r->syncer_ = std::make_unique<Syncer>(io, r->pool_, c, *r->disk_, *r->meta_, *r->map_, *r->uring_, *r->primary_,
                                          *r->replicator_);
  r->wire_peer_events();
  r->nbd_ = std::make_unique<NbdServer>(io, r->pool_, *r->primary_, c.name);
  r->started_ = r->role_since_ = std::chrono::system_clock::now();
  spdlog::info("resource {}: node {}, local {} ({} bytes, O_DIRECT block {}), metadata {} (uuid {}, localcnt {}, "
               "remotecnt {}, {} dirty extents{}{})",
               c.name, c.node, c.local, r->disk_->size(), r->disk_->block_size(), c.meta, h.uuid_string(), h.localcnt,
               h.remotecnt, r->map_->dirty_count(), (h.flags & kMetaFresh) ? ", fresh" : "",
               (h.flags & kMetaSynchronising)
                   ? (h.sync_direction == SyncDirection::kFromPeer ? ", target of an unfinished sync: inconsistent"
                                                                   : ", source of an unfinished sync")
                   : "");
  return r;
}

void Resource::wire_peer_events() {
  if (replicator_) {
    replicator_->on_hello = [this](const peer::Hello& theirs) { return on_peer_hello(theirs, true); };
    replicator_->on_connected = [this] {
      primary_->peer_connected();
      hooks_->run("connect", {config_.peer_node});
      syncer_->start(std::move(plan_));
    };
    replicator_->on_disconnected = [this](const std::string& why) {
      syncer_->interrupt(why);
      hooks_->run("disconnect", {config_.peer_node, why});
    };
    syncer_->on_start = [this](bool from_peer, uint64_t total) {
      hooks_->run("syncstart", {from_peer ? "from-peer" : "to-peer", std::to_string(total)});
    };
    syncer_->on_done = [this] { hooks_->run("syncdone"); };
    syncer_->on_interrupted = [this](const std::string& why) { hooks_->run("syncintr", {why}); };
  }
  if (secondary_) {
    secondary_->on_hello = [this](const peer::Hello& theirs) { return on_peer_hello(theirs, false); };
    secondary_->on_connected = [this] { hooks_->run("connect", {config_.peer_node}); };
    secondary_->on_disconnected = [this](const std::string& why) {
      secondary_in_sync_ = false;
      if (secondary_sync_.state == SyncProgress::State::kRunning) {
        secondary_sync_.state = SyncProgress::State::kInterrupted;
        secondary_sync_.ended_wall = std::chrono::system_clock::now();
        secondary_sync_.last_error = why;
        spdlog::warn("sync: interrupted after {} of {} bytes: {}", secondary_sync_.done_bytes,
                     secondary_sync_.total_bytes, why);
        hooks_->run("syncintr", {why});
      }
      hooks_->run("disconnect", {config_.peer_node, why});
    };
    secondary_->on_sync_done = [this](uint64_t localcnt) { return on_sync_done(localcnt); };
    secondary_->on_resync_bytes = [this](uint64_t n) { secondary_sync_.add(n); };
  }
}

awaitable<Status> Resource::on_peer_hello(const peer::Hello& theirs, bool as_primary) {
  const MetaHeader& h = meta_->header();
  Generation ours{h.uuid, h.localcnt, h.remotecnt, (h.flags & kMetaFresh) != 0};
  Generation peer{theirs.uuid, theirs.localcnt, theirs.remotecnt, (theirs.meta_flags & kMetaFresh) != 0};
  const bool both_primary = role_ == Role::kPrimary && theirs.role == uint8_t(Role::kPrimary);
  SyncDecision d = as_primary ? decide_sync(ours, peer) : decide_sync(peer, ours);
  peer_seen_ = PeerSeen{theirs.localcnt, theirs.remotecnt, both_primary && d.kind != SyncKind::kSplitBrain
                                                               ? "both-primary"
                                                               : to_string(d.kind)};
  if (d.kind == SyncKind::kSplitBrain) {
    if (!split_brain_) {
      split_brain_ = true;
      spdlog::error("resource {}: SPLIT-BRAIN with {}: {}", config_.name, theirs.node, d.reason);
      hooks_->run("split-brain", {theirs.node, std::to_string(h.localcnt), std::to_string(h.remotecnt),
                                  std::to_string(theirs.localcnt), std::to_string(theirs.remotecnt)});
    }
    co_return Status::Error(EPERM, d.reason);
  }
  if (d.refuse) co_return Status::Error(EINVAL, d.reason);
  // Two primaries meet only to find out whether they diverged: never connect.
  if (both_primary)
    co_return Status::Error(EBUSY, "both nodes are primary: make one of them secondary (neither wrote alone)");
  if (split_brain_) {
    split_brain_ = false;
    spdlog::info("resource {}: no longer in split-brain with {}", config_.name, theirs.node);
  }
  if (d.kind == SyncKind::kAnomaly) spdlog::warn("resource {}: {}", config_.name, d.reason);
  else spdlog::info("resource {}: {} ({})", config_.name, to_string(d.kind), d.reason);
  if (as_primary) {
    plan_ = SyncPlan{d.full, d.from_secondary, theirs.localcnt, theirs.dirty_map};
    co_return Status::Ok();
  }
  co_return co_await prepare_sync_target(theirs, d);
}

// The secondary's side of a decision: it only stores where it stands; the
// primary drives the copy.
awaitable<Status> Resource::prepare_sync_target(const peer::Hello& theirs, const SyncDecision& d) {
  secondary_in_sync_ = false;
  const MetaHeader& h = meta_->header();
  MetaHeader nh = h;
  if (d.full && !d.from_secondary) {
    // Everything here is about to be overwritten: take the primary's
    // identity, and its view of our generation, so that an interrupted full
    // sync resumes as an ordinary one instead of starting over.
    nh.uuid = theirs.uuid;
    nh.localcnt = theirs.remotecnt;
    nh.remotecnt = 0;
    nh.flags &= ~uint32_t(kMetaFresh);
    map_->reset_clean();
    if (Status s = co_await meta_->sync_bitmap(*uring_); !s.ok()) co_return s;
    if (d.adopt_uuid && h.uuid != theirs.uuid)
      spdlog::info("resource {}: adopting the primary's resource uuid {}", config_.name, nh.uuid_string());
  }
  uint64_t work = 0;
  for (uint64_t e = 0; e < map_->extents(); ++e) {
    bool theirs_dirty = (e >> 3) < theirs.dirty_map.size() && ((theirs.dirty_map[e >> 3] >> (e & 7)) & 1);
    if (d.full || theirs_dirty || map_->is_dirty(e))
      work += std::min<uint64_t>(h.extent_size, h.data_size - e * h.extent_size);
  }
  if (work > 0 && !d.from_secondary) {
    nh.flags |= kMetaSynchronising;
    nh.sync_direction = SyncDirection::kFromPeer;
  }
  if (!(nh == h))
    if (Status s = co_await meta_->write_header(*uring_, nh); !s.ok()) co_return s;
  if (work > 0) secondary_sync_.begin(/*from_peer=*/!d.from_secondary, d.full, work);
  else secondary_sync_ = SyncProgress{};
  co_return Status::Ok();
}

awaitable<Status> Resource::on_sync_done(uint64_t primary_localcnt) {
  // Every extent of our map was in the sync's work list, so none is dirty now.
  map_->reset_clean();
  Status s = co_await meta_->sync_bitmap(*uring_);
  MetaHeader nh = meta_->header();
  nh.remotecnt = primary_localcnt;
  nh.flags &= ~uint32_t(kMetaSynchronising | kMetaFresh);
  nh.sync_direction = SyncDirection::kNone;
  if (s.ok() && !(nh == meta_->header())) s = co_await meta_->write_header(*uring_, nh);
  if (!s.ok()) co_return s;
  secondary_in_sync_ = true;
  if (secondary_sync_.state == SyncProgress::State::kRunning) {
    secondary_sync_.state = SyncProgress::State::kDone;
    secondary_sync_.ended_wall = std::chrono::system_clock::now();
    // The plan here was an upper bound (the primary's map holds extents it
    // knew we already had); what came is what there was to copy.
    secondary_sync_.total_bytes = secondary_sync_.done_bytes;
    spdlog::info("sync: done ({} bytes copied); remotecnt now {}", secondary_sync_.done_bytes, primary_localcnt);
    hooks_->run("syncdone");
  }
  co_return Status::Ok();
}

// The operator chose this node as the victim of a split-brain (or wants its
// data replaced): its metadata becomes fresh, so the next connect copies
// everything from the primary.
awaitable<Status> Resource::discard_my_data() {
  if (role_ == Role::kPrimary)
    co_return Status::Error(EBUSY, "discard-my-data is for the node whose data is to be replaced; this node is "
                                   "primary: make it secondary (or init) first");
  if (changing_role_) co_return Status::Error(EBUSY, "a role change is in progress");
  changing_role_ = true;
  const bool was_secondary = role_ == Role::kSecondary;
  if (was_secondary) co_await secondary_->stop();
  map_->reset_clean();
  Status s = co_await meta_->sync_bitmap(*uring_);
  MetaHeader nh = meta_->header();
  nh.flags = kMetaFresh;
  nh.sync_direction = SyncDirection::kNone;
  nh.localcnt = nh.remotecnt = 0;
  if (s.ok()) s = co_await meta_->write_header(*uring_, nh);
  split_brain_ = false;
  peer_seen_.reset();
  if (s.ok()) spdlog::warn("resource {}: local data discarded: the next connect copies everything from the primary",
                           config_.name);
  if (was_secondary) {
    Status r = secondary_->start();
    if (!r.ok()) {
      role_ = Role::kInit;
      if (s.ok()) s = r;
    }
  }
  changing_role_ = false;
  co_return s;
}

Status Resource::start() {
  control_ = std::make_unique<ControlServer>(io_, [this](const json& req) { return handle_command(req); });
  if (Status s = control_->listen(config_.control_path()); !s.ok()) return s;
  if (config_.metrics_listen) {
    metrics_ = std::make_unique<MetricsServer>(io_, [this] { return prometheus_text(status(), nbd_->op_metrics()); });
    if (Status s = metrics_->listen(*config_.metrics_listen); !s.ok()) return s;
  }
  spdlog::info("resource {}: role init; control socket {}", config_.name, config_.control_path());
  hooks_->run("start");
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
    co_return json{{"ok", true}, {"role", to_string(role_)}, {"device", device_status()}};
  }
  if (cmd == "reload") co_return reload();
  if (cmd == "discard-my-data") {
    Status s = co_await discard_my_data();
    if (!s.ok()) co_return control_error(s);
    co_return json{{"ok", true}};
  }
  co_return control_error(Status::Error(EINVAL, "unknown command '" + cmd + "'"));
}

json Resource::reload() {
  sd::reloading();
  auto next = load_resource_config(config_.config_path, config_.name, config_.node);
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
  if (secondary_) secondary_->reconfigure();
  if (replicator_) replicator_->reconfigure(config_.remote != remote || config_.source != source);
  hooks_->run("reload");
  sd::ready(std::string("role ") + to_string(role_));
  return json{{"ok", true}, {"applied", d.applied}, {"refused", d.refused}};
}

awaitable<Status> Resource::change_role(Role to, bool force) {
  if (shutting_down_) co_return Status::Error(ESHUTDOWN, "hastnbd is shutting down");
  if (changing_role_) co_return Status::Error(EBUSY, "a role change is already in progress");
  const MetaHeader& h = meta_->header();
  const bool target = (h.flags & kMetaSynchronising) && h.sync_direction == SyncDirection::kFromPeer;
  RoleContext ctx{nbd_->clients() - nbd_->kernel_clients(), /*secondary_available=*/secondary_ != nullptr, force,
                  target};
  if (role_ == Role::kPrimary && to != role_ && device_.attached) {
    changing_role_ = true;  // no other role change while we look
    ctx.device_users = co_await device_users();
    changing_role_ = false;
  }
  if (Status s = check_role_change(role_, to, ctx); !s.ok()) co_return s;
  if (to == role_) co_return Status::Ok();
  changing_role_ = true;
  Role from = role_;
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
    MetaHeader nh = meta_->header();
    nh.flags &= ~uint32_t(kMetaSynchronising);
    nh.sync_direction = SyncDirection::kNone;
    s = co_await meta_->write_header(*uring_, nh);
    spdlog::warn("resource {}: forced to primary while the target of an unfinished sync: its data may be "
                 "inconsistent (run fsck)", config_.name);
  }
  if (s.ok() && to == Role::kPrimary) s = become_primary();
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
  sd::status(std::string("role ") + to_string(to));
  if (to == Role::kPrimary && !config_.nbd.device.empty()) co_await attach_device();
  hooks_->run("role", {to_string(from), to_string(to)});
  co_return Status::Ok();
}

// The call runs on the helper thread; its result is posted back to the loop,
// where the awaiting coroutine resumes. No coroutine frame crosses threads.
template <class F>
awaitable<std::invoke_result_t<F>> Resource::blocking(F f) {
  using R = std::invoke_result_t<F>;
  if (!blocking_) blocking_ = std::make_unique<asio::thread_pool>(1);
  auto& pool = *blocking_;
  return asio::async_initiate<const asio::use_awaitable_t<>, void(R)>(
      [&pool, f = std::move(f)](auto handler) mutable {
        auto loop = asio::get_associated_executor(handler);
        asio::post(pool, [f = std::move(f), handler = std::move(handler), loop]() mutable {
          R result = f();
          asio::post(loop, [handler = std::move(handler), result = std::move(result)]() mutable {
            std::move(handler)(std::move(result));
          });
        });
      },
      asio::use_awaitable);
}

awaitable<void> Resource::attach_device() {
  const std::string& path = config_.nbd.device;
  auto index = kernel_nbd::device_index(path);
  device_ = KernelDevice{};
  device_.since = std::chrono::system_clock::now();
  auto fail = [&](const Status& s) {
    device_.error = s.message();
    spdlog::error("resource {}: {} not attached: {}", config_.name, path, s.message());
  };
  if (!index.ok()) co_return fail(index.status());
  device_.index = *index;
  const std::string backend = "hastnbd:" + config_.name + "@" + config_.node;
  // A daemon of this resource that died while attached leaves the device
  // connected to dead sockets; take it back if nobody uses it.
  if (kernel_nbd::backend(*index) == backend) {
    std::string users = co_await device_users();
    if (!users.empty())
      co_return fail(Status::Error(EBUSY, "still attached from an earlier run of this daemon and in use (" + users +
                                              "): unmount it, then 'hastnbd-ctl role primary' again"));
    spdlog::warn("resource {}: {} still attached from an earlier run; detaching it first", config_.name, path);
    if (Status s = co_await blocking([i = *index] { return kernel_nbd::disconnect(i); }); !s.ok())
      co_return fail(s);
  }
  kernel_nbd::AttachParams p;
  p.index = *index;
  p.size = meta_->header().data_size;
  p.block_size = p.size % 4096 == 0 ? 4096 : 512;
  p.server_flags = NbdServer::transmission_flags();
  // A request may rightly wait for a dead peer to time out (fullsync) before
  // it completes degraded; the kernel must not give up on the whole device
  // first.
  p.timeout_s = std::max<uint64_t>(120, 4 * uint64_t(config_.timeout));
  p.dead_conn_timeout_s = config_.timeout;
  p.backend = backend;
  std::vector<int> ours;
  for (unsigned i = 0; i < config_.nbd.connections; ++i) {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
      int err = errno;
      for (int fd : p.fds) ::close(fd);
      for (int fd : ours) ::close(fd);
      co_return fail(Status::Error(err, std::string("socketpair: ") + std::strerror(err)));
    }
    ours.push_back(sv[0]);
    p.fds.push_back(sv[1]);
  }
  // Served before the kernel has them: it may read (partition scan, udev's
  // blkid) as soon as the device starts.
  for (size_t i = 0; i < ours.size(); ++i)
    nbd_->serve_connection(asio::generic::stream_protocol::socket(io_, asio::generic::stream_protocol(AF_UNIX, SOCK_STREAM), ours[i]),
                           path + " #" + std::to_string(i + 1), /*kernel=*/true);
  // Named before the co_await: GCC 12 copies a closure temporary's captures
  // bitwise into the coroutine frame (a string or vector then shares memory).
  auto connect = [p] { return kernel_nbd::connect(p); };
  Status s = co_await blocking(std::move(connect));
  for (int fd : p.fds) ::close(fd);  // the kernel holds its own references; on failure our ends see EOF
  if (!s.ok()) co_return fail(s);
  device_.attached = true;
  spdlog::info("resource {}: {} attached ({} bytes, block size {}, {} connection(s))", config_.name, path, p.size,
               p.block_size, p.fds.size());
}

awaitable<void> Resource::detach_device() {
  if (!device_.attached) co_return;
  device_.attached = false;
  device_.since = std::chrono::system_clock::now();
  Status s = co_await blocking([i = device_.index] { return kernel_nbd::disconnect(i); });
  if (!s.ok()) {
    device_.error = s.message();
    spdlog::error("resource {}: {}", config_.name, s.message());
    co_return;
  }
  device_.error.clear();
  spdlog::info("resource {}: {} detached", config_.name, config_.nbd.device);
}

awaitable<std::string> Resource::device_users() {
  auto users = [path = config_.nbd.device, i = device_.index] { return kernel_nbd::users(path, i); };
  co_return co_await blocking(std::move(users));
}

json Resource::device_status() const {
  return {{"path", config_.nbd.device},
          {"attached", device_.attached && nbd_->kernel_clients() > 0},
          {"connections", nbd_->kernel_clients()},
          {"since", device_.index < 0 ? "" : iso_time(device_.since)},
          {"error", device_.error}};
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
  if (syncer_) syncer_->forget_direction();
  split_brain_ = false;
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
  co_await detach_device();
  co_await nbd_->shutdown();
  co_await primary_->drain();
  Status s = co_await primary_->flush();
  if (!s.ok()) spdlog::error("resource {}: flush on leaving primary: {}", config_.name, s.message());
  if (syncer_) co_await syncer_->stop();
  if (replicator_) co_await replicator_->stop();
  if (secondary_) co_await secondary_->stop();
  split_brain_ = false;
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
  json p;
  if (role_ == Role::kPrimary && replicator_) p = replicator_->status();
  else if (role_ == Role::kSecondary && secondary_) p = secondary_->status();
  else p = {{"state", (replicator_ || secondary_) ? "disconnected" : "standalone"},
            {"node", config_.peer_node},
            {"remote", config_.remote ? config_.remote->to_string() : ""}};
  p["split_brain"] = split_brain_;
  if (split_brain_) p["state"] = "split-brain";
  if (peer_seen_) {
    p["localcnt"] = peer_seen_->localcnt;
    p["remotecnt"] = peer_seen_->remotecnt;
    p["decision"] = peer_seen_->decision;
  }
  return p;
}

json Resource::sync_status() const {
  if (role_ == Role::kPrimary && syncer_) return syncer_->progress().to_json();
  if (role_ == Role::kSecondary) return secondary_sync_.to_json();
  return SyncProgress{}.to_json();
}

bool Resource::in_sync() const {
  if (role_ == Role::kPrimary && replicator_)
    return replicator_->connected() && !syncer_->running() && map_->needs_sync_count() == 0;
  if (role_ == Role::kSecondary && secondary_)
    return secondary_->state() == PeerState::kConnected && secondary_in_sync_;
  return false;
}

awaitable<void> Resource::shutdown() {
  shutting_down_ = true;
  spdlog::info("resource {}: shutting down ({} NBD client(s), {} request(s) in flight)", config_.name,
               nbd_->clients(), nbd_->requests_in_flight());
  if (control_) control_->close();
  if (metrics_) metrics_->stop();
  if (device_.attached) {
    if (std::string users = co_await device_users(); !users.empty())
      spdlog::error("resource {}: stopping: detaching {} while in use ({}); its I/O fails from now on",
                    config_.name, config_.nbd.device, users);
    co_await detach_device();
  }
  co_await nbd_->shutdown();
  co_await primary_->drain();
  if (syncer_) co_await syncer_->stop();
  if (replicator_) co_await replicator_->stop();
  if (secondary_ && role_ != Role::kInit) co_await secondary_->stop();
  if (Status s = co_await disk_->flush(); !s.ok()) spdlog::error("shutdown: {}", s.message());
  if (Status s = co_await meta_->sync_bitmap(*uring_); !s.ok()) spdlog::error("shutdown: {}", s.message());
  spdlog::info("resource {}: stopped cleanly; {} dirty extents", config_.name, map_->dirty_count());
  hooks_->run("stop");
  co_await hooks_->drain();
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
                   {"fresh", (h.flags & kMetaFresh) != 0},
                   {"synchronising", (h.flags & kMetaSynchronising) != 0},
                   {"sync_direction", !(h.flags & kMetaSynchronising)                      ? ""
                                      : h.sync_direction == SyncDirection::kFromPeer ? "from-peer"
                                                                                     : "to-peer"},
                   {"inconsistent", (h.flags & kMetaSynchronising) && h.sync_direction == SyncDirection::kFromPeer}};
  s["sync"] = sync_status();
  s["in_sync"] = in_sync();
  s["extent_size"] = h.extent_size;
  s["dirty"] = {{"extents", map_->dirty_count()},
                {"needs_sync_extents", map_->needs_sync_count()},
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
              {"errors", ns.errors},
              {"device", device_status()}};
  s["metaflush"] = {{"enabled", config_.metaflush}, {"bitmap_syncs", primary_->stats().bitmap_syncs}};
  const PrimaryStats& ps = primary_->stats();
  s["writes"] = {{"in_flight", ps.writes_in_flight},
                 {"degraded", ps.degraded_writes},
                 {"generation_bumps", ps.generation_bumps},
                 {"remote_reads", ps.remote_reads},
                 {"stale_refused", ps.stale_refused}};
  s["hooks"] = {{"program", hooks_->program()},
                {"started", hooks_->stats().started},
                {"failed", hooks_->stats().failed},
                {"timed_out", hooks_->stats().timed_out}};
  s["compression"] = to_string(config_.compression);
  s["checksum"] = to_string(config_.checksum);
  s["timeout"] = config_.timeout;
  s["sync_rate"] = config_.sync_rate;
  return s;
}

}  // namespace hastnbd
