// The primary's I/O path (docs/design.md, "The write path").
//
// Per modifying request: extents dirty in the activemap -> bitmap durable if
// a bit changed (metaflush) -> the record goes to the secondary (if the link
// is up) while the local O_DIRECT write runs -> the client is answered at the
// mode's ack point (fullsync: secondary wrote it; memsync: secondary received
// it; async: local write done) -> once the secondary confirmed (or failed),
// the activemap is told, which is when a bit may clear.
// Without a secondary the node runs degraded: writes complete locally, their
// extents stay dirty, and the first write of each degraded period bumps
// localcnt durably before it completes. A failed local read is retried on the
// secondary when it holds good data for the range. While a sync from the
// secondary is unfinished the local disk is inconsistent: stale ranges are
// read from the secondary, and without one, writes fail rather than start a
// generation the secondary's newer data would then conflict with.
// Loop thread only; disk, metadata, activemap and replicator outlive it.
#pragma once

#include "hastnbd/base/range_lock.h"
#include "hastnbd/config/config.h"
#include "hastnbd/disk/disk.h"
#include "hastnbd/disk/meta_store.h"
#include "hastnbd/nbd/backend.h"
#include "hastnbd/replication/replicator.h"

namespace hastnbd {

struct WritePathStats {
  uint64_t generation_bumps = 0;
  uint64_t writes_in_flight = 0;    // until settled on the secondary too
  uint64_t degraded_writes = 0;     // completed without the secondary's confirmation
  uint64_t remote_reads = 0;        // reads served by the secondary (local error, or stale extent)
  uint64_t stale_refused = 0;       // requests failed: local copy stale and no secondary to ask
};

class WritePath : public BlockBackend {
 public:
  // `replicator` may be null: a resource without a peer.
  WritePath(asio::io_context& io, Disk& disk, MetaStore& store, const ResourceConfig& config,
            Replicator* replicator);

  uint64_t size() const override { return disk_.size(); }
  awaitable<Status> read(uint64_t offset, Buffer& out) override;
  awaitable<Status> write(uint64_t offset, const Buffer& data, bool fua) override;
  awaitable<Status> flush() override;
  awaitable<Status> trim(uint64_t offset, uint64_t length, bool fua) override;
  awaitable<Status> write_zeroes(uint64_t offset, uint64_t length, bool may_unmap, bool fua) override;

  // The link came up: the next write without it starts a new generation.
  void peer_connected() { generation_bumped_ = false; }
  // Wait until no write is in flight, settlements on the secondary included.
  awaitable<void> drain();
  // While a sync or a verify runs, writes hold their range shared from
  // before they are queued to the secondary until the local write
  // completes, and the syncer (the verifier) holds a range exclusively while
  // it copies (hashes) it. Without either the locks would only cost time:
  // lock_extents() turns them on (returning once every write that started
  // without one has left that section), unlock_extents() off again once
  // every caller of lock_extents() called it.
  RangeLock& extent_lock() { return extent_lock_; }
  awaitable<void> lock_extents();
  void unlock_extents() { --extent_lock_users_; }
  // While a sync from the secondary is unfinished, the local disk holds old
  // data for the extents not copied yet: their reads go to the secondary,
  // and without a secondary no request can be served correctly (EIO).
  bool stale(uint64_t offset, uint64_t length) const;
  const WritePathStats& stats() const { return stats_; }

 private:
  template <class Op>
  awaitable<Status> modify(uint8_t record_type, uint16_t record_flags, uint64_t offset, uint64_t length, bool fua,
                           std::span<const uint8_t> data, Op local_op);
  awaitable<Status> read_remote(uint64_t offset, Buffer& out, const Status& local);
  awaitable<Status> generation_started();
  void write_finished(uint64_t offset, uint64_t length, bool confirmed);

  bool inconsistent() const;

  asio::io_context& io_;
  Disk& disk_;
  MetaStore& store_;
  ActiveMap& map_;
  const ResourceConfig& config_;
  Replicator* replicator_;
  bool generation_bumped_ = false;
  bool generation_bump_running_ = false;
  AsyncCondition changed_;
  RangeLock extent_lock_;
  unsigned extent_lock_users_ = 0;  // lock_extents() callers
  uint64_t unlocked_writers_ = 0;  // in the section above without a lock
  WritePathStats stats_;
};

}  // namespace hastnbd
