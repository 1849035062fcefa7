#include "hastnbd/replication/transitions.h"

namespace hastnbd::meta {

MetaHeader create(const std::string& resource, uint64_t data_size, uint64_t extent_size, uint32_t keepdirty,
                  const std::array<uint8_t, 16>& uuid, uint64_t created_unix) {
  MetaHeader h;
  h.resource = resource;
  h.data_size = data_size;
  h.extent_size = extent_size;
  h.keepdirty = keepdirty;
  h.flags = kMetaFresh;
  h.uuid = uuid;
  h.created = created_unix;
  return h;
}

MetaHeader set_keepdirty(const MetaHeader& h, uint32_t keepdirty) {
  MetaHeader n = h;
  n.keepdirty = keepdirty;
  return n;
}

MetaHeader start_generation(const MetaHeader& h, uint64_t now_ns) {
  MetaHeader n = h;
  ++n.localcnt;
  // The first generation alone since the last completed sync dates the
  // divergence; a later one (a restart during the same outage) does not.
  if (n.generation_time == 0) n.generation_time = now_ns;
  n.flags &= ~uint32_t(kMetaFresh);
  return n;
}

MetaHeader record_connect(const MetaHeader& h, const SyncDecision& d, bool as_primary, const Generation& peer,
                          bool work) {
  MetaHeader n = h;
  if (d.refuse) return n;
  // A primary whose peer accepted it holds the pair's data from now on: it is
  // no longer fresh, so an interrupted first sync can resume.
  if (as_primary) n.flags &= ~uint32_t(kMetaFresh);
  if (!as_primary && d.kind == SyncKind::kSplitBrainResolved) {
    // This node's changes since the split are discarded: it goes back to
    // the generation both held before it, and the union of both maps is
    // copied over it (an interrupted copy resumes as primary-newer).
    n.localcnt = peer.remotecnt;
  }
  if (!as_primary && d.full && !d.from_secondary) {
    // Everything here is about to be overwritten.
    n.uuid = peer.uuid;
    n.localcnt = peer.remotecnt;
    n.remotecnt = 0;
    n.flags &= ~uint32_t(kMetaFresh);
  }
  // The receiving side: the primary when the secondary is newer, else the secondary.
  const bool receives = as_primary == d.from_secondary;
  if (receives && work) n = begin_sync(n, SyncDirection::kFromPeer);
  return n;
}

uint64_t peer_localcnt_after_connect(const SyncDecision& d, const Generation& primary, const Generation& secondary) {
  // A full sync to the secondary made it take the primary's view of its
  // generation (record_connect).
  return (d.full && !d.from_secondary) || d.kind == SyncKind::kSplitBrainResolved ? primary.remotecnt
                                                                                   : secondary.localcnt;
}

MetaHeader begin_sync(const MetaHeader& h, SyncDirection direction) {
  MetaHeader n = h;
  n.flags |= kMetaSynchronising;
  n.sync_direction = direction;
  return n;
}

MetaHeader finish_sync(const MetaHeader& h, uint64_t peer_localcnt) {
  MetaHeader n = h;
  n.remotecnt = peer_localcnt;
  n.generation_time = 0;  // in step: the next write alone dates a new divergence
  n.flags &= ~uint32_t(kMetaSynchronising | kMetaFresh);
  n.sync_direction = SyncDirection::kNone;
  return n;
}

MetaHeader take_data_as_is(const MetaHeader& h) {
  MetaHeader n = h;
  n.flags &= ~uint32_t(kMetaSynchronising);
  n.sync_direction = SyncDirection::kNone;
  return n;
}

MetaHeader discard_my_data(const MetaHeader& h) {
  MetaHeader n = h;
  n.flags = kMetaFresh;
  n.sync_direction = SyncDirection::kNone;
  n.localcnt = n.remotecnt = 0;
  n.generation_time = 0;
  return n;
}

bool is_fresh(const MetaHeader& h) { return (h.flags & kMetaFresh) != 0; }

bool is_sync_target(const MetaHeader& h) {
  return (h.flags & kMetaSynchronising) && h.sync_direction == SyncDirection::kFromPeer;
}

bool is_sync_source(const MetaHeader& h) {
  return (h.flags & kMetaSynchronising) && h.sync_direction == SyncDirection::kToPeer;
}

Generation generation(const MetaHeader& h) { return Generation{h.uuid, h.localcnt, h.remotecnt, is_fresh(h)}; }

const char* sync_direction_name(const MetaHeader& h) {
  if (!(h.flags & kMetaSynchronising)) return "";
  return h.sync_direction == SyncDirection::kFromPeer ? "from-peer" : "to-peer";
}

}  // namespace hastnbd::meta
