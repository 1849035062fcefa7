#include "hastnbd/daemon/sync_target.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "hastnbd/replication/sync_decision.h"
#include "hastnbd/replication/transitions.h"

namespace hastnbd {

namespace {

// Dirty extents in a HELLO's map; the padding bits after the last extent
// (a peer could set them) are not counted.
// (decode_hello checked the map's length against the extents.)
uint64_t dirty_extents(const peer::Hello& h) {
  uint64_t n = 0;
  for (auto [first, last] : bitmap_dirty_runs(h.dirty_map, (h.data_size + h.extent_size - 1) / h.extent_size))
    n += last - first + 1;
  return n;
}

// Bytes a sync may copy: every extent for a full sync, else those dirty in
// either node's map. An upper bound: the primary's map may hold extents the
// secondary already has.
uint64_t sync_work(const MetaHeader& h, const ActiveMap& map, const std::vector<uint8_t>& peer_map, bool full) {
  uint64_t work = 0;
  for (uint64_t e = 0; e < map.extents(); ++e) {
    const bool theirs = (e >> 3) < peer_map.size() && ((peer_map[e >> 3] >> (e & 7)) & 1);
    if (full || theirs || map.is_dirty(e)) work += std::min<uint64_t>(h.extent_size, h.data_size - e * h.extent_size);
  }
  return work;
}

}  // namespace

SyncTarget::SyncTarget(const ResourceConfig& config, MetaStore& store, Hooks& hooks)
    : config_(config), store_(store), hooks_(hooks) {}

nlohmann::json SyncTarget::peer_seen() const {
  if (!peer_seen_) return nullptr;
  return {{"localcnt", peer_seen_->localcnt}, {"remotecnt", peer_seen_->remotecnt}, {"decision", peer_seen_->decision}};
}

awaitable<Status> SyncTarget::on_hello(const peer::Hello& ours_hello, const peer::Hello& theirs, Role role,
                                       SyncPlan* plan) {
  const bool as_primary = plan != nullptr;
  const MetaHeader& h = store_.header();
  const Generation ours = meta::generation(h);
  const Generation peer{theirs.uuid, theirs.localcnt, theirs.remotecnt, (theirs.meta_flags & kMetaFresh) != 0};
  const bool both_primary = role == Role::kPrimary && theirs.role == uint8_t(Role::kPrimary);
  SyncDecision d = as_primary ? decide_sync(ours, peer) : decide_sync(peer, ours);
  if (d.kind == SyncKind::kSplitBrain && !both_primary) {
    // docs/design.md, "The sync decision": after_split_brain. Each side
    // applies its own policy to the two HELLOs; a secondary's changes are
    // discarded only when its own policy picks it too.
    const Changes mine{dirty_extents(ours_hello), ours_hello.generation_time.value_or(0)};
    const Changes other{dirty_extents(theirs), theirs.generation_time.value_or(0)};
    d = as_primary ? resolve_split_brain(d, config_.after_split_brain, mine, other)
                   : resolve_split_brain(d, config_.after_split_brain, other, mine);
    if (d.kind == SyncKind::kSplitBrainResolved) {
      const std::string loser = as_primary ? theirs.node : config_.node;
      spdlog::warn("resource {}: SPLIT-BRAIN with {} resolved: {}; node {} becomes the target", config_.name,
                   theirs.node, d.reason, loser);
      hooks_.run("split-brain-resolved", {to_string(config_.after_split_brain), loser});
    }
  }
  peer_seen_ = PeerSeen{theirs.localcnt, theirs.remotecnt,
                        both_primary && d.kind != SyncKind::kSplitBrain ? "both-primary" : to_string(d.kind)};
  if (d.kind == SyncKind::kSplitBrain) {
    if (!split_brain_) {
      split_brain_ = true;
      spdlog::error("resource {}: SPLIT-BRAIN with {}: {}", config_.name, theirs.node, d.reason);
      hooks_.run("split-brain", {theirs.node, std::to_string(h.localcnt), std::to_string(h.remotecnt),
                                 std::to_string(theirs.localcnt), std::to_string(theirs.remotecnt)});
    }
    co_return Status::Error(EPERM, d.reason);
  }
  if (d.refuse) co_return Status::Error(EINVAL, d.reason);
  // Two primaries meet only to find out whether they diverged: never connect.
  if (both_primary)
    co_return Status::Error(EBUSY, "both nodes are primary: make one of them secondary (neither wrote alone)");
  if (split_brain_) {
    split_brain_ = false;
    spdlog::info("resource {}: no longer in split-brain with {}", config_.name, theirs.node);
  }
  if (d.kind == SyncKind::kAnomaly)
    spdlog::warn("resource {}: {}", config_.name, d.reason);
  else
    spdlog::info("resource {}: {} ({})", config_.name, to_string(d.kind), d.reason);
  if (!as_primary) co_return co_await prepare_as_target(theirs, d);
  *plan = SyncPlan{d.full, d.from_secondary, meta::peer_localcnt_after_connect(d, ours, peer), theirs.dirty_map};
  // A primary about to receive the secondary's newer data is inconsistent
  // from now on: the header says so before the link carries a request.
  const bool work = d.from_secondary && sync_work(h, store_.map(), theirs.dirty_map, d.full) > 0;
  co_return co_await store_.update(
      [&](const MetaHeader& old) { return meta::record_connect(old, d, /*as_primary=*/true, peer, work); });
}

// The secondary's side of a decision: it only records where it stands; the
// primary drives the copy.
awaitable<Status> SyncTarget::prepare_as_target(const peer::Hello& theirs, const SyncDecision& d) {
  in_sync_ = false;
  const Generation peer{theirs.uuid, theirs.localcnt, theirs.remotecnt, (theirs.meta_flags & kMetaFresh) != 0};
  const bool adopting = d.full && !d.from_secondary && d.adopt_uuid && store_.header().uuid != theirs.uuid;
  if (d.full && !d.from_secondary) {
    // Everything here is about to be overwritten.
    store_.map().reset_clean();
    if (Status s = co_await store_.bitmap_durable(); !s.ok()) co_return s;
  }
  const uint64_t work = sync_work(store_.header(), store_.map(), theirs.dirty_map, d.full);
  if (Status s = co_await store_.update(
          [&](const MetaHeader& old) { return meta::record_connect(old, d, /*as_primary=*/false, peer, work > 0); });
      !s.ok())
    co_return s;
  if (adopting)
    spdlog::info("resource {}: adopting the primary's resource uuid {}", config_.name, store_.header().uuid_string());
  if (work > 0)
    progress_.begin(/*from_peer=*/!d.from_secondary, d.full, work);
  else
    progress_ = SyncProgress{};
  co_return Status::Ok();
}

awaitable<Status> SyncTarget::on_sync_done(uint64_t primary_localcnt) {
  // Every extent of our map was in the sync's work list, so none is dirty now.
  store_.map().reset_clean();
  Status s = co_await store_.bitmap_durable();
  if (s.ok())
    s = co_await store_.update(
        [primary_localcnt](const MetaHeader& h) { return meta::finish_sync(h, primary_localcnt); });
  if (!s.ok()) co_return s;
  in_sync_ = true;
  if (progress_.state == SyncProgress::State::kRunning) {
    progress_.state = SyncProgress::State::kDone;
    progress_.ended_wall = std::chrono::system_clock::now();
    // The plan here was an upper bound (the primary's map holds extents it
    // knew we already had); what came is what there was to copy.
    progress_.total_bytes = progress_.done_bytes;
    spdlog::info("sync: done ({} bytes copied); remotecnt now {}", progress_.done_bytes, primary_localcnt);
    hooks_.run("syncdone");
  }
  co_return Status::Ok();
}

void SyncTarget::secondary_disconnected(const std::string& why) {
  in_sync_ = false;
  if (progress_.state != SyncProgress::State::kRunning) return;
  progress_.state = SyncProgress::State::kInterrupted;
  progress_.ended_wall = std::chrono::system_clock::now();
  progress_.last_error = why;
  spdlog::warn("sync: interrupted after {} of {} bytes: {}", progress_.done_bytes, progress_.total_bytes, why);
  hooks_.run("syncintr", {why});
}

awaitable<Status> SyncTarget::discard_my_data() {
  store_.map().reset_clean();
  Status s = co_await store_.bitmap_durable();
  if (s.ok()) s = co_await store_.update(meta::discard_my_data);
  split_brain_ = false;
  peer_seen_.reset();
  if (s.ok())
    spdlog::warn("resource {}: local data discarded: the next connect copies everything from the primary",
                 config_.name);
  co_return s;
}

}  // namespace hastnbd
