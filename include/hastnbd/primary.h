// The primary's I/O path (GUIDE §3, write path). Until replication lands this
// node has no secondary, so it runs degraded: writes complete locally, their
// extents stay dirty, and the first write of a degraded period bumps localcnt
// durably before any data is written.
//
// Order per write: extents dirty in the activemap -> bitmap durable if a bit
// changed (metaflush) -> generation bumped if needed -> local O_DIRECT write
// -> FUA flush if asked -> activemap told the write ended.
// Loop thread only; disk, metadata and activemap outlive it.
#pragma once

#include "hastnbd/activemap.h"
#include "hastnbd/block_backend.h"
#include "hastnbd/local_disk.h"
#include "hastnbd/metadata.h"
#include "hastnbd/uring.h"

namespace hastnbd {

struct PrimaryStats {
  uint64_t bitmap_syncs = 0;
  uint64_t generation_bumps = 0;
  uint64_t writes_in_flight = 0;
};

class Primary : public BlockBackend {
 public:
  Primary(asio::io_context& io, LocalDisk& disk, MetadataFile& meta, ActiveMap& map, Uring& uring, bool metaflush);

  uint64_t size() const override { return disk_.size(); }
  awaitable<Status> read(uint64_t offset, Buffer& out) override;
  awaitable<Status> write(uint64_t offset, const Buffer& data, bool fua) override;
  awaitable<Status> flush() override;
  awaitable<Status> trim(uint64_t offset, uint64_t length, bool fua) override;
  awaitable<Status> write_zeroes(uint64_t offset, uint64_t length, bool may_unmap, bool fua) override;

  // Wait until no write is in flight (role change, shutdown).
  awaitable<void> drain();
  const PrimaryStats& stats() const { return stats_; }

 private:
  // Everything a modifying request does around its local operation.
  template <class Op>
  awaitable<Status> modify(uint64_t offset, uint64_t length, bool fua, Op op);
  awaitable<Status> bitmap_durable(uint64_t ticket);
  awaitable<Status> generation_started();

  LocalDisk& disk_;
  MetadataFile& meta_;
  ActiveMap& map_;
  Uring& uring_;
  bool metaflush_;
  bool bitmap_sync_running_ = false;
  bool generation_bumped_ = false;
  bool generation_bump_running_ = false;
  AsyncCondition changed_;
  PrimaryStats stats_;
};

}  // namespace hastnbd
