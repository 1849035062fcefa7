#include "hastnbd/daemon/kernel_device.h"

#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>

#include <cstring>
#include <fstream>
#include <vector>

#include "hastnbd/base/files.h"
#include "hastnbd/base/logging.h"
#include "hastnbd/nbd/kernel.h"

namespace hastnbd {

namespace {

// `n` socketpairs: our ends and the kernel's. On failure none is left open.
Status socket_pairs(unsigned n, std::vector<int>& ours, std::vector<int>& theirs) {
  for (unsigned i = 0; i < n; ++i) {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
      const int err = errno;
      for (int fd : ours) ::close(fd);
      for (int fd : theirs) ::close(fd);
      ours.clear();
      theirs.clear();
      return Status::Error(err, std::string("socketpair: ") + std::strerror(err));
    }
    ours.push_back(sv[0]);
    theirs.push_back(sv[1]);
  }
  return Status::Ok();
}

}  // namespace

KernelDevice::KernelDevice(asio::io_context& io, const ResourceConfig& config, NbdServer& nbd)
    : io_(io), config_(config), nbd_(nbd) {}

KernelDevice::~KernelDevice() { *alive_ = false; }

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

std::string KernelDevice::backend_id() const { return "hastnbd:" + config_.name + "@" + config_.node; }

bool KernelDevice::left_attached() const {
  auto index = nbd_device_index(config_.nbd.device);
  return index.ok() && kernel_nbd::backend(*index) == backend_id();
}

kernel_nbd::AttachParams KernelDevice::params() const {
  kernel_nbd::AttachParams p;
  p.index = index_;
  p.size = size_;
  p.block_size = p.size % 4096 == 0 ? 4096 : 512;
  p.server_flags = NbdServer::transmission_flags();
  // A request unanswered after io_timeout is sent again by the kernel on a
  // fresh connection (the one it gave up on is replaced: connection_ended),
  // so a short timeout bounds what a daemon restart stalls and costs only
  // a resend when a request is merely slow (docs/design.md, "Kernel device").
  p.timeout_s = config_.nbd.io_timeout;
  p.dead_conn_timeout_s = config_.nbd.reconnect_timeout;
  p.backend = backend_id();
  return p;
}

void KernelDevice::serve(int fd, unsigned n) {
  nbd_.serve_connection(
      asio::generic::stream_protocol::socket(io_, asio::generic::stream_protocol(AF_UNIX, SOCK_STREAM), fd),
      config_.nbd.device + " #" + std::to_string(n), /*kernel=*/true,
      [this, alive = std::weak_ptr<bool>(alive_)] {
        if (alive.lock()) connection_ended();
      });
}

awaitable<KernelDevice::Handover> KernelDevice::hand_over(unsigned n) {
  kernel_nbd::AttachParams p = params();
  std::vector<int> ours;
  if (Status s = socket_pairs(n, ours, p.fds); !s.ok()) co_return Handover{s};
  // Unlike a first attach, nothing is served before the kernel has the
  // sockets: what it sends at once waits in them until serve() below.
  struct Result {
    Status status;
    std::vector<bool> taken;
  };
  auto call = [p, ours] {
    Result r;
    r.status = kernel_nbd::reconfigure(p, ours, r.taken);  // closes p.fds
    return r;
  };
  Result r = co_await blocking(std::move(call));
  Handover h{r.status, 0};
  for (size_t i = 0; i < ours.size(); ++i) {
    if (r.status.ok() && r.taken[i]) {
      serve(ours[i], ++served_);
      ++h.taken;
    } else {
      ::close(ours[i]);
    }
  }
  co_return h;
}

void KernelDevice::write_heartbeat_count() const {
  // A failure only costs the next run its count and stall figure.
  (void)write_private_file(heartbeat_path(), std::to_string(retaken_) + "\n");
}

awaitable<void> KernelDevice::heartbeat() {
  auto alive = alive_;
  heartbeat_running_ = true;
  asio::steady_timer timer(io_);
  const std::string path = heartbeat_path();
  while (*alive && attached_ && !keep_) {
    // A tmpfs file in RUN_DIR: no disk I/O. Created 0600; failures only
    // cost the next run its stall figure.
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd >= 0) {
      ::futimens(fd, nullptr);
      ::close(fd);
    }
    timer.expires_after(std::chrono::seconds(1));
    co_await timer.async_wait(use_nothrow);
  }
  if (*alive) heartbeat_running_ = false;
}

void KernelDevice::connection_ended() {
  if (!attached_ || keep_ || replacing_) return;
  asio::co_spawn(io_, replace_connections(), asio::detached);
}

