// Progress of a synchronisation as status shows it: the primary's Syncer
// keeps one, and the secondary keeps its own view of the sync it takes part
// in (daemon/sync_target.h).
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <string>
#include <utility>

#include <nlohmann/json.hpp>

namespace hastnbd {

// Progress as shown in status; also kept by the secondary for its side.
struct SyncProgress {
  enum class State { kNone, kRunning, kDone, kInterrupted };
  State state = State::kNone;
  bool from_peer = false;
  bool full = false;
  uint64_t total_bytes = 0;
  uint64_t done_bytes = 0;
  // Of done_bytes: compared by hashes first (sync_compare), and actually
  // copied (sent to the peer, or read from it).
  uint64_t compared_bytes = 0;
  uint64_t copied_bytes = 0;
  uint64_t fine_bytes = 0;  // of the extents, those known per granule (fine tracking)
  std::chrono::steady_clock::time_point started{};
  std::chrono::system_clock::time_point started_wall{}, ended_wall{};
  std::string last_error;
  std::deque<std::pair<std::chrono::steady_clock::time_point, uint64_t>> samples;  // for the current rate

  void begin(bool from_peer, bool full, uint64_t total);
  void add(uint64_t bytes);
  double rate() const;  // bytes/s over the last few seconds
  nlohmann::json to_json() const;
};
const char* to_string(SyncProgress::State s);

}  // namespace hastnbd
