// base/read_buffer: reads over a real socketpair. Many small records arrive
// in one recv and are served without another; a large read goes straight to
// the caller's memory; every byte arrives in order across the buffer's edges;
// the end of the stream mid-read is an error, not a short success.
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <numeric>

#include "hastnbd/base/read_buffer.h"

using namespace hastnbd;
using Socket = asio::generic::stream_protocol::socket;

namespace {

struct Pair {
  asio::io_context io;
  Socket reader{io};
  int writer = -1;
  Pair() {
    int fds[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0);
    reader.assign(asio::generic::stream_protocol(AF_UNIX, SOCK_STREAM), fds[0]);
    writer = fds[1];
  }
  ~Pair() {
    if (writer >= 0) ::close(writer);
  }
  void send(const std::vector<uint8_t>& bytes) {
    size_t off = 0;
    while (off < bytes.size()) {
      ssize_t n = ::write(writer, bytes.data() + off, bytes.size() - off);
      REQUIRE(n > 0);
      off += size_t(n);
    }
  }
  template <class F>
  void run(F f) {
    bool done = false;
    asio::co_spawn(io, [&]() -> awaitable<void> { co_await f(); done = true; }, asio::detached);
    io.run_for(std::chrono::seconds(10));
    REQUIRE(done);
  }
};

std::vector<uint8_t> pattern(size_t n, uint8_t seed) {
  std::vector<uint8_t> v(n);
  std::iota(v.begin(), v.end(), seed);
  return v;
}

}  // namespace

TEST_CASE("read buffer: small records from one recv, then taken without a syscall", "[read_buffer]") {
  Pair p;
  ReadBuffer rb(4096, 1024);
  p.send(pattern(48 * 10, 7));  // ten 48-byte records, written at once
  p.run([&]() -> awaitable<void> {
    std::vector<uint8_t> rec(48);
    REQUIRE_FALSE(rb.take(rec.data(), rec.size()));  // nothing received yet
    error_code ec = co_await rb.read_exact(p.reader, rec.data(), rec.size());  // (no co_await inside Catch's macros:
    REQUIRE_FALSE(ec);                                                         // GCC 12 evaluates it again)
    CHECK(rec == pattern(48, 7));
    CHECK(rb.buffered() == 48 * 9);  // the other nine came with the same recv
    for (int i = 1; i < 10; ++i) {
      REQUIRE(rb.take(rec.data(), rec.size()));
      CHECK(rec[0] == uint8_t(7 + 48 * i));
    }
    CHECK(rb.buffered() == 0);
  });
}

TEST_CASE("read buffer: every byte in order across the buffer's edges and direct reads", "[read_buffer]") {
  Pair p;
  ReadBuffer rb(4096, 1024);
  // Sizes that straddle the buffer and cross the direct threshold both ways.
  const std::vector<size_t> sizes{1, 48, 4095, 4096, 4097, 1023, 1024, 100000, 3, 70000, 48};
  size_t total = 0;
  for (size_t n : sizes) total += n;
  const auto all = pattern(total, 0);
  p.send(all);
  p.run([&]() -> awaitable<void> {
    size_t off = 0;
    for (size_t n : sizes) {
      std::vector<uint8_t> got(n);
      error_code ec = co_await rb.read_exact(p.reader, got.data(), n);
      REQUIRE_FALSE(ec);
      CHECK(std::equal(got.begin(), got.end(), all.begin() + long(off)));
      off += n;
    }
    CHECK(rb.buffered() == 0);
  });
}

TEST_CASE("read buffer: the stream ending mid-read is an error", "[read_buffer]") {
  // (One read per stream: after a recv saw the end, Asio 1.26 waits for a
  // readiness edge that never comes. Callers close at the first error.)
  for (size_t n : {size_t(48), size_t(5000)}) {  // buffered, then direct
    Pair p;
    ReadBuffer rb(4096, 1024);
    p.send(pattern(30, 1));
    ::close(p.writer);
    p.writer = -1;
    p.run([&]() -> awaitable<void> {
      std::vector<uint8_t> got(n);
      error_code ec = co_await rb.read_exact(p.reader, got.data(), got.size());
      CHECK(ec == asio::error::eof);
    });
  }
}

TEST_CASE("read buffer: a capped refill leaves a large payload for the direct read", "[read_buffer]") {
  Pair p;
  ReadBuffer rb(4096, 1024);
  // Records of a 48-byte header and a 3000-byte payload.
  const auto one = pattern(48 + 3000, 5), two = pattern(48 + 3000, 9);
  p.run([&]() -> awaitable<void> {
    std::vector<uint8_t> hdr(48), payload(3000);
    // Uncapped: the header's refill brings the payload too (copied again).
    p.send(one);
    error_code ec = co_await rb.read_exact(p.reader, hdr.data(), hdr.size());
    REQUIRE_FALSE(ec);
    CHECK(rb.buffered() == 3000);
    ec = co_await rb.read_exact(p.reader, payload.data(), payload.size());
    REQUIRE_FALSE(ec);
    CHECK(std::equal(payload.begin(), payload.end(), one.begin() + 48));
    // Capped at the header: nothing of the payload is buffered, it is read
    // straight into the caller's memory, in order.
    p.send(two);
    rb.limit_next_fill(48);
    ec = co_await rb.read_exact(p.reader, hdr.data(), hdr.size());
    REQUIRE_FALSE(ec);
    CHECK(rb.buffered() == 0);
    CHECK(std::equal(hdr.begin(), hdr.end(), two.begin()));
    ec = co_await rb.read_exact(p.reader, payload.data(), payload.size());
    REQUIRE_FALSE(ec);
    CHECK(std::equal(payload.begin(), payload.end(), two.begin() + 48));
    // The cap held for one refill only.
    p.send(pattern(96, 1));
    ec = co_await rb.read_exact(p.reader, hdr.data(), hdr.size());
    REQUIRE_FALSE(ec);
    CHECK(rb.buffered() == 48);
  });
}
