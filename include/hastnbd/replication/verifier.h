// Online verify on the primary (docs/design.md, "Online verify"): while the
// primary serves I/O, both nodes hash the same blocks and the primary
// compares.
//
// The range is walked in chunks of kVerifyChunk bytes, several in flight,
// at most `verify_rate` bytes/s. For each chunk the verifier holds the range
// exclusively in the write path's range lock while it queues a HASH record
// to the secondary and reads its own copy, so every write to the chunk is
// either entirely before both (in the local copy, and before the HASH on the
// wire, which the secondary applies first) or after both: a block being
// written is never reported as a false mismatch. The secondary hashes its
// blocks (XXH3-128, kVerifyBlock bytes each) and answers; the primary hashes
// its copy and compares. Mismatched blocks are reported as ranges (log,
// status, on_mismatch) and their extents marked "needs sync" durably; with
// `repair`, a sync to the secondary follows the verify (on_repair), which
// copies every extent that needs one. Extents that already needed a sync
// when the run reached them (an earlier verify's marks, writes the
// secondary failed) are skipped, since their copies are known to differ,
// and counted.
//
// The state file (`state_dir/RESOURCE.verify`, mode 0600) records the run
// and is rewritten every few seconds: a verify that was running when the
// daemon stopped shows as interrupted, at the position it had reached, and
// `resume` continues from there. Loop thread only.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "hastnbd/base/asio.h"
#include "hastnbd/base/buffer.h"
#include "hastnbd/base/pacer.h"
#include "hastnbd/base/status.h"
#include "hastnbd/config/config.h"
#include "hastnbd/disk/disk.h"
#include "hastnbd/disk/meta_store.h"
#include "hastnbd/replication/replicator.h"
#include "hastnbd/replication/sync_progress.h"

namespace hastnbd {

class WritePath;

inline constexpr uint32_t kVerifyBlock = 4096;       // bytes per hash
inline constexpr uint64_t kVerifyChunk = 1u << 20;   // bytes per HASH record
inline constexpr size_t kVerifyKeptRanges = 100;     // mismatched ranges status lists

struct VerifyRequest {
  uint64_t offset = 0;
  uint64_t length = 0;  // 0: to the end of the device
  bool repair = false;
  bool resume = false;  // continue the last stopped or interrupted run
};

struct VerifyRange {
  uint64_t offset = 0, length = 0;
};

class Verifier {
 public:
  Verifier(asio::io_context& io, BufferPool& pool, const ResourceConfig& config, Disk& disk, MetaStore& store,
           WritePath& write_path, Replicator& replicator);

  // Reads the state file once at start: a run it shows as running was cut
  // by the daemon's stop or crash.
  void load();
  // Checks the request and starts the run in the background. Refused while
  // `sync_running` (a synchronisation is copying).
  Status start(const VerifyRequest& req, bool sync_running);
  // `verify --stop`: the run ends after the chunks in flight (state stopped).
  Status stop();
  // The link went down or the role changes: the run ends (state
  // interrupted, with the reason).
  void interrupt(const std::string& why);
  awaitable<void> halt(const std::string& why);  // interrupt and wait for the run to end

  bool running() const { return running_; }
  void set_rate(uint64_t rate) { pacer_.set_rate(rate); }
  nlohmann::json status() const;
  // Bytes compared and mismatched since the daemon started (all runs).
  uint64_t checked_total() const { return checked_total_; }
  uint64_t mismatched_total() const { return mismatched_total_; }

  std::function<void(uint64_t offset, uint64_t length)> on_start;
  // Each range as found, for the first 64 ranges of a run (the hook queue
  // is bounded; the totals come with on_done).
  std::function<void(const VerifyRange&)> on_mismatch;
  std::function<void(uint64_t checked, uint64_t mismatched, uint64_t ranges)> on_done;
  std::function<void(const std::string& why)> on_interrupted;
  // A finished run with `repair` marked extents: copy them to the secondary.
  std::function<void()> on_repair;

 private:
  enum class State { kNone, kRunning, kDone, kStopped, kInterrupted };
  static const char* to_string(State s);
  awaitable<void> run(uint64_t run_id);
  awaitable<Status> check_chunk(uint64_t run_id, uint64_t offset, uint64_t length);
  void mark(const std::vector<VerifyRange>& ranges);
  void add_mismatch(const VerifyRange& r);
  // The lowest offset not yet checked: where a resume starts.
  uint64_t position() const;
  void save(bool force);
  bool current(uint64_t run_id) const { return run_id == run_id_ && replicator_.connected(); }
  std::string state_path() const;

  asio::io_context& io_;
  BufferPool& pool_;
  const ResourceConfig& config_;
  Disk& disk_;
  MetaStore& store_;
  ActiveMap& map_;
  WritePath& write_path_;
  Replicator& replicator_;
  Pacer pacer_;
  AsyncCondition changed_;
  uint64_t run_id_ = 0;
  bool running_ = false;

  // The current or last run.
  State state_ = State::kNone;
  bool repair_ = false;
  uint64_t begin_ = 0, end_ = 0;  // the range asked for
  uint64_t next_ = 0;             // the next chunk to start
  uint64_t unchecked_ = UINT64_MAX;  // the lowest chunk of this run that failed
  std::set<uint64_t> in_flight_;  // chunks being checked, by offset
  SyncProgress progress_;         // bytes checked of the range, rate, ETA, times
  uint64_t mismatched_bytes_ = 0;
  uint64_t mismatched_ranges_ = 0;
  std::vector<VerifyRange> kept_;  // the first kVerifyKeptRanges ranges
  uint64_t skipped_bytes_ = 0;     // in extents that already needed a sync
  std::vector<uint64_t> marked_;   // extents this run marked (sorted)
  std::string last_error_;
  std::string loaded_started_, loaded_ended_;  // a run of an earlier daemon (load)
  bool stop_asked_ = false;
  std::chrono::steady_clock::time_point saved_at_{};
  uint64_t checked_total_ = 0, mismatched_total_ = 0;
};

}  // namespace hastnbd
