// Prometheus metrics: histogram buckets, and the exposition text rendered
// from a status document.
#include <catch2/catch.hpp>
#include <cstring>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "hastnbd/daemon/metrics.h"

using namespace hastnbd;

TEST_CASE("metrics: latency histogram buckets are cumulative", "[metrics]") {
  LatencyHistogram h;
  h.observe(0.00001);  // below the first bound
  h.observe(0.0001);   // exactly on a bound: counted in it
  h.observe(0.003);
  h.observe(30.0);  // beyond the last bound: only in +Inf (count)
  CHECK(h.count() == 4);
  CHECK(h.sum() == Approx(30.00311));
  CHECK(h.cumulative(0) == 1);  // <= 50 us
  CHECK(h.cumulative(1) == 2);  // <= 100 us
  CHECK(h.cumulative(5) == 2);  // <= 2.5 ms
  CHECK(h.cumulative(6) == 3);  // <= 5 ms
  CHECK(h.cumulative(LatencyHistogram::kBounds.size() - 1) == 3);
}

TEST_CASE("metrics: exposition text from a status document", "[metrics]") {
  nlohmann::json st = {
      {"resource", "data"},
      {"node", "a\"b"},
      {"version", "0.4.0"},
      {"role", "primary"},
      {"in_sync", false},
      {"peer", {{"state", "connected"}, {"connects", 3}, {"inflight_bytes", 4096}, {"ack_lag_seconds", 0.25},
                {"bytes_sent", 1000}, {"bytes_received", 200}}},
      {"metadata", {{"localcnt", 2}, {"remotecnt", 1}, {"inconsistent", false}}},
      {"dirty", {{"extents", 5}, {"bytes", 10485760}, {"needs_sync_extents", 4}}},
      {"sync", {{"state", "running"}, {"total_bytes", 8388608}, {"done_bytes", 2097152}, {"rate", 1048576},
                {"eta_seconds", 6}}},
      {"writes", {{"in_flight", 1}, {"degraded", 7}, {"generation_bumps", 1}, {"remote_reads", 0}}},
      {"nbd", {{"clients", 1}, {"connections_total", 2}}},
      {"hooks", {{"started", 9}, {"failed", 1}}},
  };
  NbdOpMetrics ops{};
  ops[size_t(NbdOp::kWrite)].requests = 10;
  ops[size_t(NbdOp::kWrite)].errors = 1;
  ops[size_t(NbdOp::kWrite)].bytes = 40960;
  ops[size_t(NbdOp::kWrite)].latency.observe(0.0002);
  const std::string text = prometheus_text(st, ops);
  const std::string l = "resource=\"data\",node=\"a\\\"b\"";
  for (const std::string& want : std::vector<std::string>{
           "hastnbd_role{" + l + ",role=\"primary\"} 1",
           "hastnbd_role{" + l + ",role=\"init\"} 0",
           "hastnbd_peer_state{" + l + ",state=\"connected\"} 1",
           "hastnbd_peer_ack_lag_seconds{" + l + "} 0.25",
           "hastnbd_dirty_bytes{" + l + "} 10485760",
           "hastnbd_sync_running{" + l + "} 1",
           "hastnbd_sync_done_bytes{" + l + "} 2097152",
           "hastnbd_sync_eta_seconds{" + l + "} 6",
           "hastnbd_writes_degraded_total{" + l + "} 7",
           "hastnbd_nbd_requests_total{" + l + ",op=\"write\"} 10",
           "hastnbd_nbd_errors_total{" + l + ",op=\"write\"} 1",
           "hastnbd_nbd_bytes_total{" + l + ",op=\"write\"} 40960",
           "hastnbd_nbd_request_duration_seconds_bucket{" + l + ",op=\"write\",le=\"0.0001\"} 0",
           "hastnbd_nbd_request_duration_seconds_bucket{" + l + ",op=\"write\",le=\"0.00025\"} 1",
           "hastnbd_nbd_request_duration_seconds_bucket{" + l + ",op=\"write\",le=\"+Inf\"} 1",
           "hastnbd_nbd_request_duration_seconds_count{" + l + ",op=\"write\"} 1",
           "hastnbd_nbd_request_duration_seconds_count{" + l + ",op=\"read\"} 0",
           "# TYPE hastnbd_nbd_request_duration_seconds histogram",
       }) {
    INFO(want);
    CHECK(text.find(want + "\n") != std::string::npos);
  }
  // Every line is a comment or NAME{LABELS} VALUE; every family has its TYPE
  // before its samples and appears once.
  std::istringstream in(text);
  std::string line;
  std::set<std::string> typed;
  const std::regex sample(R"(([a-z_]+)\{[^}]*\} (-?[0-9.e+-]+|\+Inf|NaN))");
  while (std::getline(in, line)) {
    INFO(line);
    if (line.rfind("# HELP ", 0) == 0) continue;
    if (line.rfind("# TYPE ", 0) == 0) {
      std::string name = line.substr(7, line.find(' ', 7) - 7);
      CHECK(typed.insert(name).second);
      continue;
    }
    std::smatch m;
    REQUIRE(std::regex_match(line, m, sample));
    std::string name = m[1];
    for (const char* suffix : {"_bucket", "_sum", "_count"})
      if (!typed.count(name) && name.size() > strlen(suffix) && name.ends_with(suffix))
        name.resize(name.size() - strlen(suffix));
    CHECK(typed.count(name) == 1);
  }
}

TEST_CASE("metrics: a status without a peer or sync still renders", "[metrics]") {
  const std::string text = prometheus_text(nlohmann::json{{"resource", "r"}, {"node", "n"}, {"role", "init"}}, {});
  CHECK(text.find("hastnbd_peer_state{resource=\"r\",node=\"n\",state=\"connected\"} 0\n") != std::string::npos);
  CHECK(text.find("hastnbd_sync_eta_seconds{resource=\"r\",node=\"n\"} -1\n") != std::string::npos);
}
