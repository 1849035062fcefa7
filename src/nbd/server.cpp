#include "hastnbd/nbd/server.h"

#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cstring>
#include <deque>

#include "hastnbd/base/net.h"
#include "hastnbd/nbd/protocol.h"

namespace hastnbd {

namespace {

constexpr size_t kReadBufferSize = 256 * 1024;
constexpr size_t kDirectReadThreshold = 64 * 1024;  // larger payloads skip the read buffer
constexpr unsigned kMaxInflightRequests = 256;
constexpr uint64_t kMaxInflightBytes = 256ull << 20;  // > kMaxPayload so one maximal request always fits
constexpr unsigned kMaxOptions = 128;                 // a client haggling longer is hostile
constexpr auto kHandshakeTimeout = std::chrono::seconds(30);
constexpr size_t kMaxGather = 64;                     // replies per writev
constexpr unsigned kLoggedBadRequests = 5;            // then only counted

constexpr uint16_t kTransmissionFlags = nbd::kTxHasFlags | nbd::kTxSendFlush | nbd::kTxSendFua |
                                        nbd::kTxSendTrim | nbd::kTxSendWriteZeroes | nbd::kTxCanMultiConn;

}  // namespace

class NbdServer::Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(NbdServer& server, asio::generic::stream_protocol::socket socket, std::string peer, uint64_t id,
             bool kernel)
      : server_(server),
        socket_(std::move(socket)),
        peer_(std::move(peer)),
        id_(id),
        kernel_(kernel),
        rbuf_(kReadBufferSize),
        changed_(socket_.get_executor()),
        handshake_timer_(socket_.get_executor()) {}

  awaitable<void> run();
  void stop_reading() {
    stop_ = true;
    error_code ec;
    socket_.shutdown(asio::socket_base::shutdown_receive, ec);
  }
  unsigned inflight() const { return inflight_; }
  bool kernel() const { return kernel_; }

 private:
  struct PendingReply {
    std::array<uint8_t, nbd::kSimpleReplySize> header;
    Buffer data;
  };

  awaitable<bool> read_exact(uint8_t* dst, size_t n);
  awaitable<bool> drain(uint64_t n);
  awaitable<bool> send(std::span<const uint8_t> bytes);
  awaitable<void> negotiate_then_transmit();
  awaitable<bool> handshake();
  awaitable<bool> handle_go(uint32_t option, std::span<const uint8_t> payload);
  awaitable<void> transmission();
  awaitable<void> writer();
  static awaitable<void> handle(std::shared_ptr<Connection> self, nbd::Request r, Buffer payload);
  void queue_reply(uint32_t error, uint64_t handle, Buffer data);
  void note_bad_request(const nbd::Request& r, const char* why);

  NbdServer& server_;
  asio::generic::stream_protocol::socket socket_;
  std::string peer_;
  uint64_t id_;
  bool kernel_;  // the kernel's end of a socketpair: negotiated already, no handshake
  std::vector<uint8_t> rbuf_;
  size_t rhead_ = 0, rtail_ = 0;
  std::deque<PendingReply> replies_;
  AsyncCondition changed_;  // replies queued, requests finished, writer done
  asio::steady_timer handshake_timer_;
  unsigned inflight_ = 0;
  uint64_t inflight_bytes_ = 0;
  uint64_t requests_ = 0;
  unsigned bad_requests_ = 0;
  bool no_zeroes_ = false;
  bool stop_ = false;
  bool reading_done_ = false;
  bool writer_done_ = false;
  bool write_failed_ = false;
  std::string end_reason_ = "client closed the connection";
};

