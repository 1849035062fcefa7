// Listening sockets and the accept loop every listener shares (NBD on a Unix
// socket and on TCP, the peer link, the control socket, metrics).
//
// accept_loop() hands each accepted socket to its callback until the
// acceptor is closed. When accepting fails for want of descriptors or memory
// (EMFILE, ENFILE, ENOBUFS, ENOMEM) it backs off, 10 ms doubling to 1 s, and
// logs at most one line a second per listener with the count it held back,
// so an exhausted process neither spins nor floods the log; connections
// already open go on. Loop thread only.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include <sys/types.h>

#include "hastnbd/base/asio.h"
#include "hastnbd/base/logging.h"
#include "hastnbd/base/status.h"

namespace hastnbd {

// A configured TCP address: "HOST:PORT" or "[V6ADDR]:PORT" (config parses and
// validates it).
struct Address {
  std::string host;
  uint16_t port = 0;
  std::string to_string() const;  // round-trips through config's parse_address
  bool operator==(const Address&) const = default;
};

// Resolved once (numeric in practice), SO_REUSEADDR, bound and listening, or
// an error naming `what` and the address.
Result<std::shared_ptr<asio::ip::tcp::acceptor>> tcp_listen(asio::io_context& io, const Address& address,
                                                            const std::string& what,
                                                            int backlog = asio::socket_base::max_listen_connections);

// Bound at `path` with permissions `mode` from the start (the socket never
// exists with wider ones), and listening. A stale socket file at `path` is
// removed first: callers make sure no live process owns it.
Result<std::shared_ptr<asio::local::stream_protocol::acceptor>> unix_listen(asio::io_context& io,
                                                                            const std::string& path, mode_t mode,
                                                                            const std::string& what, int backlog);

// "ADDR:PORT" of a TCP socket's peer, "" if it has none.
std::string remote_address(const asio::ip::tcp::socket& socket);

// The pacing of one listener's failed accepts (used by accept_loop).
class AcceptBackoff {
 public:
  explicit AcceptBackoff(std::string what) : what_(std::move(what)) {}
  // Waits as long as `ec` calls for, and logs it (rate limited).
  awaitable<void> failed(const error_code& ec);
  void succeeded() { delay_ = std::chrono::milliseconds(0); }
  uint64_t failures() const { return failures_; }

 private:
  std::string what_;
  std::chrono::milliseconds delay_{0};
  LogLimiter log_{std::chrono::seconds(1)};
  uint64_t failures_ = 0;
};

// Runs until `acceptor` is closed; `on_accept` takes each new socket.
template <class Acceptor>
awaitable<void> accept_loop(std::shared_ptr<Acceptor> acceptor, std::string what,
                            std::function<void(typename Acceptor::protocol_type::socket)> on_accept) {
  AcceptBackoff backoff(std::move(what));
  for (;;) {
    auto [ec, socket] = co_await acceptor->async_accept(use_nothrow);
    if (!acceptor->is_open()) co_return;
    if (ec) {
      co_await backoff.failed(ec);
      continue;
    }
    backoff.succeeded();
    on_accept(std::move(socket));
  }
}

// Spawns accept_loop on `io`.
template <class Acceptor>
void start_accepting(asio::io_context& io, std::shared_ptr<Acceptor> acceptor, std::string what,
                     std::function<void(typename Acceptor::protocol_type::socket)> on_accept) {
  asio::co_spawn(io, accept_loop<Acceptor>(std::move(acceptor), std::move(what), std::move(on_accept)), asio::detached);
}

}  // namespace hastnbd
