#include "hastnbd/replication/verifier.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "hastnbd/base/files.h"
#include "hastnbd/base/logging.h"
#include "hastnbd/replication/write_path.h"

namespace hastnbd {

namespace {
constexpr uint64_t kBytesInFlight = 16u << 20;          // chunks being checked at once
constexpr auto kSaveInterval = std::chrono::seconds(2);  // the state file's freshness while running
constexpr uint64_t kLoggedRanges = 64;                   // mismatched ranges logged one by one per run

std::string range_text(uint64_t offset, uint64_t length) {
  return std::to_string(offset) + "+" + std::to_string(length);
}
}  // namespace

const char* Verifier::to_string(State s) {
  switch (s) {
    case State::kNone: return "none";
    case State::kRunning: return "running";
    case State::kDone: return "done";
    case State::kStopped: return "stopped";
    case State::kInterrupted: return "interrupted";
  }
  return "?";
}

Verifier::Verifier(asio::io_context& io, BufferPool& pool, const ResourceConfig& config, Disk& disk,
                   MetaStore& store, WritePath& write_path, Replicator& replicator)
    : io_(io),
      pool_(pool),
      config_(config),
      disk_(disk),
      store_(store),
      map_(store.map()),
      write_path_(write_path),
      replicator_(replicator),
      pacer_(config.verify_rate),
      changed_(io.get_executor()) {}

std::string Verifier::state_path() const { return config_.state_dir + "/" + config_.name + ".verify"; }

void Verifier::load() {
  std::ifstream in(state_path());
  if (!in) return;
  std::stringstream text;
  text << in.rdbuf();
  const auto j = nlohmann::json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) {
    spdlog::warn("verify: {} is unreadable; the last verify's state is unknown", state_path());
    return;
  }
  try {
    const std::string state = j.value("state", "");
    begin_ = j.value("offset", uint64_t(0));
    const uint64_t length = j.value("length", uint64_t(0));
    if (length > disk_.size() || begin_ > disk_.size() - length)
      throw nlohmann::json::other_error::create(501, "range beyond the device", nullptr);
    end_ = begin_ + length;
    next_ = std::min(std::max(j.value("position", begin_), begin_), end_);
    repair_ = j.value("repair", false);
    mismatched_bytes_ = j.value("mismatched_bytes", uint64_t(0));
    mismatched_ranges_ = j.value("mismatched_ranges", uint64_t(0));
    skipped_bytes_ = j.value("skipped_bytes", uint64_t(0));
    last_error_ = j.value("last_error", "");
    loaded_started_ = j.value("started", "");
    loaded_ended_ = state == "running" ? j.value("saved", "") : j.value("ended", "");
    for (const auto& r : j.value("mismatches", nlohmann::json::array()))
      if (kept_.size() < kVerifyKeptRanges) kept_.push_back({r.value("offset", uint64_t(0)), r.value("length", uint64_t(0))});
    progress_.begin(false, false, end_ - begin_);
    progress_.done_bytes = next_ - begin_;
    progress_.state = SyncProgress::State::kInterrupted;
    if (state == "running") {
      state_ = State::kInterrupted;
      last_error_ = "the daemon stopped while the verify ran (last saved " + j.value("saved", std::string("?")) + ")";
      spdlog::warn("verify: the last verify was cut at {} of {}..{} when the daemon stopped; "
                   "'hastnbd-ctl verify --resume {}' continues it",
                   next_, begin_, end_, config_.name);
      save(true);
    } else if (state == "done") {
      state_ = State::kDone;
      progress_.state = SyncProgress::State::kDone;
    } else if (state == "stopped") {
      state_ = State::kStopped;
    } else if (state == "interrupted") {
      state_ = State::kInterrupted;
    }
  } catch (const nlohmann::json::exception& e) {
    spdlog::warn("verify: {}: {}; the last verify's state is unknown", state_path(), e.what());
    state_ = State::kNone;
  }
}

