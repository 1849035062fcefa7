// What the replication code needs of a node's local disk: LocalDisk is the
// real one (O_DIRECT, io_uring); the component tests wrap it in a
// fault-injecting one. Offsets and lengths are inside size(); any alignment.
// Errors carry the errno. Loop thread only.
#pragma once

#include <cstdint>
#include <string>

#include "hastnbd/base/asio.h"
#include "hastnbd/base/buffer.h"
#include "hastnbd/base/status.h"

namespace hastnbd {

class Disk {
 public:
  virtual ~Disk() = default;
  virtual uint64_t size() const = 0;
  virtual uint32_t block_size() const = 0;
  virtual bool is_block_device() const = 0;
  virtual const std::string& path() const = 0;

  // `out.size()` bytes at `offset` into `out` (an aligned pool buffer).
  virtual awaitable<Status> read(uint64_t offset, Buffer& out) = 0;
  // `data.size()` bytes of `data` (an aligned pool buffer) at `offset`.
  virtual awaitable<Status> write(uint64_t offset, const Buffer& data) = 0;
  // Everything completed so far is durable.
  virtual awaitable<Status> flush() = 0;
  // Advisory discard: frees whole blocks inside the range; partial blocks are left.
  virtual awaitable<Status> trim(uint64_t offset, uint64_t length) = 0;
  // The range reads back as zeroes afterwards; `may_unmap` allows a hole.
  virtual awaitable<Status> write_zeroes(uint64_t offset, uint64_t length, bool may_unmap) = 0;
};

}  // namespace hastnbd
