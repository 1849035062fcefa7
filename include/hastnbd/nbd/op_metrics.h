// Per-operation NBD counters kept by the server: requests, errors, bytes and
// a latency histogram each. The daemon renders them as Prometheus metrics
// (daemon/metrics.h). Plain data, loop thread only.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

namespace hastnbd {

// Cumulative histogram with fixed bounds (seconds), as Prometheus expects.
class LatencyHistogram {
 public:
  static constexpr std::array<double, 16> kBounds = {0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                                                     0.025,   0.05,   0.1,     0.25,   0.5,   1.0,    2.5,   10.0};
  void observe(double seconds);
  uint64_t count() const { return count_; }
  double sum() const { return sum_; }
  // Observations <= kBounds[i] (cumulative).
  uint64_t cumulative(size_t i) const;

 private:
  std::array<uint64_t, kBounds.size()> buckets_{};  // per bucket, not cumulative
  uint64_t count_ = 0;
  double sum_ = 0;
};

enum class NbdOp : uint8_t { kRead, kWrite, kFlush, kTrim, kWriteZeroes, kCount };
const char* to_string(NbdOp op);

struct OpMetrics {
  uint64_t requests = 0;
  uint64_t errors = 0;
  uint64_t bytes = 0;
  LatencyHistogram latency;
};
using NbdOpMetrics = std::array<OpMetrics, size_t(NbdOp::kCount)>;

}  // namespace hastnbd
