#include <catch2/catch.hpp>
#include <numeric>

#include "hastnbd/base/range_lock.h"
#include "hastnbd/daemon/role_change.h"

using namespace hastnbd;

TEST_CASE("role names", "[role]") {
  CHECK(parse_role("primary") == Role::kPrimary);
  CHECK(parse_role("secondary") == Role::kSecondary);
  CHECK(parse_role("init") == Role::kInit);
  CHECK_FALSE(parse_role("master").has_value());
  CHECK(std::string(to_string(Role::kPrimary)) == "primary");
}

TEST_CASE("role changes", "[role]") {
  RoleContext idle;
  CHECK(check_role_change(Role::kInit, Role::kPrimary, idle).ok());
  CHECK(check_role_change(Role::kPrimary, Role::kInit, idle).ok());
  CHECK(check_role_change(Role::kPrimary, Role::kPrimary, RoleContext{3, false, false}).ok());
  auto busy = check_role_change(Role::kPrimary, Role::kInit, RoleContext{2, false, false});
  CHECK(busy.code() == EBUSY);
  CHECK_THAT(busy.message(), Catch::Contains("2 NBD client(s)") && Catch::Contains("--force"));
  CHECK(check_role_change(Role::kPrimary, Role::kInit, RoleContext{2, false, true}).ok());
  CHECK(check_role_change(Role::kInit, Role::kSecondary, idle).code() == ENOTSUP);
  CHECK(check_role_change(Role::kInit, Role::kSecondary, RoleContext{0, true, false}).ok());
}

TEST_CASE("leaving primary with the kernel device in use", "[role]") {
  RoleContext ctx;
  ctx.secondary_available = true;
  ctx.device_users = "mounted or held exclusively";
  for (Role to : {Role::kSecondary, Role::kInit}) {
    auto s = check_role_change(Role::kPrimary, to, ctx);
    CHECK(s.code() == EBUSY);
    CHECK_THAT(s.message(), Catch::Contains("in use: mounted") && Catch::Contains("--force"));
  }
  CHECK(check_role_change(Role::kPrimary, Role::kPrimary, ctx).ok());  // staying is no change
  ctx.force = true;
  CHECK(check_role_change(Role::kPrimary, Role::kSecondary, ctx).ok());
  // An attached device nobody uses does not count as a client.
  RoleContext unused;
  unused.secondary_available = true;
  CHECK(check_role_change(Role::kPrimary, Role::kSecondary, unused).ok());
}

namespace {

// Runs `body` to completion on a fresh loop.
template <class F>
void run_loop(F body) {
  asio::io_context io;
  asio::co_spawn(io, body(io), asio::detached);
  io.run();
}

}  // namespace

TEST_CASE("the target of an unfinished sync is promoted only by force", "[role]") {
  RoleContext target{0, true, false, /*sync_target=*/true};
  for (Role from : {Role::kInit, Role::kSecondary}) {
    auto s = check_role_change(from, Role::kPrimary, target);
    REQUIRE_FALSE(s.ok());
    CHECK(s.code() == EPERM);
    CHECK_THAT(s.message(), Catch::Contains("unfinished synchronisation") && Catch::Contains("--force"));
  }
  // Other changes stay allowed: it can wait as secondary for the sync to finish.
  CHECK(check_role_change(Role::kInit, Role::kSecondary, target).ok());
  CHECK(check_role_change(Role::kSecondary, Role::kInit, target).ok());
  RoleContext forced = target;
  forced.force = true;
  CHECK(check_role_change(Role::kSecondary, Role::kPrimary, forced).ok());
}

TEST_CASE("range lock: shared holders coexist, exclusive waits, FIFO", "[rangelock]") {
  std::vector<std::string> log;
  run_loop([&](asio::io_context& io) -> awaitable<void> {
    RangeLock lock(io.get_executor());
    auto a = co_await lock.lock(0, 4096, false);
    auto b = co_await lock.lock(0, 4096, false);  // shared + shared overlap: granted
    CHECK(lock.size() == 2);
    bool x_granted = false, late_shared = false;
    asio::co_spawn(io, [&]() -> awaitable<void> {
      auto x = co_await lock.lock(1024, 2048, true);
      x_granted = true;
      log.push_back("exclusive");
    }, asio::detached);
    asio::co_spawn(io, [&]() -> awaitable<void> {
      // Arrives after the exclusive request and overlaps it: must queue behind.
      auto s = co_await lock.lock(2000, 3000, false);
      late_shared = true;
      log.push_back("late shared");
    }, asio::detached);
    auto disjoint = co_await lock.lock(8192, 9000, true);  // no overlap: immediate
    asio::steady_timer t(io, std::chrono::milliseconds(5));
    co_await t.async_wait(use_nothrow);
    CHECK_FALSE(x_granted);
    CHECK_FALSE(late_shared);
    a.release();
    co_await t.async_wait(use_nothrow);
    CHECK_FALSE(x_granted);
    b.release();
    t.expires_after(std::chrono::milliseconds(5));
    co_await t.async_wait(use_nothrow);
    CHECK(x_granted);
    CHECK(late_shared);
  });
  CHECK(log == std::vector<std::string>{"exclusive", "late shared"});
}

TEST_CASE("range lock: many waiters on one range are granted in arrival order", "[rangelock]") {
  // A release wakes only the waiters it may unblock: a chain of exclusive
  // requests over one range, among many over other ranges, still runs in
  // arrival order and every request is granted.
  std::vector<int> order;
  int others = 0;
  run_loop([&](asio::io_context& io) -> awaitable<void> {
    RangeLock lock(io.get_executor());
    auto first = co_await lock.lock(0, 4096, true);
    for (int i = 0; i < 500; ++i) {
      asio::co_spawn(io, [&, i]() -> awaitable<void> {
        auto g = co_await lock.lock(0, 4096, true);
        order.push_back(i);
      }, asio::detached);
      asio::co_spawn(io, [&, i]() -> awaitable<void> {
        auto g = co_await lock.lock(8192 + uint64_t(i) * 4096, 12288 + uint64_t(i) * 4096, true);
        ++others;
      }, asio::detached);
    }
    asio::steady_timer t(io, std::chrono::milliseconds(5));
    co_await t.async_wait(use_nothrow);
    CHECK(order.empty());
    CHECK(others == 500);  // disjoint: never waited
    first.release();
    for (int i = 0; i < 100 && order.size() < 500; ++i) {
      t.expires_after(std::chrono::milliseconds(5));
      co_await t.async_wait(use_nothrow);
    }
    CHECK(lock.size() == 0);
  });
  std::vector<int> expected(500);
  std::iota(expected.begin(), expected.end(), 0);
  CHECK(order == expected);
}
