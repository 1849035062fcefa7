#include "hastnbd/daemon/hooks.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <deque>
#include <string_view>

#include "hastnbd/base/status.h"

extern char** environ;

namespace hastnbd {

using namespace asio::experimental::awaitable_operators;
using Clock = std::chrono::steady_clock;

namespace {

constexpr size_t kMaxLine = 4096;          // bytes of one logged output line
constexpr size_t kMaxOutput = 64 * 1024;   // bytes of output logged per run
constexpr size_t kReadChunk = 4096;
// After the hook exits, how long the rest of its output may take: longer only
// if something it left behind holds the pipe open, and we stop reading then.
constexpr auto kOutputGrace = std::chrono::seconds(1);
// After SIGKILL, how long to wait for the exit (a process in D state can take
// longer; it is then reaped in the background).
constexpr auto kKillGrace = std::chrono::seconds(5);
// Reaping by polling, only if pidfd_open failed.
constexpr auto kPollInterval = std::chrono::milliseconds(20);

std::string errno_text(int err) { return std::strerror(err); }

// Turns a child's output into sanitised, bounded log lines.
class OutputLog {
 public:
  OutputLog(const std::string& event, const std::string& resource) : event_(event), resource_(resource) {}

  void feed(const char* p, size_t n) {
    for (size_t i = 0; i < n && !truncated_; ++i) {
      unsigned char c = static_cast<unsigned char>(p[i]);
      if (c == '\n') {
        if (!cut_) emit("");
        cut_ = false;
        line_.clear();
      } else if (cut_) {
        continue;  // the rest of an overlong line
      } else if (line_.size() == kMaxLine) {
        emit(" [line cut]");
        cut_ = true;
        line_.clear();
      } else {
        line_.push_back(c < 0x20 || c == 0x7f ? '?' : char(c));
      }
    }
  }
  // The output ended: a last line without a newline still counts.
  void finish() {
    if (!line_.empty() && !cut_) emit("");
    line_.clear();
  }

 private:
  void emit(const char* suffix) {
    if (truncated_) return;
    if (logged_ + line_.size() > kMaxOutput) {
      truncated_ = true;
      spdlog::info("hook {} {}: output truncated after {} bytes", event_, resource_, logged_);
      return;
    }
    logged_ += line_.size() + 1;
    spdlog::info("hook {} {}: {}{}", event_, resource_, line_, suffix);
  }

  const std::string& event_;
  const std::string& resource_;
  std::string line_;
  bool cut_ = false;        // inside a line longer than kMaxLine: skip to its end
  bool truncated_ = false;  // kMaxOutput reached: log nothing more
  size_t logged_ = 0;
};

// The pipe's parent end becomes the child's fd 1 and 2 and /dev/null its fd 0;
// an end that is itself 0-2 (the daemon started with those closed) would be
// clobbered by that, so move it up.
bool move_above_stdio(int& fd) {
  if (fd > 2) return true;
  int moved = ::fcntl(fd, F_DUPFD_CLOEXEC, 3);
  if (moved < 0) return false;
  ::close(fd);
  fd = moved;
  return true;
}

std::vector<std::string> hook_env(const std::string& event, const std::string& resource) {
  std::vector<std::string> env;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    std::string_view v(*e);
    if (v.starts_with("HASTNBD_EVENT=") || v.starts_with("HASTNBD_RESOURCE=")) continue;
    env.emplace_back(v);
  }
  env.push_back("HASTNBD_EVENT=" + event);
  env.push_back("HASTNBD_RESOURCE=" + resource);
  return env;
}

std::vector<char*> c_array(std::vector<std::string>& v) {
  std::vector<char*> out;
  out.reserve(v.size() + 1);
  for (auto& s : v) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

struct Spawned {
  pid_t pid;
  int output;  // read end of the child's stdout+stderr, O_CLOEXEC
};

// posix_spawn reports exec failures (ENOENT, EACCES, ...) as its result, so
// a missing program fails here, not as an exit status 127.
Result<Spawned> spawn_hook(std::vector<std::string> argv, std::vector<std::string> env) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return Status::Error(errno, "pipe: " + errno_text(errno));
  if (!move_above_stdio(fds[0]) || !move_above_stdio(fds[1])) {
    int err = errno;
    ::close(fds[0]);
    ::close(fds[1]);
    return Status::Error(err, "fcntl: " + errno_text(err));
  }

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, fds[1], 1);
  posix_spawn_file_actions_adddup2(&actions, fds[1], 2);
  posix_spawn_file_actions_addclosefrom_np(&actions, 3);  // whatever lacks O_CLOEXEC

