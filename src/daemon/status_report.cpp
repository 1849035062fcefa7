#include "hastnbd/daemon/status_report.h"

#include <unistd.h>

#include <algorithm>

#include "hastnbd/base/logging.h"
#include "hastnbd/replication/transitions.h"

namespace hastnbd {

namespace {

using json = nlohmann::json;

json peer_section(const StatusSources& s) {
  const ResourceConfig& c = s.config;
  json p;
  if (s.role == Role::kPrimary && s.replicator)
    p = s.replicator->status();
  else if (s.role == Role::kSecondary && s.secondary)
    p = s.secondary->status();
  else
    p = {{"state", (s.replicator || s.secondary) ? "disconnected" : "standalone"},
         {"node", c.peer_node},
         {"remote", c.remote ? c.remote->to_string() : ""}};
  const bool split = s.sync_target.split_brain();
  p["split_brain"] = split;
  if (split) p["state"] = "split-brain";
  if (json seen = s.sync_target.peer_seen(); !seen.is_null()) p.update(seen);
  return p;
}

json sync_section(const StatusSources& s) {
  if (s.role == Role::kPrimary && s.syncer) return s.syncer->progress().to_json();
  if (s.role == Role::kSecondary) return s.sync_target.secondary_progress().to_json();
  return SyncProgress{}.to_json();
}

json metadata_section(const StatusSources& s) {
  const MetaHeader& h = s.store.header();
  return {{"path", s.store.file().path()},
          {"uuid", h.uuid_string()},
          {"localcnt", h.localcnt},
          {"remotecnt", h.remotecnt},
          {"fresh", meta::is_fresh(h)},
          {"synchronising", (h.flags & kMetaSynchronising) != 0},
          {"sync_direction", meta::sync_direction_name(h)},
          {"inconsistent", meta::is_sync_target(h)}};
}

json nbd_section(const StatusSources& s) {
  const ResourceConfig& c = s.config;
  const NbdStats& ns = s.nbd.stats();
  const bool primary = s.role == Role::kPrimary;
  return {{"socket", primary ? c.nbd.socket : ""},
          {"tcp", (primary && c.nbd.listen) ? c.nbd.listen->to_string() : ""},
          {"clients", s.nbd.clients()},
          {"connections_total", ns.connections_total},
          {"requests", ns.requests},
          {"requests_in_flight", s.nbd.requests_in_flight()},
          {"bytes_read", ns.bytes_read},
          {"bytes_written", ns.bytes_written},
          {"errors", ns.errors},
          {"device", s.device.status()}};
}

}  // namespace

bool in_sync(const StatusSources& s) {
  if (s.role == Role::kPrimary && s.replicator)
    return s.replicator->connected() && !s.syncer->running() && s.store.map().needs_sync_count() == 0;
  if (s.role == Role::kSecondary && s.secondary)
    return s.secondary->state() == PeerState::kConnected && s.sync_target.secondary_in_sync();
  return false;
}

json status_report(const StatusSources& s) {
  const ResourceConfig& c = s.config;
  const MetaHeader& h = s.store.header();
  const ActiveMap& map = s.store.map();
  json j;
  j["resource"] = c.name;
  j["node"] = c.node;
  j["pid"] = ::getpid();
  j["version"] = HASTNBD_VERSION;
  j["role"] = to_string(s.role);
  j["role_since"] = iso_time(s.role_since);
  j["started"] = iso_time(s.started);
  j["replication"] = to_string(c.replication);
  j["peer"] = peer_section(s);
  j["local"] = {{"path", s.disk.path()},
                {"size", s.disk.size()},
                {"block_size", s.disk.block_size()},
                {"block_device", s.disk.is_block_device()}};
  j["metadata"] = metadata_section(s);
  j["sync"] = sync_section(s);
  // The primary runs verify; a secondary (or init) shows the last run it
  // remembers from its own time as primary.
  if (s.verifier) j["verify"] = s.verifier->status();
  j["in_sync"] = in_sync(s);
  j["extent_size"] = h.extent_size;
  j["dirty"] = {{"extents", map.dirty_count()},
                {"needs_sync_extents", map.needs_sync_count()},
                {"fine_extents", map.fine_records().size()},
                {"fine_bytes", map.fine_bytes()},
                {"bytes", std::min(map.dirty_count() * h.extent_size, h.data_size)},
                {"keepdirty", c.keepdirty}};
  j["nbd"] = nbd_section(s);
  j["metaflush"] = {{"enabled", c.metaflush}, {"bitmap_syncs", s.store.bitmap_syncs()}};
  const WritePathStats& ws = s.write_path.stats();
  j["writes"] = {{"in_flight", ws.writes_in_flight},
                 {"degraded", ws.degraded_writes},
                 {"generation_bumps", ws.generation_bumps},
                 {"remote_reads", ws.remote_reads},
                 {"stale_refused", ws.stale_refused}};
  j["hooks"] = {{"program", s.hooks.program()},
                {"started", s.hooks.stats().started},
                {"failed", s.hooks.stats().failed},
                {"timed_out", s.hooks.stats().timed_out}};
  j["compression"] = to_string(c.compression);
  j["checksum"] = to_string(c.checksum);
  j["timeout"] = c.timeout;
  j["sync_rate"] = c.sync_rate;
  j["verify_rate"] = c.verify_rate;
  j["sync_compare"] = c.sync_compare;
  j["track_granule"] = c.track_granule;
  j["after_split_brain"] = to_string(c.after_split_brain);
  return j;
}

}  // namespace hastnbd
