// The secondary's side of replication: listens on its node's `listen`
// address, accepts only its configured peer, checks the handshake, and
// applies the primary's records to the local disk asynchronously — in
// arrival order wherever they overlap (a FIFO range lock per record; a FLUSH
// is a barrier over the whole device) — acknowledging each as asked.
// A READ is ordered after the writes that arrived before it. A newer valid
// connection from the primary replaces an older one.
// Never serves NBD. Loop thread only.
#pragma once

#include <functional>
#include <memory>

#include <nlohmann/json.hpp>

#include "hastnbd/base/asio.h"
#include "hastnbd/base/buffer.h"
#include "hastnbd/base/logging.h"
#include "hastnbd/config/config.h"
#include "hastnbd/disk/disk.h"
#include "hastnbd/peer/link.h"
#include "hastnbd/base/range_lock.h"
#include "hastnbd/replication/replicator.h"

namespace hastnbd {

class Secondary {
 public:
  // `tcp_listener` false: start() binds nothing, and connections come only
  // through serve_connection (the component tests).
  Secondary(asio::io_context& io, BufferPool& pool, const ResourceConfig& config, Disk& disk,
            std::function<peer::Hello()> hello, bool tcp_listener = true);
  ~Secondary();

  // Bind the listener. As a primary (`as_primary`), only to meet a peer that
  // is primary too: HELLOs are exchanged so that on_hello can detect a
  // split-brain, and the peer is always refused.
  Status start(bool as_primary = false);
  awaitable<void> stop();  // close listener and link; wait for records being applied
  // Serve a connection that did not come through the listener (its source
  // already vouched for): the component tests' socketpairs. Needs start().
  void serve_connection(PeerConnection::Socket socket, std::string who);
  // After a reload: the current link takes the new timeout.
  void reconfigure() {
    if (conn_) conn_->set_timeout(std::chrono::seconds(config_.timeout));
  }

  PeerState state() const { return conn_ && conn_->is_open() ? PeerState::kConnected : PeerState::kDisconnected; }
  nlohmann::json status() const;

  // The primary's HELLO passed check_hello: decide whether the pair may
  // connect (our HELLO is already on its way, so the primary sees our
  // counters either way). An error refuses the primary with its message.
  std::function<awaitable<Status>(const peer::Hello& ours, const peer::Hello& theirs)> on_hello;
  std::function<void()> on_connected;
  std::function<void(const std::string& reason)> on_disconnected;
  // SYNC_DONE arrived after every earlier record was applied: store the
  // primary's localcnt and forget the dirty map. Answered once it returns.
  std::function<awaitable<Status>(uint64_t primary_localcnt)> on_sync_done;
  // Bytes copied by the synchronisation (RESYNC records written or read).
  std::function<void(uint64_t bytes)> on_resync_bytes;

 private:
  awaitable<void> admit(asio::ip::tcp::socket socket);  // source check, then serve()
  awaitable<bool> from_configured_peer(const asio::ip::tcp::socket& socket);
  // `counted`: the connection came through admit() and holds a handshake slot.
  awaitable<void> serve(std::shared_ptr<PeerConnection> conn, std::string peer, bool counted,
                        std::chrono::steady_clock::time_point deadline);
  // TLS (config tls): what the connection starts with, then the handshake.
  awaitable<std::shared_ptr<PeerConnection>> start_tls(PeerConnection::Socket socket, const std::string& who,
                                                       std::chrono::steady_clock::time_point deadline);
  void log_refusal(const std::string& who, const std::string& why);
  awaitable<void> refuse(std::shared_ptr<PeerConnection> conn, const std::string& who, const Status& s,
                         bool always_log);
  awaitable<void> apply(std::shared_ptr<PeerConnection> conn, Frame frame, RangeLock::Ticket ticket);
  awaitable<void> read_for_peer(std::shared_ptr<PeerConnection> conn, peer::Header h, RangeLock::Ticket ticket);
  awaitable<void> hash_for_peer(std::shared_ptr<PeerConnection> conn, peer::Header h, uint32_t block,
                                RangeLock::Ticket ticket);
  void reply(PeerConnection& conn, uint8_t type, uint64_t seq);

  asio::io_context& io_;
  BufferPool& pool_;
  const ResourceConfig& config_;
  Disk& disk_;
  std::function<peer::Hello()> hello_;
  std::shared_ptr<asio::ip::tcp::acceptor> acceptor_;
  bool tcp_listener_;
  bool as_primary_ = false;
  std::shared_ptr<PeerConnection> conn_;
  RangeLock order_;
  uint64_t applying_ = 0;        // records being applied or read for the primary
  uint64_t applying_bytes_ = 0;  // their data
  AsyncCondition changed_;
  std::chrono::system_clock::time_point since_;
  std::string last_error_;
  PeerStats totals_;
  uint64_t records_applied_ = 0;
  uint64_t resync_bytes_ = 0;   // written or read for the synchronisation
  uint64_t hashed_bytes_ = 0;   // read and hashed for the primary (verify, checksum resync)
  uint64_t apply_errors_ = 0;
  uint64_t refused_ = 0;
  unsigned handshakes_ = 0;  // accepted, not yet authenticated
  LogLimiter refusal_log_;
  std::string last_refusal_;
  uint64_t connects_ = 0;
};

}  // namespace hastnbd
