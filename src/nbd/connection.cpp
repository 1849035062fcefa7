#include "connection.h"

#include <spdlog/spdlog.h>

#include <cstring>

namespace hastnbd {

using namespace nbd_limits;

awaitable<bool> NbdServer::Connection::read_exact(uint8_t* dst, size_t n) {
  co_return !co_await rbuf_.read_exact(socket_, dst, n);
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
    if (!rbuf_.take(hdr.data(), hdr.size()) && !co_await read_exact(hdr.data(), hdr.size())) {  // take: buffered
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
    // Replies queued but not yet written count as in flight: a client that
    // never reads them must not make the connection hold ever more data.
    while (inflight_ + replies_.size() >= kMaxInflightRequests ||
           ((inflight_ > 0 || queued_bytes_ > 0) && inflight_bytes_ + queued_bytes_ + cost > kMaxInflightBytes))
      co_await changed_.wait();
    Buffer payload;
    if (r.type == nbd::kCmdWrite) {
      payload = server_.pool_.get(r.length);
      if (!co_await read_exact(payload.data(), r.length)) {
        end_reason_ = "truncated WRITE payload";
        break;
      }
      // A large write is usually followed by another: its payload then goes
      // straight into the request's buffer, not partly through ours.
      if (r.length >= kDirectReadThreshold) rbuf_.limit_next_fill(nbd::kRequestSize);
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
  queued_bytes_ += rep.data.size();
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
      queued_bytes_ = 0;
      stop_reading();
      break;
    }
    for (size_t i = 0; i < n; ++i) queued_bytes_ -= replies_[i].data.size();
    replies_.erase(replies_.begin(), replies_.begin() + long(n));
    changed_.notify_all();
  }
  writer_done_ = true;
  changed_.notify_all();
}

}  // namespace hastnbd
