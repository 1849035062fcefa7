// The Asio vocabulary hastnbd uses everywhere: one io_context, one thread,
// C++20 coroutines, errors as values (as_tuple) on the I/O path.
#pragma once

#include <boost/asio.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <vector>

namespace hastnbd {

namespace asio = boost::asio;
using boost::system::error_code;
template <class T = void>
using awaitable = asio::awaitable<T>;
inline constexpr auto use_nothrow = asio::as_tuple(asio::use_awaitable);

// Completion condition for async_read/async_write(_at): Asio's default
// (transfer_all) caps each underlying call at 64 KiB, so a 2 MiB O_DIRECT
// read became 32 io_uring reads one after the other, and a 4 MiB record 64
// socket calls with as many wake-ups. Each call here moves up to 16 MiB.
inline std::size_t large_transfers(const error_code& ec, std::size_t) { return ec ? 0 : std::size_t(16) << 20; }

// A wake-up for coroutines on the single loop thread: wait() suspends until
// the next notify_all(). Callers re-check their condition in a loop, so a
// spurious wake-up is harmless. Waiters are posted straight to the loop: no
// timer, no syscall per notification (this sits on every request's path).
class AsyncCondition {
 public:
  explicit AsyncCondition(const asio::any_io_executor& ex) : ex_(ex) {}
  AsyncCondition(const AsyncCondition&) = delete;
  AsyncCondition& operator=(const AsyncCondition&) = delete;
  awaitable<void> wait() {
    co_await asio::async_initiate<const asio::use_awaitable_t<>, void()>(
        [this](auto handler) { waiters_.emplace_back(std::move(handler)); }, asio::use_awaitable);
  }
  void notify_all() {
    if (waiters_.empty()) return;
    auto waiters = std::move(waiters_);
    waiters_.clear();
    for (auto& h : waiters) asio::post(ex_, std::move(h));
  }

 private:
  asio::any_io_executor ex_;
  std::vector<asio::any_completion_handler<void()>> waiters_;
};

}  // namespace hastnbd

namespace hastnbd {

// A latch for coroutines: wait() returns once set() was called (immediately if
// it already was). Cheaper than AsyncCondition for one-shot events with few
// waiters: no timer, handlers are posted straight to the loop.
class Latch {
 public:
  explicit Latch(asio::any_io_executor ex) : ex_(std::move(ex)) {}
  bool is_set() const { return set_; }
  void set() {
    if (set_) return;
    set_ = true;
    auto waiters = std::move(waiters_);
    for (auto& h : waiters) asio::post(ex_, std::move(h));
  }
  awaitable<void> wait() {
    if (set_) co_return;
    co_await asio::async_initiate<const asio::use_awaitable_t<>, void()>(
        [this](auto handler) { waiters_.emplace_back(std::move(handler)); }, asio::use_awaitable);
  }

 private:
  asio::any_io_executor ex_;
  bool set_ = false;
  std::vector<asio::any_completion_handler<void()>> waiters_;
};

}  // namespace hastnbd
