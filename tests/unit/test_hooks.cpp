#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "hastnbd/daemon/hooks.h"

using namespace hastnbd;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

struct TempDir {
  std::filesystem::path path;
  TempDir() {
    char tmpl[] = "/tmp/hastnbd-hooks-XXXXXX";
    path = ::mkdtemp(tmpl);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
  std::string operator/(const std::string& name) const { return (path / name).string(); }
};

// An executable /bin/sh script named `name` in `dir`.
std::string write_script(const TempDir& dir, const std::string& name, const std::string& body) {
  std::string p = dir / name;
  {
    std::ofstream f(p);
    f << "#!/bin/sh\n" << body;
  }
  ::chmod(p.c_str(), 0755);
  return p;
}

// Records each call as "[arg][arg]... $HASTNBD_EVENT $HASTNBD_RESOURCE" in
// DIR/calls; notes "overlap" if two calls ever run at once; the first event
// ("start") dawdles so that runs done in parallel would be seen out of order.
std::string write_recorder(const TempDir& dir) {
  std::string calls = dir / "calls", lock = dir / "lock";
  return write_script(dir, "recorder.sh",
                      "mkdir '" + lock + "' 2>/dev/null || echo overlap >>'" + calls + "'\n"
                      "[ \"$1\" = start ] && sleep 0.2\n"
                      "line=\n"
                      "for a in \"$@\"; do line=\"$line[$a]\"; done\n"
                      "echo \"$line $HASTNBD_EVENT $HASTNBD_RESOURCE\" >>'" + calls + "'\n"
                      "rmdir '" + lock + "'\n");
}

std::vector<std::string> read_lines(const std::string& path) {
  std::vector<std::string> lines;
  std::ifstream f(path);
  for (std::string l; std::getline(f, l);) lines.push_back(l);
  return lines;
}

// Routes spdlog's default logger into a string for the test's lifetime.
class LogCapture {
 public:
  LogCapture() : previous_(spdlog::default_logger()) {
    auto sink = std::make_shared<spdlog::sinks::ostream_sink_st>(out_);
    sink->set_pattern("%l|%v");
    auto logger = std::make_shared<spdlog::logger>("hooks-test", sink);
    logger->set_level(spdlog::level::info);
    spdlog::set_default_logger(logger);
  }
  ~LogCapture() { spdlog::set_default_logger(previous_); }
  std::vector<std::string> lines() const {
    std::vector<std::string> v;
    std::istringstream in(out_.str());
    for (std::string l; std::getline(in, l);) v.push_back(l);
    return v;
  }
  bool has(const std::string& line) const {
    auto v = lines();
    return std::find(v.begin(), v.end(), line) != v.end();
  }
  size_t count(const std::string& needle) const {
    size_t n = 0;
    for (auto& l : lines()) n += l.find(needle) != std::string::npos;
    return n;
  }
  std::string text() const { return out_.str(); }

 private:
  std::ostringstream out_;
  std::shared_ptr<spdlog::logger> previous_;
};

// Runs `body` on a fresh loop; fails instead of hanging past `limit`.
template <class F>
void run_loop(F body, std::chrono::seconds limit = 10s) {
  bool done = false;
  asio::io_context io;
  asio::co_spawn(io, [&]() -> awaitable<void> {
    co_await body(io);
    done = true;
  }, asio::detached);
  io.run_for(limit);
  REQUIRE(done);
}

awaitable<void> sleep_for(asio::io_context& io, std::chrono::milliseconds d) {
  asio::steady_timer t(io, d);
  co_await t.async_wait(use_nothrow);
}

// True once `pid` is gone or a zombie (this container's init may not reap).
bool dead(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string stat;
  if (!std::getline(f, stat)) return true;
  auto close = stat.rfind(')');
  return close != std::string::npos && stat.size() > close + 2 && stat[close + 2] == 'Z';
}

awaitable<bool> wait_dead(asio::io_context& io, pid_t pid, std::chrono::milliseconds limit) {
  auto until = Clock::now() + limit;
  while (!dead(pid)) {
    if (Clock::now() >= until) co_return false;
    co_await sleep_for(io, 10ms);
  }
  co_return true;
}

pid_t read_pid(const std::string& path) {
  std::ifstream f(path);
  pid_t pid = 0;
  f >> pid;
  return pid;
}

}  // namespace

