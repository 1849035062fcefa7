// What the NBD server needs from the thing behind the export. The primary's
// write path implements it; the server only validates, calls and replies.
// Offsets and lengths arrive validated against size(). Loop thread only.
#pragma once

#include <cstdint>

#include "hastnbd/base/asio.h"
#include "hastnbd/base/buffer.h"
#include "hastnbd/base/status.h"

namespace hastnbd {

class BlockBackend {
 public:
  virtual ~BlockBackend() = default;
  virtual uint64_t size() const = 0;
  virtual awaitable<Status> read(uint64_t offset, Buffer& out) = 0;
  virtual awaitable<Status> write(uint64_t offset, const Buffer& data, bool fua) = 0;
  virtual awaitable<Status> flush() = 0;
  virtual awaitable<Status> trim(uint64_t offset, uint64_t length, bool fua) = 0;
  virtual awaitable<Status> write_zeroes(uint64_t offset, uint64_t length, bool may_unmap, bool fua) = 0;
};

}  // namespace hastnbd
