#include "hastnbd/syncer.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "hastnbd/logging.h"
#include "hastnbd/primary.h"

namespace hastnbd {

namespace {
constexpr uint64_t kChunk = 4u << 20;               // bytes per RESYNC record
constexpr uint64_t kBytesInFlight = 32u << 20;      // copies outstanding at once
constexpr auto kRateWindow = std::chrono::seconds(5);
}  // namespace

const char* to_string(SyncProgress::State s) {
  switch (s) {
    case SyncProgress::State::kNone: return "none";
    case SyncProgress::State::kRunning: return "running";
    case SyncProgress::State::kDone: return "done";
    case SyncProgress::State::kInterrupted: return "interrupted";
  }
  return "?";
}

void SyncProgress::begin(bool from, bool is_full, uint64_t total) {
  state = State::kRunning;
  from_peer = from;
  full = is_full;
  total_bytes = total;
  done_bytes = 0;
  started = std::chrono::steady_clock::now();
  started_wall = std::chrono::system_clock::now();
  ended_wall = {};
  last_error.clear();
  samples.clear();
  samples.emplace_back(started, 0);
}

void SyncProgress::add(uint64_t bytes) {
  done_bytes += bytes;
  auto now = std::chrono::steady_clock::now();
  samples.emplace_back(now, done_bytes);
  while (samples.size() > 2 && now - samples[1].first > kRateWindow) samples.pop_front();
}

double SyncProgress::rate() const {
  if (samples.size() < 2) return 0;
  auto now = std::chrono::steady_clock::now();
  double secs = std::chrono::duration<double>(now - samples.front().first).count();
  if (state != State::kRunning) secs = std::chrono::duration<double>(samples.back().first - samples.front().first).count();
  return secs > 0 ? double(samples.back().second - samples.front().second) / secs : 0;
}

nlohmann::json SyncProgress::to_json() const {
  double r = rate();
  uint64_t left = total_bytes > done_bytes ? total_bytes - done_bytes : 0;
  nlohmann::json j = {
      {"state", to_string(state)},
      {"direction", state == State::kNone ? "" : (from_peer ? "from-peer" : "to-peer")},
      {"full", full},
      {"total_bytes", total_bytes},
      {"done_bytes", done_bytes},
      {"rate", uint64_t(r)},
      {"eta_seconds", (state == State::kRunning && r > 0) ? int64_t(double(left) / r + 0.5) : int64_t(-1)},
      {"started", state == State::kNone ? "" : iso_time(started_wall)},
      {"ended", ended_wall == std::chrono::system_clock::time_point{} ? "" : iso_time(ended_wall)},
      {"last_error", last_error},
  };
  if (state != State::kNone) {
    auto end = state == State::kRunning ? std::chrono::steady_clock::now() : samples.back().first;
    j["elapsed_seconds"] = std::chrono::duration<double>(end - started).count();
  }
  return j;
}

Syncer::Syncer(asio::io_context& io, BufferPool& pool, const ResourceConfig& config, LocalDisk& disk,
               MetadataFile& meta, ActiveMap& map, Uring& uring, Primary& primary, Replicator& replicator)
    : io_(io),
      pool_(pool),
      config_(config),
      disk_(disk),
      meta_(meta),
      map_(map),
      uring_(uring),
      primary_(primary),
      replicator_(replicator),
      rate_(config.sync_rate),
      changed_(io.get_executor()) {}

uint64_t Syncer::extent_bytes(uint64_t e) const {
  uint64_t off = e * map_.extent_size();
  return std::min<uint64_t>(map_.extent_size(), disk_.size() - off);
}

bool Syncer::stale(uint64_t offset, uint64_t length) const {
  return from_peer_ && !map_.peer_has(offset, length);
}

void Syncer::start(SyncPlan plan) {
  ++run_id_;
  if (plan.full) {
    map_.mark_all_needs_sync();
  } else {
    for (uint64_t e = 0; e < map_.extents() && (e >> 3) < plan.peer_map.size(); ++e)
      if ((plan.peer_map[e >> 3] >> (e & 7)) & 1) map_.mark_needs_sync(e);
  }
  // From here on, reads of extents not yet copied must go to the peer.
  from_peer_ = plan.from_peer;
  primary_.set_local_stale(from_peer_ ? [this](uint64_t o, uint64_t l) { return stale(o, l); }
                                      : std::function<bool(uint64_t, uint64_t)>{});
  asio::co_spawn(io_, run(run_id_, std::move(plan)), asio::detached);
}

void Syncer::interrupt(const std::string& why) {
  ++run_id_;
  if (running_ && failure_.empty()) failure_ = why;
  changed_.notify_all();
}

void Syncer::forget_direction() {
  from_peer_ = false;
  primary_.set_local_stale({});
}

awaitable<void> Syncer::stop() {
  interrupt("stopped");
  while (running_) co_await changed_.wait();
}

awaitable<Status> Syncer::set_header_sync(bool syncing, bool from_peer, const uint64_t* remotecnt) {
  MetaHeader h = meta_.header();
  if (syncing) {
    h.flags |= kMetaSynchronising;
    h.sync_direction = from_peer ? SyncDirection::kFromPeer : SyncDirection::kToPeer;
  } else {
    h.flags &= ~uint32_t(kMetaSynchronising | kMetaFresh);
    h.sync_direction = SyncDirection::kNone;
  }
  if (remotecnt) h.remotecnt = *remotecnt;
  if (h.flags == meta_.header().flags && h.sync_direction == meta_.header().sync_direction &&
      h.remotecnt == meta_.header().remotecnt)
    co_return Status::Ok();
  co_return co_await meta_.write_header(uring_, h);
}

awaitable<void> Syncer::pace(uint64_t bytes) {
  if (rate_ == 0) co_return;
  auto now = std::chrono::steady_clock::now();
  // Idle for a while: do not let the saved-up budget become a burst.
  auto due = pace_start_ + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                               std::chrono::duration<double>(double(paced_bytes_) / double(rate_)));
  if (pace_start_ == std::chrono::steady_clock::time_point{} || now - due > std::chrono::seconds(1)) {
    pace_start_ = now;
    paced_bytes_ = 0;
    due = now;
  }
  paced_bytes_ += bytes;
  if (due > now) {
    asio::steady_timer t(io_, due);
    co_await t.async_wait(use_nothrow);
  }
}