Status Verifier::start(const VerifyRequest& req, bool sync_running) {
  if (running_)
    return Status::Error(EBUSY, "a verify is already running (at " + std::to_string(position()) + " of " +
                                    std::to_string(begin_) + ".." + std::to_string(end_) +
                                    "); 'hastnbd-ctl verify --stop' ends it");
  if (!replicator_.connected()) return Status::Error(ENOTCONN, "the secondary is not connected: nothing to compare with");
  if (!replicator_.can_hash())
    return Status::Error(EPROTO, "the secondary runs a hastnbd without online verify (no HASH records); upgrade it");
  if (sync_running)
    return Status::Error(EBUSY, "a synchronisation is running; verify once it is done (status shows its ETA)");
  const uint64_t size = disk_.size();
  uint64_t begin = req.offset, end = 0;
  bool repair = req.repair;
  if (req.resume) {
    if (state_ != State::kStopped && state_ != State::kInterrupted)
      return Status::Error(EINVAL, std::string("no stopped or interrupted verify to resume (the last one is ") +
                                       to_string(state_) + ")");
    begin = next_;
    end = end_;
    repair = repair || repair_;
  } else {
    if (begin % kVerifyBlock != 0 || req.length % kVerifyBlock != 0)
      return Status::Error(EINVAL, "the range must start and end on a multiple of " + std::to_string(kVerifyBlock) +
                                       " bytes");
    if (begin >= size) return Status::Error(EINVAL, "offset " + std::to_string(begin) + " is beyond the device (" +
                                                        std::to_string(size) + " bytes)");
    end = req.length == 0 ? size : begin + req.length;
    if (req.length > size - begin)
      return Status::Error(EINVAL, "range " + range_text(begin, req.length) + " ends beyond the device (" +
                                       std::to_string(size) + " bytes)");
  }
  if (end > size) return Status::Error(EINVAL, "the range to resume ends beyond the device (resized?)");
  const bool resuming = req.resume;
  begin_ = resuming ? begin_ : begin;
  end_ = end;
  next_ = begin;
  repair_ = repair;
  if (!resuming) {
    mismatched_bytes_ = mismatched_ranges_ = skipped_bytes_ = 0;
    kept_.clear();
  }
  marked_.clear();
  in_flight_.clear();
  last_error_.clear();
  stop_asked_ = false;
  unchecked_ = UINT64_MAX;
  loaded_started_.clear();
  loaded_ended_.clear();
  progress_.begin(false, false, end_ - begin_);
  progress_.done_bytes = begin - begin_;  // a resume starts where the last run stopped
  progress_.samples.assign(1, {progress_.started, progress_.done_bytes});
  state_ = State::kRunning;
  running_ = true;
  save(true);
  spdlog::info("verify: {} {}..{} ({} bytes){}{}", resuming ? "resuming at" : "comparing", begin, end_, end_ - begin,
               repair_ ? ", repairing what differs" : "",
               pacer_.rate() ? ", at most " + std::to_string(pacer_.rate()) + " bytes/s" : std::string());
  if (on_start) on_start(begin, end_ - begin);
  asio::co_spawn(io_, run(++run_id_), asio::detached);
  return Status::Ok();
}

Status Verifier::stop() {
  if (!running_) return Status::Error(EINVAL, "no verify is running");
  stop_asked_ = true;
  ++run_id_;
  changed_.notify_all();
  return Status::Ok();
}

void Verifier::interrupt(const std::string& why) {
  if (!running_) return;
  if (last_error_.empty()) last_error_ = why;
  ++run_id_;
  changed_.notify_all();
}

awaitable<void> Verifier::halt(const std::string& why) {
  interrupt(why);
  while (running_) co_await changed_.wait();
}

uint64_t Verifier::position() const {
  return std::min({next_, unchecked_, in_flight_.empty() ? next_ : *in_flight_.begin()});
}

void Verifier::add_mismatch(const VerifyRange& r) {
  // Ranges come in chunk order within a chunk; a range that continues the
  // last kept one (a mismatch across a chunk boundary) is merged into it.
  mismatched_bytes_ += r.length;
  mismatched_total_ += r.length;
  if (!kept_.empty() && kept_.back().offset + kept_.back().length == r.offset) {
    kept_.back().length += r.length;
  } else {
    ++mismatched_ranges_;
    if (kept_.size() < kVerifyKeptRanges) kept_.push_back(r);
  }
  if (mismatched_ranges_ <= kLoggedRanges)
    spdlog::error("verify: the secondary's copy differs at {} ({} bytes)", r.offset, r.length);
  else if (mismatched_ranges_ == kLoggedRanges + 1)
    spdlog::error("verify: more ranges differ; status lists the first {}, the run's total is logged at its end",
                  kVerifyKeptRanges);
  if (on_mismatch && mismatched_ranges_ <= kLoggedRanges) on_mismatch(r);
}

