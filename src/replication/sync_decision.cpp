#include "hastnbd/replication/sync_decision.h"

namespace hastnbd {

namespace {

std::string counters(const char* who, const Generation& g) {
  return std::string(who) + " localcnt " + std::to_string(g.localcnt) + " remotecnt " + std::to_string(g.remotecnt);
}

SyncDecision make(SyncKind kind, bool from_secondary, std::string reason) {
  SyncDecision d;
  d.kind = kind;
  d.refuse = kind == SyncKind::kRefuseUuid || kind == SyncKind::kSplitBrain;
  d.full = kind == SyncKind::kFullSync || kind == SyncKind::kAnomaly;
  d.from_secondary = from_secondary;
  d.reason = std::move(reason);
  return d;
}

}  // namespace

const char* to_string(SyncKind k) {
  switch (k) {
    case SyncKind::kRefuseUuid: return "refuse";
    case SyncKind::kSplitBrain: return "split-brain";
    case SyncKind::kFullSync: return "full-sync";
    case SyncKind::kInStep: return "in-step";
    case SyncKind::kPrimaryNewer: return "primary-newer";
    case SyncKind::kSecondaryNewer: return "secondary-newer";
    case SyncKind::kAnomaly: return "anomaly";
    case SyncKind::kSplitBrainResolved: return "split-brain-resolved";
  }
  return "?";
}

SyncDecision resolve_split_brain(const SyncDecision& d, SplitBrainPolicy policy, const Changes& p, const Changes& s) {
  if (d.kind != SyncKind::kSplitBrain) return d;
  const std::string name = to_string(policy);
  auto unresolved = [&](const std::string& why) {
    SyncDecision u = d;
    u.reason = d.reason + "; after_split_brain " + name + ": " + why;
    return u;
  };
  bool discard_primary = false;
  std::string why;
  switch (policy) {
    case SplitBrainPolicy::kManual: return d;
    case SplitBrainPolicy::kDiscardZeroChanges:
      return unresolved("both sides changed data, so neither is discarded automatically");
    case SplitBrainPolicy::kDiscardLeastChanges:
      if (p.extents == s.extents)
        return unresolved("both changed " + std::to_string(p.extents) + " extents, no side has fewer");
      discard_primary = p.extents < s.extents;
      why = "the primary changed " + std::to_string(p.extents) + " extents, the secondary " +
            std::to_string(s.extents);
      break;
    case SplitBrainPolicy::kDiscardYoungerPrimary:
      if (p.generation_time == 0 || s.generation_time == 0 || p.generation_time == s.generation_time)
        return unresolved("the sides' generation start times are unknown or equal");
      discard_primary = p.generation_time > s.generation_time;
      why = std::string("the ") + (discard_primary ? "primary" : "secondary") +
            " started writing alone later (generation start " +
            std::to_string((discard_primary ? p : s).generation_time) + " ns against " +
            std::to_string((discard_primary ? s : p).generation_time) + ")";
      break;
  }
  if (discard_primary)
    return unresolved(why + ": the primary's changes would be discarded, which is never done under its users; make "
                            "it secondary (role secondary) and the policy resolves at the next connect");
  SyncDecision r = make(SyncKind::kSplitBrainResolved, false,
                        "split-brain resolved by after_split_brain " + name + ": " + why +
                            "; the secondary's changes are discarded");
  return r;
}

SyncDecision decide_sync(const Generation& p, const Generation& s) {
  const std::string both = counters("primary", p) + ", " + counters("secondary", s);
  if (s.fresh) {
    SyncDecision d = make(SyncKind::kFullSync, false, "the secondary's metadata is fresh: full synchronisation");
    d.adopt_uuid = true;
    return d;
  }
  if (p.fresh)
    return make(SyncKind::kRefuseUuid, false,
                "the primary's metadata is fresh but the secondary holds data of this resource; make the node "
                "with the data primary, or run discard-my-data on the secondary to overwrite it");
  if (p.uuid != s.uuid)
    return make(SyncKind::kRefuseUuid, false,
                "resource UUIDs differ: the two nodes hold copies of different resources (recreate the metadata "
                "of one with create --force, or discard-my-data, to make it take the other's data)");
  const bool p_wrote = p.localcnt > s.remotecnt, p_same = p.localcnt == s.remotecnt;
  const bool s_wrote = s.localcnt > p.remotecnt, s_same = s.localcnt == p.remotecnt;
  if (p_same && s_same) return make(SyncKind::kInStep, false, "in step (" + both + ")");
  if (p_wrote && s_same) return make(SyncKind::kPrimaryNewer, false, "the primary wrote alone (" + both + ")");
  if (p_same && s_wrote) return make(SyncKind::kSecondaryNewer, true, "the secondary wrote alone (" + both + ")");
  if (p_wrote && s_wrote)
    return make(SyncKind::kSplitBrain, false,
                "split-brain: both nodes wrote without the other (" + both +
                    "); choose the victim and run discard-my-data on it");
  // A counter went backwards (metadata restored from a copy, or edited): the
  // side the other remembers less of is behind. The primary was chosen by the
  // operator, so it wins when both are behind.
  const bool from_secondary = p.localcnt < s.remotecnt && s.localcnt >= p.remotecnt;
  return make(SyncKind::kAnomaly, from_secondary,
              "generation counters are inconsistent (" + both + "): full synchronisation from the " +
                  (from_secondary ? "secondary" : "primary"));
}

}  // namespace hastnbd
