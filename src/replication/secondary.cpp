#include "hastnbd/replication/secondary.h"

#include <spdlog/spdlog.h>

#include "hastnbd/base/logging.h"

#include "hastnbd/base/net.h"
#include "hastnbd/base/role.h"
#include "hastnbd/peer/auth.h"
#include "hastnbd/peer/handshake.h"
#include "hastnbd/peer/tls.h"

namespace hastnbd {

namespace {
constexpr auto kHandshakeTimeout = std::chrono::seconds(10);
// Connections between accept and a finished authentication. A listener
// flooded with connections that never authenticate holds at most this many
// (each for at most kHandshakeTimeout, with a 512-byte read limit); the
// rest are closed at accept. The real primary retries within seconds.
constexpr unsigned kMaxHandshakes = 4;
// Records applied at once. Past this the link is not read until some
// finished: the primary's own limit (max_inflight) then holds the rest, and
// a primary in async mode cannot make this node hold thousands of records,
// each a coroutine, a disk write in flight and a place in the FIFO.
constexpr uint64_t kMaxApplying = 256;
constexpr uint64_t kMaxApplyingBytes = 64ull << 20;

}  // namespace

Secondary::Secondary(asio::io_context& io, BufferPool& pool, const ResourceConfig& config, Disk& disk,
                     std::function<peer::Hello()> hello, bool tcp_listener)
    : io_(io),
      pool_(pool),
      config_(config),
      disk_(disk),
      hello_(std::move(hello)),
      tcp_listener_(tcp_listener),
      order_(io.get_executor()),
      changed_(io.get_executor()),
      since_(std::chrono::system_clock::now()) {}

Secondary::~Secondary() {
  if (conn_) conn_->close("shutting down");
}

Status Secondary::start(bool as_primary) {
  as_primary_ = as_primary;
  if (!config_.listen) return Status::Error(EINVAL, "role secondary needs a 'listen' address for node " + config_.node);
  since_ = std::chrono::system_clock::now();
  if (!tcp_listener_) return Status::Ok();
  auto acceptor = tcp_listen(io_, *config_.listen, "peer listener", /*backlog=*/8);
  if (!acceptor.ok()) return acceptor.status();
  acceptor_ = *acceptor;
  start_accepting<asio::ip::tcp::acceptor>(
      io_, acceptor_, "peer listener " + config_.listen->to_string(),
      [this](asio::ip::tcp::socket sock) { asio::co_spawn(io_, admit(std::move(sock)), asio::detached); });
  spdlog::info("peer: {} listening on {} for {}", as_primary ? "primary" : "secondary", config_.listen->to_string(),
               config_.remote ? config_.remote->to_string() : std::string("any address"));
  return Status::Ok();
}

awaitable<void> Secondary::stop() {
  if (acceptor_) {
    error_code ec;
    acceptor_->close(ec);
    acceptor_.reset();
  }
  if (conn_) conn_->close("this node left the secondary role");
  while (applying_ > 0) co_await changed_.wait();
  Status s = co_await disk_.flush();
  if (!s.ok()) spdlog::error("peer: flush on leaving secondary: {}", s.message());
}

awaitable<bool> Secondary::from_configured_peer(const asio::ip::tcp::socket& socket) {
  if (!config_.remote) co_return true;
  error_code ec;
  auto remote = socket.remote_endpoint(ec);
  if (ec) co_return false;
  asio::ip::tcp::resolver resolver(io_);
  auto [rec, results] = co_await resolver.async_resolve(config_.remote->host, "0", use_nothrow);
  if (rec) co_return false;
  auto addr = remote.address();
  if (addr.is_v6() && addr.to_v6().is_v4_mapped()) addr = asio::ip::make_address_v4(asio::ip::v4_mapped, addr.to_v6());
  for (const auto& r : results)
    if (r.endpoint().address() == addr) co_return true;
  co_return false;
}

// Logged at most once per 10 s, with how many were not: a remote party
// can provoke these at will.
void Secondary::log_refusal(const std::string& who, const std::string& why) {
  ++refused_;
  last_refusal_ = who + ": " + why;
  if (refusal_log_.allow())
    spdlog::warn("peer: refused connection from {}: {}{}", who, why, refusal_log_.suppressed_note("refusals"));
}

awaitable<void> Secondary::admit(asio::ip::tcp::socket sock) {
  error_code ignored;
  std::string who = remote_address(sock);
  if (handshakes_ >= kMaxHandshakes) {
    log_refusal(who, std::to_string(handshakes_) + " connections are already authenticating");
    sock.close(ignored);
    co_return;
  }
  ++handshakes_;
  if (!co_await from_configured_peer(sock)) {
    --handshakes_;
    log_refusal(who, "not the configured peer " + (config_.remote ? config_.remote->to_string() : std::string("?")));
    sock.close(ignored);
    co_return;
  }
  sock.set_option(asio::ip::tcp::no_delay(true), ignored);
  // One deadline for TLS and AUTH together: a slot is held at most this long
  // however slowly the other side trickles its bytes.
  const auto deadline = std::chrono::steady_clock::now() + kHandshakeTimeout;
  std::shared_ptr<PeerConnection> conn;
  if (config_.tls.enabled()) {
    conn = co_await start_tls(PeerConnection::Socket(std::move(sock)), who, deadline);
  } else {
    PeerConnection::Socket s(std::move(sock));
    // A TLS client here means the nodes disagree about tls: say so.
    const FirstBytes first = co_await peek_first_bytes(s, kHandshakeTimeout);
    if (first == FirstBytes::kTls)
      log_refusal(who, "it starts TLS, but this node has no tls configured for the peer link");
    else if (first == FirstBytes::kNothing)
      log_refusal(who, "sent nothing within the handshake time");
    else
      conn = std::make_shared<PeerConnection>(std::move(s), pool_, kHandshakeTimeout, who);
  }
  if (!conn) {
    --handshakes_;
    co_return;
  }
  co_await serve(std::move(conn), who, /*counted=*/true, deadline);
}

awaitable<std::shared_ptr<PeerConnection>> Secondary::start_tls(PeerConnection::Socket socket, const std::string& who,
                                                                std::chrono::steady_clock::time_point deadline) {
  const FirstBytes first = co_await peek_first_bytes(socket, kHandshakeTimeout);
  if (first == FirstBytes::kPeerRecord) {
    // A plain hastnbd primary: it reads one plain ERROR with the reason.
    auto plain = std::make_shared<PeerConnection>(std::move(socket), pool_, kHandshakeTimeout, who);
    plain->start();
    log_refusal(who, "it speaks the peer protocol without TLS, but this node requires TLS (tls)");
    plain->send_error(0, Status::Error(EACCES, "node '" + config_.node +
                                                   "' runs the peer link over TLS only; set tls on this node too"));
    co_await plain->drain_sends();
    plain->close("plain peer refused");
    co_return nullptr;
  }
  if (first != FirstBytes::kTls) {
    log_refusal(who, first == FirstBytes::kNothing ? "sent nothing within the handshake time"
                                                   : "not a TLS ClientHello (this node runs the peer link over TLS)");
    co_return nullptr;
  }
  auto ctx = make_tls_context(config_);
  if (!ctx.ok()) {
    log_refusal(who, "this node's TLS setup: " + ctx.status().message());
    co_return nullptr;
  }
  const auto left = std::chrono::ceil<std::chrono::seconds>(deadline - std::chrono::steady_clock::now());
  auto tls = co_await tls_handshake(std::move(socket), **ctx, /*server=*/true, config_.peer_tls_name,
                                    std::max(left, std::chrono::seconds(1)));
  if (!tls.ok()) {
    log_refusal(who, tls.status().message());
    co_return nullptr;
  }
  co_return std::make_shared<PeerConnection>(std::move(*tls), pool_, kHandshakeTimeout, who);
}

void Secondary::serve_connection(PeerConnection::Socket socket, std::string who) {
  auto conn = std::make_shared<PeerConnection>(std::move(socket), pool_, kHandshakeTimeout, who);
  asio::co_spawn(io_,
                 serve(std::move(conn), std::move(who), /*counted=*/false,
                       std::chrono::steady_clock::now() + kHandshakeTimeout),
                 asio::detached);
}

void Secondary::reply(PeerConnection& conn, uint8_t type, uint64_t seq) {
  peer::Header h;
  h.type = type;
  h.seq = seq;
  conn.send(h);
}

awaitable<void> Secondary::serve(std::shared_ptr<PeerConnection> conn, std::string who, bool counted,
                                 std::chrono::steady_clock::time_point deadline) {
  conn->start();
  // Nothing past AUTH_* is parsed before the peer proved the key; the link
  // reads at most kMaxAuthPayload bytes per record until then, and all of
  // it must be done by the deadline (the link's own timeout only measures
  // silence, which a trickle of bytes would defeat).
  auto finished = std::make_shared<bool>(false);
  asio::steady_timer timer(io_);
  timer.expires_at(deadline);
  timer.async_wait([finished, weak = std::weak_ptr<PeerConnection>(conn)](error_code ec) {
    if (ec || *finished) return;
    if (auto c = weak.lock()) c->close("not authenticated within the handshake time");
  });
  auto auth = co_await peer::authenticate_responder(*conn, peer::auth_params(config_));
  *finished = true;
  timer.cancel();
  if (counted) --handshakes_;
  if (!auth.ok()) {
    log_refusal(who, auth.status().message());
    conn->close("authentication: " + auth.status().message());
    co_return;
  }
  const uint64_t features = auth->features;
  peer::Hello ours = hello_();
  ours.protocol_version = auth->version;
  if (!(auth->features & peer::kFeatureGenerationTime)) ours.generation_time.reset();
  peer::HelloResult theirs = co_await peer::receive_hello(*conn, ours, config_.peer_node, Role::kPrimary);
  if (theirs.peer_gone) {
    spdlog::warn("peer: connection from {} dropped during handshake: {}", who, theirs.hello.status().message());
    co_return;
  }
  if (!theirs.hello.ok()) {
    co_await refuse(conn, who, theirs.hello.status(), /*always_log=*/true);
    co_return;
  }
  // Our HELLO goes first: the primary decides from the same two HELLOs.
  peer::send_hello(*conn, ours);
  Status s;
  if (on_hello) s = co_await on_hello(ours, *theirs.hello);
  if (s.ok() && as_primary_) s = Status::Error(EBUSY, "both nodes are primary");
  if (!s.ok()) {
    co_await refuse(conn, who, s, /*always_log=*/false);
    co_return;
  }
  if (conn_ && conn_->is_open()) {
    spdlog::warn("peer: a new connection from the primary replaces the current one");
    conn_->close("replaced by a new connection from the primary");
  }
  if (conn_) totals_.add(conn_->stats());
  conn_ = conn;
  ++connects_;
  since_ = std::chrono::system_clock::now();
  conn->set_timeout(std::chrono::seconds(config_.timeout));
  spdlog::info("peer: primary {} connected from {}", config_.peer_node, who);
  if (on_connected) on_connected();

  const uint64_t size = disk_.size();
  for (;;) {
    while (conn->is_open() && applying_ > 0 &&
           (applying_ >= kMaxApplying || applying_bytes_ >= kMaxApplyingBytes))
      co_await changed_.wait();
    auto f = co_await conn->read_frame();
    if (!f.ok()) break;
    const peer::Header& h = f->header;
    switch (h.type) {
      case peer::kKeepalive: continue;
      case peer::kWrite:
      case peer::kTrim:
      case peer::kWriteZeroes:
      case peer::kFlush:
      case peer::kSyncDone: {
        const bool whole = h.type == peer::kFlush || h.type == peer::kSyncDone;
        if (!whole && (h.offset > size || h.length > size - h.offset)) {
          conn->send_error(h.seq, Status::Error(EINVAL, "record beyond the end of the device"));
          continue;
        }
        // Cumulative (docs/protocol.md): one for all the records read in one go.
        if (h.flags & peer::kFlagWantReceived) conn->send_coalesced(peer::kReceived, h.seq);
        // The place in the FIFO is taken now, in arrival order.
        auto ticket = whole ? order_.reserve(0, size, true) : order_.reserve(h.offset, h.offset + h.length, true);
        ++applying_;
        applying_bytes_ += h.payload_length;
        asio::co_spawn(io_, apply(conn, std::move(*f), ticket), asio::detached);
        continue;
      }
      case peer::kRead:
        if (h.offset > size || h.length > size - h.offset) {
          conn->send_error(h.seq, Status::Error(EINVAL, "read beyond the end of the device"));
          continue;
        }
        ++applying_;
        applying_bytes_ += h.length;
        asio::co_spawn(io_, read_for_peer(conn, h, order_.reserve(h.offset, h.offset + h.length, false)),
                       asio::detached);
        continue;
      case peer::kHash: {
        if (!(features & peer::kFeatureHash)) {
          conn->close("HASH record from a primary that did not agree on the HASH feature");
          break;
        }
        Status valid = peer::verify_payload(h, f->payload.span());
        auto block = valid.ok() ? peer::decode_hash_request(f->payload.span()) : Result<uint32_t>(valid);
        if (!block.ok()) {
          conn->close("record " + std::to_string(h.seq) + ": " + block.status().message());
          break;
        }
        if (h.offset > size || h.length > size - h.offset) {
          conn->send_error(h.seq, Status::Error(EINVAL, "hash beyond the end of the device"));
          continue;
        }
        ++applying_;
        applying_bytes_ += h.length;
        asio::co_spawn(io_,
                       hash_for_peer(conn, h, *block, order_.reserve(h.offset, h.offset + h.length, false)),
                       asio::detached);
        continue;
      }
      default: conn->close(std::string("unexpected ") + peer::type_name(h.type) + " record from the primary"); break;
    }
    break;
  }
  last_error_ = conn->close_reason();
  spdlog::warn("peer: primary disconnected: {}", conn->close_reason());
  if (on_disconnected) on_disconnected(conn->close_reason());
}

// A handshake refused: the reason goes to the peer and to the log (once per
// cause when `always_log` is false: a primary retrying the same refusal).
awaitable<void> Secondary::refuse(std::shared_ptr<PeerConnection> conn, const std::string& who, const Status& s,
                                  bool always_log) {
  ++refused_;
  if (always_log || s.message() != last_error_)
    spdlog::error("peer: refused the {} connection from {}: {}", as_primary_ ? "other primary's" : "primary's", who,
                  s.message());
  last_error_ = s.message();
  co_await peer::refuse(*conn, s);
  conn->close("handshake refused: " + s.message());
}

awaitable<void> Secondary::apply(std::shared_ptr<PeerConnection> conn, Frame f, RangeLock::Ticket ticket) {
  auto guard = co_await order_.acquire(ticket);
  const peer::Header& h = f.header;
  Status s;
  switch (h.type) {
    case peer::kWrite: {
      // A raw payload is the data: checked, then written from where it was
      // received (pool buffers are aligned for O_DIRECT).
      const bool raw = !(h.flags & (peer::kFlagLz4 | peer::kFlagHole));
      Buffer data = raw ? Buffer() : pool_.get(h.length);
      s = raw ? peer::verify_payload(h, f.payload.span()) : peer::decode_payload(h, f.payload.span(), data.span());
      if (raw) data = std::move(f.payload);
      if (!s.ok()) {
        // Corruption in transit: nothing of this link can be trusted any more.
        conn->close("record " + std::to_string(h.seq) + ": " + s.message());
        break;
      }
      if (h.flags & peer::kFlagResync)
        resync_bytes_ += h.length;
      else
        conn->stats().data_bytes_received += h.length;
      // A copy of a hole stays a hole: a full sync of a sparse disk keeps
      // the secondary's sparse too.
      if ((h.flags & peer::kFlagResync) && (h.flags & peer::kFlagHole))
        s = co_await disk_.write_zeroes(h.offset, h.length, /*may_unmap=*/true);
      else
        s = co_await disk_.write(h.offset, data);
      if (s.ok() && (h.flags & peer::kFlagResync) && on_resync_bytes) on_resync_bytes(h.length);
      break;
    }
    case peer::kTrim: s = co_await disk_.trim(h.offset, h.length); break;
    case peer::kWriteZeroes: s = co_await disk_.write_zeroes(h.offset, h.length, !(h.flags & peer::kFlagNoHole)); break;
    case peer::kFlush: s = co_await disk_.flush(); break;
    case peer::kSyncDone: {
      Status valid = peer::verify_payload(h, f.payload.span());
      auto cnt = valid.ok() ? peer::decode_sync_done(f.payload.span()) : Result<uint64_t>(valid);
      if (!cnt.ok()) {
        conn->close(cnt.status().message());
        break;
      }
      s = co_await disk_.flush();  // what the sync copied is durable before the counters say so
      if (s.ok() && on_sync_done) s = co_await on_sync_done(*cnt);
      break;
    }
  }
  if (s.ok() && (h.flags & peer::kFlagFua)) s = co_await disk_.flush();
  if (conn->is_open()) {
    if (s.ok()) {
      ++records_applied_;
      reply(*conn, peer::kWritten, h.seq);
    } else {
      ++apply_errors_;
      spdlog::error("peer: applying record {} ({} at {}+{}) failed: {}", h.seq, peer::type_name(h.type), h.offset,
                    h.length, s.message());
      conn->send_error(h.seq, s);
    }
  }
  guard.release();
  --applying_;
  applying_bytes_ -= h.payload_length;
  changed_.notify_all();
}

awaitable<void> Secondary::read_for_peer(std::shared_ptr<PeerConnection> conn, peer::Header h,
                                         RangeLock::Ticket ticket) {
  Buffer data = pool_.get(h.length);
  Status s;
  {
    auto guard = co_await order_.acquire(ticket);
    s = co_await disk_.read(h.offset, data);
  }
  if (s.ok() && (h.flags & peer::kFlagResync)) {
    resync_bytes_ += h.length;
    if (on_resync_bytes) on_resync_bytes(h.length);
  }
  if (conn->is_open()) {
    if (!s.ok()) {
      conn->send_error(h.seq, s);
    } else {
      auto enc = peer::encode_payload(data.span(), config_.compression, config_.checksum);
      peer::Header r;
      r.type = peer::kReadReply;
      r.flags = enc.flags | (h.flags & peer::kFlagResync);
      r.seq = h.seq;
      r.offset = h.offset;
      r.length = h.length;
      r.payload_length = uint32_t(enc.payload.size());
      r.payload_checksum = enc.checksum;
      conn->send(r, std::move(enc.payload), h.length);
    }
  }
  --applying_;
  applying_bytes_ -= h.length;
  changed_.notify_all();
}

// The blocks are read after every earlier record that overlaps them was
// applied (the FIFO reservation), so they hold what the primary had when it
// sent the HASH: the primary compares against its own copy at that point.
awaitable<void> Secondary::hash_for_peer(std::shared_ptr<PeerConnection> conn, peer::Header h, uint32_t block,
                                         RangeLock::Ticket ticket) {
  Buffer data = pool_.get(h.length);
  Status s;
  {
    auto guard = co_await order_.acquire(ticket);
    s = co_await disk_.read(h.offset, data);
  }
  if (s.ok()) hashed_bytes_ += h.length;
  if (conn->is_open()) {
    if (!s.ok()) {
      conn->send_error(h.seq, s);
    } else {
      std::vector<uint8_t> hashes = peer::hash_blocks(data.span(), block);
      peer::Header r;
      r.type = peer::kHashReply;
      r.flags = h.flags & peer::kFlagResync;
      r.seq = h.seq;
      r.offset = h.offset;
      r.length = h.length;
      r.payload_length = uint32_t(hashes.size());
      if (config_.checksum == Checksum::kXxh3) {
        r.flags |= peer::kFlagChecksummed;
        r.payload_checksum = peer::payload_checksum(hashes);
      }
      conn->send(r, std::move(hashes));
    }
  }
  --applying_;
  applying_bytes_ -= h.length;
  changed_.notify_all();
}

nlohmann::json Secondary::status() const {
  PeerStats s = totals_;
  if (conn_) s.add(conn_->stats());
  return {
      {"state", to_string(state())},
      {"since", iso_time(since_)},
      {"node", config_.peer_node},
      {"listen", config_.listen ? config_.listen->to_string() : ""},
      {"remote", config_.remote ? config_.remote->to_string() : ""},
      {"last_error", last_error_},
      {"connects", connects_},
      {"refused", refused_},
      {"last_refused", last_refusal_},
      {"auth", link_security(config_)},
      {"tls", conn_ && conn_->is_tls() ? conn_->tls_description() : ""},
      {"records_applied", records_applied_},
      {"apply_errors", apply_errors_},
      {"applying", applying_},
      {"records_sent", s.records_sent},
      {"records_received", s.records_received},
      {"bytes_sent", s.bytes_sent},
      {"bytes_received", s.bytes_received},
      {"data_bytes_received", s.data_bytes_received},
      {"resync_bytes", resync_bytes_},
      {"hashed_bytes", hashed_bytes_},
  };
}

}  // namespace hastnbd
