// The NBD server: fixed newstyle handshake, then the transmission phase with
// many requests in flight per connection and replies in completion order.
//
// Each request goes validate -> handle -> reply; error mapping lives in
// nbd_proto. A bad request gets an error reply and the connection goes on; a
// protocol violation (bad magic, truncated handshake, unknown flags) closes
// only that connection. Listeners on a Unix socket and optionally TCP.
// Loop thread only. The backend and pool must outlive the server.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <set>
#include <string>

#include "hastnbd/base/asio.h"
#include "hastnbd/nbd/backend.h"
#include "hastnbd/base/buffer.h"
#include "hastnbd/base/net.h"
#include "hastnbd/nbd/op_metrics.h"
#include "hastnbd/base/status.h"

namespace hastnbd {

struct NbdStats {
  uint64_t connections_total = 0;
  uint64_t requests = 0;
  uint64_t bytes_read = 0;
  uint64_t bytes_written = 0;
  uint64_t errors = 0;  // requests answered with an error
};

class NbdServer {
 public:
  NbdServer(asio::io_context& io, BufferPool& pool, BlockBackend& backend, std::string export_name);
  ~NbdServer();

  Status listen_unix(const std::string& path);
  Status listen_tcp(const Address& address);
  // Stop accepting; existing clients go on.
  void stop_listening();
  // Stop accepting, let every connection finish its in-flight requests and
  // send their replies, then close them all.
  awaitable<void> shutdown();

  // Serve one already-connected socket (also how tests and the fuzzer feed
  // the server without a listener). `kernel`: the socket goes straight to the
  // transmission phase, for the kernel's end of a socketpair handed over by
  // netlink (nbd/kernel.h), which negotiates nothing.
  // `on_end` runs on the loop once the connection is over and removed.
  void serve_connection(asio::generic::stream_protocol::socket socket, std::string peer, bool kernel = false,
                        std::function<void()> on_end = {});

  size_t clients() const { return connections_.size(); }
  size_t kernel_clients() const;  // of clients(), those of an attached /dev/nbdN
  // What every client is offered (and the kernel told at attach).
  static uint16_t transmission_flags();
  const NbdStats& stats() const { return stats_; }
  const NbdOpMetrics& op_metrics() const { return ops_; }
  uint64_t requests_in_flight() const;

  class Connection;

 private:
  friend class Connection;
  asio::io_context& io_;
  BufferPool& pool_;
  BlockBackend& backend_;
  std::string export_name_;
  std::string unix_path_;
  std::shared_ptr<asio::local::stream_protocol::acceptor> unix_acceptor_;
  std::shared_ptr<asio::ip::tcp::acceptor> tcp_acceptor_;
  std::set<std::shared_ptr<Connection>> connections_;
  AsyncCondition connections_changed_;
  NbdOpMetrics ops_;
  NbdStats stats_;
  uint64_t next_id_ = 1;
};

}  // namespace hastnbd
