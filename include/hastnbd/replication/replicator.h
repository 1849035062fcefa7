// The primary's side of replication: the link to the secondary (connect with
// backoff, handshake, reader of acknowledgements) and the records in flight.
//
// The write path (Primary) submits a Record per modifying request and waits on
// it as its replication mode says: `received` (memsync), `settled` (written or
// failed: fullsync, and every mode before an extent may be cleared). When the
// link drops, every pending record settles as failed at once, so no client
// request ever waits for a dead peer. Loop thread only.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <deque>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "hastnbd/base/asio.h"
#include "hastnbd/base/buffer.h"
#include "hastnbd/config/config.h"
#include "hastnbd/disk/metadata.h"
#include "hastnbd/peer/link.h"
#include "hastnbd/peer/hello.h"

namespace hastnbd {

class ActiveMap;

enum class PeerState { kStandalone, kDisconnected, kConnecting, kConnected };
const char* to_string(PeerState s);

struct Record {
  explicit Record(asio::any_io_executor ex) : received(ex), settled(ex) {}
  uint64_t seq = 0;
  uint8_t type = 0;       // what was sent: the reply must match it
  uint64_t offset = 0;
  uint32_t length = 0;
  uint64_t cost = 0;      // bytes counted against max_inflight
  Latch received;         // the secondary has the record (memsync ack point)
  Latch settled;          // written on the secondary, or failed
  bool ok = false;        // settled by kWritten (or kReadReply)
  std::string error;      // why it failed
  Buffer data;            // kRead: the data read from the secondary; kHash: its hashes
  uint32_t hash_block = 0;  // kHash: the block size asked for
  // Called once as the record settles, before `settled` wakes anyone: the
  // write path's bookkeeping for a request it answered earlier (memsync,
  // async), without a coroutine per request waiting for it.
  std::function<void(const Record&)> on_settled;
  // The connection sending the submitter's own memory as the payload
  // (submit with `borrow`); Replicator::release waits until it is out.
  std::shared_ptr<PeerConnection> borrower;
};

class Replicator {
 public:
  // `hello` supplies what we tell the peer about ourselves at each connect;
  // `connect` reaches the peer (default: TCP to config.remote from config.source).
  Replicator(asio::io_context& io, BufferPool& pool, const ResourceConfig& config,
             std::function<peer::Hello()> hello, PeerConnector connect = {});
  ~Replicator();

  void start();            // connect and keep connected until stop()
  awaitable<void> stop();  // drop the link (pending records fail), stop reconnecting

  PeerState state() const { return state_; }
  bool connected() const { return state_ == PeerState::kConnected; }
  // Connection attempts that ended (connected or not) since start(), and
  // whether the peer's HELLO in the last one said it is primary.
  uint64_t attempts() const { return attempts_; }
  bool peer_was_primary() const { return peer_was_primary_; }

  // Sends one record, or returns nullptr when not connected. Waits while
  // max_inflight bytes are already unacknowledged, so memory stays bounded.
  // `data` is a WRITE's data (encoded per the config), or another record's
  // payload (sent as is, checksummed per the config).
  // With `borrow`, a WRITE's data that goes raw is sent from `data` itself,
  // not a copy: the caller keeps it valid until release() returned.
  awaitable<std::shared_ptr<Record>> submit(uint8_t type, uint16_t flags, uint64_t offset, uint32_t length,
                                            std::span<const uint8_t> data = {}, bool borrow = false);
  // Returns once the connection no longer reads the payload of a record
  // submitted with `borrow` (sent in full, or the link closed); at once for
  // any other. Usually at once anyway: fullsync and memsync callers wait for
  // an acknowledgement first, which comes after the record was sent.
  static awaitable<void> release(Record& rec);
  // A WRITE whose data the caller hands over: sent without a copy when it
  // goes raw (the synchronisation's path).
  awaitable<std::shared_ptr<Record>> submit_buffer(uint16_t flags, uint64_t offset, Buffer data);
  // Reads [offset, offset+length) from the secondary; nullptr if not connected.
  awaitable<std::shared_ptr<Record>> remote_read(uint64_t offset, uint32_t length, uint16_t flags = 0);
  // The secondary's hashes of [offset, offset+length) in blocks of `block`
  // (peer::hash_blocks), in the record's `data` once it settled ok; nullptr
  // if not connected. Ordered on the secondary after every record sent
  // before it that overlaps the range. Only when can_hash().
  awaitable<std::shared_ptr<Record>> remote_hash(uint64_t offset, uint32_t length, uint32_t block,
                                                 uint16_t flags = 0);
  // The connected secondary understands HASH (feature kFeatureHash).
  bool can_hash() const;

