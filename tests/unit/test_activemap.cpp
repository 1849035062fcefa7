#include <catch2/catch.hpp>

#include "hastnbd/disk/activemap.h"

using namespace hastnbd;

namespace {
constexpr uint64_t kExt = 1 << 20;
}

TEST_CASE("extent ranges", "[activemap]") {
  std::vector<uint8_t> bm(16);
  ActiveMap m(bm, 100 * kExt + 512, kExt, 4);
  CHECK(m.extents() == 101);
  CHECK(m.extent_range(0, 1) == std::pair<uint64_t, uint64_t>{0, 0});
  CHECK(m.extent_range(kExt - 1, 2) == std::pair<uint64_t, uint64_t>{0, 1});
  CHECK(m.extent_range(100 * kExt, 512) == std::pair<uint64_t, uint64_t>{100, 100});
}

TEST_CASE("a write dirties its extents and asks for one bitmap sync", "[activemap]") {
  std::vector<uint8_t> bm(8);
  ActiveMap m(bm, 64 * kExt, kExt, 4);
  uint64_t t1 = m.write_start(kExt - 512, 1024);  // extents 0 and 1
  CHECK(t1 != 0);
  CHECK(m.is_dirty(0));
  CHECK(m.is_dirty(1));
  CHECK(bm[0] == 0x03);
  CHECK(m.dirty_count() == 2);
  // A concurrent write to a bit set but not yet durable must wait too.
  uint64_t t2 = m.write_start(0, 4096);
  CHECK(t2 != 0);
  CHECK(t2 <= t1);
  uint64_t seq = m.change_seq();
  m.mark_durable(seq);
  CHECK(m.durable_seq() >= t1);
  // Once durable, further writes to those extents need no sync.
  CHECK(m.write_start(0, 4096) == 0);
}

TEST_CASE("degraded writes stay dirty whatever keepdirty says", "[activemap]") {
  std::vector<uint8_t> bm(8);
  ActiveMap m(bm, 64 * kExt, kExt, 2);
  for (uint64_t e = 0; e < 10; ++e) {
    m.write_start(e * kExt, 4096);
    m.write_done(e * kExt, 4096, /*confirmed=*/false);
  }
  CHECK(m.dirty_count() == 10);
  CHECK(m.keepdirty_size() == 2);
  auto runs = m.dirty_runs();
  REQUIRE(runs.size() == 1);
  CHECK(runs[0] == std::pair<uint64_t, uint64_t>{0, 9});
}

TEST_CASE("confirmed writes keep only the keepdirty LRU dirty", "[activemap]") {
  std::vector<uint8_t> bm(8);
  ActiveMap m(bm, 64 * kExt, kExt, 3);
  for (uint64_t e = 0; e < 10; ++e) {
    m.write_start(e * kExt, 4096);
    m.write_done(e * kExt, 4096, /*confirmed=*/true);
  }
  CHECK(m.dirty_count() == 3);
  CHECK(m.is_dirty(7));
  CHECK(m.is_dirty(8));
  CHECK(m.is_dirty(9));
  CHECK_FALSE(m.is_dirty(6));
  // Touching an old member refreshes it: 7 survives the next insertion.
  m.write_start(7 * kExt, 4096);
  m.write_done(7 * kExt, 4096, true);
  m.write_start(20 * kExt, 4096);
  m.write_done(20 * kExt, 4096, true);
  CHECK(m.is_dirty(7));
  CHECK_FALSE(m.is_dirty(8));
}

TEST_CASE("an extent with a write in flight is never cleared", "[activemap]") {
  std::vector<uint8_t> bm(8);
  ActiveMap m(bm, 64 * kExt, kExt, 0);
  m.write_start(0, 4096);          // in flight
  m.write_start(kExt, 4096);       // evicts extent 0 from the (empty) LRU
  CHECK(m.is_dirty(0));            // still in flight: stays
  m.write_done(0, 4096, true);
  CHECK_FALSE(m.is_dirty(0));      // now it may go
  CHECK(m.is_dirty(1));
  m.write_done(kExt, 4096, true);
  CHECK(m.dirty_count() == 0);
}

TEST_CASE("bits dirty at load need a sync before they may clear", "[activemap]") {
  std::vector<uint8_t> bm(8);
  bm[0] = 0x81;  // extents 0 and 7 dirty from a previous run
  ActiveMap m(bm, 64 * kExt, kExt, 0);
  CHECK(m.dirty_count() == 2);
  m.write_start(0, 4096);
  m.write_done(0, 4096, true);
  CHECK(m.is_dirty(0));  // still unknown whether the peer has the old writes
  m.synced(0);
  CHECK_FALSE(m.is_dirty(0));
  m.synced(7);
  CHECK(m.dirty_count() == 0);
  CHECK(bm[0] == 0);
}

