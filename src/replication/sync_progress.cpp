#include "hastnbd/replication/sync_progress.h"

#include "hastnbd/base/logging.h"

namespace hastnbd {

namespace {
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
  compared_bytes = copied_bytes = fine_bytes = 0;
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
      {"compared_bytes", compared_bytes},
      {"copied_bytes", copied_bytes},
      {"fine_bytes", fine_bytes},
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

}  // namespace hastnbd
