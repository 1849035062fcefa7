// SIGHUP: what a running daemon takes from a newly loaded configuration.
#include "hastnbd/config/config.h"

namespace hastnbd {

namespace {
std::string opt_address(const std::optional<Address>& a) { return a ? a->to_string() : "(none)"; }
}  // namespace

ReloadDiff apply_reload(ResourceConfig& cur, const ResourceConfig& next) {
  ReloadDiff d;
  auto note = [&](bool ok, const char* key, const std::string& from, const std::string& to) {
    if (from == to) return false;
    std::string line = std::string(key) + ": " + from + " -> " + to;
    (ok ? d.applied : d.refused).push_back(std::move(line));
    return ok;
  };
  auto text = [](const std::string& s) { return s.empty() ? std::string("(none)") : s; };
  // Changed in place.
  if (note(true, "timeout", std::to_string(cur.timeout), std::to_string(next.timeout))) cur.timeout = next.timeout;
  if (note(true, "exec", text(cur.exec), text(next.exec))) cur.exec = next.exec;
  if (note(true, "sync_rate", std::to_string(cur.sync_rate), std::to_string(next.sync_rate)))
    cur.sync_rate = next.sync_rate;
  if (note(true, "sync_compare", cur.sync_compare ? "true" : "false", next.sync_compare ? "true" : "false"))
    cur.sync_compare = next.sync_compare;
  if (note(true, "track_granule", std::to_string(cur.track_granule), std::to_string(next.track_granule)))
    cur.track_granule = next.track_granule;
  if (note(true, "after_split_brain", to_string(cur.after_split_brain), to_string(next.after_split_brain)))
    cur.after_split_brain = next.after_split_brain;
  if (note(true, "verify_rate", std::to_string(cur.verify_rate), std::to_string(next.verify_rate)))
    cur.verify_rate = next.verify_rate;
  if (note(true, "compression", to_string(cur.compression), to_string(next.compression)))
    cur.compression = next.compression;
  if (note(true, "checksum", to_string(cur.checksum), to_string(next.checksum))) cur.checksum = next.checksum;
  if (note(true, "max_inflight", std::to_string(cur.max_inflight), std::to_string(next.max_inflight)))
    cur.max_inflight = next.max_inflight;
  if (note(true, "source", opt_address(cur.source), opt_address(next.source))) cur.source = next.source;
  // The peer key: the daemon re-reads it after the reload; the next connect uses it.
  if (note(true, "auth", to_string(cur.auth), to_string(next.auth))) cur.auth = next.auth;
  if (note(true, "psk_file", text(cur.psk_file), text(next.psk_file))) cur.psk_file = next.psk_file;
  cur.psk = next.psk;
  if (cur.peer_key != next.peer_key) {
    d.applied.push_back("peer key: changed (values not shown); the next connection uses it");
    cur.peer_key = next.peer_key;
  }
  // TLS files: re-read by the daemon like the key; the next connection uses them.
  if (note(true, "tls.cert", text(cur.tls.cert), text(next.tls.cert))) cur.tls.cert = next.tls.cert;
  if (note(true, "tls.key", text(cur.tls.key), text(next.tls.key))) cur.tls.key = next.tls.key;
  if (note(true, "tls.ca", text(cur.tls.ca), text(next.tls.ca))) cur.tls.ca = next.tls.ca;
  if (note(true, "tls.name", text(cur.tls.name), text(next.tls.name))) cur.tls.name = next.tls.name;
  if (note(true, "peer's tls.name", text(cur.peer_tls_name), text(next.peer_tls_name)))
    cur.peer_tls_name = next.peer_tls_name;
  if (cur.tls_material != next.tls_material) {
    d.applied.push_back("tls credentials: changed (values not shown); the next connection uses them");
    cur.tls_material = next.tls_material;
  }
  // A new address for the same peer; adding or removing the peer is a
  // different resource layout.
  if (note(bool(cur.remote) == bool(next.remote), "remote", opt_address(cur.remote), opt_address(next.remote)))
    cur.remote = next.remote;
  // Needs a restart.
  note(false, "replication", to_string(cur.replication), to_string(next.replication));
  note(false, "peer node", text(cur.peer_node), text(next.peer_node));
  note(false, "local", cur.local, next.local);
  note(false, "meta", cur.meta, next.meta);
  note(false, "size", cur.size ? std::to_string(*cur.size) : "(device)", next.size ? std::to_string(*next.size) : "(device)");
  note(false, "extent_size", std::to_string(cur.extent_size), std::to_string(next.extent_size));
  note(false, "keepdirty", std::to_string(cur.keepdirty), std::to_string(next.keepdirty));
  note(false, "metaflush", cur.metaflush ? "true" : "false", next.metaflush ? "true" : "false");
  note(false, "listen", opt_address(cur.listen), opt_address(next.listen));
  note(false, "run_dir", cur.run_dir, next.run_dir);
  note(false, "state_dir", cur.state_dir, next.state_dir);
  note(false, "pidfile", text(cur.pidfile), text(next.pidfile));
  note(false, "nbd.socket", cur.nbd.socket, next.nbd.socket);
  note(false, "nbd.listen", opt_address(cur.nbd.listen), opt_address(next.nbd.listen));
  note(false, "nbd.device", text(cur.nbd.device), text(next.nbd.device));
  note(false, "nbd.connections", std::to_string(cur.nbd.connections), std::to_string(next.nbd.connections));
  note(false, "nbd.io_timeout", std::to_string(cur.nbd.io_timeout), std::to_string(next.nbd.io_timeout));
  note(false, "nbd.reconnect_timeout", std::to_string(cur.nbd.reconnect_timeout),
       std::to_string(next.nbd.reconnect_timeout));
  note(false, "metrics.listen", opt_address(cur.metrics_listen), opt_address(next.metrics_listen));
  return d;
}

}  // namespace hastnbd
