// Feeds arbitrary bytes to a real NbdServer connection, as a hostile client
// would: handshake, options, requests and payloads all come from the input.
// The backend is memory, so only the protocol code is under test.
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <vector>

#include "hastnbd/nbd/server.h"

using namespace hastnbd;

namespace {

class MemoryBackend : public BlockBackend {
 public:
  explicit MemoryBackend(uint64_t size) : data_(size) {}
  uint64_t size() const override { return data_.size(); }
  awaitable<Status> read(uint64_t off, Buffer& out) override {
    std::memcpy(out.data(), data_.data() + off, out.size());
    co_return Status::Ok();
  }
  awaitable<Status> write(uint64_t off, const Buffer& in, bool) override {
    std::memcpy(data_.data() + off, in.data(), in.size());
    co_return Status::Ok();
  }
  awaitable<Status> flush() override { co_return Status::Ok(); }
  awaitable<Status> trim(uint64_t, uint64_t, bool) override { co_return Status::Ok(); }
  awaitable<Status> write_zeroes(uint64_t off, uint64_t len, bool, bool) override {
    std::memset(data_.data() + off, 0, len);
    co_return Status::Ok();
  }

 private:
  std::vector<uint8_t> data_;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 256 * 1024) return 0;
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return 0;
  asio::io_context io(1);
  BufferPool pool;
  MemoryBackend backend(1 << 20);
  NbdServer server(io, pool, backend, "data");
  server.serve_connection(asio::generic::stream_protocol::socket(io, asio::generic::stream_protocol(AF_UNIX, SOCK_STREAM), sv[0]),
                          "fuzz");
  asio::generic::stream_protocol::socket client(io, asio::generic::stream_protocol(AF_UNIX, SOCK_STREAM), sv[1]);
  // Send the input, then half-close; read and discard replies until the server closes.
  asio::co_spawn(io, [&]() -> awaitable<void> {
    co_await asio::async_write(client, asio::buffer(data, size), use_nothrow);
    error_code ec;
    client.shutdown(asio::socket_base::shutdown_send, ec);
  }, asio::detached);
  asio::co_spawn(io, [&]() -> awaitable<void> {
    std::vector<uint8_t> sink(64 * 1024);
    for (;;) {
      auto [ec, n] = co_await client.async_read_some(asio::buffer(sink), use_nothrow);
      if (ec) break;
    }
  }, asio::detached);
  io.run_for(std::chrono::seconds(5));
  return 0;
}