awaitable<bool> NbdServer::Connection::read_exact(uint8_t* dst, size_t n) {
  if (n == 0) co_return true;  // dst may be null (an empty option payload)
  size_t take = std::min(n, rtail_ - rhead_);
  std::memcpy(dst, rbuf_.data() + rhead_, take);
  rhead_ += take;
  dst += take;
  n -= take;
  if (n == 0) co_return true;
  rhead_ = rtail_ = 0;
  if (n >= kDirectReadThreshold) {
    auto [ec, got] = co_await asio::async_read(socket_, asio::buffer(dst, n), large_transfers, use_nothrow);
    co_return !ec;
  }
  while (n > 0) {
    auto [ec, got] = co_await socket_.async_read_some(asio::buffer(rbuf_.data() + rtail_, rbuf_.size() - rtail_),
                                                       use_nothrow);
    if (ec) co_return false;
    rtail_ += got;
    take = std::min(n, rtail_ - rhead_);
    std::memcpy(dst, rbuf_.data() + rhead_, take);
    rhead_ += take;
    dst += take;
    n -= take;
  }
  co_return true;
}

awaitable<bool> NbdServer::Connection::drain(uint64_t n) {
  std::array<uint8_t, 64 * 1024> scratch;
  while (n > 0) {
    size_t chunk = std::min<uint64_t>(n, scratch.size());
    if (!co_await read_exact(scratch.data(), chunk)) co_return false;
    n -= chunk;
  }
  co_return true;
}

awaitable<bool> NbdServer::Connection::send(std::span<const uint8_t> bytes) {
  auto [ec, n] = co_await asio::async_write(socket_, asio::buffer(bytes.data(), bytes.size()), large_transfers, use_nothrow);
  co_return !ec;
}

awaitable<void> NbdServer::Connection::run() {
  spdlog::info("nbd: client {} connected ({})", id_, peer_);
  if (kernel_) {
    co_await transmission();
  } else {
    co_await negotiate_then_transmit();
  }
  spdlog::info("nbd: client {} disconnected: {} ({} requests{})", id_, end_reason_, requests_,
               bad_requests_ ? fmt::format(", {} refused", bad_requests_) : std::string());
  error_code ec;
  socket_.close(ec);
}

awaitable<void> NbdServer::Connection::negotiate_then_transmit() {
  handshake_timer_.expires_after(kHandshakeTimeout);
  handshake_timer_.async_wait([self = shared_from_this()](error_code ec) {
    if (ec) return;
    self->end_reason_ = "handshake timed out";
    error_code ignored;
    self->socket_.close(ignored);
  });
  bool attached = co_await handshake();
  handshake_timer_.cancel();
  if (attached) co_await transmission();
}

awaitable<bool> NbdServer::Connection::handshake() {
  if (!co_await send(nbd::encode_greeting())) {
    end_reason_ = "client went away during the greeting";
    co_return false;
  }
  uint8_t flags_bytes[4];
  if (!co_await read_exact(flags_bytes, 4)) {
    end_reason_ = "truncated handshake (no client flags)";
    co_return false;
  }
  uint32_t client_flags = nbd::get_be32(flags_bytes);
  if (client_flags & ~(nbd::kClientFlagFixedNewstyle | nbd::kClientFlagNoZeroes)) {
    end_reason_ = fmt::format("protocol violation: unknown client flags {:#x}", client_flags);
    co_return false;
  }
  if (!(client_flags & nbd::kClientFlagFixedNewstyle)) {
    end_reason_ = "client does not speak fixed newstyle";
    co_return false;
  }
  no_zeroes_ = client_flags & nbd::kClientFlagNoZeroes;

  for (unsigned count = 0; count < kMaxOptions; ++count) {
    std::array<uint8_t, nbd::kOptionHeaderSize> hdr;
    if (!co_await read_exact(hdr.data(), hdr.size())) {
      end_reason_ = "truncated handshake (during option haggling)";
      co_return false;
    }
    auto opt = nbd::decode_option_header(hdr);
    if (opt.magic != nbd::kOptMagic) {
      end_reason_ = "protocol violation: bad option magic";
      co_return false;
    }
    if (opt.length > nbd::kMaxOptionLength) {
      end_reason_ = fmt::format("protocol violation: option {} carries {} bytes", opt.option, opt.length);
      co_return false;
    }
    std::vector<uint8_t> payload(opt.length);
    if (!co_await read_exact(payload.data(), payload.size())) {
      end_reason_ = "truncated handshake (option payload)";
      co_return false;
    }
    switch (opt.option) {
      case nbd::kOptExportName: {
        std::string name(payload.begin(), payload.end());
        if (!name.empty() && name != server_.export_name_) {
          // This option has no error reply: the protocol says close.
          end_reason_ = fmt::format("unknown export '{}' requested", name);
          co_return false;
        }
        if (!co_await send(nbd::encode_export_name_reply(server_.backend_.size(), kTransmissionFlags, no_zeroes_)))
          co_return false;
        spdlog::info("nbd: client {} attached to export '{}' (EXPORT_NAME)", id_, server_.export_name_);
        co_return true;
      }
      case nbd::kOptAbort:
        co_await send(nbd::encode_option_reply(opt.option, nbd::kRepAck));
        end_reason_ = "client aborted the handshake";
        co_return false;
      case nbd::kOptList:
        if (!payload.empty()) {
          if (!co_await send(nbd::encode_option_reply(opt.option, nbd::kRepErrInvalid))) co_return false;
          break;
        }
        if (!co_await send(nbd::encode_list_entry(server_.export_name_))) co_return false;
        if (!co_await send(nbd::encode_option_reply(opt.option, nbd::kRepAck))) co_return false;
        break;
      case nbd::kOptInfo:
      case nbd::kOptGo: {
        bool attached = co_await handle_go(opt.option, payload);
        if (attached) co_return true;
        if (!socket_.is_open() || write_failed_) co_return false;
        break;
      }
      default:
        // STARTTLS, STRUCTURED_REPLY, meta contexts and anything newer: the
        // client falls back to what we do support.
        if (!co_await send(nbd::encode_option_reply(opt.option, nbd::kRepErrUnsup))) co_return false;
        break;
    }
  }
  end_reason_ = "too many handshake options";
  co_return false;
}

