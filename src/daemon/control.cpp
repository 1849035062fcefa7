#include "hastnbd/daemon/control.h"

#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstring>

#include "hastnbd/base/net.h"

namespace hastnbd {

json control_error(const Status& s) { return json{{"ok", false}, {"error", s.message()}, {"errno", s.code()}}; }

ControlServer::ControlServer(asio::io_context& io, ControlHandler handler) : io_(io), handler_(std::move(handler)) {}

ControlServer::~ControlServer() { close(); }

Status ControlServer::listen(const std::string& path) {
  auto probe = control_call(path, json{{"cmd", "ping"}}, 1000);
  if (probe.ok()) return Status::Error(EADDRINUSE, "control socket " + path + " is served by another running process");
  auto acceptor = unix_listen(io_, path, 0600, "control socket", 16);
  if (!acceptor.ok()) return acceptor.status();
  path_ = path;
  acceptor_ = *acceptor;
  start_accepting<asio::local::stream_protocol::acceptor>(io_, acceptor_, "control socket " + path,
                                                          [this](asio::local::stream_protocol::socket sock) {
                                                            asio::co_spawn(io_, serve(std::move(sock)), asio::detached);
                                                          });
  return Status::Ok();
}

void ControlServer::close() {
  if (!acceptor_) return;
  error_code ec;
  acceptor_->close(ec);
  acceptor_.reset();
  ::unlink(path_.c_str());
}

awaitable<void> ControlServer::serve(asio::local::stream_protocol::socket socket) {
  // A client that connects and says nothing must not pin the connection.
  asio::steady_timer deadline(io_, std::chrono::seconds(10));
  deadline.async_wait([&socket](error_code ec) {
    if (!ec) socket.close(ec);
  });
  std::string line;
  auto [ec, n] =
      co_await asio::async_read_until(socket, asio::dynamic_buffer(line, kMaxControlRequest), '\n', use_nothrow);
  deadline.cancel();
  if (ec) co_return;
  json reply;
  json request = json::parse(line.substr(0, n), nullptr, /*allow_exceptions=*/false);
  if (request.is_discarded() || !request.is_object() || !request.contains("cmd") || !request["cmd"].is_string())
    reply = control_error(Status::Error(EINVAL, "malformed control request"));
  else
    reply = co_await handler_(request);
  std::string out = reply.dump() + "\n";
  co_await asio::async_write(socket, asio::buffer(out), use_nothrow);
}

Result<json> control_call(const std::string& path, const json& request, int timeout_ms) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Status::Error(errno, std::string("socket: ") + std::strerror(errno));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) {
    ::close(fd);
    return Status::Error(ENAMETOOLONG, "control socket path too long: " + path);
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    int e = errno;
    ::close(fd);
    return Status::Error(e, "cannot reach hastnbd at " + path + ": " + std::strerror(e));
  }
  std::string out = request.dump() + "\n";
  const char* p = out.data();
  size_t left = out.size();
  while (left > 0) {
    ssize_t w = ::send(fd, p, left, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) {
      int e = errno;
      ::close(fd);
      return Status::Error(e, std::string("control write: ") + std::strerror(e));
    }
    p += w;
    left -= size_t(w);
  }
  std::string in;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    auto remaining = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (remaining.count() <= 0) {
      ::close(fd);
      return Status::Error(ETIMEDOUT,
                           "no reply from hastnbd at " + path + " within " + std::to_string(timeout_ms / 1000) + " s");
    }
    pollfd pfd{fd, POLLIN, 0};
    int pr = ::poll(&pfd, 1, int(remaining.count()));
    if (pr < 0 && errno == EINTR) continue;
    if (pr <= 0) continue;
    char buf[4096];
    ssize_t r = ::read(fd, buf, sizeof buf);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    in.append(buf, size_t(r));
    if (in.size() > (16u << 20)) break;
  }
  ::close(fd);
  json reply = json::parse(in, nullptr, false);
  if (reply.is_discarded() || !reply.is_object())
    return Status::Error(EPROTO, "malformed reply from hastnbd at " + path);
  return reply;
}

}  // namespace hastnbd
