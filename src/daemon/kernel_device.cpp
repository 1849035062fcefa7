#include "hastnbd/daemon/kernel_device.h"

#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <vector>

#include "hastnbd/base/logging.h"
#include "hastnbd/nbd/kernel.h"

namespace hastnbd {

KernelDevice::KernelDevice(asio::io_context& io, const ResourceConfig& config, NbdServer& nbd)
    : io_(io), config_(config), nbd_(nbd) {}

KernelDevice::~KernelDevice() = default;

template <class F>
awaitable<std::invoke_result_t<F>> KernelDevice::blocking(F f) {
  using R = std::invoke_result_t<F>;
  if (!pool_) pool_ = std::make_unique<asio::thread_pool>(1);
  auto& pool = *pool_;
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

void KernelDevice::failed(const Status& s) {
  error_ = s.message();
  spdlog::error("resource {}: {} not attached: {}", config_.name, config_.nbd.device, s.message());
}

awaitable<void> KernelDevice::attach(uint64_t size) {
  const std::string& path = config_.nbd.device;
  auto index = nbd_device_index(path);
  attached_ = false;
  error_.clear();
  index_ = -1;
  since_ = std::chrono::system_clock::now();
  if (!index.ok()) co_return failed(index.status());
  index_ = *index;
  const std::string backend = "hastnbd:" + config_.name + "@" + config_.node;
  // A daemon of this resource that died while attached leaves the device
  // connected to dead sockets; take it back if nobody uses it.
  if (kernel_nbd::backend(index_) == backend) {
    std::string in_use = co_await users();
    if (!in_use.empty())
      co_return failed(Status::Error(EBUSY, "still attached from an earlier run of this daemon and in use (" + in_use +
                                                "): unmount it, then 'hastnbd-ctl role primary' again"));
    spdlog::warn("resource {}: {} still attached from an earlier run; detaching it first", config_.name, path);
    if (Status s = co_await blocking([i = index_] { return kernel_nbd::disconnect(i); }); !s.ok()) co_return failed(s);
  }
  kernel_nbd::AttachParams p;
  p.index = index_;
  p.size = size;
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
      co_return failed(Status::Error(err, std::string("socketpair: ") + std::strerror(err)));
    }
    ours.push_back(sv[0]);
    p.fds.push_back(sv[1]);
  }
  // Served before the kernel has them: it may read (partition scan, udev's
  // blkid) as soon as the device starts.
  for (size_t i = 0; i < ours.size(); ++i)
    nbd_.serve_connection(
        asio::generic::stream_protocol::socket(io_, asio::generic::stream_protocol(AF_UNIX, SOCK_STREAM), ours[i]),
        path + " #" + std::to_string(i + 1), /*kernel=*/true);
  // Named before the co_await: GCC 12 copies a closure temporary's captures
  // bitwise into the coroutine frame (a string or vector then shares memory).
  auto connect = [p] { return kernel_nbd::connect(p); };
  Status s = co_await blocking(std::move(connect));
  for (int fd : p.fds) ::close(fd);  // the kernel holds its own references; on failure our ends see EOF
  if (!s.ok()) co_return failed(s);
  attached_ = true;
  spdlog::info("resource {}: {} attached ({} bytes, block size {}, {} connection(s))", config_.name, path, p.size,
               p.block_size, p.fds.size());
}

awaitable<void> KernelDevice::detach() {
  if (!attached_) co_return;
  attached_ = false;
  since_ = std::chrono::system_clock::now();
  Status s = co_await blocking([i = index_] { return kernel_nbd::disconnect(i); });
  if (!s.ok()) {
    error_ = s.message();
    spdlog::error("resource {}: {}", config_.name, s.message());
    co_return;
  }
  error_.clear();
  spdlog::info("resource {}: {} detached", config_.name, config_.nbd.device);
}

awaitable<std::string> KernelDevice::users() {
  auto who = [path = config_.nbd.device, i = index_] { return kernel_nbd::users(path, i); };
  co_return co_await blocking(std::move(who));
}

nlohmann::json KernelDevice::status() const {
  return {{"path", config_.nbd.device},
          {"attached", attached_ && nbd_.kernel_clients() > 0},
          {"connections", nbd_.kernel_clients()},
          {"since", index_ < 0 ? "" : iso_time(since_)},
          {"error", error_}};
}

}  // namespace hastnbd