awaitable<bool> NbdServer::Connection::handle_go(uint32_t option, std::span<const uint8_t> payload) {
  auto go = nbd::decode_go(payload);
  if (!go.ok()) {
    write_failed_ = !co_await send(nbd::encode_option_reply(option, nbd::kRepErrInvalid));
    co_return false;
  }
  if (!go->name.empty() && go->name != server_.export_name_) {
    spdlog::info("nbd: client {} asked for unknown export '{}'", id_, go->name);
    write_failed_ = !co_await send(nbd::encode_option_reply(option, nbd::kRepErrUnknown));
    co_return false;
  }
  bool block_size_requested = false;
  for (uint16_t info : go->info_requests) block_size_requested |= info == nbd::kInfoBlockSize;
  std::vector<uint8_t> out = nbd::encode_info_export(option, server_.backend_.size(), kTransmissionFlags);
  if (block_size_requested) {
    auto bs = nbd::encode_info_block_size(option, nbd::kMinBlock, nbd::kPreferredBlock, nbd::kMaxPayload);
    out.insert(out.end(), bs.begin(), bs.end());
  }
  auto ack = nbd::encode_option_reply(option, nbd::kRepAck);
  out.insert(out.end(), ack.begin(), ack.end());
  if (!co_await send(out)) {
    write_failed_ = true;
    co_return false;
  }
  if (option != nbd::kOptGo) co_return false;
  spdlog::info("nbd: client {} attached to export '{}'", id_, server_.export_name_);
  co_return true;
}

void NbdServer::Connection::note_bad_request(const nbd::Request& r, const char* why) {
  ++bad_requests_;
  ++server_.stats_.errors;
  if (bad_requests_ <= kLoggedBadRequests)
    spdlog::warn("nbd: client {}: refused {} offset {} length {} flags {:#x}: {}", id_, nbd::command_name(r.type),
                 r.offset, r.length, r.flags, why);
}