void Verifier::mark(const std::vector<VerifyRange>& ranges) {
  for (const VerifyRange& r : ranges) {
    auto [first, last] = map_.extent_range(r.offset, r.length);
    for (uint64_t e = first; e <= last; ++e) {
      auto it = std::lower_bound(marked_.begin(), marked_.end(), e);
      if (it == marked_.end() || *it != e) marked_.insert(it, e);
    }
    // With fine tracking the repair then copies these blocks, not the extents.
    map_.mark_range(r.offset, r.length);
  }
}

awaitable<Status> Verifier::check_chunk(uint64_t run_id, uint64_t offset, uint64_t length) {
  // Blocks already known to differ (their extent needs a sync, and a fine
  // record holds them or there is none) would tell nothing new: they are
  // skipped, block by block. An extent this run marked without a record is
  // compared on: only its earlier blocks are known.
  const size_t blocks = size_t(peer::hash_count(length, kVerifyBlock));
  std::vector<bool> known(blocks, false);
  size_t known_count = 0;
  uint64_t known_bytes = 0;
  for (size_t b = 0; b < blocks; ++b) {
    const uint64_t at = offset + b * kVerifyBlock;
    const uint64_t e = at / map_.extent_size();
    if (!map_.may_differ(at)) continue;
    if (!map_.has_record(e) && std::binary_search(marked_.begin(), marked_.end(), e)) continue;
    known[b] = true;
    ++known_count;
    known_bytes += std::min<uint64_t>(kVerifyBlock, offset + length - at);
  }
  skipped_bytes_ += known_bytes;
  if (known_count == blocks) co_return Status::Ok();
  const Status link_down = Status::Error(ENOTCONN, "the link to the secondary went down");
  Buffer local = pool_.get(length);
  std::shared_ptr<Record> rec;
  Status s;
  {
    // docs/design.md, "Online verify": no write to the chunk between the
    // HASH on the wire and the local read.
    auto guard = co_await write_path_.extent_lock().lock(offset, offset + length, /*exclusive=*/true);
    if (!current(run_id)) co_return link_down;
    rec = co_await replicator_.remote_hash(offset, uint32_t(length), kVerifyBlock);
    if (!rec) co_return link_down;
    s = co_await disk_.read(offset, local);
  }
  if (!s.ok()) co_return Status::Error(s.code(), "reading " + range_text(offset, length) + " here: " + s.message());
  const std::vector<uint8_t> ours = peer::hash_blocks(local.span(), kVerifyBlock);
  local = Buffer();
  co_await rec->settled.wait();
  if (!rec->ok) co_return current(run_id) ? Status::Error(EIO, "the secondary: " + rec->error) : link_down;
  if (rec->data.size() != ours.size()) co_return Status::Error(EPROTO, "the secondary's hashes do not match the request");
  std::vector<VerifyRange> found;
  for (const auto& [at, n] :
       peer::differing_runs(ours, rec->data.span(), length, kVerifyBlock, [&](size_t b) { return bool(known[b]); }))
    found.push_back({offset + at, n});
  if (!found.empty()) {
    mark(found);
    // The marks are durable before the run reports the range checked: a
    // crash now still resynchronises these extents at the next connect.
    if (Status d = co_await store_.bitmap_durable(); !d.ok())
      co_return Status::Error(d.code(), "marking the differing extents: " + d.message());
    for (const VerifyRange& r : found) add_mismatch(r);
  }
  checked_total_ += length - known_bytes;
  co_return Status::Ok();
}

