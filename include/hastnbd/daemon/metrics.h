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

#include "hastnbd/base/asio.h"
#include "hastnbd/base/status.h"
#include "hastnbd/config/config.h"
#include "hastnbd/nbd/op_metrics.h"

namespace hastnbd {

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
  awaitable<void> serve(asio::ip::tcp::socket socket);

  asio::io_context& io_;
  std::function<std::string()> render_;
  std::shared_ptr<asio::ip::tcp::acceptor> acceptor_;
  uint64_t requests_ = 0;
};

}  // namespace hastnbd