awaitable<void> NbdServer::Connection::transmission() {
  auto self = shared_from_this();
  asio::co_spawn(socket_.get_executor(), [self]() -> awaitable<void> { co_await self->writer(); }, asio::detached);
  const uint64_t size = server_.backend_.size();
  while (!stop_) {
    std::array<uint8_t, nbd::kRequestSize> hdr;
    if (rtail_ - rhead_ >= hdr.size()) {  // fast path: already buffered
      std::memcpy(hdr.data(), rbuf_.data() + rhead_, hdr.size());
      rhead_ += hdr.size();
    } else if (!co_await read_exact(hdr.data(), hdr.size())) {
      if (stop_) end_reason_ = "server shutting down";
      break;
    }
    nbd::Request r = nbd::decode_request(hdr);
    if (r.magic != nbd::kRequestMagic) {
      end_reason_ = fmt::format("protocol violation: bad request magic {:#x}", r.magic);
      break;
    }
    ++requests_;
    ++server_.stats_.requests;
    if (r.type == nbd::kCmdDisc) {
      end_reason_ = "client sent DISC";
      break;
    }
    nbd::Verdict v = nbd::validate_request(r, size, false);
    if (v.error != nbd::kOk) {
      note_bad_request(r, v.reason);
      if (!co_await drain(v.payload_to_drain)) {
        end_reason_ = "connection lost while skipping a refused payload";
        break;
      }
      queue_reply(v.error, r.handle, {});
      continue;
    }
    uint64_t cost = (r.type == nbd::kCmdRead || r.type == nbd::kCmdWrite) ? r.length : 0;
    while (inflight_ >= kMaxInflightRequests || (inflight_ > 0 && inflight_bytes_ + cost > kMaxInflightBytes))
      co_await changed_.wait();
    Buffer payload;
    if (r.type == nbd::kCmdWrite) {
      payload = server_.pool_.get(r.length);
      if (!co_await read_exact(payload.data(), r.length)) {
        end_reason_ = "truncated WRITE payload";
        break;
      }
    }
    ++inflight_;
    inflight_bytes_ += cost;
    asio::co_spawn(socket_.get_executor(), handle(self, r, std::move(payload)), asio::detached);
  }
  // Finish what was accepted: every request in flight gets its reply, then close.
  reading_done_ = true;
  changed_.notify_all();
  while (inflight_ > 0 || !writer_done_) co_await changed_.wait();
}

