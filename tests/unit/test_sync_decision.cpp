#include <catch2/catch.hpp>

#include "hastnbd/replication/sync_decision.h"

using namespace hastnbd;

namespace {

Generation gen(uint8_t uuid, uint64_t localcnt, uint64_t remotecnt, bool fresh = false) {
  Generation g;
  g.uuid.fill(uuid);
  g.localcnt = localcnt;
  g.remotecnt = remotecnt;
  g.fresh = fresh;
  return g;
}

}  // namespace

TEST_CASE("sync decision: a fresh secondary gets everything and adopts the UUID", "[sync]") {
  for (auto p : {gen(1, 0, 0, true), gen(1, 0, 0), gen(1, 5, 2)}) {
    auto d = decide_sync(p, gen(2, 0, 0, true));
    CHECK(d.kind == SyncKind::kFullSync);
    CHECK_FALSE(d.refuse);
    CHECK(d.full);
    CHECK_FALSE(d.from_secondary);
    CHECK(d.adopt_uuid);
  }
  // Even with the same UUID (after discard-my-data, which keeps it).
  auto d = decide_sync(gen(1, 3, 1), gen(1, 0, 0, true));
  CHECK(d.kind == SyncKind::kFullSync);
  CHECK(d.adopt_uuid);
}

TEST_CASE("sync decision: different resources are refused", "[sync]") {
  auto d = decide_sync(gen(1, 1, 0), gen(2, 0, 1));
  CHECK(d.kind == SyncKind::kRefuseUuid);
  CHECK(d.refuse);
  CHECK_THAT(d.reason, Catch::Contains("UUIDs differ"));
  // A fresh primary must not overwrite a secondary holding data, nor be
  // silently overwritten by it while it serves clients.
  d = decide_sync(gen(1, 0, 0, true), gen(2, 3, 0));
  CHECK(d.refuse);
  CHECK_THAT(d.reason, Catch::Contains("primary's metadata is fresh"));
  d = decide_sync(gen(2, 0, 0, true), gen(2, 3, 0));
  CHECK(d.refuse);
}

TEST_CASE("sync decision: the table of docs/design.md", "[sync]") {
  // in step
  auto d = decide_sync(gen(7, 4, 2), gen(7, 2, 4));
  CHECK(d.kind == SyncKind::kInStep);
  CHECK_FALSE(d.refuse);
  CHECK_FALSE(d.full);
  CHECK_FALSE(d.from_secondary);
  CHECK_FALSE(d.adopt_uuid);
  d = decide_sync(gen(7, 0, 0), gen(7, 0, 0));
  CHECK(d.kind == SyncKind::kInStep);

  // the primary wrote alone (once or several times)
  for (uint64_t extra : {1, 2, 100}) {
    d = decide_sync(gen(7, 4 + extra, 2), gen(7, 2, 4));
    CHECK(d.kind == SyncKind::kPrimaryNewer);
    CHECK_FALSE(d.refuse);
    CHECK_FALSE(d.full);
    CHECK_FALSE(d.from_secondary);
  }

  // the secondary wrote alone: it is the source, the primary reads through it
  d = decide_sync(gen(7, 4, 2), gen(7, 3, 4));
  CHECK(d.kind == SyncKind::kSecondaryNewer);
  CHECK_FALSE(d.refuse);
  CHECK_FALSE(d.full);
  CHECK(d.from_secondary);
}

TEST_CASE("sync decision: split-brain whenever both wrote alone", "[sync]") {
  for (auto [pl, sl] : {std::pair<uint64_t, uint64_t>{5, 3}, {9, 9}, {5, 100}}) {
    auto d = decide_sync(gen(7, pl, 2), gen(7, sl, 4));
    INFO("primary localcnt " << pl << ", secondary localcnt " << sl);
    CHECK(d.kind == SyncKind::kSplitBrain);
    CHECK(d.refuse);
    CHECK_FALSE(d.full);
    CHECK_THAT(d.reason, Catch::Contains("split-brain") && Catch::Contains("primary localcnt " + std::to_string(pl)) &&
                             Catch::Contains("secondary localcnt " + std::to_string(sl)) &&
                             Catch::Contains("discard-my-data"));
  }
  // The classic failover story: a was primary (a.l=1), b took over and wrote
  // (b.l=1); a returns as secondary -> b newer, not split-brain.
  auto d = decide_sync(/*b*/ gen(7, 1, 1), /*a*/ gen(7, 1, 0));
  CHECK(d.kind == SyncKind::kPrimaryNewer);
  // ... but if a also wrote alone before it died (degraded), it is split-brain.
  d = decide_sync(/*b*/ gen(7, 1, 1), /*a*/ gen(7, 2, 0));
  CHECK(d.kind == SyncKind::kSplitBrain);
}

TEST_CASE("sync decision: counters behind what the peer remembers", "[sync]") {
  // The secondary is behind what the primary remembers of it: primary ahead.
  auto d = decide_sync(gen(7, 4, 3), gen(7, 1, 4));
  CHECK(d.kind == SyncKind::kAnomaly);
  CHECK(d.full);
  CHECK_FALSE(d.refuse);
  CHECK_FALSE(d.from_secondary);
  d = decide_sync(gen(7, 6, 3), gen(7, 1, 4));
  CHECK(d.kind == SyncKind::kAnomaly);
  CHECK_FALSE(d.from_secondary);
  // The primary is behind what the secondary remembers of it: secondary ahead.
  d = decide_sync(gen(7, 2, 3), gen(7, 3, 4));
  CHECK(d.kind == SyncKind::kAnomaly);
  CHECK(d.from_secondary);
  d = decide_sync(gen(7, 2, 3), gen(7, 5, 4));
  CHECK(d.from_secondary);
  // Both behind: the operator's primary wins.
  d = decide_sync(gen(7, 2, 3), gen(7, 1, 4));
  CHECK(d.kind == SyncKind::kAnomaly);
  CHECK_FALSE(d.from_secondary);
  CHECK_THAT(d.reason, Catch::Contains("inconsistent"));
}

TEST_CASE("sync decision: names", "[sync]") {
  CHECK(std::string(to_string(SyncKind::kSplitBrain)) == "split-brain");
  CHECK(std::string(to_string(SyncKind::kSecondaryNewer)) == "secondary-newer");
}