TEST_CASE("hook argv is PROGRAM EVENT RESOURCE ARGS...", "[hooks]") {
  CHECK(hook_argv("/usr/libexec/hook", "start", "data", {}) ==
        std::vector<std::string>{"/usr/libexec/hook", "start", "data"});
  CHECK(hook_argv("/h", "role", "data", {"init", "primary"}) ==
        std::vector<std::string>{"/h", "role", "data", "init", "primary"});
  CHECK(hook_argv("/h", "connect", "r 1", {"a b", ""}) ==
        std::vector<std::string>{"/h", "connect", "r 1", "a b", ""});
}

TEST_CASE("hooks run one at a time, in the order queued, with argv and environment", "[hooks]") {
  TempDir dir;
  std::string recorder = write_recorder(dir);
  LogCapture log;
  run_loop([&](asio::io_context& io) -> awaitable<void> {
    Hooks hooks(io, "data", recorder);
    CHECK(hooks.program() == recorder);
    auto t0 = Clock::now();
    hooks.run("start");  // dawdles 0.2 s
    hooks.run("role", {"init", "primary"});
    hooks.run("connect", {"10.0.0.2:8457"});
    hooks.run("syncstart");
    hooks.run("split-brain", {"a b", ""});
    CHECK(Clock::now() - t0 < 100ms);  // queued, not run
    co_await hooks.drain();
    CHECK(hooks.stats().started == 5);
    CHECK(hooks.stats().failed == 0);
    CHECK(hooks.stats().timed_out == 0);
    CHECK(hooks.stats().dropped == 0);
    co_await hooks.drain();  // idle: returns at once
  });
  CHECK(read_lines(dir / "calls") == std::vector<std::string>{
                                         "[start][data] start data",
                                         "[role][data][init][primary] role data",
                                         "[connect][data][10.0.0.2:8457] connect data",
                                         "[syncstart][data] syncstart data",
                                         "[split-brain][data][a b][] split-brain data",
                                     });
  CHECK(log.count("info|hook start data: exit 0") == 1);
  CHECK(log.count(": exit 0") == 5);
}

TEST_CASE("hook output is logged line by line, sanitised and bounded", "[hooks]") {
  TempDir dir;
  LogCapture log;
  std::string chatty = write_script(dir, "chatty.sh",
                                    "echo hello\n"
                                    "printf 'a\\tb\\033c\\n'\n"
                                    "echo oops >&2\n"
                                    "head -c 5000 /dev/zero | tr '\\0' x; echo\n"
                                    "echo after-long\n"
                                    "printf 'no newline'\n");
  std::string big = write_script(dir, "big.sh",
                                 "i=0\n"
                                 "while [ $i -lt 100 ]; do printf '%01000d\\n' 0; i=$((i+1)); done\n"
                                 "echo still-running >&2\n");
  run_loop([&](asio::io_context& io) -> awaitable<void> {
    Hooks hooks(io, "data", chatty);
    hooks.run("out");
    hooks.set_program(big);
    hooks.run("big");
    co_await hooks.drain();
    CHECK(hooks.stats().started == 2);
    CHECK(hooks.stats().failed == 0);
  });
  CHECK(log.has("info|hook out data: hello"));
  CHECK(log.has("info|hook out data: a?b?c"));
  CHECK(log.has("info|hook out data: oops"));
  CHECK(log.has("info|hook out data: " + std::string(4096, 'x') + " [line cut]"));
  CHECK(log.has("info|hook out data: after-long"));
  CHECK(log.has("info|hook out data: no newline"));
  CHECK(log.has("info|hook out data: exit 0"));
  // 65 lines of 1001 bytes fit in 64 KiB; the rest is read but not logged,
  // and the hook is not blocked by a full pipe: it exits normally.
  CHECK(log.count("info|hook big data: 0000") == 65);
  CHECK(log.count("hook big data: output truncated after 65065 bytes") == 1);
  CHECK(log.count("still-running") == 0);
  CHECK(log.has("info|hook big data: exit 0"));
}

