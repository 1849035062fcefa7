// Prometheus text metrics (`metrics: {listen: ADDR}`): per-operation NBD
// request counts, errors, bytes and latency histograms, kept by the NBD
// server; everything else (role, peer state, ack lag, dirty bytes, sync
// progress, counters) is rendered from the same JSON as `status --json`, so
// the two never disagree. Served over plain HTTP/1.1 at GET /metrics.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "hastnbd/asio.h"
#include "hastnbd/config.h"
#include "hastnbd/status.h"

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

// The exposition text for one resource: `status` is Resource::status().
std::string prometheus_text(const nlohmann::json& status, const NbdOpMetrics& ops);

// GET /metrics over HTTP/1.1 (one request per connection; 404 for other
// paths, 405 for other methods, 400 for garbage; a request head over 8 KiB
// or not complete within 5 s is dropped without an answer).
class MetricsServer {
 public:
  MetricsServer(asio::io_context& io, std::function<std::string()> render);
  ~MetricsServer();
  Status listen(const Address& address);
  void stop();
  uint64_t requests() const { return requests_; }

 private:
  awaitable<void> accept_loop();
  awaitable<void> serve(asio::ip::tcp::socket socket);

  asio::io_context& io_;
  std::function<std::string()> render_;
  std::shared_ptr<asio::ip::tcp::acceptor> acceptor_;
  uint64_t requests_ = 0;
};

}  // namespace hastnbd