awaitable<bool> Syncer::copy_extent(uint64_t run_id, uint64_t e) {
  const uint64_t off = e * map_.extent_size();
  const uint64_t len = extent_bytes(e);
  std::vector<std::shared_ptr<Record>> recs;
  {
    auto guard = co_await primary_.extent_lock().lock(off, off + len, /*exclusive=*/true);
    for (uint64_t pos = off; pos < off + len && current(run_id); pos += kChunk) {
      const uint32_t n = uint32_t(std::min<uint64_t>(kChunk, off + len - pos));
      if (!from_peer_) {
        Buffer buf = pool_.get(n);
        Status s = co_await disk_.read(pos, buf);
        if (!s.ok()) {
          failure_ = "reading " + std::to_string(n) + " bytes at " + std::to_string(pos) + ": " + s.message();
          co_return false;
        }
        auto rec = co_await replicator_.submit_buffer(peer::kFlagResync, pos, std::move(buf));
        if (!rec) co_return false;
        recs.push_back(std::move(rec));
      } else {
        // The lock stays held until the data is on the local disk: a write
        // to this extent must land after the copy, not under it.
        auto rec = co_await replicator_.remote_read(pos, n, peer::kFlagResync);
        if (!rec) co_return false;
        co_await rec->settled.wait();
        if (!rec->ok || rec->data.size() != n) {
          if (current(run_id)) failure_ = "reading from the secondary at " + std::to_string(pos) + ": " + rec->error;
          co_return false;
        }
        Status s = co_await disk_.write(pos, rec->data);
        if (!s.ok()) {
          failure_ = "writing " + std::to_string(n) + " bytes at " + std::to_string(pos) + ": " + s.message();
          co_return false;
        }
      }
    }
  }
  for (auto& rec : recs) {
    co_await rec->settled.wait();
    if (!rec->ok) {
      if (current(run_id) && failure_.empty()) failure_ = "the secondary failed a copy: " + rec->error;
      co_return false;
    }
  }
  if (!current(run_id)) co_return false;
  map_.synced(e);
  progress_.add(len);
  co_return true;
}