awaitable<void> Verifier::run(uint64_t run_id) {
  co_await write_path_.lock_extents();
  Status failure;
  uint64_t in_flight_bytes = 0;
  while (current(run_id) && failure.ok() && next_ < end_) {
    const uint64_t offset = next_;
    const uint64_t length = std::min<uint64_t>(kVerifyChunk - offset % kVerifyChunk, end_ - offset);
    co_await pacer_.pace(io_, length);
    while (in_flight_bytes + length > kBytesInFlight && current(run_id)) co_await changed_.wait();
    if (!current(run_id)) break;
    next_ += length;
    in_flight_.insert(offset);
    in_flight_bytes += length;
    asio::co_spawn(
        io_,
        [this, run_id, offset, length, &failure, &in_flight_bytes]() -> awaitable<void> {
          Status s = co_await check_chunk(run_id, offset, length);
          if (!s.ok() && failure.ok() && current(run_id)) failure = s;
          in_flight_.erase(offset);
          in_flight_bytes -= length;
          if (s.ok()) progress_.add(length);
          else unchecked_ = std::min(unchecked_, offset);
          save(false);
          changed_.notify_all();
        },
        asio::detached);
  }
  while (in_flight_bytes > 0) co_await changed_.wait();
  write_path_.unlock_extents();
  progress_.ended_wall = std::chrono::system_clock::now();
  if (failure.ok() && position() >= end_ && !stop_asked_) {
    state_ = State::kDone;
    progress_.state = SyncProgress::State::kDone;
    next_ = end_;
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - progress_.started).count();
    spdlog::info("verify: done, {} bytes compared in {:.1f} s ({:.1f} MiB/s): {}", progress_.done_bytes, secs,
                 secs > 0 ? double(progress_.done_bytes) / secs / (1 << 20) : 0.0,
                 mismatched_bytes_ == 0 ? std::string("the copies are identical") +
                                              (skipped_bytes_ ? " (" + std::to_string(skipped_bytes_) +
                                                                    " bytes skipped: they wait for a sync)"
                                                              : std::string())
                                        : std::to_string(mismatched_bytes_) + " bytes in " +
                                              std::to_string(mismatched_ranges_) + " range(s) DIFFER, marked for "
                                              "synchronisation");
    if (on_done) on_done(progress_.done_bytes, mismatched_bytes_, mismatched_ranges_);
  } else {
    // A chunk that failed counts as not checked: a resume starts there.
    next_ = position();
    unchecked_ = UINT64_MAX;
    state_ = stop_asked_ ? State::kStopped : State::kInterrupted;
    progress_.state = SyncProgress::State::kInterrupted;
    if (!failure.ok()) last_error_ = failure.message();
    if (state_ == State::kInterrupted && last_error_.empty()) last_error_ = "the link to the secondary went down";
    spdlog::warn("verify: {} at {} of {}..{}{}{}; 'hastnbd-ctl verify --resume {}' continues it", to_string(state_),
                 next_, begin_, end_, last_error_.empty() ? "" : ": ", last_error_, config_.name);
    if (state_ == State::kInterrupted && on_interrupted) on_interrupted(last_error_);
  }
  running_ = false;
  save(true);
  // Repair copies every extent that needs it: this run's marks and any
  // left by an earlier run without --repair (skipped above).
  if (state_ == State::kDone && repair_ && map_.needs_sync_count() > 0) {
    spdlog::info("verify: repairing {} extent(s) from this node", map_.needs_sync_count());
    if (on_repair) on_repair();
  }
  changed_.notify_all();
}

void Verifier::save(bool force) {
  const auto now = std::chrono::steady_clock::now();
  if (!force && now - saved_at_ < kSaveInterval) return;
  saved_at_ = now;
  nlohmann::json j = status();
  j["saved"] = iso_time(std::chrono::system_clock::now());
  if (Status s = make_directories(config_.state_dir, 0700); !s.ok()) {
    spdlog::warn("verify: {}", s.message());
    return;
  }
  // Written aside and renamed: a crash leaves the old state or the new one.
  const std::string tmp = state_path() + ".tmp";
  Status s = write_private_file(tmp, j.dump() + "\n");
  if (s.ok() && std::rename(tmp.c_str(), state_path().c_str()) != 0)
    s = Status::Error(errno, "renaming " + tmp + ": " + std::strerror(errno));
  if (!s.ok()) spdlog::warn("verify: cannot record the verify's state: {}", s.message());
}

nlohmann::json Verifier::status() const {
  nlohmann::json j = progress_.to_json();
  j.erase("direction");
  j.erase("full");
  j["state"] = to_string(state_);
  j["offset"] = begin_;
  j["length"] = end_ - begin_;
  j["position"] = position();
  j["repair"] = repair_;
  j["rate_limit"] = pacer_.rate();
  j["mismatched_bytes"] = mismatched_bytes_;
  j["mismatched_ranges"] = mismatched_ranges_;
  j["skipped_bytes"] = skipped_bytes_;
  j["checked_bytes_total"] = checked_total_;
  j["mismatched_bytes_total"] = mismatched_total_;
  j["last_error"] = last_error_;
  nlohmann::json ranges = nlohmann::json::array();
  for (const VerifyRange& r : kept_) ranges.push_back({{"offset", r.offset}, {"length", r.length}});
  j["mismatches"] = std::move(ranges);
  if (state_ == State::kNone || !loaded_started_.empty()) {
    // Nothing ran yet, or only a run of an earlier daemon: its times are as recorded.
    j["started"] = loaded_started_;
    j["ended"] = loaded_ended_;
    j["rate"] = 0;
    j.erase("elapsed_seconds");
  }
  return j;
}

}  // namespace hastnbd
