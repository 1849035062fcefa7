// A byte-rate limit for background work (the sync's `sync_rate`, verify's
// `verify_rate`): pace(n) returns once n more bytes fit in the rate since
// pacing began. A pause (idle for over a second behind schedule) starts
// afresh, so saved-up budget never becomes a burst. Loop thread only.
#pragma once

#include <chrono>
#include <cstdint>

#include "hastnbd/base/asio.h"

namespace hastnbd {

class Pacer {
 public:
  explicit Pacer(uint64_t rate = 0) : rate_(rate) {}
  // bytes/s; 0 = unlimited. Takes effect at the next pace().
  void set_rate(uint64_t rate) { rate_ = rate; }
  uint64_t rate() const { return rate_; }

  awaitable<void> pace(asio::io_context& io, uint64_t bytes) {
    if (rate_ == 0) co_return;
    auto now = std::chrono::steady_clock::now();
    auto due = start_ + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                            std::chrono::duration<double>(double(bytes_) / double(rate_)));
    if (start_ == std::chrono::steady_clock::time_point{} || now - due > std::chrono::seconds(1)) {
      start_ = now;
      bytes_ = 0;
      due = now;
    }
    bytes_ += bytes;
    if (due > now) {
      asio::steady_timer t(io, due);
      co_await t.async_wait(use_nothrow);
    }
  }

 private:
  uint64_t rate_;
  std::chrono::steady_clock::time_point start_{};
  uint64_t bytes_ = 0;  // paced since start_
};

}  // namespace hastnbd
