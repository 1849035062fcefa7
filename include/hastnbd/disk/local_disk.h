// The local backing store: a block device or a regular file, opened O_DIRECT
// and driven asynchronously (reads and writes through Asio's io_uring-backed
// random_access_file; fdatasync and fallocate through our own small Uring).
//
// Callers may use any byte offset and length inside size(): requests that are
// not aligned to the device's logical block size are done by read-modify-write
// of the partial blocks, serialised against every overlapping write by a range
// lock. Errors come back as Status carrying the errno. Loop thread only.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "hastnbd/base/asio.h"
#include "hastnbd/base/buffer.h"
#include "hastnbd/base/range_lock.h"
#include "hastnbd/base/status.h"
#include "hastnbd/disk/disk.h"
#include "hastnbd/disk/uring.h"

namespace hastnbd {

class LocalDisk : public Disk {
 public:
  // Opens `path`; exported size is `size` if given (must fit the device),
  // otherwise the whole device or file. A block device is opened O_EXCL so a
  // mounted file system cannot be exported by mistake.
  static Result<std::unique_ptr<LocalDisk>> open(asio::io_context& io, Uring& uring, BufferPool& pool,
                                                 const std::string& path, std::optional<uint64_t> size);
  ~LocalDisk() override;

  uint64_t size() const override { return size_; }
  uint32_t block_size() const override { return block_size_; }
  bool is_block_device() const override { return is_block_device_; }
  const std::string& path() const override { return path_; }

  awaitable<Status> read(uint64_t offset, Buffer& out) override;
  awaitable<Status> write(uint64_t offset, const Buffer& data) override;
  awaitable<Status> flush() override;  // fdatasync
  awaitable<Status> trim(uint64_t offset, uint64_t length) override;
  awaitable<Status> write_zeroes(uint64_t offset, uint64_t length, bool may_unmap) override;

  // Writes currently holding or waiting for the range lock.
  size_t writes_in_flight() const { return lock_.size(); }

 private:
  LocalDisk(asio::io_context& io, Uring& uring, BufferPool& pool);
  awaitable<Status> read_aligned(uint64_t offset, uint8_t* dst, size_t length);
  awaitable<Status> write_aligned(uint64_t offset, const uint8_t* src, size_t length);
  awaitable<Status> write_unaligned(uint64_t offset, const uint8_t* src, size_t length);
  awaitable<Status> zero_by_writing(uint64_t offset, uint64_t length);
  bool aligned(uint64_t offset, uint64_t length) const {
    return ((offset | length) & (block_size_ - 1)) == 0;
  }
  Status io_error(const char* what, uint64_t offset, uint64_t length, int err) const;

  // Asio's io_uring service keeps one operation per direction in flight per
  // file object and queues the rest, so a single random_access_file would
  // turn queue depth 32 into 1. Each handle is a dup of the same open file.
  struct Handle {
    explicit Handle(asio::io_context& io) : file(io) {}
    asio::random_access_file file;
    unsigned busy = 0;
  };
  class HandleLease;
  Handle& pick_handle();

  Uring& uring_;
  BufferPool& pool_;
  std::vector<std::unique_ptr<Handle>> handles_;
  size_t next_handle_ = 0;
  int fd_ = -1;
  std::string path_;
  uint64_t size_ = 0;
  uint32_t block_size_ = 512;
  bool is_block_device_ = false;
  RangeLock lock_;
};

}  // namespace hastnbd
