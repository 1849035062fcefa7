// Component tests: two Resources on one loop (component.h), the write path
// of each mode and the sync decisions end to end, with faults injected into
// the disks and the link. What is checked is what an admin would see: the
// bytes on each node's disk, the status document, and the NBD replies.
#include <catch2/catch.hpp>

#include "component.h"
#include "hastnbd/base/role.h"

using namespace hastnbd;
using namespace hastnbd::test;

namespace {

constexpr uint64_t kExtent = 64 << 10;  // component.cpp's extent_size

#define CO_REQUIRE_OK(expr) \
  do {                      \
    Status s_ = (expr);     \
    INFO(s_.message());     \
    REQUIRE(s_.ok());       \
  } while (0)

// Both nodes created, opened, b secondary and a primary, the first full sync done.
awaitable<void> start_in_sync(Pair& p) {
  p.create(p.a);
  p.create(p.b);
  CO_REQUIRE_OK(p.open(p.a));
  CO_REQUIRE_OK(p.open(p.b));
  CO_REQUIRE_OK(co_await p.role(p.b, Role::kSecondary));
  CO_REQUIRE_OK(co_await p.role(p.a, Role::kPrimary));
  REQUIRE(co_await p.in_sync(p.a));
  REQUIRE(p.a.status()["peer"]["decision"] == "full-sync");
}

uint64_t counter(Node& n, const char* key) { return n.status()["metadata"][key].get<uint64_t>(); }
uint64_t writes(Node& n, const char* key) { return n.status()["writes"][key].get<uint64_t>(); }

}  // namespace

TEST_CASE("component: fullsync acknowledges a write only once it is on the secondary's disk", "[component]") {
  run_pair({}, [](Pair& p) -> awaitable<void> {
    co_await start_in_sync(p);
    const uint64_t offs[] = {0, 3 * kExtent + 512, 8 * kExtent - 4096};
    for (uint64_t i = 0; i < 3; ++i) {
      auto data = pattern(kExtent / 2 + i * 4096, uint8_t(i));
      CO_REQUIRE_OK(co_await p.write(p.a, offs[i], data));
      CHECK(p.b.file_bytes(offs[i], data.size()) == data);  // no waiting: it is there already
      auto back = co_await p.read(p.a, offs[i], data.size());
      REQUIRE(back.ok());
      CHECK(*back == data);
    }
    CHECK(writes(p.a, "degraded") == 0);
    // FLUSH makes everything acknowledged durable on both nodes: a power
    // loss of either disk afterwards takes nothing.
    CHECK(p.b.disk->unflushed() > 0);
    CO_REQUIRE_OK(co_await p.flush(p.a));
    CHECK(p.a.disk->unflushed() == 0);
    CHECK(p.b.disk->unflushed() == 0);
    CO_REQUIRE_OK(co_await p.b.disk->lose_unflushed());
    CHECK(p.disks_equal());
  });
}

TEST_CASE("component: memsync and async converge, and FUA is durable on the secondary in memsync", "[component]") {
  for (std::string mode : {"memsync", "async"}) {
    DYNAMIC_SECTION(mode) {
      run_pair({.replication = mode}, [mode](Pair& p) -> awaitable<void> {
        co_await start_in_sync(p);
        for (uint8_t i = 0; i < 16; ++i) CO_REQUIRE_OK(co_await p.write(p.a, i * kExtent / 2, pattern(8192, i)));
        CO_REQUIRE_OK(co_await p.write(p.a, 5 * kExtent, pattern(4096, 99), /*fua=*/true));
        if (mode == "memsync") CHECK(p.b.disk->unflushed() == 0);  // FUA waited for *written*, durable
        REQUIRE(co_await p.until([&] { return p.disks_equal(); }, std::chrono::seconds(10), "the disks equal"));
        REQUIRE(co_await p.in_sync(p.a));
        CHECK(writes(p.a, "degraded") == 0);
      });
    }
  }
}

