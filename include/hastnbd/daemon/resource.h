// One resource on this node: the components and the wiring between them,
// and the role state machine (docs/design.md, "Roles"). Everything here runs
// on the single loop thread.
//
// Lifecycle: open() validates and opens everything (synchronously, before the
// loop runs) and leaves the resource in role init; start() binds the control
// socket (and metrics) and runs the "start" hook; role changes come through
// change_role() (the control commands, daemon/commands.h); shutdown() drains
// in-flight I/O, syncs data and metadata, and releases the sockets.
//
// Who owns what: the metadata (MetaStore) and local disk belong to the
// resource; the write path, NBD server and kernel device serve the primary
// role; the Replicator and Syncer are the primary's side of the peer link,
// the Secondary the other side; SyncTarget decides at every handshake who
// synchronises whom and keeps the secondary's part of it.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "hastnbd/base/buffer.h"
#include "hastnbd/base/role.h"
#include "hastnbd/config/config.h"
#include "hastnbd/daemon/control.h"
#include "hastnbd/daemon/hooks.h"
#include "hastnbd/daemon/kernel_device.h"
#include "hastnbd/daemon/metrics.h"
#include "hastnbd/daemon/status_report.h"
#include "hastnbd/daemon/sync_target.h"
#include "hastnbd/disk/local_disk.h"
#include "hastnbd/disk/meta_store.h"
#include "hastnbd/disk/uring.h"
#include "hastnbd/nbd/server.h"
#include "hastnbd/replication/replicator.h"
#include "hastnbd/replication/secondary.h"
#include "hastnbd/replication/syncer.h"
#include "hastnbd/replication/verifier.h"
#include "hastnbd/replication/write_path.h"

namespace hastnbd {

// Seams for running a resource in-process (the component tests, two nodes on
// one io_context): where the local disk comes from and how the primary
// reaches its peer. Empty members mean the daemon's own: LocalDisk on
// `local`, TCP to `remote`. Without `peer_listener` the node binds no peer
// port; its secondary side takes connections only through accept_peer().
struct ResourceSeams {
  std::function<Result<std::unique_ptr<Disk>>(asio::io_context&, Uring&, BufferPool&, const ResourceConfig&)>
      open_disk;
  PeerConnector connect;
  bool peer_listener = true;
};

class Resource {
 public:
  static Result<std::unique_ptr<Resource>> open(asio::io_context& io, ResourceConfig config,
                                                ResourceSeams seams = {});
  ~Resource();

  Status start();
  awaitable<void> shutdown();

  // `role`: checked by check_role_change (daemon/role_change.h), then carried
  // out; a failed change leaves the node in role init.
  awaitable<Status> change_role(Role to, bool force);
  // The split-brain victim's command: its data is to be replaced.
  awaitable<Status> discard_my_data();
  // `hastnbd-ctl verify`: start (or resume) an online verify on the primary,
  // or stop the one running.
  Status verify(const VerifyRequest& req);
  Status stop_verify();
  // SIGHUP or `hastnbd-ctl reload`: re-read the configuration file and apply
  // what can change while running (apply_reload in config.h); the rest is
  // logged as refused. A file with errors changes nothing.
  nlohmann::json reload();

  nlohmann::json status() const;
  nlohmann::json device_status() const { return device_->status(); }
  Role role() const { return role_; }

  // In-process use: the export the NBD server serves (valid in role
  // primary), and a peer connection handed to the secondary's side as if it
  // had come through the listener from the configured peer. Refused
  // (ECONNREFUSED) where the listener would be closed: in role init, or
  // without a `listen` address.
  BlockBackend& backend() { return *write_path_; }
  Status accept_peer(PeerConnection::Socket socket, std::string who);

 private:
  // At start, when the kernel device is still attached by an earlier run
  // (docs/design.md, "Roles across a restart"): primary again, the device
  // re-taken, unless the peer has become primary meanwhile.
  awaitable<void> resume_primary();
  awaitable<void> resume_secondary();
  // Runs `how` (a resume at start), holding role requests until it is done.
  void resume(awaitable<void> how);
  awaitable<void> resumed_after(awaitable<void> how);
  // change_role without waiting for a resume; `attach_device` false leaves
  // the kernel device to the caller (resume_primary).
  awaitable<Status> apply_role(Role to, bool force, bool attach_device = true);
  // RUN_DIR/RESOURCE.role: the role, rewritten at every change.
  std::string role_path() const;
  std::optional<Role> recorded_role() const;
  void record_role() const;
  Resource(asio::io_context& io, ResourceConfig config, ResourceSeams seams);
  Status become_primary();
  static Status load_tls(ResourceConfig& c);
  awaitable<void> leave_primary();
  peer::Hello hello() const;
  void wire_peer_events();
  // STATE_DIR/RESOURCE.fine: the fine-tracking records of a clean stop,
  // restored at open, saved at shutdown (disk/fine_file.h).
  std::string fine_path() const;
  void restore_fine_records();
  void save_fine_records();
  StatusSources status_sources() const;

  asio::io_context& io_;
  ResourceConfig config_;
  ResourceSeams seams_;
  BufferPool pool_;
  std::unique_ptr<Uring> uring_;
  std::unique_ptr<MetaStore> store_;
  std::unique_ptr<Disk> disk_;
  std::unique_ptr<Hooks> hooks_;
  std::unique_ptr<SyncTarget> sync_target_;
  std::unique_ptr<Replicator> replicator_;  // when the node has a `remote`
  std::unique_ptr<Secondary> secondary_;    // when the node has a `listen`
  std::unique_ptr<WritePath> write_path_;
  std::unique_ptr<NbdServer> nbd_;
  std::unique_ptr<KernelDevice> device_;
  std::unique_ptr<Syncer> syncer_;  // with replicator_
  std::unique_ptr<Verifier> verifier_;  // with replicator_
  std::unique_ptr<ControlServer> control_;
  std::unique_ptr<MetricsServer> metrics_;  // with `metrics: {listen: ...}`
  SyncPlan plan_;                           // decided at the primary's last handshake, started when the link is up
  Role role_ = Role::kInit;
  std::chrono::system_clock::time_point role_since_;
  std::chrono::system_clock::time_point started_;
  bool changing_role_ = false;
  std::unique_ptr<Latch> resumed_;  // set once the role resumed at start (resume()) is in place
  bool shutting_down_ = false;
};

// Offline helper for hastnbd-ctl: the data size a resource exports
// (configured size, else the whole device), checked against the device.
Result<uint64_t> resource_data_size(const ResourceConfig& config);

}  // namespace hastnbd
