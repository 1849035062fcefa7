// The metadata transitions against every row of the sync decision: two
// nodes' headers are carried through what the daemons do (writes alone,
// connects, syncs, failovers, discard) and after every accepted decision and
// finished sync the pair must be in step.
#include <catch2/catch.hpp>

#include "hastnbd/replication/transitions.h"

using namespace hastnbd;

namespace {

std::array<uint8_t, 16> uuid(uint8_t v) {
  std::array<uint8_t, 16> u{};
  u.fill(v);
  return u;
}

MetaHeader fresh(uint8_t id) { return meta::create("r0", 64 << 20, 2 << 20, 64, uuid(id), 1700000000); }

struct Outcome {
  SyncDecision decision;
  bool primary_was_target = false;
  bool secondary_was_target = false;
};

// One connect of primary `p` and secondary `s` as the daemons run it: both
// decide from the two HELLOs (the headers as they were before the connect),
// both record it, and if the link was accepted the sync runs to the end and
// both record its finish. `work`: whether anything was dirty.
Outcome connect(MetaHeader& p, MetaHeader& s, bool work = true, bool finish = true) {
  const Generation gp = meta::generation(p), gs = meta::generation(s);
  Outcome o;
  o.decision = decide_sync(gp, gs);
  if (o.decision.refuse) return o;
  p = meta::record_connect(p, o.decision, /*as_primary=*/true, gs, work);
  s = meta::record_connect(s, o.decision, /*as_primary=*/false, gp, work);
  o.primary_was_target = meta::is_sync_target(p);
  o.secondary_was_target = meta::is_sync_target(s);
  if (!finish) return o;
  const SyncDirection dir = o.decision.from_secondary ? SyncDirection::kFromPeer : SyncDirection::kToPeer;
  if (work) p = meta::begin_sync(p, dir);
  // SYNC_DONE carries the primary's localcnt; the primary stores the
  // secondary's localcnt as the connect left it.
  const uint64_t primary_localcnt = p.localcnt;
  p = meta::finish_sync(p, meta::peer_localcnt_after_connect(o.decision, gp, gs));
  s = meta::finish_sync(s, primary_localcnt);
  return o;
}

void require_in_step(const MetaHeader& p, const MetaHeader& s) {
  INFO("primary localcnt " << p.localcnt << " remotecnt " << p.remotecnt << ", secondary localcnt " << s.localcnt
                           << " remotecnt " << s.remotecnt);
  CHECK(p.uuid == s.uuid);
  CHECK_FALSE(meta::is_sync_target(p));
  CHECK_FALSE(meta::is_sync_target(s));
  CHECK_FALSE(meta::is_fresh(s));
  CHECK(decide_sync(meta::generation(p), meta::generation(s)).kind == SyncKind::kInStep);
  // Either node may become primary next: the decision is in step both ways.
  CHECK(decide_sync(meta::generation(s), meta::generation(p)).kind == SyncKind::kInStep);
}

}  // namespace

TEST_CASE("transitions: create, keepdirty and the queries", "[transitions]") {
  MetaHeader h = fresh(1);
  CHECK(meta::is_fresh(h));
  CHECK(h.localcnt == 0);
  CHECK(h.remotecnt == 0);
  CHECK(h.resource == "r0");
  CHECK(h.uuid == uuid(1));
  CHECK(std::string(meta::sync_direction_name(h)).empty());
  CHECK(meta::set_keepdirty(h, 7).keepdirty == 7);
  MetaHeader g = meta::start_generation(h);
  CHECK(g.localcnt == 1);
  CHECK_FALSE(meta::is_fresh(g));
  MetaHeader t = meta::begin_sync(g, SyncDirection::kFromPeer);
  CHECK(meta::is_sync_target(t));
  CHECK(std::string(meta::sync_direction_name(t)) == "from-peer");
  CHECK(meta::is_sync_source(meta::begin_sync(g, SyncDirection::kToPeer)));
  MetaHeader taken = meta::take_data_as_is(t);
  CHECK_FALSE(meta::is_sync_target(taken));
  CHECK(taken.localcnt == 1);
  MetaHeader d = meta::discard_my_data(t);
  CHECK(meta::is_fresh(d));
  CHECK_FALSE(meta::is_sync_target(d));
  CHECK(d.localcnt == 0);
  CHECK(d.uuid == uuid(1));  // the resource's identity stays
}