TEST_CASE("dirty runs on a raw bitmap", "[activemap]") {
  std::vector<uint8_t> bm = {0b00000110, 0xff, 0x01, 0, 0x80};
  auto runs = bitmap_dirty_runs(bm, 40);
  REQUIRE(runs.size() == 3);
  CHECK(runs[0] == std::pair<uint64_t, uint64_t>{1, 2});
  CHECK(runs[1] == std::pair<uint64_t, uint64_t>{8, 16});
  CHECK(runs[2] == std::pair<uint64_t, uint64_t>{39, 39});
  CHECK(bitmap_dirty_runs(bm, 39).size() == 2);  // bits past the end are ignored
}

TEST_CASE("needs-sync set: scan, count, marks from the peer's map", "[activemap]") {
  std::vector<uint8_t> bm(32);
  ActiveMap m(bm, 200 * kExt, kExt, 4);
  CHECK(m.needs_sync_count() == 0);
  CHECK(m.next_needs_sync(0) == m.extents());
  m.mark_needs_sync(3);
  m.mark_needs_sync(64);
  m.mark_needs_sync(199);
  m.mark_needs_sync(64);  // twice counts once
  CHECK(m.needs_sync_count() == 3);
  CHECK(m.is_dirty(64));
  CHECK(m.change_seq() > 0);  // the new bits must reach disk before the copy starts
  CHECK(m.next_needs_sync(0) == 3);
  CHECK(m.next_needs_sync(3) == 3);
  CHECK(m.next_needs_sync(4) == 64);
  CHECK(m.next_needs_sync(65) == 199);
  CHECK(m.next_needs_sync(200) == m.extents());
  CHECK_FALSE(m.peer_has(3 * kExt, 1));
  CHECK(m.peer_has(4 * kExt, kExt));
  m.synced(64);
  CHECK(m.needs_sync_count() == 2);
  CHECK_FALSE(m.is_dirty(64));
  CHECK(m.next_needs_sync(4) == 199);
}

TEST_CASE("a write racing the copy of its extent keeps the bit until it is done", "[activemap]") {
  std::vector<uint8_t> bm(8);
  ActiveMap m(bm, 64 * kExt, kExt, 0);
  m.mark_needs_sync(5);
  m.write_start(5 * kExt, 4096);
  m.synced(5);             // the copy finished while the write is in flight
  CHECK(m.is_dirty(5));    // in flight: stays
  CHECK(m.needs_sync_count() == 0);
  m.write_done(5 * kExt, 4096, false);  // and the peer did not get the write
  CHECK(m.needs_sync(5));
  CHECK(m.is_dirty(5));
  m.synced(5);
  CHECK_FALSE(m.is_dirty(5));
}

TEST_CASE("full sync marks every extent; reset_clean forgets everything", "[activemap]") {
  std::vector<uint8_t> bm(8);
  ActiveMap m(bm, 20 * kExt + 1, kExt, 4);
  m.mark_all_needs_sync();
  CHECK(m.needs_sync_count() == 21);
  CHECK(m.dirty_count() == 21);
  CHECK(m.next_needs_sync(20) == 20);
  m.write_start(0, 1);
  m.write_done(0, 1, true);
  m.reset_clean();
  CHECK(m.needs_sync_count() == 0);
  CHECK(m.dirty_count() == 0);
  CHECK(m.keepdirty_size() == 0);
  CHECK(std::all_of(bm.begin(), bm.end(), [](uint8_t b) { return b == 0; }));
}

namespace {
using Ranges = std::vector<std::pair<uint64_t, uint64_t>>;
void unconfirmed(ActiveMap& m, uint64_t offset, uint64_t length) {
  m.write_start(offset, length);
  m.mark_durable(m.change_seq());
  m.write_done(offset, length, /*confirmed=*/false);
}
}  // namespace

TEST_CASE("fine tracking: unconfirmed writes recorded per granule", "[activemap]") {
  std::vector<uint8_t> bm(8);
  ActiveMap m(bm, 64 * kExt, kExt, 4);
  m.set_granule(4096);
  unconfirmed(m, 4096, 4096);
  unconfirmed(m, 3 * 4096 + 100, 200);       // inside one granule
  unconfirmed(m, 2 * kExt - 4096, 8192);     // across extents 1 and 2
  CHECK(m.needs_sync_count() == 3);
  CHECK(m.fine_ranges(0) == Ranges{{4096, 4096}, {3 * 4096, 4096}});
  CHECK(m.fine_ranges(1) == Ranges{{2 * kExt - 4096, 4096}});
  CHECK(m.fine_ranges(2) == Ranges{{2 * kExt, 4096}});
  unconfirmed(m, 2 * 4096, 4096);            // joins its neighbours
  CHECK(m.fine_ranges(0) == Ranges{{4096, 3 * 4096}});
  CHECK(m.fine_bytes() == 5 * 4096);
  CHECK_FALSE(m.fine_ranges(5).has_value());  // no record: clean
  m.synced(0);
  CHECK_FALSE(m.fine_ranges(0).has_value());
  CHECK(m.needs_sync_count() == 2);
}

