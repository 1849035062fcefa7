// The NBD server's connection, private to the nbd layer: one client socket
// from the fixed-newstyle handshake (negotiation.cpp) through the
// transmission phase (connection.cpp). See hastnbd/nbd/server.h.
#pragma once

#include <array>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "hastnbd/base/read_buffer.h"
#include "hastnbd/nbd/protocol.h"
#include "hastnbd/nbd/server.h"

namespace hastnbd {

namespace nbd_limits {
inline constexpr size_t kReadBufferSize = 256 * 1024;
inline constexpr size_t kDirectReadThreshold = 64 * 1024;  // larger payloads skip the read buffer
inline constexpr unsigned kMaxInflightRequests = 256;
inline constexpr uint64_t kMaxInflightBytes = 256ull << 20;  // > kMaxPayload so one maximal request always fits
inline constexpr unsigned kMaxOptions = 128;                 // a client haggling longer is hostile
inline constexpr auto kHandshakeTimeout = std::chrono::seconds(30);
inline constexpr size_t kMaxGather = 64;                     // replies per writev
inline constexpr unsigned kLoggedBadRequests = 5;            // then only counted

inline constexpr uint16_t kTransmissionFlags = nbd::kTxHasFlags | nbd::kTxSendFlush | nbd::kTxSendFua |
                                        nbd::kTxSendTrim | nbd::kTxSendWriteZeroes | nbd::kTxCanMultiConn;

}  // namespace nbd_limits

class NbdServer::Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(NbdServer& server, asio::generic::stream_protocol::socket socket, std::string peer, uint64_t id,
             bool kernel)
      : server_(server),
        socket_(std::move(socket)),
        peer_(std::move(peer)),
        id_(id),
        kernel_(kernel),
        rbuf_(nbd_limits::kReadBufferSize, nbd_limits::kDirectReadThreshold),
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
  // The option haggling: ok once the client is attached to the export, else
  // why the connection ends.
  awaitable<Status> negotiate();
  // NBD_OPT_INFO / NBD_OPT_GO: attached (GO accepted) or not; an error when
  // the connection cannot go on.
  awaitable<Result<bool>> handle_go(uint32_t option, std::span<const uint8_t> payload);
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
  ReadBuffer rbuf_;
  std::deque<PendingReply> replies_;
  AsyncCondition changed_;  // replies queued, requests finished, writer done
  asio::steady_timer handshake_timer_;
  unsigned inflight_ = 0;
  uint64_t inflight_bytes_ = 0;
  uint64_t queued_bytes_ = 0;  // data of replies_ not yet written
  uint64_t requests_ = 0;
  unsigned bad_requests_ = 0;
  bool no_zeroes_ = false;
  bool stop_ = false;
  bool reading_done_ = false;
  bool writer_done_ = false;
  bool write_failed_ = false;  // a reply could not be sent: the connection is done
  bool handshake_timed_out_ = false;
  std::string end_reason_ = "client closed the connection";
};

}  // namespace hastnbd