TEST_CASE("transitions: a fresh pair, then each side newer, then split-brain and its recovery", "[transitions]") {
  MetaHeader a = fresh(1), b = fresh(2);

  // Row "secondary fresh": full sync a -> b, b adopts a's UUID.
  Outcome o = connect(a, b);
  CHECK(o.decision.kind == SyncKind::kFullSync);
  CHECK(o.secondary_was_target);
  CHECK_FALSE(o.primary_was_target);
  require_in_step(a, b);

  // Row "primary newer": a writes while b is away (once per degraded period).
  a = meta::start_generation(a);
  a = meta::start_generation(a);
  o = connect(a, b);
  CHECK(o.decision.kind == SyncKind::kPrimaryNewer);
  CHECK(o.secondary_was_target);
  require_in_step(a, b);

  // Failover: b becomes primary and writes alone; a returns as secondary.
  b = meta::start_generation(b);
  o = connect(b, a);
  CHECK(o.decision.kind == SyncKind::kPrimaryNewer);
  require_in_step(b, a);

  // Row "secondary newer": b wrote alone, then a was made primary again
  // (a switchover before the resync): data flows b -> a, a is the target.
  b = meta::start_generation(b);
  o = connect(a, b);
  CHECK(o.decision.kind == SyncKind::kSecondaryNewer);
  CHECK(o.decision.from_secondary);
  CHECK(o.primary_was_target);
  CHECK_FALSE(o.secondary_was_target);
  require_in_step(a, b);

  // Row "split-brain": both write alone; refused both ways, nothing recorded.
  a = meta::start_generation(a);
  b = meta::start_generation(b);
  const MetaHeader a0 = a, b0 = b;
  CHECK(connect(a, b).decision.kind == SyncKind::kSplitBrain);
  CHECK(connect(b, a).decision.kind == SyncKind::kSplitBrain);
  CHECK(a == a0);
  CHECK(b == b0);

  // Recovery: b is the victim.
  b = meta::discard_my_data(b);
  o = connect(a, b);
  CHECK(o.decision.kind == SyncKind::kFullSync);
  require_in_step(a, b);
}

TEST_CASE("transitions: a replaced secondary disk behind a primary with history", "[transitions]") {
  // The primary has been through failovers (remotecnt > 0) when the
  // secondary's metadata is recreated: after the full sync, a reconnect must
  // find the pair in step, and a later degraded write must read as "primary
  // newer", never as the secondary having written or a split-brain.
  MetaHeader a = fresh(1), b = fresh(2);
  connect(a, b);
  for (int i = 0; i < 3; ++i) {
    b = meta::start_generation(b);
    connect(b, a);
    a = meta::start_generation(a);
    connect(a, b);
  }
  REQUIRE(a.remotecnt > 0);
  b = fresh(9);  // `create --force` on the new disk
  Outcome o = connect(a, b);
  CHECK(o.decision.kind == SyncKind::kFullSync);
  require_in_step(a, b);
  a = meta::start_generation(a);
  CHECK(decide_sync(meta::generation(a), meta::generation(b)).kind == SyncKind::kPrimaryNewer);
}

TEST_CASE("transitions: an interrupted sync resumes, it does not start over", "[transitions]") {
  MetaHeader a = fresh(1), b = fresh(2);
  // The first full sync is interrupted: b has a's identity and is the target.
  Outcome o = connect(a, b, /*work=*/true, /*finish=*/false);
  CHECK(o.decision.kind == SyncKind::kFullSync);
  CHECK(meta::is_sync_target(b));
  CHECK(b.uuid == a.uuid);
  CHECK_FALSE(meta::is_fresh(b));
  // b refuses to be promoted without --force (role_change reads the header);
  // the reconnect is an ordinary sync (the dirty maps carry what is left).
  o = connect(a, b);
  CHECK(o.decision.kind == SyncKind::kInStep);
  CHECK_FALSE(o.decision.full);
  require_in_step(a, b);

  // A sync from the secondary interrupted: the primary stays the target.
  b = meta::start_generation(b);
  o = connect(a, b, true, /*finish=*/false);
  CHECK(o.decision.kind == SyncKind::kSecondaryNewer);
  CHECK(meta::is_sync_target(a));
  o = connect(a, b);
  CHECK(o.decision.kind == SyncKind::kSecondaryNewer);
  require_in_step(a, b);
}

