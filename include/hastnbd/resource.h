// One resource on this node: the daemon's state and the wiring between the
// components (metadata, activemap, local disk, primary path, NBD server,
// control socket). Everything here runs on the single loop thread.
//
// Lifecycle: open() validates and opens everything (synchronously, before the
// loop runs) and leaves the resource in role init (hook "start"); start() binds the control
// socket; role changes and status come through handle_command(); shutdown()
// drains in-flight I/O, syncs metadata and releases the sockets.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>

#include "hastnbd/activemap.h"
#include "hastnbd/buffer.h"
#include "hastnbd/config.h"
#include "hastnbd/control.h"
#include "hastnbd/hooks.h"
#include "hastnbd/local_disk.h"
#include "hastnbd/metadata.h"
#include "hastnbd/metrics.h"
#include "hastnbd/nbd_server.h"
#include "hastnbd/primary.h"
#include "hastnbd/replicator.h"
#include "hastnbd/role.h"
#include "hastnbd/secondary.h"
#include "hastnbd/sync_decision.h"
#include "hastnbd/syncer.h"
#include "hastnbd/uring.h"

namespace hastnbd {

class Resource {
 public:
  static Result<std::unique_ptr<Resource>> open(asio::io_context& io, ResourceConfig config);
  ~Resource();

  Status start();
  awaitable<json> handle_command(const json& request);
  awaitable<void> shutdown();
  // SIGHUP or `hastnbd-ctl reload`: re-read the configuration file and apply
  // what can change while running (apply_reload in config.h); the rest is
  // logged as refused. A file with errors changes nothing.
  json reload();

  json status() const;
  Role role() const { return role_; }

 private:
  Resource(asio::io_context& io, ResourceConfig config);
  awaitable<Status> change_role(Role to, bool force);
  Status become_primary();
  awaitable<void> leave_primary();
  peer::Hello hello() const;
  json peer_status() const;
  json sync_status() const;
  bool in_sync() const;
  // The handshake: both sides decide from the two HELLOs (sync_decision.h).
  awaitable<Status> on_peer_hello(const peer::Hello& theirs, bool as_primary);
  awaitable<Status> prepare_sync_target(const peer::Hello& theirs, const SyncDecision& d);
  awaitable<Status> on_sync_done(uint64_t primary_localcnt);
  awaitable<Status> discard_my_data();
  void wire_peer_events();
  // The kernel's /dev/nbdN (nbd.device): attached after a promotion, detached
  // before the export closes. A failed attach leaves the node primary with
  // the error in status (the Unix socket still serves nbd-client).
  awaitable<void> attach_device();
  awaitable<void> detach_device();
  awaitable<std::string> device_users();
  json device_status() const;
  // Runs a blocking call (netlink, opening /dev/nbdN) on the helper thread;
  // the loop goes on serving meanwhile, which some of those calls wait for.
  template <class F>
  awaitable<std::invoke_result_t<F>> blocking(F f);

  asio::io_context& io_;
  ResourceConfig config_;
  BufferPool pool_;
  std::unique_ptr<Uring> uring_;
  std::unique_ptr<MetadataFile> meta_;
  std::unique_ptr<LocalDisk> disk_;
  std::unique_ptr<ActiveMap> map_;
  std::unique_ptr<Replicator> replicator_;  // when the node has a `remote`
  std::unique_ptr<Secondary> secondary_;    // when the node has a `listen`
  std::unique_ptr<Primary> primary_;
  std::unique_ptr<NbdServer> nbd_;
  std::unique_ptr<Syncer> syncer_;          // with replicator_
  std::unique_ptr<ControlServer> control_;
  std::unique_ptr<Hooks> hooks_;
  std::unique_ptr<MetricsServer> metrics_;  // with `metrics: {listen: ...}`
  SyncPlan plan_;                 // decided at the primary's last handshake, started when the link is up
  SyncProgress secondary_sync_;   // the secondary's view of a sync it takes part in
  bool secondary_in_sync_ = false;
  struct PeerSeen {
    uint64_t localcnt = 0, remotecnt = 0;
    std::string decision;
  };
  std::optional<PeerSeen> peer_seen_;  // from the last HELLO the peer sent
  bool split_brain_ = false;
  Role role_ = Role::kInit;
  std::chrono::system_clock::time_point role_since_;
  std::chrono::system_clock::time_point started_;
  bool changing_role_ = false;
  bool shutting_down_ = false;
  struct KernelDevice {
    int index = -1;
    bool attached = false;  // we attached it (and have not detached it since)
    std::string error;      // why the last attach or detach failed
    std::chrono::system_clock::time_point since;
  };
  KernelDevice device_;
  std::unique_ptr<asio::thread_pool> blocking_;  // one thread, made at first use
};

// Offline helpers shared by hastnbd-ctl: the data size a resource exports
// (configured size, else the whole device), checked against the device.
Result<uint64_t> resource_data_size(const ResourceConfig& config);

}  // namespace hastnbd
