// A small io_uring for the operations Asio's random_access_file does not offer:
// fdatasync, fallocate (punch hole / zero range) and metadata header writes.
// Completions arrive on an eventfd that the Asio loop watches, so nothing here
// ever blocks the loop. Single-threaded: call only from the loop thread.
#pragma once

#include <liburing.h>

#include <cstdint>
#include <deque>
#include <span>

#include "hastnbd/base/asio.h"
#include "hastnbd/base/status.h"

namespace hastnbd {

class Uring {
 public:
  static Result<std::unique_ptr<Uring>> create(asio::io_context& io, unsigned entries = 64);
  ~Uring();
  Uring(const Uring&) = delete;
  Uring& operator=(const Uring&) = delete;

  // Each returns the syscall's result: >= 0 on success, -errno on failure.
  awaitable<int> fdatasync(int fd);
  awaitable<int> fsync(int fd);
  awaitable<int> fallocate(int fd, int mode, uint64_t offset, uint64_t length);
  awaitable<int> pwrite(int fd, std::span<const uint8_t> data, uint64_t offset);

 private:
  struct Op;
  Uring(asio::io_context& io, int efd);
  template <class Prep>
  awaitable<int> submit(Prep prep);
  void arm();
  void reap();

  io_uring ring_{};
  bool ring_ok_ = false;
  asio::posix::stream_descriptor event_;
  uint64_t pending_ = 0;
  std::deque<Op*> waiting_for_sqe_;  // ring full: submitted as completions free room
};

}  // namespace hastnbd