  // The daemon blocks or handles signals (SIGTERM, SIGHUP via signal_set) and
  // ignores SIGPIPE; the hook must start from the defaults.
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setpgroup(&attr, 0);  // its own group, so a timeout kills it all
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);

  auto c_argv = c_array(argv);
  auto c_env = c_array(env);
  pid_t pid = -1;
  int rc = ::posix_spawn(&pid, argv[0].c_str(), &actions, &attr, c_argv.data(), c_env.data());
  posix_spawnattr_destroy(&attr);
  posix_spawn_file_actions_destroy(&actions);
  ::close(fds[1]);
  if (rc != 0) {
    ::close(fds[0]);
    return Status::Error(rc, errno_text(rc));
  }
  return Spawned{pid, fds[0]};
}

// For a child that outlived kKillGrace after SIGKILL: reap it whenever it goes.
awaitable<void> reap_later(pid_t pid, asio::posix::stream_descriptor pidfd) {
  co_await pidfd.async_wait(asio::posix::stream_descriptor::wait_read, use_nothrow);
  int status;
  ::waitpid(pid, &status, WNOHANG);
}

}  // namespace

std::vector<std::string> hook_argv(const std::string& program, const std::string& event,
                                   const std::string& resource, const std::vector<std::string>& args) {
  std::vector<std::string> argv{program, event, resource};
  argv.insert(argv.end(), args.begin(), args.end());
  return argv;
}

class Hooks::Impl : public std::enable_shared_from_this<Impl> {
 public:
  Impl(asio::io_context& io, std::string resource, std::string program, std::chrono::milliseconds timeout)
      : ex_(io.get_executor()),
        resource_(std::move(resource)),
        program_(std::move(program)),
        timeout_(timeout),
        idle_(ex_) {}

  void run(std::string event, std::vector<std::string> args);
  void close();
  // Holds `impl` in its frame from the call on: the Hooks may go meanwhile.
  static awaitable<void> wait_idle(std::shared_ptr<Impl> impl) {
    while (impl->worker_active_) co_await impl->idle_.wait();
  }

  const std::string& program() const { return program_; }
  void set_program(std::string program) { program_ = std::move(program); }
  const Stats& stats() const { return stats_; }

 private:
  struct Job {
    std::string program, event;
    std::vector<std::string> args;
  };
  // One spawned run; lives in run_one's frame.
  struct Child {
    Child(const asio::any_io_executor& ex, const Job& j, pid_t p, int output)
        : job(j), pid(p), out(ex, output), pidfd(ex), timer(ex), grace(ex) {}
    bool try_reap();

    const Job& job;
    pid_t pid;
    Clock::time_point started = Clock::now();
    asio::posix::stream_descriptor out;    // the child's stdout+stderr
    asio::posix::stream_descriptor pidfd;  // readable once it exited; closed if unavailable
    asio::steady_timer timer;              // the deadlines of wait_exit
    asio::steady_timer grace;              // the output's last chance; cancelled at EOF
    bool exited = false;
    bool output_done = false;
    int wstatus = -1;  // from waitpid; -1 if someone else reaped it
  };

