#include "hastnbd/daemon/metrics.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>

#include "hastnbd/base/net.h"

namespace hastnbd {

namespace {

std::string escape_label(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

// Integers as such (10485760); fractions as the shortest %g-style text that
// reads back as the same double (0.1, 0.0001, 5e-05), as Prometheus clients
// print them.
std::string number(double v) {
  char buf[64];
  if (v == std::floor(v) && std::fabs(v) < 1e15) {  // counters and byte counts as plain integers
    std::snprintf(buf, sizeof buf, "%.0f", v);
    return buf;
  }
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::general);
  return ec == std::errc() ? std::string(buf, end) : std::string("NaN");
}

// Writes one metric family at a time: HELP and TYPE once, then samples.
class Writer {
 public:
  explicit Writer(std::string base_labels) : base_(std::move(base_labels)) {}
  void family(const char* name, const char* type, const char* help) {
    out_ += "# HELP ";
    out_ += name;
    out_ += ' ';
    out_ += help;
    out_ += "\n# TYPE ";
    out_ += name;
    out_ += ' ';
    out_ += type;
    out_ += '\n';
  }
  void sample(const std::string& name, double v, const std::string& labels = {}) {
    out_ += name + "{" + base_ + (labels.empty() ? "" : "," + labels) + "} " + number(v) + "\n";
  }
  // A gauge or counter family with a single sample.
  void one(const char* name, const char* type, const char* help, double v) {
    family(name, type, help);
    sample(name, v);
  }
  std::string take() { return std::move(out_); }

 private:
  std::string base_;
  std::string out_;
};

double num(const nlohmann::json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_number()) return 0;
  return it->get<double>();
}

}  // namespace

