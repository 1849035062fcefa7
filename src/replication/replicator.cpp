#include "hastnbd/replication/replicator.h"

#include <spdlog/spdlog.h>

#include "hastnbd/base/logging.h"

#include "hastnbd/base/role.h"
#include "hastnbd/peer/auth.h"
#include "hastnbd/peer/tls.h"
#include "hastnbd/peer/handshake.h"

namespace hastnbd {

namespace {
constexpr auto kFirstBackoff = std::chrono::seconds(1);
constexpr auto kMaxBackoff = std::chrono::seconds(10);
constexpr uint32_t kMaxLz4Backoff = 64;

}  // namespace

const char* to_string(PeerState s) {
  switch (s) {
    case PeerState::kStandalone: return "standalone";
    case PeerState::kDisconnected: return "disconnected";
    case PeerState::kConnecting: return "connecting";
    case PeerState::kConnected: return "connected";
  }
  return "?";
}

Replicator::Replicator(asio::io_context& io, BufferPool& pool, const ResourceConfig& config,
                       std::function<peer::Hello()> hello, PeerConnector connect)
    : io_(io),
      pool_(pool),
      config_(config),
      hello_(std::move(hello)),
      connect_(std::move(connect)),
      state_since_(std::chrono::system_clock::now()),
      changed_(io.get_executor()),
      backoff_timer_(io),
      peer_name_(config.peer_node.empty() ? "peer" : config.peer_node) {}

Replicator::~Replicator() {
  if (conn_) conn_->close("shutting down");
}

void Replicator::set_state(PeerState s) {
  if (s == state_) return;
  state_ = s;
  state_since_ = std::chrono::system_clock::now();
  changed_.notify_all();
}

void Replicator::start() {
  if (running_) return;
  running_ = true;
  asio::co_spawn(io_, run(++run_id_), asio::detached);
}

awaitable<void> Replicator::stop() {
  running_ = false;
  ++run_id_;
  backoff_timer_.cancel();
  if (conn_) {
    co_await conn_->drain_sends();
    conn_->close("this node left the primary role");
  }
  fail_pending("replication stopped");
  set_state(PeerState::kDisconnected);
}

void Replicator::fail_pending(const std::string& why) {
  auto pending = std::move(pending_);
  pending_.clear();
  for (auto& [seq, rec] : pending) {
    rec->ok = false;
    rec->error = why;
    rec->received.set();
    finish(*rec);
  }
  inflight_bytes_ = 0;
  ack_order_.clear();
  changed_.notify_all();
}

awaitable<void> Replicator::ack_watchdog(std::shared_ptr<PeerConnection> conn) {
  asio::steady_timer timer(io_);
  while (conn->is_open()) {
    const auto limit = std::chrono::seconds(config_.timeout);  // a reload may change it
    timer.expires_after(std::max<std::chrono::milliseconds>(limit / 4, std::chrono::milliseconds(100)));
    co_await timer.async_wait(use_nothrow);
    while (!ack_order_.empty() && !pending_.contains(ack_order_.front().first)) ack_order_.pop_front();
    if (conn->is_open() && !ack_order_.empty() &&
        std::chrono::steady_clock::now() - ack_order_.front().second >= limit) {
      conn->close("the secondary did not acknowledge record " + std::to_string(ack_order_.front().first) +
                  " within " + std::to_string(config_.timeout) + " s");
    }
  }
}

void Replicator::settle(uint64_t seq, bool ok, const std::string& error) {
  auto it = pending_.find(seq);
  if (it == pending_.end()) return;  // a late ack for a record already failed
  auto rec = it->second;
  pending_.erase(it);
  inflight_bytes_ -= rec->cost;
  rec->ok = ok;
  rec->error = error;
  rec->received.set();
  finish(*rec);
  changed_.notify_all();
}

void Replicator::finish(Record& rec) {
  if (rec.on_settled) std::exchange(rec.on_settled, nullptr)(rec);
  rec.settled.set();
}

awaitable<std::shared_ptr<Record>> Replicator::submit(uint8_t type, uint16_t flags, uint64_t offset,
                                                     uint32_t length, std::span<const uint8_t> data, bool borrow) {
  return submit_impl(type, flags, offset, length, data, nullptr, borrow);
}

awaitable<std::shared_ptr<Record>> Replicator::submit_buffer(uint16_t flags, uint64_t offset, Buffer data) {
  // The frame keeps `data` alive: the span below outlives this call.
  std::span<const uint8_t> span = data.span();
  auto rec = co_await submit_impl(peer::kWrite, flags, offset, uint32_t(span.size()), span, &data, false);
  co_return rec;
}

awaitable<std::shared_ptr<Record>> Replicator::submit_impl(uint8_t type, uint16_t flags, uint64_t offset,
                                                          uint32_t length, std::span<const uint8_t> data,
                                                          Buffer* owned, bool borrow) {
  borrow = borrow && type == peer::kWrite;
  const uint64_t cost = peer::kHeaderSize + data.size();
  while (connected() && inflight_bytes_ > 0 && inflight_bytes_ + cost > config_.max_inflight)
    co_await changed_.wait();
  if (!connected()) co_return nullptr;
  auto rec = std::make_shared<Record>(io_.get_executor());
  rec->seq = next_seq_++;
  rec->type = type;
  rec->offset = offset;
  rec->length = length;
  rec->cost = cost;
  peer::Header h;
  h.type = type;
  h.flags = flags;
  h.seq = rec->seq;
  h.offset = offset;
  h.length = length;
  if (config_.replication == Replication::kMemsync &&
      (type == peer::kWrite || type == peer::kTrim || type == peer::kWriteZeroes || type == peer::kFlush))
    h.flags |= peer::kFlagWantReceived;
  std::vector<uint8_t> payload;
  if (type == peer::kWrite) {
    // LZ4 on incompressible data costs CPU for nothing: after a miss, skip
    // the next attempts (1, 2, 4 .. 64 records), back to every record on a hit.
    Compression c = config_.compression;
    bool try_lz4 = c == Compression::kLz4 && lz4_skip_ == 0;
    if (c == Compression::kLz4 && !try_lz4) {
      c = Compression::kHole;
      --lz4_skip_;
    }
    auto enc = peer::encode_payload(data, c, config_.checksum, /*copy_raw=*/owned == nullptr && !borrow);
    if (try_lz4) {
      bool hit = enc.flags & (peer::kFlagLz4 | peer::kFlagHole);
      lz4_backoff_ = hit ? 0 : std::min<uint32_t>(lz4_backoff_ ? lz4_backoff_ * 2 : 1, kMaxLz4Backoff);
      lz4_skip_ = lz4_backoff_;
    }
    h.flags |= enc.flags;
    h.payload_length = uint32_t(enc.raw ? data.size() : enc.payload.size());
    h.payload_checksum = enc.checksum;
    payload = std::move(enc.payload);
    if (!enc.raw) owned = nullptr;  // the payload is the encoded copy
    borrow = borrow && enc.raw && h.payload_length > 0;
  } else if (!data.empty()) {
    payload.assign(data.begin(), data.end());
    h.payload_length = uint32_t(payload.size());
    if (config_.checksum == Checksum::kXxh3) {
      h.flags |= peer::kFlagChecksummed;
      h.payload_checksum = peer::payload_checksum(payload);
    }
  }
  pending_.emplace(rec->seq, rec);
  ack_order_.emplace_back(rec->seq, std::chrono::steady_clock::now());
  inflight_bytes_ += cost;
  // Data the synchronisation copies is counted apart from the clients' writes.
  const bool resync = flags & peer::kFlagResync;
  if (resync && type == peer::kWrite) resync_bytes_sent_ += data.size();
  const uint64_t counted = type == peer::kWrite && !resync ? data.size() : 0;
  if (owned) conn_->send(h, std::move(*owned), counted);
  else if (borrow) {
    conn_->send_borrowed(h, data, counted);
    rec->borrower = conn_;
  }
  else conn_->send(h, std::move(payload), counted);
  co_return rec;
}

awaitable<void> Replicator::release(Record& rec) {
  if (!rec.borrower) co_return;
  co_await rec.borrower->wait_sent(rec.seq);
  rec.borrower.reset();
}

awaitable<std::shared_ptr<Record>> Replicator::remote_read(uint64_t offset, uint32_t length, uint16_t flags) {
  return submit(peer::kRead, flags, offset, length);
}

awaitable<std::shared_ptr<Record>> Replicator::remote_hash(uint64_t offset, uint32_t length, uint32_t block,
                                                          uint16_t flags) {
  auto rec = co_await submit(peer::kHash, flags, offset, length, peer::encode_hash_request(block));
  if (rec) rec->hash_block = block;
  co_return rec;
}

bool Replicator::can_hash() const { return connected() && (features_ & peer::kFeatureHash); }

awaitable<Status> Replicator::handshake(std::shared_ptr<PeerConnection> conn) {
  // Nothing of the peer's is parsed beyond AUTH_* until it proved the key.
  auto auth = co_await peer::authenticate_initiator(*conn, peer::auth_params(config_));
  if (!auth.ok()) co_return auth.status();
  features_ = auth->features;
  peer::Hello ours = hello_();
  ours.protocol_version = auth->version;
  if (!(auth->features & peer::kFeatureGenerationTime)) ours.generation_time.reset();
  peer::send_hello(*conn, ours);
  // Any role: a peer that is primary too still gets the decision, which
  // tells a split-brain from two primaries that merely met (both refuse).
  peer::HelloResult theirs = co_await peer::receive_hello(*conn, ours, config_.peer_node, std::nullopt);
  if (theirs.peer_gone) co_return theirs.hello.status();
  Status s = theirs.hello.status();
  if (s.ok()) peer_was_primary_ = theirs.hello->role == uint8_t(Role::kPrimary);
  if (s.ok() && on_hello && theirs.hello->role != uint8_t(Role::kInit)) s = co_await on_hello(ours, *theirs.hello);
  if (s.ok() && theirs.hello->role != uint8_t(Role::kSecondary))
    s = Status::Error(EINVAL, "peer '" + theirs.hello->node + "' is not in role secondary");
  if (!s.ok()) co_await peer::refuse(*conn, s);
  co_return s;
}

awaitable<void> Replicator::read_acks(std::shared_ptr<PeerConnection> conn) {
  for (;;) {
    auto f = co_await conn->read_frame();
    if (!f.ok()) co_return;
    const peer::Header& h = f->header;
    switch (h.type) {
      case peer::kKeepalive:
        break;
      case peer::kReceived:  // cumulative: every record up to h.seq (docs/protocol.md)
        if (h.seq >= next_seq_) {
          conn->close("the secondary acknowledged record " + std::to_string(h.seq) + ", which was never sent");
          co_return;
        }
        for (; received_upto_ < h.seq; ++received_upto_)
          if (auto it = pending_.find(received_upto_ + 1); it != pending_.end()) it->second->received.set();
        break;
      case peer::kWritten: {
        auto it = pending_.find(h.seq);
        if (it != pending_.end() && (it->second->type == peer::kRead || it->second->type == peer::kHash)) {
          conn->close(std::string("the secondary answered ") + peer::type_name(it->second->type) + " " +
                      std::to_string(h.seq) + " with WRITTEN");
          co_return;
        }
        settle(h.seq, true, "");
        break;
      }
      case peer::kError: {
        auto e = peer::decode_error(f->payload.span());
        std::string msg = e.ok() ? e->second : "unreadable error record";
        spdlog::warn("peer: secondary failed record {}: {}", h.seq, msg);
        settle(h.seq, false, "secondary: " + msg);
        break;
      }
      case peer::kReadReply: {
        auto it = pending_.find(h.seq);
        if (it == pending_.end()) break;
        const Record& rec = *it->second;
        if (rec.type != peer::kRead || h.offset != rec.offset || h.length != rec.length) {
          // Data for another request or range would reach a client as if it
          // were the range it asked for.
          conn->close("the secondary's READ_REPLY " + std::to_string(h.seq) + " (" + std::to_string(h.offset) +
                      "+" + std::to_string(h.length) + ") does not answer " + peer::type_name(rec.type) + " " +
                      std::to_string(rec.offset) + "+" + std::to_string(rec.length));
          co_return;
        }
        Buffer data = pool_.get(h.length);
        Status s = peer::decode_payload(h, f->payload.span(), data.span());
        if (!s.ok()) {
          conn->close("bad read reply: " + s.message());
          co_return;
        }
        it->second->data = std::move(data);
        settle(h.seq, true, "");
        break;
      }
      case peer::kHashReply: {
        auto it = pending_.find(h.seq);
        if (it == pending_.end()) break;
        const Record& rec = *it->second;
        const uint64_t want = rec.type == peer::kHash ? peer::hash_count(rec.length, rec.hash_block) * peer::kHashBytes : 0;
        if (rec.type != peer::kHash || h.offset != rec.offset || h.length != rec.length ||
            h.payload_length != want) {
          // Hashes of another range would report a false match or mismatch.
          conn->close("the secondary's HASH_REPLY " + std::to_string(h.seq) + " (" + std::to_string(h.offset) + "+" +
                      std::to_string(h.length) + ", " + std::to_string(h.payload_length) + " bytes) does not answer " +
                      peer::type_name(rec.type) + " " + std::to_string(rec.offset) + "+" +
                      std::to_string(rec.length));
          co_return;
        }
        if (Status s = peer::verify_payload(h, f->payload.span()); !s.ok()) {
          conn->close("bad hash reply: " + s.message());
          co_return;
        }
        it->second->data = std::move(f->payload);
        settle(h.seq, true, "");
        break;
      }
      default:
        conn->close(std::string("unexpected ") + peer::type_name(h.type) + " record from the secondary");
        co_return;
    }
  }
}

awaitable<void> Replicator::run(uint64_t run_id) {
  auto backoff = std::chrono::seconds(kFirstBackoff);
  std::string& last_logged = last_logged_;
  auto current = [&] { return running_ && run_id == run_id_; };
  while (current()) {
    set_state(PeerState::kConnecting);
    peer_was_primary_ = false;
    // The config is read at each attempt: a reload may change the address.
    // (No co_await inside ?: : GCC 12 miscompiles it.)
    Result<PeerConnection::Socket> sock = Status::Error(ENOTCONN, "not connected");
    if (connect_)
      sock = co_await connect_();
    else
      sock = co_await peer_connect(io_.get_executor(), *config_.remote, std::chrono::seconds(config_.timeout),
                                   config_.source);
    Status s = sock.ok() ? Status::Ok() : sock.status();
    std::shared_ptr<PeerConnection> conn;
    if (s.ok() && current() && config_.tls.enabled()) {
      auto ctx = make_tls_context(config_);
      Result<std::shared_ptr<TlsSession>> tls = ctx.status();
      if (ctx.ok())
        tls = co_await tls_handshake(std::move(*sock), **ctx, /*server=*/false, config_.peer_tls_name,
                                     std::chrono::seconds(config_.timeout));
      if (tls.ok())
        conn = std::make_shared<PeerConnection>(std::move(*tls), pool_, std::chrono::seconds(config_.timeout),
                                                peer_name_);
      else
        s = tls.status();
    } else if (s.ok() && current()) {
      conn = std::make_shared<PeerConnection>(std::move(*sock), pool_, std::chrono::seconds(config_.timeout),
                                              peer_name_);
    }
    if (conn && current()) {
      conn->start();
      s = co_await handshake(conn);
    }
    if (!current()) {
      if (conn) conn->close("stopped");
      break;
    }
    ++attempts_;
    if (!s.ok()) {
      if (conn) conn->close(s.message());
      last_error_ = s.message();
      if (s.message() != last_logged) {  // one line per distinct failure, not one per retry
        spdlog::warn("peer: cannot connect to {} at {}: {}; retrying", peer_name_, config_.remote->to_string(),
                     s.message());
        last_logged = s.message();
      }
    } else {
      conn_ = conn;
      next_seq_ = 1;
      received_upto_ = 0;
      ++connects_;
      last_logged.clear();
      set_state(PeerState::kConnected);
      spdlog::info("peer: connected to {} at {} ({} mode)", peer_name_, config_.remote->to_string(),
                   to_string(config_.replication));
      if (on_connected) on_connected();
      asio::co_spawn(io_, ack_watchdog(conn), asio::detached);
      co_await read_acks(conn);
      std::string why = conn->close_reason();
      totals_.add(conn->stats());
      conn_.reset();
      last_error_ = why;
      fail_pending("link to the secondary lost: " + why);
      set_state(PeerState::kDisconnected);
      if (current())
        spdlog::warn("peer: disconnected from {}: {}; writes continue locally (degraded)", peer_name_, why);
      else
        spdlog::info("peer: link to {} closed: {}", peer_name_, why);
      if (on_disconnected) on_disconnected(why);
      backoff = kFirstBackoff;
      if (!current()) break;
    }
    set_state(PeerState::kDisconnected);
    backoff_timer_.expires_after(backoff);
    co_await backoff_timer_.async_wait(use_nothrow);
    backoff = std::min<std::chrono::seconds>(backoff * 2, kMaxBackoff);
  }
}

void Replicator::reconfigure(bool address_changed) {
  if (conn_) conn_->set_timeout(std::chrono::seconds(config_.timeout));
  if (!address_changed) return;
  if (conn_) {
    conn_->close("the peer's address changed (configuration reload)");
  } else {
    backoff_timer_.cancel();
  }
}

double Replicator::ack_lag_seconds() const {
  for (const auto& [seq, sent] : ack_order_)  // entries already settled are skipped
    if (pending_.contains(seq)) return std::chrono::duration<double>(std::chrono::steady_clock::now() - sent).count();
  return 0;
}

nlohmann::json Replicator::status() const {
  PeerStats s = totals_;
  if (conn_) s.add(conn_->stats());
  return {
      {"state", to_string(state_)},
      {"since", iso_time(state_since_)},
      {"node", peer_name_},
      {"remote", config_.remote ? config_.remote->to_string() : ""},
      {"source", config_.source ? config_.source->host : ""},
      {"auth", link_security(config_)},
      {"tls", conn_ && conn_->is_tls() ? conn_->tls_description() : ""},
      {"last_error", last_error_},
      {"connects", connects_},
      {"inflight_records", pending_.size()},
      {"inflight_bytes", inflight_bytes_},
      {"ack_lag_seconds", ack_lag_seconds()},
      {"queued_bytes", conn_ ? conn_->queued_bytes() : 0},
      {"records_sent", s.records_sent},
      {"records_received", s.records_received},
      {"bytes_sent", s.bytes_sent},
      {"bytes_received", s.bytes_received},
      {"data_bytes_sent", s.data_bytes_sent},
      {"resync_bytes_sent", resync_bytes_sent_},
  };
}

}  // namespace hastnbd