TEST_CASE("component: a cut link degrades the primary once; the reconnect copies only what changed", "[component]") {
  run_pair({}, [](Pair& p) -> awaitable<void> {
    co_await start_in_sync(p);
    const uint64_t localcnt = counter(p.a, "localcnt");
    p.link.cut();
    REQUIRE(co_await p.until([&] { return p.a.status()["peer"]["state"] != "connected"; }, std::chrono::seconds(5),
                             "the primary to see the cut"));
    CO_REQUIRE_OK(co_await p.write(p.a, 2 * kExtent, pattern(kExtent, 1)));
    CO_REQUIRE_OK(co_await p.write(p.a, 6 * kExtent, pattern(kExtent, 2)));
    CHECK(counter(p.a, "localcnt") == localcnt + 1);  // one new generation, not one per write
    CHECK(writes(p.a, "generation_bumps") == 1);
    CHECK(p.b.file_bytes(2 * kExtent, kExtent) != pattern(kExtent, 1));
    p.link.restore();
    REQUIRE(co_await p.in_sync(p.a));
    CHECK(p.a.status()["peer"]["decision"] == "primary-newer");
    CHECK(p.a.status()["sync"]["total_bytes"].get<uint64_t>() <= 6 * kExtent);  // dirty extents, not the disk
    CHECK(p.disks_equal());
    CHECK(counter(p.b, "remotecnt") == counter(p.a, "localcnt"));
  });
}

TEST_CASE("component: failover to the secondary, then the old primary returns as secondary", "[component]") {
  run_pair({}, [](Pair& p) -> awaitable<void> {
    co_await start_in_sync(p);
    CO_REQUIRE_OK(co_await p.write(p.a, 0, pattern(kExtent, 1)));  // acknowledged: on b too
    p.link.cut();
    co_await p.close(p.a);  // the primary is gone
    CO_REQUIRE_OK(co_await p.role(p.b, Role::kPrimary));
    auto kept = co_await p.read(p.b, 0, kExtent);
    REQUIRE(kept.ok());
    CHECK(*kept == pattern(kExtent, 1));
    CO_REQUIRE_OK(co_await p.write(p.b, 4 * kExtent, pattern(kExtent, 2)));
    CO_REQUIRE_OK(p.open(p.a));
    CO_REQUIRE_OK(co_await p.role(p.a, Role::kSecondary));
    p.link.restore();
    REQUIRE(co_await p.in_sync(p.b));
    CHECK(p.b.status()["peer"]["decision"] == "primary-newer");
    CHECK(p.disks_equal());
  });
}

TEST_CASE("component: a primary behind its secondary reads the newer data from it and syncs from it", "[component]") {
  run_pair({}, [](Pair& p) -> awaitable<void> {
    co_await start_in_sync(p);
    p.link.cut();
    co_await p.close(p.a);
    CO_REQUIRE_OK(co_await p.role(p.b, Role::kPrimary));  // failover ...
    CO_REQUIRE_OK(co_await p.write(p.b, 3 * kExtent, pattern(kExtent, 7)));
    CO_REQUIRE_OK(co_await p.role(p.b, Role::kSecondary));  // ... and back, while a was away
    CO_REQUIRE_OK(p.open(p.a));
    CO_REQUIRE_OK(co_await p.role(p.a, Role::kPrimary));
    p.link.restore();
    REQUIRE(co_await p.connected());
    CHECK(p.a.status()["peer"]["decision"] == "secondary-newer");
    auto newer = co_await p.read(p.a, 3 * kExtent, kExtent);  // copied or read through: b's data either way
    REQUIRE(newer.ok());
    CHECK(*newer == pattern(kExtent, 7));
    REQUIRE(co_await p.in_sync(p.a));
    CHECK(p.disks_equal());
  });
}

TEST_CASE("component: split-brain is refused on both sides until discard-my-data", "[component]") {
  run_pair({}, [](Pair& p) -> awaitable<void> {
    co_await start_in_sync(p);
    p.link.cut();
    CO_REQUIRE_OK(co_await p.write(p.a, 0, pattern(kExtent, 1)));
    CO_REQUIRE_OK(co_await p.role(p.b, Role::kPrimary));
    CO_REQUIRE_OK(co_await p.write(p.b, 0, pattern(kExtent, 2)));
    CO_REQUIRE_OK(co_await p.role(p.b, Role::kSecondary));
    p.link.restore();
    REQUIRE(co_await p.until([&] { return p.b.status()["peer"]["split_brain"] == true; }, std::chrono::seconds(10),
                             "the secondary to report split-brain"));
    CHECK(p.a.status()["peer"]["state"] != "connected");
    CHECK(p.b.file_bytes(0, kExtent) == pattern(kExtent, 2));  // nothing overwritten
    CHECK(p.a.file_bytes(0, kExtent) == pattern(kExtent, 1));
    CO_REQUIRE_OK(co_await p.b.r().discard_my_data());  // b is the victim
    REQUIRE(co_await p.in_sync(p.a));
    CHECK(p.a.status()["peer"]["decision"] == "full-sync");
    CHECK(p.disks_equal());
  });
}

