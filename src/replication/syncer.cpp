#include "hastnbd/replication/syncer.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <optional>

#include "hastnbd/base/logging.h"
#include "hastnbd/replication/transitions.h"
#include "hastnbd/replication/write_path.h"

namespace hastnbd {

namespace {
constexpr uint64_t kChunk = 4u << 20;           // bytes per RESYNC record
constexpr uint64_t kBytesInFlight = 32u << 20;  // copies outstanding at once
constexpr uint32_t kCompareBlock = 4096;        // bytes per hash (sync_compare)
}  // namespace

Syncer::Syncer(asio::io_context& io, BufferPool& pool, const ResourceConfig& config, Disk& disk, MetaStore& store,
               WritePath& write_path, Replicator& replicator)
    : io_(io),
      pool_(pool),
      config_(config),
      disk_(disk),
      store_(store),
      map_(store.map()),
      write_path_(write_path),
      replicator_(replicator),
      pacer_(config.sync_rate),
      changed_(io.get_executor()) {}

uint64_t Syncer::extent_bytes(uint64_t e) const {
  uint64_t off = e * map_.extent_size();
  return std::min<uint64_t>(map_.extent_size(), disk_.size() - off);
}

void Syncer::start(SyncPlan plan) {
  ++run_id_;
  if (plan.full) {
    map_.mark_all_needs_sync();
  } else {
    for (uint64_t e = 0; e < map_.extents() && (e >> 3) < plan.peer_map.size(); ++e)
      if ((plan.peer_map[e >> 3] >> (e & 7)) & 1) map_.mark_needs_sync(e);
  }
  starting_ = true;
  starting_run_ = run_id_;
  asio::co_spawn(io_, run(run_id_, std::move(plan)), asio::detached);
}

void Syncer::interrupt(const std::string& why) {
  ++run_id_;
  if (running_ && failure_.ok()) failure_ = Status::Error(ECONNABORTED, why);
  changed_.notify_all();
}

awaitable<void> Syncer::stop() {
  interrupt("stopped");
  while (running_) co_await changed_.wait();
}

awaitable<Status> Syncer::compare_chunk(uint64_t pos, uint32_t n, bool from_peer,
                                       std::vector<std::shared_ptr<Record>>& recs) {
  const Status link_down = Status::Error(ENOTCONN, "the link to the secondary went down");
  // The secondary hashes after every record queued before the HASH; nothing
  // for this chunk is queued until the copies below (the caller's lock).
  auto hashes = co_await replicator_.remote_hash(pos, n, kCompareBlock, peer::kFlagResync);
  if (!hashes) co_return link_down;
  Buffer local = pool_.get(n);
  if (Status s = co_await disk_.read(pos, local); !s.ok())
    co_return Status::Error(s.code(), "reading " + std::to_string(n) + " bytes at " + std::to_string(pos) + ": " +
                                          s.message());
  co_await hashes->settled.wait();
  if (!hashes->ok) co_return Status::Error(EIO, "the secondary's hashes at " + std::to_string(pos) + ": " + hashes->error);
  const std::vector<uint8_t> ours = peer::hash_blocks(local.span(), kCompareBlock);
  if (hashes->data.size() != ours.size()) co_return Status::Error(EPROTO, "the secondary's hashes do not match the request");
  progress_.compared_bytes += n;
  for (const auto& [off, run] : peer::differing_runs(ours, hashes->data.span(), n, kCompareBlock)) {
    const uint32_t len = uint32_t(run);
    progress_.copied_bytes += len;
    if (!from_peer) {
      auto rec = co_await replicator_.submit(peer::kWrite, peer::kFlagResync, pos + off, len,
                                             local.span().subspan(off, len));
      if (!rec) co_return link_down;
      recs.push_back(std::move(rec));
      continue;
    }
    auto rec = co_await replicator_.remote_read(pos + off, len, peer::kFlagResync);
    if (!rec) co_return link_down;
    co_await rec->settled.wait();
    if (!rec->ok || rec->data.size() != len)
      co_return Status::Error(EIO, "reading from the secondary at " + std::to_string(pos + off) + ": " + rec->error);
    if (Status s = co_await disk_.write(pos + off, rec->data); !s.ok())
      co_return Status::Error(s.code(), "writing " + std::to_string(len) + " bytes at " + std::to_string(pos + off) +
                                            ": " + s.message());
  }
  co_return Status::Ok();
}

awaitable<Status> Syncer::copy_extent(uint64_t run_id, uint64_t e, bool from_peer, bool compare) {
  const uint64_t off = e * map_.extent_size();
  const uint64_t len = extent_bytes(e);
  const Status link_down = Status::Error(ENOTCONN, "the link to the secondary went down");
  std::vector<std::shared_ptr<Record>> recs;
  // A mark made while the copy runs is not covered by it (end_copy below).
  struct CopyScope {
    ActiveMap& map;
    uint64_t e;
    ~CopyScope() { map.end_copy(e); }
  };
  std::optional<CopyScope> scope;
  {
    auto guard = co_await write_path_.extent_lock().lock(off, off + len, /*exclusive=*/true);
    map_.begin_copy(e);
    scope.emplace(CopyScope{map_, e});
    // What this node wrote without the peer, where it is known per granule
    // (docs/design.md, "Fine-grained tracking"); else the whole extent.
    std::vector<std::pair<uint64_t, uint64_t>> ranges{{off, len}};
    if (auto fine = map_.fine_ranges(e); fine && !from_peer) {
      ranges = std::move(*fine);
      progress_.fine_bytes += len;
      // Granules of one block are copied as they are; larger ones compared.
      compare = compare && map_.granule() > kCompareBlock;
    }
    for (const auto& [begin, length] : ranges) {
      for (uint64_t pos = begin; pos < begin + length && current(run_id); pos += kChunk) {
        const uint32_t n = uint32_t(std::min<uint64_t>(kChunk, begin + length - pos));
        const std::string where = std::to_string(n) + " bytes at " + std::to_string(pos);
        if (compare) {
          if (Status s = co_await compare_chunk(pos, n, from_peer, recs); !s.ok()) co_return s;
          continue;
        }
        progress_.copied_bytes += n;
        if (!from_peer) {
          Buffer buf = pool_.get(n);
          if (Status s = co_await disk_.read(pos, buf); !s.ok())
            co_return Status::Error(s.code(), "reading " + where + ": " + s.message());
          auto rec = co_await replicator_.submit_buffer(peer::kFlagResync, pos, std::move(buf));
          if (!rec) co_return link_down;
          recs.push_back(std::move(rec));
        } else {
          // The lock stays held until the data is on the local disk: a write
          // to this extent must land after the copy, not under it.
          auto rec = co_await replicator_.remote_read(pos, n, peer::kFlagResync);
          if (!rec) co_return link_down;
          co_await rec->settled.wait();
          if (!rec->ok || rec->data.size() != n)
            co_return Status::Error(EIO, "reading from the secondary at " + std::to_string(pos) + ": " + rec->error);
          if (Status s = co_await disk_.write(pos, rec->data); !s.ok())
            co_return Status::Error(s.code(), "writing " + where + ": " + s.message());
        }
      }
    }
  }
  for (auto& rec : recs) {
    co_await rec->settled.wait();
    if (!rec->ok) co_return Status::Error(EIO, "the secondary failed a copy: " + rec->error);
  }
  if (!current(run_id)) co_return link_down;
  // A write the secondary failed while the copy ran marked the extent
  // again: it stays to be copied (the run's loop comes back to it).
  if (!map_.end_copy(e)) map_.synced(e);
  progress_.add(len);
  co_return Status::Ok();
}

awaitable<Status> Syncer::finish(uint64_t peer_localcnt) {
  std::vector<uint8_t> payload = peer::encode_sync_done(store_.header().localcnt);
  auto rec = co_await replicator_.submit(peer::kSyncDone, 0, 0, 0, payload);
  if (!rec) co_return Status::Error(ENOTCONN, "the link to the secondary went down");
  co_await rec->settled.wait();
  if (!rec->ok) co_return Status::Error(EIO, "SYNC_DONE: " + rec->error);
  co_return co_await store_.update(
      [peer_localcnt](const MetaHeader& h) { return meta::finish_sync(h, peer_localcnt); });
}

awaitable<void> Syncer::run(uint64_t run_id, SyncPlan plan) {
  // One loop at a time: a reconnect waits for the previous loop to notice.
  while (running_) co_await changed_.wait();
  if (run_id == starting_run_) starting_ = false;
  if (run_id != run_id_) co_return;
  running_ = true;
  failure_ = Status::Ok();
  uint64_t total = 0;
  for (uint64_t e = map_.next_needs_sync(0); e < map_.extents(); e = map_.next_needs_sync(e + 1))
    total += extent_bytes(e);
  const bool work = total > 0;
  // A full sync's target holds nothing worth comparing.
  const bool compare = !plan.full && config_.sync_compare && replicator_.can_hash();
  Status s;
  if (work) {
    progress_.begin(plan.from_peer, plan.full, total);
    // The marks from the peer's map and the direction are durable before
    // the first copy, so a crash of either side resumes this sync.
    s = co_await store_.bitmap_durable();
    const SyncDirection dir = plan.from_peer ? SyncDirection::kFromPeer : SyncDirection::kToPeer;
    if (s.ok()) s = co_await store_.update([dir](const MetaHeader& h) { return meta::begin_sync(h, dir); });
    if (s.ok()) {
      spdlog::info("sync: {} {} {} ({} extents){}{}", plan.full ? "full synchronisation" : "synchronising",
                   plan.from_peer ? "from the secondary," : "to the secondary,", total, map_.needs_sync_count(),
                   compare ? ", comparing 4 KiB blocks by hashes first" : "",
                   pacer_.rate() ? ", rate limit " + std::to_string(pacer_.rate()) + " bytes/s" : std::string());
      if (on_start) on_start(plan.from_peer, total);
    }
  }
  // Writes that started before the sync are not in the extent locks: the
  // first copy waits until they are on the local disk and on the wire.
  if (work) co_await write_path_.lock_extents();
  const uint64_t window = std::max<uint64_t>(1, kBytesInFlight / map_.extent_size());
  uint64_t cursor = 0;
  while (s.ok() && current(run_id) && failure_.ok()) {
    uint64_t e = map_.next_needs_sync(cursor);
    while (e < map_.extents() && std::find(in_flight_.begin(), in_flight_.end(), e) != in_flight_.end())
      e = map_.next_needs_sync(e + 1);
    if (e >= map_.extents()) {
      if (copies_in_flight_ > 0) {
        co_await changed_.wait();
        continue;
      }
      if (map_.needs_sync_count() == 0) break;
      cursor = 0;  // extents marked again behind the cursor (a failed confirmation)
      continue;
    }
    cursor = e + 1;
    co_await pacer_.pace(io_, extent_bytes(e));
    while (copies_in_flight_ >= window && current(run_id)) co_await changed_.wait();
    if (!current(run_id)) break;
    ++copies_in_flight_;
    in_flight_.push_back(e);
    asio::co_spawn(
        io_,
        [this, run_id, e, from_peer = plan.from_peer, compare]() -> awaitable<void> {
          Status copied = co_await copy_extent(run_id, e, from_peer, compare);
          // A copy that failed while the link is up stops this run; one that
          // ended because the link went down needs no reason of its own.
          if (!copied.ok() && current(run_id) && failure_.ok()) failure_ = copied;
          --copies_in_flight_;
          std::erase(in_flight_, e);
          changed_.notify_all();
        },
        asio::detached);
  }
  while (copies_in_flight_ > 0) co_await changed_.wait();
  if (s.ok() && current(run_id) && failure_.ok() && map_.needs_sync_count() == 0) {
    s = co_await finish(plan.peer_localcnt);
    if (s.ok() && work) {
      progress_.state = SyncProgress::State::kDone;
      progress_.ended_wall = std::chrono::system_clock::now();
      double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - progress_.started).count();
      spdlog::info("sync: done, {} bytes in {:.1f} s ({:.1f} MiB/s; {} compared by hashes, {} copied); remotecnt "
                   "now {}",
                   progress_.done_bytes, secs, secs > 0 ? double(progress_.done_bytes) / secs / (1 << 20) : 0.0,
                   progress_.compared_bytes, progress_.copied_bytes, plan.peer_localcnt);
      if (on_done) on_done(progress_.copied_bytes, progress_.compared_bytes);
    }
  }
  if (!s.ok() && failure_.ok()) failure_ = s;
  if (progress_.state == SyncProgress::State::kRunning) {
    progress_.state = SyncProgress::State::kInterrupted;
    progress_.ended_wall = std::chrono::system_clock::now();
    progress_.last_error = failure_.ok() ? "the link to the secondary went down" : failure_.message();
    spdlog::warn("sync: interrupted after {} of {} bytes: {}; {} extents left for the next connect",
                 progress_.done_bytes, progress_.total_bytes, progress_.last_error, map_.needs_sync_count());
    if (on_interrupted) on_interrupted(progress_.last_error);
  } else if (!s.ok()) {
    spdlog::warn("sync: {}", s.message());
  }
  if (work) write_path_.unlock_extents();
  running_ = false;
  changed_.notify_all();
}

}  // namespace hastnbd