TEST_CASE("fine tracking: an extent marked for an unknown reason has no record", "[activemap]") {
  std::vector<uint8_t> bm(8);
  bm[0] = 0x01;  // extent 0 dirty at load: what differs is unknown
  ActiveMap m(bm, 64 * kExt, kExt, 4);
  m.set_granule(8192);
  unconfirmed(m, 0, 4096);
  CHECK(m.needs_sync(0));
  CHECK_FALSE(m.fine_ranges(0).has_value());  // the whole extent
  unconfirmed(m, kExt, 4096);
  CHECK(m.fine_ranges(1) == Ranges{{kExt, 8192}});  // granule 8 KiB
  m.mark_needs_sync(1);                             // the peer's map says so
  CHECK_FALSE(m.fine_ranges(1).has_value());
  unconfirmed(m, kExt + 65536, 4096);               // stays whole
  CHECK_FALSE(m.fine_ranges(1).has_value());
  m.mark_all_needs_sync();
  CHECK(m.fine_records().empty());
}

TEST_CASE("fine tracking: mark_range (a verify's mismatches), off, restore", "[activemap]") {
  std::vector<uint8_t> bm(16);  // 65 extents
  ActiveMap m(bm, 64 * kExt + 4096, kExt, 4);
  m.set_granule(4096);
  m.mark_range(5 * kExt + 8192, 4096);
  CHECK(m.is_dirty(5));
  CHECK(m.change_seq() > m.durable_seq());  // the caller makes the bit durable
  CHECK(m.fine_ranges(5) == Ranges{{5 * kExt + 8192, 4096}});
  m.mark_range(5 * kExt, 4096);
  CHECK(m.fine_ranges(5) == Ranges{{5 * kExt, 4096}, {5 * kExt + 8192, 4096}});
  // The short last extent: ranges end at the device's end.
  m.mark_range(64 * kExt, 4096);
  CHECK(m.fine_ranges(64) == Ranges{{64 * kExt, 4096}});

  // Saved at a clean stop, restored at start into a map loaded from the bitmap.
  auto saved = m.fine_records();
  std::vector<uint8_t> bm2 = bm;
  ActiveMap n(bm2, 64 * kExt + 4096, kExt, 4);
  n.set_granule(4096);
  for (auto& [e, bits] : saved) CHECK(n.restore_fine(e, bits));
  CHECK(n.fine_ranges(5) == m.fine_ranges(5));
  CHECK_FALSE(n.restore_fine(5, saved.at(5)));          // already has one
  CHECK_FALSE(n.restore_fine(7, saved.at(5)));          // does not need sync
  CHECK_FALSE(n.restore_fine(0, {1, 2, 3}));            // wrong size
  n.set_granule(0);                                     // off: records nothing
  unconfirmed(n, 9 * kExt, 4096);
  CHECK(n.needs_sync(9));
  CHECK_FALSE(n.fine_ranges(9).has_value());
  n.reset_clean();
  CHECK(n.fine_records().empty());
}

TEST_CASE("a copy does not clear a mark made while it ran", "[activemap]") {
  std::vector<uint8_t> bm(8);
  ActiveMap m(bm, 64 * kExt, kExt, 0);
  m.set_granule(4096);
  m.mark_needs_sync(3);
  m.begin_copy(3);                  // the copy of extent 3 begins
  unconfirmed(m, 3 * kExt, 4096);   // a write the secondary fails meanwhile
  CHECK(m.end_copy(3));             // so the copy must not clear it
  CHECK(m.needs_sync(3));
  m.begin_copy(3);                  // copied again, nothing meanwhile
  CHECK_FALSE(m.end_copy(3));
  m.synced(3);
  CHECK_FALSE(m.needs_sync(3));
  CHECK_FALSE(m.is_dirty(3));       // keepdirty 0: clean
  CHECK_FALSE(m.end_copy(9));       // no copy of 9 began
}

TEST_CASE("may_differ: per granule with a record, the whole extent without", "[activemap]") {
  std::vector<uint8_t> bm(8);
  ActiveMap m(bm, 64 * kExt, kExt, 0);
  m.set_granule(4096);
  unconfirmed(m, kExt + 8192, 4096);
  CHECK(m.may_differ(kExt + 8192));
  CHECK(m.may_differ(kExt + 8192 + 4095));
  CHECK_FALSE(m.may_differ(kExt + 4096));
  CHECK_FALSE(m.may_differ(0));
  m.mark_needs_sync(2);
  CHECK(m.may_differ(2 * kExt + 12345));
  CHECK_FALSE(m.restore_fine(2, std::vector<uint64_t>(4, 0)));  // an empty record is refused
}