TEST_CASE("a hook that outlives its timeout is killed with its process group", "[hooks]") {
  TempDir dir;
  std::string recorder = write_recorder(dir);
  std::string slow = write_script(dir, "slow.sh",
                                  "sleep 30 &\n"
                                  "echo $! >'" + (dir / "bgpid") + "'\n"
                                  "echo $$ >'" + (dir / "pid") + "'\n"
                                  "exec sleep 30\n");
  LogCapture log;
  run_loop([&](asio::io_context& io) -> awaitable<void> {
    Hooks hooks(io, "data", slow, 300ms);
    auto t0 = Clock::now();
    hooks.run("slow");
    hooks.set_program(recorder);  // the queued run keeps its program
    hooks.run("after");
    co_await hooks.drain();
    auto took = Clock::now() - t0;
    CHECK(took >= 300ms);
    CHECK(took < 5s);
    CHECK(hooks.stats().started == 2);
    CHECK(hooks.stats().timed_out == 1);
    CHECK(hooks.stats().failed == 0);
    pid_t pid = read_pid(dir / "pid"), bg = read_pid(dir / "bgpid");
    REQUIRE(pid > 0);
    REQUIRE(bg > 0);
    CHECK(dead(pid));
    CHECK(co_await wait_dead(io, bg, 2000ms));  // the background sleep shared the group
  });
  CHECK(log.has("warning|hook slow data: killed after 0.3 s"));
  CHECK(read_lines(dir / "calls") == std::vector<std::string>{"[after][data] after data"});
}

TEST_CASE("hook failures are logged and counted and the queue goes on", "[hooks]") {
  TempDir dir;
  std::string recorder = write_recorder(dir);
  std::string missing = dir / "missing";
  std::string not_exec = dir / "not-executable";
  std::ofstream(not_exec) << "#!/bin/sh\n";
  std::string exit3 = write_script(dir, "exit3.sh", "exit 3\n");
  std::string term = write_script(dir, "term.sh", "kill -TERM $$\nsleep 5\n");
  LogCapture log;
  run_loop([&](asio::io_context& io) -> awaitable<void> {
    Hooks hooks(io, "data", missing);
    hooks.run("a");
    hooks.set_program(not_exec);
    hooks.run("b");
    hooks.set_program(exit3);
    hooks.run("c");
    hooks.set_program(term);
    hooks.run("d");
    hooks.set_program(recorder);
    hooks.run("e");
    co_await hooks.drain();
    CHECK(hooks.stats().started == 3);
    CHECK(hooks.stats().failed == 4);
    CHECK(hooks.stats().timed_out == 0);
  });
  CHECK(log.has("error|hook a data: cannot run " + missing + ": No such file or directory"));
  CHECK(log.has("error|hook b data: cannot run " + not_exec + ": Permission denied"));
  CHECK(log.has("warning|hook c data: exit 3"));
  CHECK(log.has("warning|hook d data: killed by signal 15 (SIGTERM)"));
  CHECK(read_lines(dir / "calls") == std::vector<std::string>{"[e][data] e data"});
}

TEST_CASE("an empty program makes run a no-op", "[hooks]") {
  TempDir dir;
  std::string recorder = write_recorder(dir);
  run_loop([&](asio::io_context& io) -> awaitable<void> {
    Hooks hooks(io, "data", "");
    hooks.run("start");
    co_await hooks.drain();
    CHECK(hooks.stats().started == 0);
    CHECK(hooks.stats().failed == 0);
    hooks.set_program(recorder);
    hooks.set_program("");  // reload to "no hook"
    CHECK(hooks.program().empty());
    hooks.run("reload");
    co_await hooks.drain();
    CHECK(hooks.stats().started == 0);
    CHECK(hooks.stats().dropped == 0);
  });
  CHECK_FALSE(std::filesystem::exists(dir / "calls"));
}

TEST_CASE("the hook queue is bounded and drops beyond it", "[hooks]") {
  TempDir dir;
  std::string quick = write_script(dir, "quick.sh", "exit 0\n");
  LogCapture log;
  run_loop([&](asio::io_context& io) -> awaitable<void> {
    Hooks hooks(io, "data", quick);
    for (size_t i = 0; i < kMaxQueuedHooks + 10; ++i) hooks.run("e" + std::to_string(i));
    CHECK(hooks.stats().dropped == 10);
    co_await hooks.drain();
    CHECK(hooks.stats().started == kMaxQueuedHooks);
    CHECK(hooks.stats().failed == 0);
  }, 60s);
  CHECK(log.count("event dropped") == 10);
  CHECK(log.count("hook e255 data: exit 0") == 1);
  CHECK(log.count("hook e256 data:") == 1);  // only its "dropped" warning
}