TEST_CASE("component: a replaced secondary disk gets a full sync", "[component]") {
  run_pair({}, [](Pair& p) -> awaitable<void> {
    co_await start_in_sync(p);
    CO_REQUIRE_OK(co_await p.write(p.a, kExtent, pattern(kExtent, 3)));
    p.link.cut();
    co_await p.close(p.b);
    std::filesystem::resize_file(p.b.dir / "disk", 0);  // a new, empty disk
    std::filesystem::resize_file(p.b.dir / "disk", 8 << 20);
    p.create(p.b);
    CO_REQUIRE_OK(p.open(p.b));
    CO_REQUIRE_OK(co_await p.role(p.b, Role::kSecondary));
    p.link.restore();
    REQUIRE(co_await p.in_sync(p.a));
    CHECK(p.a.status()["peer"]["decision"] == "full-sync");
    CHECK(p.disks_equal());
  });
}

TEST_CASE("component: a corrupted frame drops the link, is never applied, and the sync repairs", "[component]") {
  for (auto dir : {FaultLink::kToSecondary, FaultLink::kToPrimary}) {
    DYNAMIC_SECTION((dir == FaultLink::kToSecondary ? "to the secondary" : "to the primary")) {
      run_pair({}, [dir](Pair& p) -> awaitable<void> {
        co_await start_in_sync(p);
        const uint64_t connects = p.link.connects();
        p.link.corrupt(dir, 200);
        for (uint8_t i = 0; i < 4; ++i) CO_REQUIRE_OK(co_await p.write(p.a, i * kExtent, pattern(4096, i)));
        REQUIRE(
            co_await p.until([&] { return p.link.connects() > connects; }, std::chrono::seconds(10), "a reconnect"));
        REQUIRE(co_await p.in_sync(p.a));
        CHECK(p.disks_equal());
        for (uint8_t i = 0; i < 4; ++i) CHECK(p.b.file_bytes(i * kExtent, 4096) == pattern(4096, i));
      });
    }
  }
}

TEST_CASE("component: a stalled link is cut by the timeout and writes go on degraded", "[component]") {
  run_pair({}, [](Pair& p) -> awaitable<void> {
    co_await start_in_sync(p);
    p.link.stall();
    const auto start = std::chrono::steady_clock::now();
    CO_REQUIRE_OK(co_await p.write(p.a, 0, pattern(4096, 1)));  // waits for the 2 s timeout, not forever
    CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(8));
    CHECK(writes(p.a, "degraded") == 1);
    p.link.resume();
    REQUIRE(co_await p.in_sync(p.a));
    CHECK(p.disks_equal());
  });
}