TEST_CASE("transitions: a connect with nothing to copy marks no target", "[transitions]") {
  MetaHeader a = fresh(1), b = fresh(2);
  connect(a, b);
  b = meta::start_generation(b);
  Outcome o = connect(a, b, /*work=*/false);
  CHECK(o.decision.kind == SyncKind::kSecondaryNewer);
  CHECK_FALSE(o.primary_was_target);
  require_in_step(a, b);
}

TEST_CASE("transitions: refused decisions change nothing", "[transitions]") {
  // Row "UUIDs differ".
  MetaHeader a = meta::start_generation(fresh(1)), b = meta::start_generation(fresh(2));
  MetaHeader a0 = a, b0 = b;
  Outcome o = connect(a, b);
  CHECK(o.decision.kind == SyncKind::kRefuseUuid);
  CHECK(a == a0);
  CHECK(b == b0);
  // Row "primary fresh, secondary holds data".
  MetaHeader p = fresh(3);
  p.uuid = b.uuid;
  MetaHeader p0 = p;
  o = connect(p, b);
  CHECK(o.decision.kind == SyncKind::kRefuseUuid);
  CHECK(p == p0);
  CHECK(b == b0);
}

TEST_CASE("transitions: the anomaly row (a counter went backwards)", "[transitions]") {
  MetaHeader a = fresh(1), b = fresh(2);
  connect(a, b);
  a = meta::start_generation(a);
  connect(a, b);
  // b's metadata restored from an old copy: it remembers less of a than a has.
  MetaHeader old_b = b;
  a = meta::start_generation(a);
  connect(a, b);
  b = old_b;
  b.remotecnt = a.localcnt + 5;  // now b claims to have seen a generation a never made
  Outcome o = connect(a, b);
  CHECK(o.decision.kind == SyncKind::kAnomaly);
  CHECK(o.decision.full);
  require_in_step(a, b);

  // The other way round: the primary's counters are the ones behind.
  MetaHeader c = fresh(4), d = fresh(5);
  connect(c, d);
  d = meta::start_generation(d);
  connect(d, c);
  c.localcnt = 0;
  c.remotecnt = 0;
  d.remotecnt = 7;
  o = connect(c, d);
  CHECK(o.decision.kind == SyncKind::kAnomaly);
  CHECK(o.decision.from_secondary);
  CHECK(o.primary_was_target);
  require_in_step(c, d);
}

TEST_CASE("transitions: forced promotion of a sync target", "[transitions]") {
  MetaHeader a = fresh(1), b = fresh(2);
  connect(a, b, true, /*finish=*/false);
  REQUIRE(meta::is_sync_target(b));
  // a is lost; the operator forces b.
  b = meta::take_data_as_is(b);
  CHECK_FALSE(meta::is_sync_target(b));
  b = meta::start_generation(b);
  // a returns as secondary: b is newer.
  Outcome o = connect(b, a);
  CHECK(o.decision.kind == SyncKind::kPrimaryNewer);
  require_in_step(b, a);
}