awaitable<void> KernelDevice::replace_connections() {
  auto alive = alive_;
  replacing_ = true;
  asio::steady_timer timer(io_);
  auto wait = std::chrono::milliseconds(20);
  unsigned tries = 0;
  while (attached_ && !keep_ && nbd_.kernel_clients() < config_.nbd.connections) {
    const unsigned missing = config_.nbd.connections - unsigned(nbd_.kernel_clients());
    Handover h = co_await hand_over(missing);
    if (!*alive) co_return;
    if (!h.status.ok()) {
      // Detached by someone else (nbd-client -d) or taken by another backend.
      error_ = h.status.message();
      attached_ = false;
      spdlog::error("resource {}: {} lost: {}", config_.name, config_.nbd.device, h.status.message());
      break;
    }
    replaced_ += h.taken;
    if (h.taken > 0)
      spdlog::warn("resource {}: {}: the kernel dropped {} connection(s); {} handed a new one (requests it had in "
                   "flight are sent again)",
                   config_.name, config_.nbd.device, missing, h.taken);
    if (h.taken == missing) break;
    // The kernel has not marked the connection dead yet: it does once it
    // sees our end closed.
    if (++tries == 50)
      spdlog::warn("resource {}: {}: the kernel keeps {} connection(s) alive that this daemon no longer serves; "
                   "retrying",
                   config_.name, config_.nbd.device, missing - h.taken);
    timer.expires_after(wait);
    co_await timer.async_wait(use_nothrow);
    if (!*alive) co_return;
    wait = std::min<std::chrono::milliseconds>(wait * 2, std::chrono::seconds(2));
  }
  replacing_ = false;
}

awaitable<void> KernelDevice::attach(uint64_t size) {
  const std::string& path = config_.nbd.device;
  auto index = nbd_device_index(path);
  attached_ = false;
  keep_ = false;
  error_.clear();
  index_ = -1;
  size_ = size;
  since_ = std::chrono::system_clock::now();
  if (!index.ok()) co_return failed(index.status());
  index_ = *index;
  // An earlier run of this resource that exited or died left the device
  // attached to dead sockets: hand the kernel new ones and go on.
  if (kernel_nbd::backend(index_) == backend_id()) {
    struct stat st {};
    last_stall_s_ = -1;
    if (::stat(heartbeat_path().c_str(), &st) == 0) {
      const auto mtime = std::chrono::system_clock::time_point(std::chrono::seconds(st.st_mtim.tv_sec) +
                                                               std::chrono::nanoseconds(st.st_mtim.tv_nsec));
      last_stall_s_ = std::max(0.0, std::chrono::duration<double>(std::chrono::system_clock::now() - mtime).count());
    }
    {
      std::ifstream in(heartbeat_path());
      uint64_t n = 0;
      if (in >> n) retaken_ = n;
    }
    Handover h = co_await hand_over(config_.nbd.connections);
    if (h.status.ok() && h.taken > 0) {
      attached_ = true;
      ++retaken_;
      write_heartbeat_count();
      if (last_stall_s_ > config_.nbd.reconnect_timeout) {
        // The kernel has already failed the device's I/O; what was mounted
        // on it has most likely given up (ext4 aborts its journal).
        error_ = "re-taken " + std::to_string(int(last_stall_s_)) + " s after the previous run last served it, " +
                 "later than nbd.reconnect_timeout (" + std::to_string(config_.nbd.reconnect_timeout) +
                 " s): the kernel failed its I/O meanwhile; unmount, check the file system, mount again";
        spdlog::error("resource {}: {}: {}", config_.name, path, error_);
      } else {
        spdlog::warn("resource {}: {} was still attached by an earlier run of this daemon; re-took it with {} new "
                     "connection(s) after {} (the kernel sends again what it had in flight)",
                     config_.name, path, h.taken,
                     last_stall_s_ < 0 ? std::string("an unknown time")
                                       : fmt::format("{:.1f} s unserved", last_stall_s_));
      }
      if (h.taken < config_.nbd.connections) connection_ended();
      if (!heartbeat_running_) asio::co_spawn(io_, heartbeat(), asio::detached);
      co_return;
    }
    if (h.status.ok())
      co_return failed(Status::Error(EBUSY, "attached as this resource ('" + backend_id() +
                                                "') with every connection alive: another process serves it"));
    if (kernel_nbd::connected(index_)) co_return failed(h.status);
    // Detached meanwhile: attach afresh below.
  }
  kernel_nbd::AttachParams p = params();
  std::vector<int> ours;
  if (Status s = socket_pairs(config_.nbd.connections, ours, p.fds); !s.ok()) co_return failed(s);
  // Served before the kernel has them: it may read (partition scan, udev's
  // blkid) as soon as the device starts.
  for (int fd : ours) serve(fd, ++served_);
  // Named before the co_await: GCC 12 copies a closure temporary's captures
  // bitwise into the coroutine frame (a string or vector then shares memory).
  auto connect = [p] { return kernel_nbd::connect(p); };
  Status s = co_await blocking(std::move(connect));
  for (int fd : p.fds) ::close(fd);  // the kernel holds its own references; on failure our ends see EOF
  if (!s.ok()) co_return failed(s);
  attached_ = true;
  retaken_ = 0;
  write_heartbeat_count();
  if (!heartbeat_running_) asio::co_spawn(io_, heartbeat(), asio::detached);
  spdlog::info("resource {}: {} attached ({} bytes, block size {}, {} connection(s), request timeout {} s, "
               "reconnect timeout {} s)",
               config_.name, path, p.size, p.block_size, p.fds.size(), p.timeout_s, p.dead_conn_timeout_s);
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
          {"retaken", retaken_},
          {"last_stall_seconds",
           last_stall_s_ < 0 ? nlohmann::json(nullptr) : nlohmann::json(std::round(last_stall_s_ * 1000) / 1000)},
          {"connections_replaced", replaced_},
          {"error", error_}};
}

}  // namespace hastnbd
