#include "hastnbd/base/buffer.h"

#include <algorithm>
#include <bit>
#include <cstdlib>
#include <new>

namespace hastnbd {

Buffer& Buffer::operator=(Buffer&& o) noexcept {
  if (this != &o) {
    release();
    data_ = o.data_;
    size_ = o.size_;
    capacity_ = o.capacity_;
    pool_ = o.pool_;
    o.data_ = nullptr;
    o.size_ = o.capacity_ = 0;
    o.pool_ = nullptr;
  }
  return *this;
}

void Buffer::resize(size_t n) {
  if (n > capacity_) std::abort();
  size_ = n;
}

void Buffer::release() {
  if (data_ && pool_) pool_->put(data_, capacity_);
  else if (data_) std::free(data_);
  data_ = nullptr;
}

int BufferPool::size_class(size_t capacity) { return std::countr_zero(capacity); }

Buffer BufferPool::get(size_t size) {
  size_t capacity = std::bit_ceil(std::max(size, kBufferAlign));
  int cls = size_class(capacity);
  Buffer b;
  if (size_t(cls) < free_.size() && !free_[cls].empty()) {
    b.data_ = free_[cls].back();
    free_[cls].pop_back();
    cached_ -= capacity;
  } else {
    void* p = nullptr;
    if (posix_memalign(&p, kBufferAlign, capacity) != 0) throw std::bad_alloc();
    b.data_ = static_cast<uint8_t*>(p);
  }
  b.size_ = size;
  b.capacity_ = capacity;
  b.pool_ = this;
  return b;
}

void BufferPool::put(uint8_t* p, size_t capacity) {
  if (cached_ + capacity > max_cached_) {
    std::free(p);
    return;
  }
  size_t cls = size_class(capacity);
  if (free_.size() <= cls) free_.resize(cls + 1);
  free_[cls].push_back(p);
  cached_ += capacity;
}

BufferPool::~BufferPool() {
  for (auto& list : free_)
    for (uint8_t* p : list) std::free(p);
}

}  // namespace hastnbd
