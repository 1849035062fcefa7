// The Asio vocabulary hastnbd uses everywhere: one io_context, one thread,
// C++20 coroutines, errors as values (as_tuple) on the I/O path.
#pragma once

#include <boost/asio.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>

namespace hastnbd {

namespace asio = boost::asio;
using boost::system::error_code;
template <class T = void>
using awaitable = asio::awaitable<T>;
inline constexpr auto use_nothrow = asio::as_tuple(asio::use_awaitable);

// A level-triggered wake-up for coroutines on one strand (the single loop
// thread): wait() suspends until notify_all(). Built on a timer that never
// expires on its own, cancelled to wake.
class AsyncCondition {
 public:
  explicit AsyncCondition(const asio::any_io_executor& ex) : timer_(ex, asio::steady_timer::time_point::max()) {}
  awaitable<void> wait() {
    co_await timer_.async_wait(use_nothrow);
  }
  void notify_all() { timer_.cancel(); }

 private:
  asio::steady_timer timer_;
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
