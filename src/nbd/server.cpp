#include "hastnbd/nbd/server.h"

#include <spdlog/spdlog.h>

#include "connection.h"
#include "hastnbd/base/net.h"

namespace hastnbd {

using namespace nbd_limits;

NbdServer::NbdServer(asio::io_context& io, BufferPool& pool, BlockBackend& backend, std::string export_name)
    : io_(io),
      pool_(pool),
      backend_(backend),
      export_name_(std::move(export_name)),
      connections_changed_(io.get_executor()) {}

NbdServer::~NbdServer() { stop_listening(); }

Status NbdServer::listen_unix(const std::string& path) {
  // A socket file left by a crashed daemon would make bind fail; the metadata
  // lock guarantees no live daemon for this resource owns it.
  auto acceptor = unix_listen(io_, path, 0660, "NBD socket", asio::socket_base::max_listen_connections);
  if (!acceptor.ok()) return acceptor.status();
  unix_path_ = path;
  unix_acceptor_ = *acceptor;
  start_accepting<asio::local::stream_protocol::acceptor>(
      io_, unix_acceptor_, "nbd " + path, [this](asio::local::stream_protocol::socket sock) {
        serve_connection(asio::generic::stream_protocol::socket(std::move(sock)), "unix socket");
      });
  spdlog::info("nbd: serving export '{}' on {}", export_name_, path);
  return Status::Ok();
}

Status NbdServer::listen_tcp(const Address& address) {
  auto acceptor = tcp_listen(io_, address, "NBD listener");
  if (!acceptor.ok()) return acceptor.status();
  tcp_acceptor_ = *acceptor;
  start_accepting<asio::ip::tcp::acceptor>(
      io_, tcp_acceptor_, "nbd tcp " + address.to_string(), [this](asio::ip::tcp::socket sock) {
        error_code ignored;
        sock.set_option(asio::ip::tcp::no_delay(true), ignored);
        std::string peer = "tcp " + remote_address(sock);
        serve_connection(asio::generic::stream_protocol::socket(std::move(sock)), peer);
      });
  spdlog::info("nbd: serving export '{}' on tcp {}", export_name_, address.to_string());
  return Status::Ok();
}

void NbdServer::stop_listening() {
  error_code ec;
  if (unix_acceptor_) {
    unix_acceptor_->close(ec);
    unix_acceptor_.reset();
    ::unlink(unix_path_.c_str());
  }
  if (tcp_acceptor_) {
    tcp_acceptor_->close(ec);
    tcp_acceptor_.reset();
  }
}

void NbdServer::serve_connection(asio::generic::stream_protocol::socket socket, std::string peer, bool kernel,
                                 std::function<void()> on_end) {
  auto conn = std::make_shared<Connection>(*this, std::move(socket), std::move(peer), next_id_++, kernel);
  connections_.insert(conn);
  ++stats_.connections_total;
  asio::co_spawn(
      io_,
      [this, conn, on_end = std::move(on_end)]() -> awaitable<void> {
        co_await conn->run();
        connections_.erase(conn);
        connections_changed_.notify_all();
        if (on_end) on_end();
      },
      asio::detached);
}

size_t NbdServer::kernel_clients() const {
  size_t n = 0;
  for (const auto& c : connections_) n += c->kernel();
  return n;
}

uint16_t NbdServer::transmission_flags() { return kTransmissionFlags; }

uint64_t NbdServer::requests_in_flight() const {
  uint64_t n = 0;
  for (const auto& c : connections_) n += c->inflight();
  return n;
}

awaitable<void> NbdServer::shutdown() {
  stop_listening();
  for (const auto& c : connections_) c->stop_reading();
  while (!connections_.empty()) co_await connections_changed_.wait();
}

}  // namespace hastnbd