std::string prometheus_text(const nlohmann::json& st, const NbdOpMetrics& ops) {
  const nlohmann::json empty = nlohmann::json::object();
  auto sub = [&](const char* key) -> const nlohmann::json& {
    auto it = st.find(key);
    return it != st.end() && it->is_object() ? *it : empty;
  };
  const std::string resource = st.value("resource", ""), node = st.value("node", "");
  Writer w("resource=\"" + escape_label(resource) + "\",node=\"" + escape_label(node) + "\"");

  w.family("hastnbd_info", "gauge", "Always 1; the version in a label.");
  w.sample("hastnbd_info", 1, "version=\"" + escape_label(st.value("version", "")) + "\"");
  w.family("hastnbd_role", "gauge", "1 for the role this node is in.");
  for (const char* r : {"init", "secondary", "primary"})
    w.sample("hastnbd_role", st.value("role", "") == r ? 1 : 0, std::string("role=\"") + r + "\"");

  const nlohmann::json& peer = sub("peer");
  const std::string pstate = peer.value("state", "");
  w.family("hastnbd_peer_state", "gauge", "1 for the state of the link to the peer.");
  for (const char* s : {"connected", "connecting", "disconnected", "split-brain", "standalone"})
    w.sample("hastnbd_peer_state", pstate == s ? 1 : 0, std::string("state=\"") + s + "\"");
  w.one("hastnbd_peer_connects_total", "counter", "Links to the peer established.", num(peer, "connects"));
  w.one("hastnbd_peer_inflight_bytes", "gauge", "Bytes sent to the secondary and not yet acknowledged.",
        num(peer, "inflight_bytes"));
  w.one("hastnbd_peer_ack_lag_seconds", "gauge",
        "Age of the oldest record the secondary has not acknowledged (0: none pending).", num(peer, "ack_lag_seconds"));
  w.one("hastnbd_peer_sent_bytes_total", "counter", "Bytes sent on the peer link.", num(peer, "bytes_sent"));
  w.one("hastnbd_peer_received_bytes_total", "counter", "Bytes received on the peer link.",
        num(peer, "bytes_received"));

  const nlohmann::json& meta = sub("metadata");
  w.one("hastnbd_localcnt", "gauge", "Data generation of this node (metadata localcnt).", num(meta, "localcnt"));
  w.one("hastnbd_remotecnt", "gauge", "The peer's generation this node last synchronised with (remotecnt).",
        num(meta, "remotecnt"));
  w.one("hastnbd_inconsistent", "gauge", "1 while this node is the target of an unfinished sync.",
        meta.value("inconsistent", false) ? 1 : 0);

  const nlohmann::json& dirty = sub("dirty");
  w.one("hastnbd_dirty_extents", "gauge", "Extents marked dirty in the activemap.", num(dirty, "extents"));
  w.one("hastnbd_dirty_bytes", "gauge", "Bytes covered by dirty extents.", num(dirty, "bytes"));
  w.one("hastnbd_sync_needed_extents", "gauge", "Extents left to synchronise.", num(dirty, "needs_sync_extents"));

  const nlohmann::json& sync = sub("sync");
  w.one("hastnbd_in_sync", "gauge", "1 when connected with nothing left to synchronise.",
        st.value("in_sync", false) ? 1 : 0);
  w.one("hastnbd_sync_running", "gauge", "1 while a synchronisation runs.", sync.value("state", "") == "running");
  w.one("hastnbd_sync_total_bytes", "gauge", "Bytes the current or last synchronisation has to copy.",
        num(sync, "total_bytes"));
  w.one("hastnbd_sync_done_bytes", "gauge", "Bytes the current or last synchronisation has copied.",
        num(sync, "done_bytes"));
  w.one("hastnbd_sync_rate_bytes_per_second", "gauge", "Copy rate over the last 5 s.", num(sync, "rate"));
  w.one("hastnbd_sync_eta_seconds", "gauge", "Estimated seconds left (-1: unknown or not running).",
        sync.contains("eta_seconds") ? num(sync, "eta_seconds") : -1);

  if (st.contains("verify")) {
    const nlohmann::json& v = sub("verify");
    w.one("hastnbd_verify_running", "gauge", "1 while an online verify runs.", v.value("state", "") == "running");
    w.one("hastnbd_verify_total_bytes", "gauge", "Bytes the current or last verify compares.", num(v, "length"));
    w.one("hastnbd_verify_done_bytes", "gauge", "Bytes the current or last verify has compared.",
          num(v, "done_bytes"));
    w.one("hastnbd_verify_mismatched_bytes", "gauge", "Bytes the current or last verify found different.",
          num(v, "mismatched_bytes"));
    w.one("hastnbd_verify_mismatched_ranges", "gauge", "Ranges the current or last verify found different.",
          num(v, "mismatched_ranges"));
    w.one("hastnbd_verify_checked_bytes_total", "counter", "Bytes compared by online verify since the start.",
          num(v, "checked_bytes_total"));
    w.one("hastnbd_verify_mismatched_bytes_total", "counter",
          "Bytes online verify found different since the start.", num(v, "mismatched_bytes_total"));
  }

  const nlohmann::json& writes = sub("writes");
  w.one("hastnbd_writes_in_flight", "gauge", "Writes not yet settled (locally and on the secondary).",
        num(writes, "in_flight"));
  w.one("hastnbd_writes_degraded_total", "counter", "Writes completed without the secondary.", num(writes, "degraded"));
  w.one("hastnbd_generation_bumps_total", "counter", "New data generations started by writing alone.",
        num(writes, "generation_bumps"));
  w.one("hastnbd_remote_reads_total", "counter", "Reads served by the secondary.", num(writes, "remote_reads"));

  const nlohmann::json& nbd = sub("nbd");
  w.one("hastnbd_nbd_clients", "gauge", "NBD clients attached.", num(nbd, "clients"));
  w.one("hastnbd_nbd_connections_total", "counter", "NBD connections accepted.", num(nbd, "connections_total"));
  const nlohmann::json device = nbd.contains("device") ? nbd["device"] : nlohmann::json::object();
  if (!device.value("path", std::string()).empty()) {
    w.one("hastnbd_nbd_device_attached", "gauge", "1 while the kernel device (nbd.device) is attached.",
          device.value("attached", false) ? 1 : 0);
    w.one("hastnbd_nbd_device_retaken_total", "counter",
          "Times the kernel device was re-taken by a restarted daemon since it was first attached.",
          device.value("retaken", uint64_t(0)));
    w.one("hastnbd_nbd_device_connections_replaced_total", "counter",
          "Kernel device connections the kernel dropped and this daemon replaced.",
          device.value("connections_replaced", uint64_t(0)));
    if (device.contains("last_stall_seconds") && device["last_stall_seconds"].is_number())
      w.one("hastnbd_nbd_device_last_stall_seconds", "gauge",
            "How long the kernel device went unserved before its last re-take.",
            device["last_stall_seconds"].get<double>());
  }
  w.family("hastnbd_nbd_requests_total", "counter", "NBD requests handled, by operation.");
  for (size_t i = 0; i < ops.size(); ++i)
    w.sample("hastnbd_nbd_requests_total", double(ops[i].requests), std::string("op=\"") + to_string(NbdOp(i)) + "\"");
  w.family("hastnbd_nbd_errors_total", "counter", "NBD requests answered with an error, by operation.");
  for (size_t i = 0; i < ops.size(); ++i)
    w.sample("hastnbd_nbd_errors_total", double(ops[i].errors), std::string("op=\"") + to_string(NbdOp(i)) + "\"");
  w.family("hastnbd_nbd_bytes_total", "counter", "Bytes read or written by NBD clients, by operation.");
  for (NbdOp op : {NbdOp::kRead, NbdOp::kWrite})
    w.sample("hastnbd_nbd_bytes_total", double(ops[size_t(op)].bytes), std::string("op=\"") + to_string(op) + "\"");
  w.family("hastnbd_nbd_request_duration_seconds", "histogram",
           "Time from a request being received in full to its reply being queued, by operation.");
  for (size_t i = 0; i < ops.size(); ++i) {
    const LatencyHistogram& h = ops[i].latency;
    const std::string op = std::string("op=\"") + to_string(NbdOp(i)) + "\"";
    for (size_t b = 0; b < LatencyHistogram::kBounds.size(); ++b)
      w.sample("hastnbd_nbd_request_duration_seconds_bucket", double(h.cumulative(b)),
               op + ",le=\"" + number(LatencyHistogram::kBounds[b]) + "\"");
    w.sample("hastnbd_nbd_request_duration_seconds_bucket", double(h.count()), op + ",le=\"+Inf\"");
    w.sample("hastnbd_nbd_request_duration_seconds_sum", h.sum(), op);
    w.sample("hastnbd_nbd_request_duration_seconds_count", double(h.count()), op);
  }

  const nlohmann::json& hooks = sub("hooks");
  w.one("hastnbd_hooks_started_total", "counter", "Hook programs started.", num(hooks, "started"));
  w.one("hastnbd_hooks_failed_total", "counter", "Hook programs that failed or could not start.", num(hooks, "failed"));
  return w.take();
}

