#include "hastnbd/base/net.h"

#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>

namespace hastnbd {

namespace {
constexpr auto kFirstDelay = std::chrono::milliseconds(10);
constexpr auto kMaxDelay = std::chrono::seconds(1);
constexpr auto kOtherErrorDelay = std::chrono::milliseconds(100);


bool out_of_resources(const error_code& ec) {
  const int e = ec.value();
  return ec.category() == boost::system::system_category() &&
         (e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM);
}
}  // namespace

std::string Address::to_string() const {
  const std::string p = std::to_string(port);
  return host.find(':') != std::string::npos ? "[" + host + "]:" + p : host + ":" + p;
}

Result<std::shared_ptr<asio::ip::tcp::acceptor>> tcp_listen(asio::io_context& io, const Address& address,
                                                            const std::string& what, int backlog) {
  error_code ec;
  asio::ip::tcp::resolver resolver(io);
  auto results = resolver.resolve(address.host, std::to_string(address.port), ec);
  if (ec || results.empty())
    return Status::Error(EINVAL, what + " " + address.to_string() + ": cannot resolve: " + ec.message());
  auto ep = results.begin()->endpoint();
  auto acceptor = std::make_shared<asio::ip::tcp::acceptor>(io);
  acceptor->open(ep.protocol(), ec);
  if (!ec) acceptor->set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor->bind(ep, ec);
  if (!ec) acceptor->listen(backlog, ec);
  if (ec) return Status::Error(ec.value(), what + " " + address.to_string() + ": " + ec.message());
  return acceptor;
}

Result<std::shared_ptr<asio::local::stream_protocol::acceptor>> unix_listen(asio::io_context& io,
                                                                            const std::string& path, mode_t mode,
                                                                            const std::string& what, int backlog) {
  ::unlink(path.c_str());
  auto acceptor = std::make_shared<asio::local::stream_protocol::acceptor>(io);
  error_code ec;
  acceptor->open(asio::local::stream_protocol(), ec);
  if (!ec) {
    // The umask decides the mode bind() gives the socket file. Only the loop
    // thread creates files, so changing it here races with nothing.
    const mode_t old = ::umask(~mode & 0777);
    acceptor->bind(asio::local::stream_protocol::endpoint(path), ec);
    ::umask(old);
  }
  if (!ec && ::chmod(path.c_str(), mode) != 0) ec = error_code(errno, boost::system::system_category());
  if (!ec) acceptor->listen(backlog, ec);
  if (ec) return Status::Error(ec.value(), what + " " + path + ": " + ec.message());
  return acceptor;
}

std::string remote_address(const asio::ip::tcp::socket& socket) {
  error_code ec;
  auto ep = socket.remote_endpoint(ec);
  if (ec) return "";
  auto addr = ep.address();
  const std::string host = addr.to_string();
  return (addr.is_v6() ? "[" + host + "]" : host) + ":" + std::to_string(ep.port());
}

awaitable<void> AcceptBackoff::failed(const error_code& ec) {
  ++failures_;
  std::chrono::milliseconds wait = kOtherErrorDelay;
  if (out_of_resources(ec)) {
    delay_ = std::clamp<std::chrono::milliseconds>(delay_ * 2, kFirstDelay, kMaxDelay);
    wait = delay_;
  }
  if (log_.allow())
    spdlog::warn("{}: accept: {}{}; retrying in {} ms", what_, ec.message(), log_.suppressed_note("failures"),
                 wait.count());
  asio::steady_timer timer(co_await asio::this_coro::executor, wait);
  co_await timer.async_wait(use_nothrow);
}

}  // namespace hastnbd