  awaitable<void> worker();
  awaitable<void> run_one(Job job);
  awaitable<void> supervise(Child& c);
  awaitable<void> read_output(Child& c);
  awaitable<bool> wait_exit(Child& c, Clock::time_point until);
  void report_exit(const Child& c);

  asio::any_io_executor ex_;
  std::string resource_;
  std::string program_;
  std::chrono::milliseconds timeout_;
  Stats stats_;
  std::deque<Job> queue_;
  bool worker_active_ = false;
  bool closed_ = false;
  pid_t running_ = 0;  // the child (= its process group) until reaped
  AsyncCondition idle_;  // notified when the worker stops
};

void Hooks::Impl::run(std::string event, std::vector<std::string> args) {
  if (closed_ || program_.empty()) return;
  if (queue_.size() >= kMaxQueuedHooks) {
    ++stats_.dropped;
    spdlog::warn("hook {} {}: {} runs already queued, event dropped", event, resource_, queue_.size());
    return;
  }
  queue_.push_back(Job{program_, std::move(event), std::move(args)});
  if (worker_active_) return;
  worker_active_ = true;
  auto self = shared_from_this();
  asio::co_spawn(ex_, [self]() -> awaitable<void> {
                   // co_spawn starts at once when called on the loop; run() only queues.
                   co_await asio::post(self->ex_, asio::use_awaitable);
                   co_await self->worker();
                 },
                 [self](std::exception_ptr e) {
                   self->worker_active_ = false;
                   self->idle_.notify_all();
                   if (!e) return;
                   self->queue_.clear();
                   try {
                     std::rethrow_exception(e);
                   } catch (const std::exception& x) {
                     spdlog::error("hooks {}: {}; queued runs dropped", self->resource_, x.what());
                   }
                 });
}

void Hooks::Impl::close() {
  closed_ = true;
  queue_.clear();
  if (running_ > 0) ::kill(-running_, SIGKILL);
}

awaitable<void> Hooks::Impl::worker() {
  while (!closed_ && !queue_.empty()) {
    Job job = std::move(queue_.front());
    queue_.pop_front();
    co_await run_one(std::move(job));
  }
}

awaitable<void> Hooks::Impl::run_one(Job job) {
  auto spawned = spawn_hook(hook_argv(job.program, job.event, resource_, job.args), hook_env(job.event, resource_));
  if (!spawned.ok()) {
    ++stats_.failed;
    spdlog::error("hook {} {}: cannot run {}: {}", job.event, resource_, job.program, spawned.status().message());
    co_return;
  }
  ++stats_.started;
  running_ = spawned->pid;
  Child c(ex_, job, spawned->pid, spawned->output);
  spdlog::debug("hook {} {}: started {} (pid {})", job.event, resource_, job.program, c.pid);
  int fd = int(::syscall(SYS_pidfd_open, c.pid, 0));
  error_code ec;
  if (fd < 0) {
    ec = error_code(errno, boost::system::system_category());
  } else if (c.pidfd.assign(fd, ec); ec) {
    ::close(fd);
  }
  if (ec) spdlog::warn("hook {} {}: pidfd: {}; polling for the exit", job.event, resource_, ec.message());
  co_await (supervise(c) && read_output(c));
}

bool Hooks::Impl::Child::try_reap() {
  if (exited) return true;
  int status = 0;
  pid_t r;
  do {
    r = ::waitpid(pid, &status, WNOHANG);
  } while (r < 0 && errno == EINTR);
  if (r == 0) return false;
  exited = true;
  wstatus = r == pid ? status : -1;  // ECHILD: SIGCHLD ignored, or reaped elsewhere
  return true;
}