  // Called with the secondary's HELLO once it passed check_hello: decides
  // whether the pair may connect (and who synchronises whom). An error
  // refuses the peer; its message is sent to the secondary and logged.
  std::function<awaitable<Status>(const peer::Hello& ours, const peer::Hello& theirs)> on_hello;
  // Called (on the loop) each time a link comes up and each time it goes down.
  std::function<void()> on_connected;
  std::function<void(const std::string& reason)> on_disconnected;

  // After a reload: the timeout applies to the current link at once; a new
  // peer address or source address drops the link (or ends the wait before
  // the next attempt), so the next connect uses it.
  void reconfigure(bool address_changed);

  nlohmann::json status() const;
  uint64_t inflight_bytes() const { return inflight_bytes_; }
  // Age of the oldest record the secondary has not acknowledged; 0 if none.
  double ack_lag_seconds() const;

 private:
  awaitable<void> run(uint64_t run_id);
  awaitable<std::shared_ptr<Record>> submit_impl(uint8_t type, uint16_t flags, uint64_t offset, uint32_t length,
                                                 std::span<const uint8_t> data, Buffer* owned, bool borrow);
  awaitable<Status> handshake(std::shared_ptr<PeerConnection> conn);
  awaitable<void> read_acks(std::shared_ptr<PeerConnection> conn);
  awaitable<void> ack_watchdog(std::shared_ptr<PeerConnection> conn);
  void fail_pending(const std::string& why);
  void settle(uint64_t seq, bool ok, const std::string& error);
  static void finish(Record& rec);  // on_settled, then `settled`
  void set_state(PeerState s);

  asio::io_context& io_;
  BufferPool& pool_;
  const ResourceConfig& config_;
  std::function<peer::Hello()> hello_;
  PeerConnector connect_;
  PeerState state_ = PeerState::kDisconnected;
  uint64_t attempts_ = 0;
  bool peer_was_primary_ = false;
  std::chrono::system_clock::time_point state_since_;
  std::string last_error_;
  std::string last_logged_;  // the last connect failure logged, so a retry loop logs each cause once
  std::shared_ptr<PeerConnection> conn_;
  uint64_t features_ = 0;  // agreed in the AUTH exchange of conn_
  std::unordered_map<uint64_t, std::shared_ptr<Record>> pending_;
  // Records in submission order with their send time: a secondary that stays
  // reachable (keepalives) but stops acknowledging must not stall writers.
  std::deque<std::pair<uint64_t, std::chrono::steady_clock::time_point>> ack_order_;
  uint64_t next_seq_ = 1;
  uint64_t received_upto_ = 0;  // every record up to here has a RECEIVED
  uint32_t lz4_skip_ = 0;     // records left to send without trying lz4
  uint32_t lz4_backoff_ = 0;  // current skip length after a miss
  uint64_t inflight_bytes_ = 0;
  uint64_t resync_bytes_sent_ = 0;
  PeerStats totals_;  // of closed connections
  uint64_t connects_ = 0;
  bool running_ = false;
  uint64_t run_id_ = 0;  // a role change restarts the loop; the old one notices and ends
  AsyncCondition changed_;
  asio::steady_timer backoff_timer_;
  std::string peer_name_;
};

}  // namespace hastnbd
