// One connection to the peer (TCP, or a socketpair in the component
// tests), carrying peer/protocol frames in both
// directions: a single reader (read_frame), a send queue drained by a writer
// coroutine, keepalives after timeout/3 of silence on our side, and a
// watchdog that closes the link when nothing arrives for `timeout`.
// Used by both roles. Loop thread only; owners hold it by shared_ptr.
#pragma once

#include <chrono>
#include <functional>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "hastnbd/base/asio.h"
#include "hastnbd/base/buffer.h"
#include "hastnbd/base/read_buffer.h"
#include "hastnbd/peer/protocol.h"
#include "hastnbd/base/status.h"

namespace hastnbd {

class TlsSession;  // peer/tls.h

struct PeerStats {
  uint64_t records_sent = 0;
  uint64_t records_received = 0;
  uint64_t bytes_sent = 0;          // on the wire, headers included
  uint64_t bytes_received = 0;
  uint64_t data_bytes_sent = 0;     // data before compression
  uint64_t data_bytes_received = 0; // data after decompression (counted by the user)
  void add(const PeerStats& o);
};

struct Frame {
  peer::Header header;
  Buffer payload;  // payload_length bytes as received (compressed or raw)
};

class PeerConnection : public std::enable_shared_from_this<PeerConnection> {
 public:
  using Socket = asio::generic::stream_protocol::socket;
  PeerConnection(Socket socket, BufferPool& pool, std::chrono::seconds timeout, std::string peer);
  // The same over an established TLS session (peer/tls.h).
  PeerConnection(std::shared_ptr<TlsSession> tls, BufferPool& pool, std::chrono::seconds timeout, std::string peer);
  ~PeerConnection();

  // Starts the writer, keepalive and watchdog.
  void start();
  // The next frame, validated (header checks only; payload checks are the
  // caller's via peer::decode_payload). Fails when the link is closed, a
  // frame is malformed, or its payload exceeds the link's limit (the link is
  // then closed with that reason).
  awaitable<Result<Frame>> read_frame();
  // The largest payload read_frame accepts (peer::kMaxPayload unless
  // lowered): peer/auth.h raises it back to kMaxPayload once the peer is
  // authenticated, so a caller that lowers it to kMaxAuthPayload first makes
  // an unauthenticated peer unable to make us allocate more.
  void set_max_payload(uint32_t n) { max_payload_ = n; }
  // Queue a frame; payload_length and the checksum field come from `header`.
  void send(const peer::Header& header, std::vector<uint8_t> payload = {}, uint64_t data_bytes = 0);
  // The same with a pool buffer as the payload, sent without a copy.
  void send(const peer::Header& header, Buffer payload, uint64_t data_bytes = 0);
  // The same with memory the caller keeps valid until wait_sent(header.seq)
  // returned.
  void send_borrowed(const peer::Header& header, std::span<const uint8_t> payload, uint64_t data_bytes = 0);
  // Queue a record of `type` (no payload) for the highest `seq` given in this
  // loop turn: one, once the calls in progress are done (a cumulative
  // acknowledgement for every record read from one receive). One type at a time.
  void send_coalesced(uint8_t type, uint64_t seq);
  // Queue a kError record about record `seq` (0: about the connection).
  void send_error(uint64_t seq, const Status& status);
  // Waits until the send queue is empty (or the link is closed).
  awaitable<void> drain_sends();
  void close(const std::string& reason);
  // After the handshake the configured link timeout replaces the handshake's.
  void set_timeout(std::chrono::seconds t) {
    timeout_ = t;
    // Both loops re-arm with the new period at once: a keepalive timer still
    // running on the handshake's period would let the peer's watchdog fire.
    keepalive_timer_.cancel();
    watchdog_timer_.cancel();
  }

  bool is_open() const { return open_; }
  bool is_tls() const { return tls_ != nullptr; }
  std::string tls_description() const;  // "TLSv1.3 TLS_AES_256_GCM_SHA384"; empty when plain
  // 32 bytes both ends of this TLS session compute alike (its exporter,
  // label "EXPORTER-hastnbd-peer-auth"); empty when plain. peer/auth.h
  // binds the key's proof to it.
  std::vector<uint8_t> channel_binding() const;
  const std::string& close_reason() const { return close_reason_; }
  const std::string& peer() const { return peer_; }
  const PeerStats& stats() const { return stats_; }
  PeerStats& stats() { return stats_; }
  uint64_t queued_bytes() const { return queued_bytes_; }
  // Returns once the record `seq` was written to the socket in full, or the
  // link is closed: either way the connection no longer reads its payload.
  // (An acknowledgement may arrive before the writer saw its write complete,
  // and a peer could acknowledge what it never got: neither frees borrowed
  // memory early.) Records with a seq are sent in increasing order.
  awaitable<void> wait_sent(uint64_t seq);
  // Wakes when the link closes.
  awaitable<void> wait_closed();

 private:
  struct Outgoing {
    std::array<uint8_t, peer::kHeaderSize> header{};
    uint64_t seq = 0;
    std::vector<uint8_t> payload;
    Buffer buffer;                      // the payload instead, when it came as a Buffer
    std::span<const uint8_t> borrowed;  // or when it is the caller's (send_borrowed)
    std::span<const uint8_t> bytes() const {
      if (buffer) return buffer.span();
      return payload.empty() ? borrowed : std::span<const uint8_t>(payload);
    }
  };
  static constexpr size_t kReadBufferSize = 256 * 1024;
  static constexpr size_t kDirectRead = 64 * 1024;  // payloads from here on bypass rbuf_
  void enqueue(const peer::Header& header, Outgoing o, uint64_t data_bytes);
  awaitable<void> writer();
  awaitable<void> keepalive();
  awaitable<void> watchdog();

  Socket& lowest();
  awaitable<std::tuple<error_code, size_t>> read_exactly(asio::mutable_buffer b);
  std::string read_error(const error_code& ec) const;  // TLS: what OpenSSL found
  awaitable<error_code> write_all(const std::vector<asio::const_buffer>& bufs);

  std::optional<Socket> socket_;  // plain, or
  ReadBuffer rbuf_{kReadBufferSize, kDirectRead};  // plain only: one recv brings many records
  std::shared_ptr<TlsSession> tls_;  // TLS over the socket it owns
  uint32_t max_payload_ = peer::kMaxAuthPayload;  // until authenticated
  BufferPool& pool_;
  std::chrono::seconds timeout_;
  std::string peer_;
  std::deque<Outgoing> queue_;
  uint64_t queued_bytes_ = 0;
  AsyncCondition changed_;
  asio::steady_timer keepalive_timer_;
  asio::steady_timer watchdog_timer_;
  std::chrono::steady_clock::time_point last_received_;
  std::chrono::steady_clock::time_point last_sent_;
  bool open_ = true;
  bool writing_ = false;
  uint64_t sent_upto_ = 0;
  uint64_t coalesced_seq_ = 0;  // send_coalesced: posted, not yet queued
  std::string close_reason_;
  PeerStats stats_;
};

// How the primary reaches its secondary: a connected stream socket, or why
// not. peer_connect over TCP in the daemon; a socketpair in the component
// tests.
using PeerConnector = std::function<awaitable<Result<PeerConnection::Socket>>()>;

// Connects to `address` within `timeout`, from `source` when given (bound
// before connecting), TCP_NODELAY set.
awaitable<Result<PeerConnection::Socket>> peer_connect(asio::any_io_executor ex, const Address& address,
                                                      std::chrono::seconds timeout,
                                                      const std::optional<Address>& source = std::nullopt);

}  // namespace hastnbd
