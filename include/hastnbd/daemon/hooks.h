// Hooks: the configured program (config `exec`), run as
// `PROGRAM EVENT RESOURCE [ARGS...]` on start, stop, role, connect, disconnect,
// syncstart, syncdone, syncintr, split-brain, reload, verifystart,
// verify-mismatch, verifydone and verifyintr, without blocking the loop.
//
// run() only queues. Runs happen one at a time, in the order queued, each with
// the program configured when it was queued (so "connect" is seen before
// "syncstart", and a reload does not rewrite history). At most
// kMaxQueuedHooks runs wait; beyond that a run is dropped with a warning.
// At `timeout` a run's whole process group gets SIGKILL; with the graces for
// the kill (5 s) and the last output (1 s), a run takes at most timeout + 6 s.
//
// The child: stdin /dev/null; stdout+stderr into one pipe, logged line by line
// (sanitised, 4 KiB a line, 64 KiB a run); its own process group; default
// signal mask and dispositions; no descriptor of ours beyond 0-2; the daemon's
// environment plus HASTNBD_EVENT and HASTNBD_RESOURCE. PROGRAM is a path (no
// PATH search). Failures (cannot spawn, non-zero exit, signal, timeout) are
// logged and counted, never thrown; the next run proceeds.
//
// Ownership: Hooks owns its queue and the running child. Destroying it kills
// the child's process group, drops what is queued, and leaves the reaping to
// the loop (if it runs on). Loop thread only.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "hastnbd/base/asio.h"

namespace hastnbd {

inline constexpr size_t kMaxQueuedHooks = 256;

class Hooks {
 public:
  Hooks(asio::io_context& io, std::string resource, std::string program,
        std::chrono::milliseconds timeout = std::chrono::seconds(30));
  ~Hooks();  // kills (SIGKILL, process group) whatever still runs
  Hooks(const Hooks&) = delete;
  Hooks& operator=(const Hooks&) = delete;

  // SIGHUP reload; "" = no hook. Runs already queued keep their program.
  void set_program(std::string program);
  const std::string& program() const;

  // Queues one run and returns at once; no-op when the program is empty.
  void run(std::string event, std::vector<std::string> args = {});

  // Waits until the queue is empty and nothing runs. Bounded: each run is
  // bounded by the timeout. Used at shutdown so "stop" runs. Safe to be
  // suspended in while the Hooks is destroyed (it then returns).
  awaitable<void> drain();

  // started: spawned; failed: could not spawn, non-zero exit or killed by a
  // signal not ours; timed_out: killed after the timeout; dropped: queue full.
  struct Stats {
    uint64_t started = 0, failed = 0, timed_out = 0, dropped = 0;
  };
  const Stats& stats() const;

 private:
  class Impl;
  std::shared_ptr<Impl> impl_;  // shared with the coroutine running the queue
};

// argv for one run: {program, event, resource, args...}.
std::vector<std::string> hook_argv(const std::string& program, const std::string& event, const std::string& resource,
                                   const std::vector<std::string>& args);

}  // namespace hastnbd
