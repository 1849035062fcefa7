// A receive buffer for a stream socket read by one coroutine: one recv brings
// whatever the peer has sent so far (many small records or requests), and
// reads are served from it without a syscall each. Large reads go straight
// to the caller's memory (an O_DIRECT buffer: no extra copy). The NBD server's
// connections and the peer link read through one (docs/design.md, "The
// write path").
#pragma once

#include <algorithm>
#include <cstring>
#include <vector>

#include "hastnbd/base/asio.h"

namespace hastnbd {

class ReadBuffer {
 public:
  // Reads of `direct` bytes or more that find the buffer empty bypass it.
  explicit ReadBuffer(size_t capacity, size_t direct = 64 * 1024) : buf_(capacity), direct_(direct) {}

  size_t buffered() const { return tail_ - head_; }

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
      auto [ec, got] = co_await socket.async_read_some(asio::buffer(buf_.data() + tail_, buf_.size() - tail_),
                                                        use_nothrow);
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
  size_t head_ = 0, tail_ = 0;
};

}  // namespace hastnbd
