// The sync-target state of a node, in one owner (docs/design.md, "Metadata
// and generations"): at each handshake both sides decide from the two
// HELLOs who synchronises whom (sync_decision.h) and record it in their
// metadata (meta::record_connect), so the header alone says whether this
// node is the target of an unfinished sync (meta::is_sync_target). This
// class makes that decision and those records, tracks split-brain, and
// keeps the secondary's part of a sync: its progress, whether it is in sync,
// SYNC_DONE, and discard-my-data. The primary's copying is the Syncer's;
// the plan it copies by comes from here.
// Loop thread only.
#pragma once

#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "hastnbd/base/asio.h"
#include "hastnbd/base/role.h"
#include "hastnbd/base/status.h"
#include "hastnbd/config/config.h"
#include "hastnbd/daemon/hooks.h"
#include "hastnbd/disk/meta_store.h"
#include "hastnbd/peer/hello.h"
#include "hastnbd/replication/sync_decision.h"
#include "hastnbd/replication/sync_progress.h"
#include "hastnbd/replication/syncer.h"

namespace hastnbd {

class SyncTarget {
 public:
  SyncTarget(const ResourceConfig& config, MetaStore& store, Hooks& hooks);

  // The peer's HELLO passed its checks; `role` is ours. Ok lets the link
  // proceed; an error refuses the peer with its message. The primary passes
  // `plan`, which is set to the sync to run once the link is up; the
  // secondary passes null.
  awaitable<Status> on_hello(const peer::Hello& ours, const peer::Hello& theirs, Role role, SyncPlan* plan);

  // The secondary's side of a sync.
  awaitable<Status> on_sync_done(uint64_t primary_localcnt);
  void add_resync_bytes(uint64_t n) { progress_.add(n); }
  void secondary_disconnected(const std::string& why);

  // The operator picked this node as the split-brain victim: fresh metadata,
  // an empty map; the next connect copies everything to it. No write may be
  // in flight.
  awaitable<Status> discard_my_data();

  // This node became primary: whatever split-brain was seen is for the next
  // handshake to find again.
  void clear_split_brain() { split_brain_ = false; }
  bool split_brain() const { return split_brain_; }
  bool secondary_in_sync() const { return in_sync_; }
  const SyncProgress& secondary_progress() const { return progress_; }
  // What the peer's last HELLO said: {localcnt, remotecnt, decision}, or null.
  nlohmann::json peer_seen() const;

 private:
  awaitable<Status> prepare_as_target(const peer::Hello& theirs, const SyncDecision& d);

  const ResourceConfig& config_;
  MetaStore& store_;
  Hooks& hooks_;
  SyncProgress progress_;  // the secondary's view of a sync it takes part in
  bool in_sync_ = false;
  bool split_brain_ = false;
  struct PeerSeen {
    uint64_t localcnt = 0, remotecnt = 0;
    std::string decision;
  };
  std::optional<PeerSeen> peer_seen_;
};

}  // namespace hastnbd