TEST_CASE("component: disk errors: the client sees the primary's, the secondary's degrade, a read falls back",
          "[component]") {
  run_pair({}, [](Pair& p) -> awaitable<void> {
    co_await start_in_sync(p);
    // The primary's disk fails a write: the client gets the error.
    p.a.disk->fail(FaultDisk::kWrite, EIO, 1);
    Status failed = co_await p.write(p.a, kExtent, pattern(4096, 1));
    CHECK(failed.code() == EIO);
    // The secondary's disk fails a write: the client's write succeeds (the
    // primary has it), the write counts as degraded.
    p.b.disk->fail(FaultDisk::kWrite, EIO, 1);
    CO_REQUIRE_OK(co_await p.write(p.a, 2 * kExtent, pattern(4096, 2)));
    CHECK(writes(p.a, "degraded") >= 1);
    CHECK(p.b.status()["peer"]["apply_errors"] == 1);
    // The primary's disk fails a read: served by the secondary where it
    // holds good data, refused where it does not (the extent it failed).
    CO_REQUIRE_OK(co_await p.write(p.a, 4 * kExtent, pattern(4096, 4)));
    p.a.disk->fail(FaultDisk::kRead, EIO, -1, 4 * kExtent, 4096);
    auto back = co_await p.read(p.a, 4 * kExtent, 4096);
    REQUIRE(back.ok());
    CHECK(*back == pattern(4096, 4));
    CHECK(writes(p.a, "remote_reads") == 1);
    p.a.disk->heal();
    p.a.disk->fail(FaultDisk::kRead, EIO, -1, 2 * kExtent, 4096);
    auto stale = co_await p.read(p.a, 2 * kExtent, 4096);
    CHECK(stale.status().code() == EIO);
    p.a.disk->heal();
    // Whatever diverged is repaired by the next sync.
    p.link.cut();
    p.link.restore();
    REQUIRE(co_await p.in_sync(p.a));
    CHECK(p.disks_equal());
  });
}

TEST_CASE("component: power loss on the primary: acknowledged writes survive on the secondary", "[component]") {
  run_pair({}, [](Pair& p) -> awaitable<void> {
    co_await start_in_sync(p);
    CO_REQUIRE_OK(co_await p.write(p.a, 0, pattern(kExtent, 1)));
    CO_REQUIRE_OK(co_await p.flush(p.a));
    CO_REQUIRE_OK(co_await p.write(p.a, 5 * kExtent, pattern(kExtent, 2)));  // acknowledged, not flushed
    CO_REQUIRE_OK(co_await p.a.disk->lose_unflushed());
    p.a.disk->fail(FaultDisk::kAny, EIO);  // nothing more reaches it
    p.link.cut();
    co_await p.close(p.a);
    CO_REQUIRE_OK(co_await p.role(p.b, Role::kPrimary));
    for (auto [off, seed] : {std::pair<uint64_t, uint8_t>{0, 1}, {5 * kExtent, 2}}) {
      auto got = co_await p.read(p.b, off, kExtent);
      REQUIRE(got.ok());
      CHECK(*got == pattern(kExtent, seed));
    }
    CO_REQUIRE_OK(p.open(p.a));
    CHECK(p.a.file_bytes(5 * kExtent, kExtent) != pattern(kExtent, 2));  // lost there
    CO_REQUIRE_OK(co_await p.role(p.a, Role::kSecondary));
    p.link.restore();
    REQUIRE(co_await p.in_sync(p.b));
    CHECK(p.disks_equal());
  });
}

TEST_CASE("component: a primary with another key is refused and writes nothing on the secondary", "[component][auth]") {
  run_pair({.different_keys = true}, [](Pair& p) -> awaitable<void> {
    p.create(p.a);
    p.create(p.b);
    CO_REQUIRE_OK(p.open(p.a));
    CO_REQUIRE_OK(p.open(p.b));
    CO_REQUIRE_OK(co_await p.role(p.b, Role::kSecondary));
    const auto before = p.b.file_bytes(0, 8 << 20);
    CO_REQUIRE_OK(co_await p.role(p.a, Role::kPrimary));
    CO_REQUIRE_OK(co_await p.write(p.a, 0, pattern(kExtent, 7)));  // degraded: the peer is not there
    REQUIRE(co_await p.until(
        [&] { return p.b.status()["peer"]["refused"].get<uint64_t>() >= 2; }, std::chrono::seconds(15),
        "b refused two attempts"));
    CHECK(p.b.file_bytes(0, 8 << 20) == before);
    const nlohmann::json pa = p.a.status()["peer"], pb = p.b.status()["peer"];
    CHECK(pa["state"] != "connected");
    CHECK(pa["auth"] == "psk");
    CHECK_THAT(pa["last_error"].get<std::string>(),
               Catch::Contains("authentication failed: peer 'b' does not hold this resource's key"));
    CHECK(pb["connects"] == 0);
    CHECK_THAT(pb["last_refused"].get<std::string>(), Catch::Contains("authentication failed"));
    CHECK(pb["records_applied"] == 0);
    CHECK(writes(p.a, "degraded") >= 1);
  });
}