awaitable<bool> Hooks::Impl::wait_exit(Child& c, Clock::time_point until) {
  while (!c.try_reap()) {
    auto now = Clock::now();
    if (now >= until) co_return false;
    if (c.pidfd.is_open()) {
      c.timer.expires_at(until);
      auto r = co_await (c.pidfd.async_wait(asio::posix::stream_descriptor::wait_read, use_nothrow) ||
                         c.timer.async_wait(use_nothrow));
      if (r.index() == 0 && std::get<0>(std::get<0>(r))) {
        spdlog::warn("hook {} {}: pidfd wait: {}; polling for the exit", c.job.event, resource_,
                     std::get<0>(std::get<0>(r)).message());
        error_code ignored;
        c.pidfd.close(ignored);
      }
    } else {
      c.timer.expires_at(std::min(until, now + kPollInterval));
      co_await c.timer.async_wait(use_nothrow);
    }
  }
  co_return true;
}

awaitable<void> Hooks::Impl::supervise(Child& c) {
  const std::string& event = c.job.event;
  if (co_await wait_exit(c, c.started + timeout_)) {
    report_exit(c);
  } else {
    ::kill(-c.pid, SIGKILL);
    ++stats_.timed_out;
    spdlog::warn("hook {} {}: killed after {:g} s", event, resource_, std::chrono::duration<double>(timeout_).count());
    if (!co_await wait_exit(c, Clock::now() + kKillGrace)) {
      spdlog::error("hook {} {}: pid {} still there {} s after SIGKILL; going on without it", event, resource_, c.pid,
                    std::chrono::seconds(kKillGrace).count());
      if (c.pidfd.is_open()) asio::co_spawn(ex_, reap_later(c.pid, std::move(c.pidfd)), asio::detached);
    }
  }
  running_ = 0;

  if (!c.output_done) {
    c.grace.expires_after(kOutputGrace);
    co_await c.grace.async_wait(use_nothrow);
    if (!c.output_done) {
      spdlog::warn("hook {} {}: output still open after the exit (a background process?); no longer read", event,
                   resource_);
      error_code ignored;
      c.out.cancel(ignored);
    }
  }
}

awaitable<void> Hooks::Impl::read_output(Child& c) {
  OutputLog log(c.job.event, resource_);
  std::array<char, kReadChunk> buf;
  for (;;) {
    auto [ec, n] = co_await c.out.async_read_some(asio::buffer(buf), use_nothrow);
    log.feed(buf.data(), n);
    if (ec) break;  // EOF, or cancelled by supervise
  }
  log.finish();
  c.output_done = true;
  c.grace.cancel();
}

void Hooks::Impl::report_exit(const Child& c) {
  const std::string& event = c.job.event;
  int st = c.wstatus;
  if (st == -1) {
    spdlog::warn("hook {} {}: exit status lost (reaped elsewhere)", event, resource_);
  } else if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
    spdlog::info("hook {} {}: exit 0", event, resource_);
  } else if (WIFEXITED(st)) {
    ++stats_.failed;
    spdlog::warn("hook {} {}: exit {}", event, resource_, WEXITSTATUS(st));
  } else if (WIFSIGNALED(st)) {
    ++stats_.failed;
    const char* name = ::sigabbrev_np(WTERMSIG(st));
    spdlog::warn("hook {} {}: killed by signal {} (SIG{})", event, resource_, WTERMSIG(st), name ? name : "?");
  }
}

Hooks::Hooks(asio::io_context& io, std::string resource, std::string program, std::chrono::milliseconds timeout)
    : impl_(std::make_shared<Impl>(io, std::move(resource), std::move(program), timeout)) {}

Hooks::~Hooks() { impl_->close(); }

void Hooks::set_program(std::string program) { impl_->set_program(std::move(program)); }

const std::string& Hooks::program() const { return impl_->program(); }

void Hooks::run(std::string event, std::vector<std::string> args) { impl_->run(std::move(event), std::move(args)); }

awaitable<void> Hooks::drain() { return Impl::wait_idle(impl_); }

const Hooks::Stats& Hooks::stats() const { return impl_->stats(); }

}  // namespace hastnbd
