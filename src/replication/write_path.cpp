#include "hastnbd/replication/write_path.h"

#include <spdlog/spdlog.h>

#include <cstring>

#include "hastnbd/replication/transitions.h"

namespace hastnbd {

WritePath::WritePath(asio::io_context& io, Disk& disk, MetaStore& store, const ResourceConfig& config,
                     Replicator* replicator)
    : io_(io),
      disk_(disk),
      store_(store),
      map_(store.map()),
      config_(config),
      replicator_(replicator),
      changed_(io.get_executor()),
      extent_lock_(io.get_executor()) {}

awaitable<Status> WritePath::read_remote(uint64_t offset, Buffer& out, const Status& local) {
  // (No co_await inside ?: : GCC 12 miscompiles it.)
  std::shared_ptr<Record> rec;
  if (replicator_) rec = co_await replicator_->remote_read(offset, uint32_t(out.size()));
  if (!rec) co_return local;
  co_await rec->settled.wait();
  if (!rec->ok || rec->data.size() != out.size()) {
    spdlog::error("{}, and the secondary failed it too: {}", local.message(), rec->error);
    co_return local;
  }
  std::memcpy(out.data(), rec->data.data(), out.size());
  ++stats_.remote_reads;
  co_return Status::Ok();
}

awaitable<Status> WritePath::read(uint64_t offset, Buffer& out) {
  if (stale(offset, out.size())) {
    Status s = co_await read_remote(
        offset, out, Status::Error(EIO, "the local copy is older than the secondary's and the secondary is gone"));
    if (!s.ok()) ++stats_.stale_refused;
    co_return s;
  }
  Status s = co_await disk_.read(offset, out);
  if (s.ok() || !replicator_ || !replicator_->connected() || !map_.peer_has(offset, out.size())) co_return s;
  s = co_await read_remote(offset, out, s);
  if (s.ok()) spdlog::warn("local read at {}+{} failed; served from the secondary", offset, out.size());
  co_return s;
}

bool WritePath::inconsistent() const { return meta::is_sync_target(store_.header()); }

bool WritePath::stale(uint64_t offset, uint64_t length) const {
  return inconsistent() && !map_.peer_has(offset, length);
}

// The first write of a degraded period starts a new data generation; it must
// be on disk before the write completes, so that after a crash the peers can
// tell this node wrote alone.
awaitable<Status> WritePath::generation_started() {
  while (!generation_bumped_) {
    if (generation_bump_running_) {
      co_await changed_.wait();
      continue;
    }
    generation_bump_running_ = true;
    const uint64_t now = uint64_t(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                      std::chrono::system_clock::now().time_since_epoch())
                                      .count());
    Status s = co_await store_.update([now](const MetaHeader& h) { return meta::start_generation(h, now); });
    generation_bump_running_ = false;
    changed_.notify_all();
    if (!s.ok()) co_return s;
    generation_bumped_ = true;
    ++stats_.generation_bumps;
    spdlog::info("metadata: writing without the secondary: localcnt now {} (remotecnt {})", store_.header().localcnt,
                 store_.header().remotecnt);
  }
  co_return Status::Ok();
}

void WritePath::write_finished(uint64_t offset, uint64_t length, bool confirmed) {
  if (!confirmed) ++stats_.degraded_writes;
  map_.write_done(offset, length, confirmed);
  --stats_.writes_in_flight;
  changed_.notify_all();
}