TEST_CASE("a hook starts clean: own group, default signals, /dev/null, no inherited descriptors", "[hooks]") {
  TempDir dir;
  constexpr int kLeakFd = 20;
  std::string env = write_script(dir, "env.sh",
                                 "set -- $(cat /proc/$$/stat)\n"
                                 "[ \"$5\" = \"$$\" ] && echo own-group || echo \"pgrp $5 pid $$\"\n"
                                 "echo \"stdin $(readlink /proc/$$/fd/0)\"\n"
                                 "[ \"$(readlink /proc/$$/fd/1)\" = \"$(readlink /proc/$$/fd/2)\" ] && echo same-pipe\n"
                                 "[ -e /proc/$$/fd/" + std::to_string(kLeakFd) + " ] && echo leaked || echo no-leak\n");
  // What a daemon does: block or ignore signals, hold descriptors.
  int leak = ::fcntl(::open("/dev/null", O_RDONLY), F_DUPFD, kLeakFd);
  REQUIRE(leak == kLeakFd);
  sigset_t block, old_mask;
  sigemptyset(&block);
  sigaddset(&block, SIGTERM);
  sigaddset(&block, SIGHUP);
  ::pthread_sigmask(SIG_BLOCK, &block, &old_mask);
  auto old_pipe = ::signal(SIGPIPE, SIG_IGN);
  LogCapture log;
  run_loop([&](asio::io_context& io) -> awaitable<void> {
    Hooks hooks(io, "data", env);
    hooks.run("env");
    co_await hooks.drain();
    // The signal state must be probed by the spawned program itself (a shell
    // clears its mask at startup): `grep EVENT RESOURCE`, straight from posix_spawn.
    Hooks probe(io, "/proc/self/status", "/bin/grep");
    probe.run("^Sig[BI]");
    co_await probe.drain();
  });
  ::signal(SIGPIPE, old_pipe);
  ::pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
  ::close(leak);
  INFO(log.text());
  CHECK(log.has("info|hook env data: own-group"));
  CHECK(log.has("info|hook env data: stdin /dev/null"));
  CHECK(log.has("info|hook env data: same-pipe"));
  CHECK(log.has("info|hook env data: no-leak"));
  CHECK(log.has("info|hook ^Sig[BI] /proc/self/status: SigBlk:?0000000000000000"));  // the tab is sanitised
  // glibc's posix_spawn leaves its two internal signals (32, 33: SIGCANCEL,
  // SIGSETXID) ignored whatever the attributes say; every other one, SIGPIPE
  // included, must be at its default.
  const std::string prefix = "info|hook ^Sig[BI] /proc/self/status: SigIgn:?";
  uint64_t ignored = ~0ull;
  for (auto& l : log.lines()) {
    if (l.starts_with(prefix)) ignored = std::stoull(l.substr(prefix.size()), nullptr, 16);
  }
  CHECK((ignored & ~0x180000000ull) == 0);
}

TEST_CASE("destroying Hooks kills the running hook and releases drain()", "[hooks]") {
  TempDir dir;
  std::string pidfile = dir / "pid";
  std::string sleeper = write_script(dir, "sleeper.sh", "echo $$ >'" + pidfile + ".tmp'\n"
                                                        "mv '" + pidfile + ".tmp' '" + pidfile + "'\n"
                                                        "exec sleep 30\n");
  LogCapture log;
  run_loop([&](asio::io_context& io) -> awaitable<void> {
    auto hooks = std::make_unique<Hooks>(io, "data", sleeper, 20s);
    hooks->run("stop");
    hooks->run("never");
    auto t0 = Clock::now();
    while (!std::filesystem::exists(pidfile) && Clock::now() - t0 < 3s) co_await sleep_for(io, 10ms);
    pid_t pid = read_pid(pidfile);
    REQUIRE(pid > 0);
    bool drained = false;
    asio::co_spawn(io, hooks->drain(), [&](std::exception_ptr) { drained = true; });
    co_await sleep_for(io, 10ms);
    CHECK_FALSE(drained);
    hooks.reset();
    // The loop reaps it: the pid goes away entirely, not just to a zombie.
    while ((!drained || std::filesystem::exists("/proc/" + std::to_string(pid))) && Clock::now() - t0 < 3s) {
      co_await sleep_for(io, 10ms);
    }
    CHECK(drained);
    CHECK_FALSE(std::filesystem::exists("/proc/" + std::to_string(pid)));
    CHECK(Clock::now() - t0 < 3s);
  });
  CHECK(log.has("warning|hook stop data: killed by signal 9 (SIGKILL)"));
  CHECK(log.count("hook never data") == 0);
}
