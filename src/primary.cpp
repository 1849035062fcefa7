#include "hastnbd/primary.h"

#include <spdlog/spdlog.h>

namespace hastnbd {

Primary::Primary(asio::io_context& io, LocalDisk& disk, MetadataFile& meta, ActiveMap& map, Uring& uring,
                 bool metaflush)
    : disk_(disk), meta_(meta), map_(map), uring_(uring), metaflush_(metaflush), changed_(io.get_executor()) {}

awaitable<Status> Primary::read(uint64_t offset, Buffer& out) { return disk_.read(offset, out); }

// Coalescing bitmap sync: one fdatasync at a time covers every bit set before
// it started; writers wait for the first sync whose start saw their bits.
awaitable<Status> Primary::bitmap_durable(uint64_t ticket) {
  while (map_.durable_seq() < ticket) {
    if (bitmap_sync_running_) {
      co_await changed_.wait();
      continue;
    }
    bitmap_sync_running_ = true;
    uint64_t target = map_.change_seq();
    Status s = co_await meta_.sync_bitmap(uring_);
    bitmap_sync_running_ = false;
    ++stats_.bitmap_syncs;
    if (s.ok()) map_.mark_durable(target);
    changed_.notify_all();
    if (!s.ok()) co_return s;
  }
  co_return Status::Ok();
}

// Without a secondary, the first write of this period starts a new data
// generation; it must be on disk before the write is, so that after a crash
// the peers can tell this node wrote alone.
awaitable<Status> Primary::generation_started() {
  while (!generation_bumped_) {
    if (generation_bump_running_) {
      co_await changed_.wait();
      continue;
    }
    generation_bump_running_ = true;
    MetaHeader h = meta_.header();
    ++h.localcnt;
    h.flags &= ~uint32_t(kMetaFresh);
    Status s = co_await meta_.write_header(uring_, h);
    generation_bump_running_ = false;
    changed_.notify_all();
    if (!s.ok()) co_return s;
    generation_bumped_ = true;
    ++stats_.generation_bumps;
    spdlog::info("metadata: degraded write: localcnt now {} (remotecnt {})", h.localcnt, h.remotecnt);
  }
  co_return Status::Ok();
}

template <class Op>
awaitable<Status> Primary::modify(uint64_t offset, uint64_t length, bool fua, Op op) {
  uint64_t ticket = map_.write_start(offset, length);
  ++stats_.writes_in_flight;
  Status s;
  if (ticket != 0) {
    // With metaflush off the bits still reach disk, only without ordering.
    if (metaflush_) s = co_await bitmap_durable(ticket);
  }
  if (s.ok() && !generation_bumped_) s = co_await generation_started();
  if (s.ok()) s = co_await op();
  if (s.ok() && fua) s = co_await disk_.flush();
  map_.write_done(offset, length, /*confirmed=*/false);
  --stats_.writes_in_flight;
  changed_.notify_all();
  co_return s;
}

awaitable<Status> Primary::write(uint64_t offset, const Buffer& data, bool fua) {
  co_return co_await modify(offset, data.size(), fua, [&] { return disk_.write(offset, data); });
}

awaitable<Status> Primary::trim(uint64_t offset, uint64_t length, bool fua) {
  co_return co_await modify(offset, length, fua, [&] { return disk_.trim(offset, length); });
}

awaitable<Status> Primary::write_zeroes(uint64_t offset, uint64_t length, bool may_unmap, bool fua) {
  co_return co_await modify(offset, length, fua, [&] { return disk_.write_zeroes(offset, length, may_unmap); });
}

awaitable<Status> Primary::flush() {
  Status s = co_await disk_.flush();
  if (s.ok() && !metaflush_) {
    // Without metaflush the bitmap is only ordered by FLUSH: sync it too.
    uint64_t target = map_.change_seq();
    s = co_await meta_.sync_bitmap(uring_);
    if (s.ok()) map_.mark_durable(target);
  }
  co_return s;
}

awaitable<void> Primary::drain() {
  while (stats_.writes_in_flight > 0) co_await changed_.wait();
}

}  // namespace hastnbd
