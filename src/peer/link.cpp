#include "hastnbd/peer/link.h"

#include <spdlog/spdlog.h>

#include "hastnbd/peer/tls.h"

namespace hastnbd {

namespace {
constexpr size_t kMaxGather = 64;
}  // namespace

void PeerStats::add(const PeerStats& o) {
  records_sent += o.records_sent;
  records_received += o.records_received;
  bytes_sent += o.bytes_sent;
  bytes_received += o.bytes_received;
  data_bytes_sent += o.data_bytes_sent;
  data_bytes_received += o.data_bytes_received;
}

PeerConnection::PeerConnection(Socket socket, BufferPool& pool, std::chrono::seconds timeout,
                               std::string peer)
    : socket_(std::move(socket)),
      pool_(pool),
      timeout_(timeout),
      peer_(std::move(peer)),
      changed_(socket_->get_executor()),
      keepalive_timer_(socket_->get_executor()),
      watchdog_timer_(socket_->get_executor()) {
  last_received_ = last_sent_ = std::chrono::steady_clock::now();
}

PeerConnection::PeerConnection(std::shared_ptr<TlsSession> tls, BufferPool& pool, std::chrono::seconds timeout,
                               std::string peer)
    : tls_(std::move(tls)),
      pool_(pool),
      timeout_(timeout),
      peer_(std::move(peer)),
      changed_(tls_->socket().get_executor()),
      keepalive_timer_(tls_->socket().get_executor()),
      watchdog_timer_(tls_->socket().get_executor()) {
  last_received_ = last_sent_ = std::chrono::steady_clock::now();
}

std::string PeerConnection::tls_description() const { return tls_ ? tls_->description() : std::string(); }

std::vector<uint8_t> PeerConnection::channel_binding() const {
  return tls_ ? tls_->exporter("EXPORTER-hastnbd-peer-auth", 32) : std::vector<uint8_t>();
}

PeerConnection::Socket& PeerConnection::lowest() { return tls_ ? tls_->socket() : *socket_; }

awaitable<std::tuple<error_code, size_t>> PeerConnection::read_exactly(asio::mutable_buffer b) {
  if (tls_) co_return co_await tls_->read(b);  // TlsSession buffers the ciphertext itself
  error_code ec = co_await rbuf_.read_exact(*socket_, static_cast<uint8_t*>(b.data()), b.size());
  co_return std::tuple(ec, ec ? 0 : b.size());
}

awaitable<error_code> PeerConnection::write_all(const std::vector<asio::const_buffer>& bufs) {
  if (tls_) co_return co_await tls_->write(bufs);
  auto [ec, n] = co_await asio::async_write(*socket_, bufs, large_transfers, use_nothrow);
  co_return ec;
}

std::string PeerConnection::read_error(const error_code& ec) const {
  return tls_ && !tls_->error_detail().empty() ? tls_->error_detail() : ec.message();
}

PeerConnection::~PeerConnection() = default;

void PeerConnection::start() {
  auto self = shared_from_this();
  auto ex = lowest().get_executor();
  asio::co_spawn(ex, [self]() -> awaitable<void> { co_await self->writer(); }, asio::detached);
  asio::co_spawn(ex, [self]() -> awaitable<void> { co_await self->keepalive(); }, asio::detached);
  asio::co_spawn(ex, [self]() -> awaitable<void> { co_await self->watchdog(); }, asio::detached);
}

void PeerConnection::close(const std::string& reason) {
  if (!open_) return;
  open_ = false;
  close_reason_ = reason;
  error_code ec;
  lowest().shutdown(asio::socket_base::shutdown_both, ec);
  lowest().close(ec);
  keepalive_timer_.cancel();
  watchdog_timer_.cancel();
  queue_.clear();
  queued_bytes_ = 0;
  changed_.notify_all();
}

awaitable<void> PeerConnection::wait_closed() {
  while (open_) co_await changed_.wait();
}

awaitable<Result<Frame>> PeerConnection::read_frame() {
  std::array<uint8_t, peer::kHeaderSize> hdr;
  error_code ec;
  if (tls_ || !rbuf_.take(hdr.data(), hdr.size())) std::tie(ec, std::ignore) = co_await read_exactly(asio::buffer(hdr));
  if (ec) {
    close(ec == asio::error::eof ? "peer closed the connection" : "read: " + read_error(ec));
    co_return Status::Error(ECONNRESET, close_reason_);
  }
  auto h = peer::decode_header(hdr);
  if (!h.ok()) {
    close("malformed frame from peer: " + h.status().message());
    co_return Status::Error(EPROTO, close_reason_);
  }
  if (h->payload_length > max_payload_) {
    close("record from peer too large here: " + std::string(peer::type_name(h->type)) + " payload " +
          std::to_string(h->payload_length) + " bytes, at most " + std::to_string(max_payload_) +
          (max_payload_ == peer::kMaxAuthPayload ? " before authentication" : "") +
          (max_payload_ == peer::kMaxAuthPayload && h->type == peer::kHello
               ? " (a HELLO first: the peer speaks protocol version 1, without authentication; upgrade it)"
               : ""));
    co_return Status::Error(EMSGSIZE, close_reason_);
  }
  Frame f{*h, Buffer()};
  if (h->payload_length > 0) {
    f.payload = pool_.get(h->payload_length);
    auto [ec2, n2] = co_await read_exactly(asio::buffer(f.payload.data(), h->payload_length));
    if (ec2) {
      close(ec2 == asio::error::eof ? "peer closed the connection mid-frame" : "read: " + read_error(ec2));
      co_return Status::Error(ECONNRESET, close_reason_);
    }
    // The next record of a stream of large ones: its header alone first,
    // then its payload straight into a pool buffer (base/read_buffer.h).
    if (!tls_ && h->payload_length >= kDirectRead) rbuf_.limit_next_fill(peer::kHeaderSize);
  }
  // Data records are verified when they are expanded (peer::decode_payload).
  if (h->type != peer::kWrite && h->type != peer::kReadReply) {
    if (Status s = peer::verify_payload(*h, f.payload.span()); !s.ok()) {
      close("corrupt record from peer: " + s.message());
      co_return Status::Error(EBADMSG, close_reason_);
    }
  }
  last_received_ = std::chrono::steady_clock::now();
  ++stats_.records_received;
  stats_.bytes_received += peer::kHeaderSize + h->payload_length;
  co_return f;
}

void PeerConnection::send(const peer::Header& header, std::vector<uint8_t> payload, uint64_t data_bytes) {
  Outgoing o;
  o.payload = std::move(payload);
  enqueue(header, std::move(o), data_bytes);
}

void PeerConnection::send(const peer::Header& header, Buffer payload, uint64_t data_bytes) {
  Outgoing o;
  o.buffer = std::move(payload);
  enqueue(header, std::move(o), data_bytes);
}

void PeerConnection::send_borrowed(const peer::Header& header, std::span<const uint8_t> payload,
                                   uint64_t data_bytes) {
  Outgoing o;
  o.borrowed = payload;
  enqueue(header, std::move(o), data_bytes);
}

void PeerConnection::enqueue(const peer::Header& header, Outgoing o, uint64_t data_bytes) {
  if (!open_) return;
  o.header = peer::encode_header(header);
  o.seq = header.seq;
  queued_bytes_ += peer::kHeaderSize + o.bytes().size();
  stats_.data_bytes_sent += data_bytes;
  queue_.push_back(std::move(o));
  changed_.notify_all();
}

void PeerConnection::send_coalesced(uint8_t type, uint64_t seq) {
  const bool posted = coalesced_seq_ != 0;
  coalesced_seq_ = std::max(coalesced_seq_, seq);
  if (posted) return;
  asio::post(lowest().get_executor(), [self = shared_from_this(), type] {
    peer::Header h;
    h.type = type;
    h.seq = self->coalesced_seq_;
    self->coalesced_seq_ = 0;
    self->send(h);
  });
}

void PeerConnection::send_error(uint64_t seq, const Status& status) {
  peer::Header h;
  h.type = peer::kError;
  h.seq = seq;
  auto payload = peer::encode_error(status.code(), status.message());
  h.payload_length = uint32_t(payload.size());
  send(h, std::move(payload));
}

awaitable<void> PeerConnection::wait_sent(uint64_t seq) {
  while (open_ && sent_upto_ < seq) co_await changed_.wait();
}

awaitable<void> PeerConnection::drain_sends() {
  while (open_ && (!queue_.empty() || writing_)) co_await changed_.wait();
}

awaitable<void> PeerConnection::writer() {
  auto self = shared_from_this();
  std::vector<asio::const_buffer> bufs;
  while (open_) {
    if (queue_.empty()) {
      co_await changed_.wait();
      continue;
    }
    size_t n = std::min(queue_.size(), kMaxGather);
    bufs.clear();
    size_t bytes = 0;
    for (size_t i = 0; i < n; ++i) {
      bufs.emplace_back(queue_[i].header.data(), queue_[i].header.size());
      auto payload = queue_[i].bytes();
      if (!payload.empty()) bufs.emplace_back(payload.data(), payload.size());
      bytes += queue_[i].header.size() + payload.size();
    }
    writing_ = true;
    error_code ec = co_await write_all(bufs);
    writing_ = false;
    if (ec || !open_) {
      close(open_ ? "write: " + ec.message() : close_reason_);
      break;
    }
    for (size_t i = 0; i < n; ++i) sent_upto_ = std::max(sent_upto_, queue_[i].seq);
    queue_.erase(queue_.begin(), queue_.begin() + long(n));
    queued_bytes_ -= bytes;
    stats_.records_sent += n;
    stats_.bytes_sent += bytes;
    last_sent_ = std::chrono::steady_clock::now();
    changed_.notify_all();
  }
}

awaitable<void> PeerConnection::keepalive() {
  auto self = shared_from_this();
  while (open_) {
    const auto interval = std::max<std::chrono::milliseconds>(timeout_ / 3, std::chrono::milliseconds(200));
    keepalive_timer_.expires_after(interval);
    co_await keepalive_timer_.async_wait(use_nothrow);
    if (!open_) break;
    if (std::chrono::steady_clock::now() - last_sent_ >= interval && queue_.empty()) {
      peer::Header h;
      h.type = peer::kKeepalive;
      send(h);
    }
  }
}

awaitable<void> PeerConnection::watchdog() {
  auto self = shared_from_this();
  while (open_) {
    auto deadline = last_received_ + timeout_;
    watchdog_timer_.expires_at(deadline);
    co_await watchdog_timer_.async_wait(use_nothrow);
    if (!open_) break;
    if (std::chrono::steady_clock::now() - last_received_ >= timeout_) {
      close("peer silent for " + std::to_string(timeout_.count()) + " s (timeout)");
      break;
    }
  }
}

awaitable<Result<PeerConnection::Socket>> peer_connect(asio::any_io_executor ex, const Address& address,
                                                      std::chrono::seconds timeout,
                                                      const std::optional<Address>& source) {
  asio::ip::tcp::resolver resolver(ex);
  auto [rec, results] = co_await resolver.async_resolve(address.host, std::to_string(address.port), use_nothrow);
  if (rec || results.empty())
    co_return Status::Error(EHOSTUNREACH, "cannot resolve " + address.to_string() + ": " + rec.message());
  std::optional<asio::ip::tcp::endpoint> from;
  if (source) {
    error_code ec;
    auto ip = asio::ip::make_address(source->host, ec);
    if (ec) co_return Status::Error(EINVAL, "source address " + source->to_string() + ": " + ec.message());
    from = asio::ip::tcp::endpoint(ip, source->port);
  }
  asio::ip::tcp::socket socket(ex);
  asio::steady_timer timer(ex, timeout);
  bool timed_out = false;
  timer.async_wait([&](error_code ec) {
    if (ec) return;
    timed_out = true;
    error_code ignored;
    socket.close(ignored);
  });
  error_code ec = asio::error::address_family_not_supported;
  for (const auto& entry : results) {
    const auto& ep = entry.endpoint();
    if (from && from->protocol() != ep.protocol()) continue;  // a v4 source cannot reach a v6 peer
    if (timed_out) break;
    error_code ignored;
    socket.close(ignored);
    socket.open(ep.protocol(), ec);
    if (!ec && from) {
      // The source port is usually 0 (any); reuse lets a fixed one reconnect.
      socket.set_option(asio::socket_base::reuse_address(true), ignored);
      socket.bind(*from, ec);
      if (ec) {
        timer.cancel();
        co_return Status::Error(ec.value(), "bind to source address " + source->to_string() + ": " + ec.message());
      }
    }
    if (!ec) std::tie(ec) = co_await socket.async_connect(ep, use_nothrow);
    if (!ec) break;
  }
  timer.cancel();
  if (timed_out) co_return Status::Error(ETIMEDOUT, "connect to " + address.to_string() + ": timed out");
  if (ec == asio::error::address_family_not_supported && from)
    co_return Status::Error(EAFNOSUPPORT, "connect to " + address.to_string() + ": no address of the same family as source " +
                                              source->to_string());
  if (ec) co_return Status::Error(ec.value(), "connect to " + address.to_string() + ": " + ec.message());
  error_code ignored;
  socket.set_option(asio::ip::tcp::no_delay(true), ignored);
  co_return PeerConnection::Socket(std::move(socket));
}

}  // namespace hastnbd