awaitable<Status> Syncer::finish(uint64_t peer_localcnt) {
  std::vector<uint8_t> payload = peer::encode_sync_done(meta_.header().localcnt);
  auto rec = co_await replicator_.submit(peer::kSyncDone, 0, 0, 0, payload);
  if (!rec) co_return Status::Error(ENOTCONN, "the link to the secondary went down");
  co_await rec->settled.wait();
  if (!rec->ok) co_return Status::Error(EIO, "SYNC_DONE: " + rec->error);
  co_return co_await set_header_sync(false, false, &peer_localcnt);
}

awaitable<void> Syncer::run(uint64_t run_id, SyncPlan plan) {
  // One loop at a time: a reconnect waits for the previous loop to notice.
  while (running_) co_await changed_.wait();
  if (run_id != run_id_) co_return;
  running_ = true;
  failure_.clear();
  uint64_t total = 0;
  for (uint64_t e = map_.next_needs_sync(0); e < map_.extents(); e = map_.next_needs_sync(e + 1))
    total += extent_bytes(e);
  const bool work = total > 0;
  Status s;
  if (work) {
    progress_.begin(plan.from_peer, plan.full, total);
    // The marks from the peer's map and the direction are durable before
    // the first copy, so a crash of either side resumes this sync.
    s = co_await primary_.bitmap_durable(map_.change_seq());
    if (s.ok()) s = co_await set_header_sync(true, plan.from_peer, nullptr);
    if (s.ok()) {
      spdlog::info("sync: {} {} {} ({} extents){}", plan.full ? "full synchronisation" : "synchronising",
                   plan.from_peer ? "from the secondary," : "to the secondary,", total, map_.needs_sync_count(),
                   rate_ ? ", rate limit " + std::to_string(rate_) + " bytes/s" : std::string());
      if (on_start) on_start(plan.from_peer, total);
    }
  }
  // Writes that started before the sync are not in the extent locks: the
  // first copy waits until they are on the local disk and on the wire.
  if (work) co_await primary_.lock_extents();
  const uint64_t window = std::max<uint64_t>(1, kBytesInFlight / map_.extent_size());
  uint64_t cursor = 0;
  while (s.ok() && current(run_id) && failure_.empty()) {
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
    co_await pace(extent_bytes(e));
    while (copies_in_flight_ >= window && current(run_id)) co_await changed_.wait();
    if (!current(run_id)) break;
    ++copies_in_flight_;
    in_flight_.push_back(e);
    asio::co_spawn(io_, [this, run_id, e]() -> awaitable<void> {
      co_await copy_extent(run_id, e);
      --copies_in_flight_;
      std::erase(in_flight_, e);
      changed_.notify_all();
    }, asio::detached);
  }
  while (copies_in_flight_ > 0) co_await changed_.wait();
  if (s.ok() && current(run_id) && failure_.empty() && map_.needs_sync_count() == 0) {
    s = co_await finish(plan.peer_localcnt);
    if (s.ok()) {
      from_peer_ = false;
      primary_.set_local_stale({});
      if (work) {
        progress_.state = SyncProgress::State::kDone;
        progress_.ended_wall = std::chrono::system_clock::now();
        double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - progress_.started).count();
        spdlog::info("sync: done, {} bytes in {:.1f} s ({:.1f} MiB/s); remotecnt now {}", progress_.done_bytes, secs,
                     secs > 0 ? double(progress_.done_bytes) / secs / (1 << 20) : 0.0, plan.peer_localcnt);
        if (on_done) on_done();
      }
    }
  }
  if (!s.ok() && failure_.empty()) failure_ = s.message();
  if (progress_.state == SyncProgress::State::kRunning) {
    progress_.state = SyncProgress::State::kInterrupted;
    progress_.ended_wall = std::chrono::system_clock::now();
    progress_.last_error = failure_.empty() ? "the link to the secondary went down" : failure_;
    spdlog::warn("sync: interrupted after {} of {} bytes: {}; {} extents left for the next connect",
                 progress_.done_bytes, progress_.total_bytes, progress_.last_error, map_.needs_sync_count());
    if (on_interrupted) on_interrupted(progress_.last_error);
  } else if (!s.ok()) {
    spdlog::warn("sync: {}", s.message());
  }
  primary_.unlock_extents();
  running_ = false;
  changed_.notify_all();
}

}  // namespace hastnbd
