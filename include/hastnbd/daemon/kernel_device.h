// The kernel's /dev/nbdN of a primary with `nbd.device` (docs/design.md,
// "Kernel device"): attached after a promotion over the nbd netlink
// interface, with one socketpair per connection whose other ends the NBD
// server serves straight into the transmission phase; detached before the
// export closes. A failed attach leaves the node primary with the reason in
// status (the Unix socket still serves nbd-client).
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
#include "hastnbd/nbd/server.h"

namespace hastnbd {

class KernelDevice {
 public:
  KernelDevice(asio::io_context& io, const ResourceConfig& config, NbdServer& nbd);
  ~KernelDevice();

  bool configured() const { return !config_.nbd.device.empty(); }
  bool attached() const { return attached_; }
  // Attach for an export of `size` bytes. A device still attached by an
  // earlier run of this resource (same backend id) is detached first, unless
  // it is in use. Failures are logged and kept for status().
  awaitable<void> attach(uint64_t size);
  awaitable<void> detach();
  // Who uses the device ("" = nobody): see kernel_nbd::users.
  awaitable<std::string> users();
  nlohmann::json status() const;

 private:
  template <class F>
  awaitable<std::invoke_result_t<F>> blocking(F f);
  void failed(const Status& s);

  asio::io_context& io_;
  const ResourceConfig& config_;
  NbdServer& nbd_;
  int index_ = -1;
  bool attached_ = false;  // we attached it (and have not detached it since)
  std::string error_;      // why the last attach or detach failed
  std::chrono::system_clock::time_point since_;
  std::unique_ptr<asio::thread_pool> pool_;  // one thread, made at first use
};

}  // namespace hastnbd
