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
