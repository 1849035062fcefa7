// A receive buffer for a stream socket read by one coroutine: one recv brings
// whatever the peer has sent so far (many small records or requests), and
// reads are served from it without a syscall each. Large reads go straight
// to the caller's memory (an O_DIRECT buffer: no extra copy); after one, the
// reader may cap the next refill at a header's size (limit_next_fill), so
// that a stream of large records is not partly copied through the buffer:
// a refill of the whole buffer would otherwise bring up to its capacity of
// the next payload, to be copied again. The NBD server's
// connections and the peer link read through one (docs/design.md, "The
// write path").
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "hastnbd/base/asio.h"

namespace hastnbd {

class ReadBuffer {
 public:
  // Reads of `direct` bytes or more that find the buffer empty bypass it.
  explicit ReadBuffer(size_t capacity, size_t direct = 64 * 1024) : buf_(capacity), direct_(direct) {}

  size_t buffered() const { return tail_ - head_; }
  // The next recv into the buffer reads at most n bytes (then back to its
  // capacity): the caller expects a header followed by a large payload.
  void limit_next_fill(size_t n) { fill_limit_ = std::max<size_t>(n, 1); }

  // Copies n bytes if they are all buffered already; no suspension.
  bool take(uint8_t* dst, size_t n) {
    if (buffered() < n) return false;
    if (n) std::memcpy(dst, buf_.data() + head_, n);
    head_ += n;
    return true;
  }

  // Exactly n bytes into dst, or the error that stopped the read.
  template <class Socket>
  awaitable<error_code> read_exact(Socket& socket, uint8_t* dst, size_t n) {
    const size_t first = std::min(n, buffered());
    take(dst, first);
    dst += first;
    n -= first;
    if (n == 0) co_return error_code();
    head_ = tail_ = 0;
    if (n >= direct_) {
      auto [ec, got] = co_await asio::async_read(socket, asio::buffer(dst, n), large_transfers, use_nothrow);
      co_return ec;
    }
    while (n > 0) {
      const size_t room = std::min(buf_.size() - tail_, std::max(fill_limit_, n));
      fill_limit_ = SIZE_MAX;
      auto [ec, got] = co_await socket.async_read_some(asio::buffer(buf_.data() + tail_, room), use_nothrow);
      if (ec) co_return ec;
      tail_ += got;
      const size_t k = std::min(n, buffered());
      take(dst, k);
      dst += k;
      n -= k;
    }
    co_return error_code();
  }

 private:
  std::vector<uint8_t> buf_;
  size_t direct_;
  size_t fill_limit_ = SIZE_MAX;
  size_t head_ = 0, tail_ = 0;
};

}  // namespace hastnbd
