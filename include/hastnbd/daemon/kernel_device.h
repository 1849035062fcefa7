// The kernel's /dev/nbdN of a primary with `nbd.device` (docs/design.md,
// "Kernel device"): attached after a promotion over the nbd netlink
// interface, with one socketpair per connection whose other ends the NBD
// server serves straight into the transmission phase; detached before the
// export closes. A device an earlier run of this resource left attached
// (the daemon was restarted or killed) is re-taken, not detached: the
// kernel gets fresh sockets and the file system above never notices. A
// kernel connection that ends while attached (the kernel gave up on a
// request after nbd.io_timeout) is replaced the same way. A failed attach
// leaves the node primary with the reason in status (the Unix socket still
// serves nbd-client).
//
// Every netlink call and device open runs on a helper thread of its own,
// never on the loop: opening /dev/nbdN may read the partition table through
// this very daemon, which only the loop can answer. Results are posted back
// to the loop; no coroutine frame crosses threads. Loop thread only.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <type_traits>

#include <nlohmann/json.hpp>

#include "hastnbd/base/asio.h"
#include "hastnbd/config/config.h"
#include "hastnbd/nbd/kernel.h"
#include "hastnbd/nbd/server.h"

namespace hastnbd {

class KernelDevice {
 public:
  KernelDevice(asio::io_context& io, const ResourceConfig& config, NbdServer& nbd);
  ~KernelDevice();

  bool configured() const { return !config_.nbd.device.empty(); }
  bool attached() const { return attached_; }
  // Whether the device is attached with this resource's backend identifier
  // now: an earlier run of this daemon left it (docs/design.md, "Roles
  // across a restart").
  bool left_attached() const;
  // Attach for an export of `size` bytes, or re-take the device an earlier
  // run left attached. Failures are logged and kept for status().
  awaitable<void> attach(uint64_t size);
  awaitable<void> detach();
  // The daemon is stopping to be started again: stop serving the device
  // but leave it attached, and replace no connection from now on.
  void keep_for_restart() { keep_ = true; }
  // Who uses the device ("" = nobody): see kernel_nbd::users.
  awaitable<std::string> users();
  nlohmann::json status() const;

 private:
  struct Handover {
    Status status;
    unsigned taken = 0;  // of the sockets offered
  };
  template <class F>
  awaitable<std::invoke_result_t<F>> blocking(F f);
  void failed(const Status& s);
  std::string backend_id() const;
  kernel_nbd::AttachParams params() const;
  void serve(int fd, unsigned n);
  // `n` fresh sockets for connections the kernel holds dead (RECONFIGURE).
  awaitable<Handover> hand_over(unsigned n);
  // Keeps the kernel's connection count at nbd.connections while attached.
  void connection_ended();
  awaitable<void> replace_connections();
  // RUN_DIR/RESOURCE.device: its mtime is renewed every second while the
  // device is served, so a later run can tell how long it went unserved.
  std::string heartbeat_path() const { return config_.run_dir + "/" + config_.name + ".device"; }
  awaitable<void> heartbeat();
  void write_heartbeat_count() const;  // the file holds retaken_: restarts survived since the first attach

  asio::io_context& io_;
  const ResourceConfig& config_;
  NbdServer& nbd_;
  int index_ = -1;
  bool attached_ = false;  // we attached it (and have not detached it since)
  bool keep_ = false;      // stopping for a restart: replace nothing
  bool replacing_ = false;
  uint64_t size_ = 0;
  unsigned served_ = 0;    // kernel connections handed out so far (their labels)
  uint64_t retaken_ = 0;   // re-takes since the device was first attached, across restarts
  uint64_t replaced_ = 0;  // connections replaced while attached
  double last_stall_s_ = -1;  // how long the device went unserved before the last re-take (-1: unknown)
  bool heartbeat_running_ = false;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  std::string error_;      // why the last attach or detach failed
  std::chrono::system_clock::time_point since_;
  std::unique_ptr<asio::thread_pool> pool_;  // one thread, made at first use
};

}  // namespace hastnbd