MetricsServer::MetricsServer(asio::io_context& io, std::function<std::string()> render)
    : io_(io), render_(std::move(render)) {}

MetricsServer::~MetricsServer() { stop(); }

Status MetricsServer::listen(const Address& address) {
  auto acc = tcp_listen(io_, address, "metrics listener");
  if (!acc.ok()) return acc.status();
  acceptor_ = *acc;
  spdlog::info("metrics: serving http://{}/metrics", address.to_string());
  start_accepting<asio::ip::tcp::acceptor>(
      io_, acceptor_, "metrics listener " + address.to_string(),
      [this](asio::ip::tcp::socket sock) { asio::co_spawn(io_, serve(std::move(sock)), asio::detached); });
  return Status::Ok();
}

void MetricsServer::stop() {
  if (!acceptor_) return;
  error_code ignored;
  acceptor_->close(ignored);
  acceptor_.reset();
}

awaitable<void> MetricsServer::serve(asio::ip::tcp::socket socket) {
  constexpr size_t kMaxHead = 8192;
  asio::steady_timer deadline(io_, std::chrono::seconds(5));
  deadline.async_wait([&socket](error_code ec) {
    if (ec) return;
    error_code ignored;
    socket.close(ignored);
  });
  std::string head;
  auto [ec, n] = co_await asio::async_read_until(socket, asio::dynamic_buffer(head, kMaxHead), "\r\n\r\n", use_nothrow);
  deadline.cancel();
  if (ec) co_return;  // slow, oversized or gone: nothing to answer
  std::string status = "200 OK", type = "text/plain; version=0.0.4; charset=utf-8", body;
  const size_t eol = head.find("\r\n");
  const std::string line = head.substr(0, eol);
  const size_t sp1 = line.find(' '), sp2 = line.find(' ', sp1 + 1);
  if (sp1 == std::string::npos || sp2 == std::string::npos || line.compare(sp2 + 1, 5, "HTTP/") != 0) {
    status = "400 Bad Request";
    type = "text/plain";
    body = "bad request line\n";
  } else {
    const std::string method = line.substr(0, sp1), target = line.substr(sp1 + 1, sp2 - sp1 - 1);
    const std::string path = target.substr(0, target.find('?'));
    if (method != "GET") {
      status = "405 Method Not Allowed";
      type = "text/plain";
      body = "only GET /metrics\n";
    } else if (path != "/metrics") {
      status = "404 Not Found";
      type = "text/plain";
      body = "metrics are at /metrics\n";
    } else {
      ++requests_;
      body = render_();
    }
  }
  std::string reply = "HTTP/1.1 " + status + "\r\nContent-Type: " + type +
                      "\r\nContent-Length: " + std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
  co_await asio::async_write(socket, asio::buffer(reply), large_transfers, use_nothrow);
  error_code ignored;
  socket.shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
}

}  // namespace hastnbd
