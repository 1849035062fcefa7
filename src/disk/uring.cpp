#include "hastnbd/disk/uring.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cstring>
#include <functional>
#include <string>

namespace hastnbd {

struct Uring::Op {
  std::function<void(io_uring_sqe*)> prep;
  asio::any_completion_handler<void(int)> handler;
};

Result<std::unique_ptr<Uring>> Uring::create(asio::io_context& io, unsigned entries) {
  int efd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (efd < 0) return Status::Error(errno, std::string("eventfd: ") + std::strerror(errno));
  std::unique_ptr<Uring> u(new Uring(io, efd));
  int rc = io_uring_queue_init(entries, &u->ring_, 0);
  if (rc < 0) return Status::Error(-rc, std::string("io_uring_queue_init: ") + std::strerror(-rc));
  u->ring_ok_ = true;
  rc = io_uring_register_eventfd(&u->ring_, efd);
  if (rc < 0) return Status::Error(-rc, std::string("io_uring_register_eventfd: ") + std::strerror(-rc));
  u->arm();
  return u;
}

Uring::Uring(asio::io_context& io, int efd) : event_(io, efd) {}

Uring::~Uring() {
  if (ring_ok_) io_uring_queue_exit(&ring_);
}

void Uring::arm() {
  event_.async_wait(asio::posix::stream_descriptor::wait_read, [this](error_code ec) {
    if (ec) return;  // cancelled at shutdown
    uint64_t n;
    while (::read(event_.native_handle(), &n, sizeof n) > 0) {
    }
    reap();
    arm();
  });
}

void Uring::reap() {
  // Copy completions out before resuming anyone: a resumed coroutine may
  // submit again, which must not race with our walk of the CQ ring.
  struct Done { Op* op; int res; };
  std::vector<Done> done;
  io_uring_cqe* cqe;
  unsigned head, count = 0;
  io_uring_for_each_cqe(&ring_, head, cqe) {
    done.push_back({reinterpret_cast<Op*>(io_uring_cqe_get_data(cqe)), cqe->res});
    ++count;
  }
  io_uring_cq_advance(&ring_, count);
  pending_ -= count;
  // Room freed: move ops that found the SQ full into the ring.
  bool submitted = false;
  while (!waiting_for_sqe_.empty()) {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    if (!sqe) break;
    Op* op = waiting_for_sqe_.front();
    waiting_for_sqe_.pop_front();
    op->prep(sqe);
    io_uring_sqe_set_data(sqe, op);
    ++pending_;
    submitted = true;
  }
  if (submitted) io_uring_submit(&ring_);
  for (auto& d : done) {
    auto h = std::move(d.op->handler);
    delete d.op;
    std::move(h)(d.res);
  }
}

template <class Prep>
awaitable<int> Uring::submit(Prep prep) {
  return asio::async_initiate<const asio::use_awaitable_t<>, void(int)>(
      [this, prep](auto handler) {
        auto* op = new Op{prep, std::move(handler)};
        io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
        if (!sqe) {
          waiting_for_sqe_.push_back(op);
          return;
        }
        prep(sqe);
        io_uring_sqe_set_data(sqe, op);
        ++pending_;
        io_uring_submit(&ring_);
      },
      asio::use_awaitable);
}

awaitable<int> Uring::fdatasync(int fd) {
  return submit([fd](io_uring_sqe* s) { io_uring_prep_fsync(s, fd, IORING_FSYNC_DATASYNC); });
}

awaitable<int> Uring::fsync(int fd) {
  return submit([fd](io_uring_sqe* s) { io_uring_prep_fsync(s, fd, 0); });
}

awaitable<int> Uring::fallocate(int fd, int mode, uint64_t offset, uint64_t length) {
  return submit([=](io_uring_sqe* s) { io_uring_prep_fallocate(s, fd, mode, offset, length); });
}

awaitable<int> Uring::pwrite(int fd, std::span<const uint8_t> data, uint64_t offset) {
  return submit([=](io_uring_sqe* s) {
    io_uring_prep_write(s, fd, data.data(), unsigned(data.size()), offset);
  });
}

}  // namespace hastnbd