TEST_CASE("after_split_brain: each policy on every combination of changed sides", "[transitions]") {
  // Changes as the HELLOs carry them: dirty extents and generation start.
  const Changes few{3, 1000}, many{9, 2000}, same_as_few{3, 1000};
  struct Row {
    SplitBrainPolicy policy;
    Changes p, s;
    SyncKind want;
    const char* says;  // in the reason
  };
  const Row rows[] = {
      {SplitBrainPolicy::kManual, few, many, SyncKind::kSplitBrain, "discard-my-data"},
      {SplitBrainPolicy::kDiscardZeroChanges, few, many, SyncKind::kSplitBrain, "both sides changed"},
      {SplitBrainPolicy::kDiscardLeastChanges, many, few, SyncKind::kSplitBrainResolved, "secondary 3"},
      {SplitBrainPolicy::kDiscardLeastChanges, few, many, SyncKind::kSplitBrain, "never done under its users"},
      {SplitBrainPolicy::kDiscardLeastChanges, few, same_as_few, SyncKind::kSplitBrain, "no side has fewer"},
      // p started its generation at 1000, s at 2000: s is the younger primary.
      {SplitBrainPolicy::kDiscardYoungerPrimary, few, many, SyncKind::kSplitBrainResolved, "secondary started"},
      {SplitBrainPolicy::kDiscardYoungerPrimary, many, few, SyncKind::kSplitBrain, "never done under its users"},
      {SplitBrainPolicy::kDiscardYoungerPrimary, few, Changes{9, 0}, SyncKind::kSplitBrain, "unknown or equal"},
  };
  for (const Row& row : rows) {
    INFO(to_string(row.policy) << " p " << row.p.extents << "/" << row.p.generation_time << " s " << row.s.extents
                               << "/" << row.s.generation_time);
    MetaHeader a = fresh(1), b = fresh(2);
    connect(a, b);
    a = meta::start_generation(a, 1000);
    b = meta::start_generation(b, 2000);
    const SyncDecision d = decide_sync(meta::generation(a), meta::generation(b));
    REQUIRE(d.kind == SyncKind::kSplitBrain);
    const SyncDecision r = resolve_split_brain(d, row.policy, row.p, row.s);
    CHECK(r.kind == row.want);
    CHECK_THAT(r.reason, Catch::Contains(row.says));
    CHECK(r.refuse == (row.want == SyncKind::kSplitBrain));
    if (r.refuse) continue;
    // Resolved: b's changes are discarded, the union copied a -> b; after
    // the sync the pair is in step, and an interrupted copy resumes as
    // primary-newer (b went back to the generation both held).
    CHECK_FALSE(r.from_secondary);
    CHECK_FALSE(r.full);
    MetaHeader a1 = a, b1 = b;
    const Generation ga = meta::generation(a1), gb = meta::generation(b1);
    a1 = meta::record_connect(a1, r, true, gb, true);
    b1 = meta::record_connect(b1, r, false, ga, true);
    CHECK(meta::is_sync_target(b1));
    CHECK(decide_sync(meta::generation(a1), meta::generation(b1)).kind == SyncKind::kPrimaryNewer);
    const uint64_t primary_localcnt = a1.localcnt;
    a1 = meta::finish_sync(a1, meta::peer_localcnt_after_connect(r, ga, gb));
    b1 = meta::finish_sync(b1, primary_localcnt);
    require_in_step(a1, b1);
  }
  // Not a split-brain: the policy changes nothing (a side that wrote
  // nothing never started a generation: primary-newer / secondary-newer).
  MetaHeader a = fresh(1), b = fresh(2);
  connect(a, b);
  a = meta::start_generation(a, 1000);
  for (SplitBrainPolicy p : {SplitBrainPolicy::kManual, SplitBrainPolicy::kDiscardZeroChanges,
                             SplitBrainPolicy::kDiscardLeastChanges, SplitBrainPolicy::kDiscardYoungerPrimary}) {
    const SyncDecision d = decide_sync(meta::generation(a), meta::generation(b));
    CHECK(resolve_split_brain(d, p, few, many).kind == SyncKind::kPrimaryNewer);
    const SyncDecision d2 = decide_sync(meta::generation(b), meta::generation(a));
    CHECK(resolve_split_brain(d2, p, few, many).kind == SyncKind::kSecondaryNewer);
  }
  CHECK(meta::start_generation(fresh(3), 77).generation_time == 77);
  // A restart during the same outage (a second generation alone) keeps the
  // first date; a completed sync clears it.
  MetaHeader g = meta::start_generation(meta::start_generation(fresh(3), 1000), 3000);
  CHECK(g.generation_time == 1000);
  CHECK(meta::finish_sync(g, 0).generation_time == 0);
}