awaitable<void> NbdServer::Connection::handle(std::shared_ptr<Connection> self, nbd::Request r, Buffer payload) {
  NbdServer& srv = self->server_;
  BlockBackend& be = srv.backend_;
  const bool fua = r.flags & nbd::kCmdFlagFua;
  const auto t0 = std::chrono::steady_clock::now();
  Status s;
  Buffer data;
  switch (r.type) {
    case nbd::kCmdRead:
      data = srv.pool_.get(r.length);
      s = co_await be.read(r.offset, data);
      if (s.ok()) srv.stats_.bytes_read += r.length;
      break;
    case nbd::kCmdWrite:
      s = co_await be.write(r.offset, payload, fua);
      if (s.ok()) srv.stats_.bytes_written += r.length;
      break;
    case nbd::kCmdFlush:
      s = co_await be.flush();
      break;
    case nbd::kCmdTrim:
      s = co_await be.trim(r.offset, r.length, fua);
      break;
    case nbd::kCmdWriteZeroes:
      s = co_await be.write_zeroes(r.offset, r.length, !(r.flags & nbd::kCmdFlagNoHole), fua);
      break;
  }
  uint32_t err = nbd::kOk;
  if (!s.ok()) {
    err = nbd::error_from_errno(s.code());
    ++srv.stats_.errors;
    spdlog::error("nbd: client {}: {} offset {} length {} failed: {}", self->id_, nbd::command_name(r.type), r.offset,
                  r.length, s.message());
    data = Buffer();
  }
  NbdOp op = r.type == nbd::kCmdRead    ? NbdOp::kRead
             : r.type == nbd::kCmdWrite ? NbdOp::kWrite
             : r.type == nbd::kCmdFlush ? NbdOp::kFlush
             : r.type == nbd::kCmdTrim  ? NbdOp::kTrim
                                        : NbdOp::kWriteZeroes;
  OpMetrics& m = srv.ops_[size_t(op)];
  ++m.requests;
  if (!s.ok()) ++m.errors;
  if (s.ok() && (op == NbdOp::kRead || op == NbdOp::kWrite)) m.bytes += r.length;
  m.latency.observe(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  self->queue_reply(err, r.handle, std::move(data));
  --self->inflight_;
  self->inflight_bytes_ -= (r.type == nbd::kCmdRead || r.type == nbd::kCmdWrite) ? r.length : 0;
  self->changed_.notify_all();
}

void NbdServer::Connection::queue_reply(uint32_t error, uint64_t handle, Buffer data) {
  if (write_failed_) return;
  PendingReply& rep = replies_.emplace_back();
  nbd::encode_simple_reply(rep.header, error, handle);
  rep.data = std::move(data);
  changed_.notify_all();
}

awaitable<void> NbdServer::Connection::writer() {
  std::vector<asio::const_buffer> bufs;
  for (;;) {
    if (replies_.empty()) {
      if (reading_done_ && inflight_ == 0) break;
      co_await changed_.wait();
      continue;
    }
    bufs.clear();
    size_t n = std::min(replies_.size(), kMaxGather);
    for (size_t i = 0; i < n; ++i) {
      bufs.emplace_back(replies_[i].header.data(), replies_[i].header.size());
      if (replies_[i].data) bufs.emplace_back(replies_[i].data.data(), replies_[i].data.size());
    }
    auto [ec, written] = co_await asio::async_write(socket_, bufs, large_transfers, use_nothrow);
    if (ec) {
      write_failed_ = true;
      end_reason_ = "connection lost while sending replies: " + ec.message();
      replies_.clear();
      stop_reading();
      break;
    }
    replies_.erase(replies_.begin(), replies_.begin() + long(n));
  }
  writer_done_ = true;
  changed_.notify_all();
}

NbdServer::NbdServer(asio::io_context& io, BufferPool& pool, BlockBackend& backend, std::string export_name)
    : io_(io), pool_(pool), backend_(backend), export_name_(std::move(export_name)), connections_changed_(io.get_executor()) {}

NbdServer::~NbdServer() { stop_listening(); }

Status NbdServer::listen_unix(const std::string& path) {
  // A socket file left by a crashed daemon would make bind fail; the metadata
  // lock guarantees no live daemon for this resource owns it.
  auto acceptor = unix_listen(io_, path, 0660, "NBD socket", asio::socket_base::max_listen_connections);
  if (!acceptor.ok()) return acceptor.status();
  unix_path_ = path;
  unix_acceptor_ = *acceptor;
  asio::co_spawn(io_, accept_loop<asio::local::stream_protocol::acceptor>(
                          unix_acceptor_, "nbd " + path,
                          [this](asio::local::stream_protocol::socket sock) {
                            serve_connection(asio::generic::stream_protocol::socket(std::move(sock)), "unix socket");
                          }),
                 asio::detached);
  spdlog::info("nbd: serving export '{}' on {}", export_name_, path);
  return Status::Ok();
}

Status NbdServer::listen_tcp(const Address& address) {
  auto acceptor = tcp_listen(io_, address, "NBD listener");
  if (!acceptor.ok()) return acceptor.status();
  tcp_acceptor_ = *acceptor;
  asio::co_spawn(io_, accept_loop<asio::ip::tcp::acceptor>(tcp_acceptor_, "nbd tcp " + address.to_string(),
                                                           [this](asio::ip::tcp::socket sock) {
                                                             error_code ignored;
                                                             sock.set_option(asio::ip::tcp::no_delay(true), ignored);
                                                             std::string peer = "tcp " + remote_address(sock);
                                                             serve_connection(asio::generic::stream_protocol::socket(
                                                                                  std::move(sock)),
                                                                              peer);
                                                           }),
                 asio::detached);
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

void NbdServer::serve_connection(asio::generic::stream_protocol::socket socket, std::string peer, bool kernel) {
  auto conn = std::make_shared<Connection>(*this, std::move(socket), std::move(peer), next_id_++, kernel);
  connections_.insert(conn);
  ++stats_.connections_total;
  asio::co_spawn(io_, [this, conn]() -> awaitable<void> {
    co_await conn->run();
    connections_.erase(conn);
    connections_changed_.notify_all();
  }, asio::detached);
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