template <class Op>
awaitable<Status> WritePath::modify(uint8_t record_type, uint16_t record_flags, uint64_t offset, uint64_t length,
                                  bool fua, std::span<const uint8_t> data, Op local_op) {
  // An inconsistent node alone must not write: a new generation here would
  // turn the unfinished sync into a split-brain.
  const bool target = inconsistent();
  if (target && (!replicator_ || !replicator_->connected())) {
    ++stats_.stale_refused;
    co_return Status::Error(EIO, "this node is the target of an unfinished sync and the secondary is gone");
  }
  uint64_t ticket = map_.write_start(offset, length);
  ++stats_.writes_in_flight;
  Status s;
  // With metaflush off the bits still reach disk, only without ordering.
  if (ticket != 0 && config_.metaflush) s = co_await store_.bitmap_durable(ticket);
  std::shared_ptr<Record> rec;
  {
    RangeLock::Guard guard;
    if (extent_lock_users_ > 0)
      guard = co_await extent_lock_.lock(offset, offset + length, /*exclusive=*/false);
    else
      ++unlocked_writers_;
    if (s.ok() && replicator_) {
      uint16_t flags = record_flags | (fua && config_.replication != Replication::kAsync ? peer::kFlagFua : 0);
      // Fullsync and memsync wait below for an acknowledgement anyway: the
      // data is sent from the client's buffer, not a copy (released below).
      rec = co_await replicator_->submit(record_type, flags, offset, uint32_t(length), data,
                                         /*borrow=*/config_.replication != Replication::kAsync);
    }
    if (s.ok() && !rec && target) s = Status::Error(EIO, "the link to the secondary went down");
    if (s.ok() && !rec && !generation_bumped_) s = co_await generation_started();
    if (s.ok()) s = co_await local_op();  // the record is on its way meanwhile
    if (!guard.held() && --unlocked_writers_ == 0) changed_.notify_all();
  }
  if (s.ok() && fua) s = co_await disk_.flush();
  if (rec) {
    switch (config_.replication) {
      case Replication::kFullsync:
        co_await rec->settled.wait();
        break;
      case Replication::kMemsync:
        co_await (fua ? rec->settled : rec->received).wait();
        break;
      case Replication::kAsync:
        break;
    }
    co_await Replicator::release(*rec);  // `data` is the client's: it goes when we return
    if (rec->settled.is_set() && !rec->ok && target) {
      if (s.ok()) s = Status::Error(EIO, "the secondary did not confirm a write to an inconsistent node: " + rec->error);
    } else if (rec->settled.is_set() && !rec->ok && !generation_bumped_) {
      Status g = co_await generation_started();
      if (s.ok()) s = g;
    }
    if (!rec->settled.is_set()) {
      // Answered before the secondary confirmed: the extent stays in flight
      // (and dirty) until it does.
      rec->on_settled = [this, local_ok = s.ok()](const Record& r) {
        write_finished(r.offset, r.length, local_ok && r.ok);
      };
      co_return s;
    }
  }
  write_finished(offset, length, s.ok() && rec && rec->ok);
  co_return s;
}

awaitable<Status> WritePath::write(uint64_t offset, const Buffer& data, bool fua) {
  co_return co_await modify(peer::kWrite, 0, offset, data.size(), fua, data.span(),
                            [&] { return disk_.write(offset, data); });
}

awaitable<Status> WritePath::trim(uint64_t offset, uint64_t length, bool fua) {
  co_return co_await modify(peer::kTrim, 0, offset, length, fua, {}, [&] { return disk_.trim(offset, length); });
}

awaitable<Status> WritePath::write_zeroes(uint64_t offset, uint64_t length, bool may_unmap, bool fua) {
  co_return co_await modify(peer::kWriteZeroes, may_unmap ? 0 : peer::kFlagNoHole, offset, length, fua, {},
                            [&] { return disk_.write_zeroes(offset, length, may_unmap); });
}

awaitable<Status> WritePath::flush() {
  // The secondary flushes too where the mode promises durability there.
  std::shared_ptr<Record> rec;
  if (replicator_ && config_.replication != Replication::kAsync) rec = co_await replicator_->submit(peer::kFlush, 0, 0, 0);
  Status s = co_await disk_.flush();
  // Without metaflush the bitmap is only ordered by FLUSH: sync it too.
  if (s.ok() && !config_.metaflush) s = co_await store_.bitmap_durable();
  // A secondary that fails or vanishes here leaves the writes it missed
  // dirty; the flush itself succeeded locally.
  if (rec) co_await rec->settled.wait();
  co_return s;
}

awaitable<void> WritePath::lock_extents() {
  ++extent_lock_users_;
  while (unlocked_writers_ > 0) co_await changed_.wait();
}

awaitable<void> WritePath::drain() {
  while (stats_.writes_in_flight > 0) co_await changed_.wait();
}

}  // namespace hastnbd
