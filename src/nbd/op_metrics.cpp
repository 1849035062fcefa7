#include "hastnbd/nbd/op_metrics.h"

#include <algorithm>

namespace hastnbd {

void LatencyHistogram::observe(double seconds) {
  auto it = std::lower_bound(kBounds.begin(), kBounds.end(), seconds);
  if (it != kBounds.end()) ++buckets_[size_t(it - kBounds.begin())];
  ++count_;
  sum_ += seconds;
}

uint64_t LatencyHistogram::cumulative(size_t i) const {
  uint64_t n = 0;
  for (size_t k = 0; k <= i && k < buckets_.size(); ++k) n += buckets_[k];
  return n;
}

const char* to_string(NbdOp op) {
  switch (op) {
    case NbdOp::kRead: return "read";
    case NbdOp::kWrite: return "write";
    case NbdOp::kFlush: return "flush";
    case NbdOp::kTrim: return "trim";
    case NbdOp::kWriteZeroes: return "write_zeroes";
    case NbdOp::kCount: break;
  }
  return "?";
}

}  // namespace hastnbd
