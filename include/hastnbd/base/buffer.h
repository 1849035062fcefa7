// Aligned I/O buffers for O_DIRECT, recycled through a per-process pool.
//
// Buffers are aligned to kBufferAlign and sized in power-of-two classes so the
// pool stays small. Single-threaded by design (the event loop owns it). A Buffer
// returns its memory to the pool when destroyed; the pool must outlive them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace hastnbd {

inline constexpr size_t kBufferAlign = 4096;

class BufferPool;

class Buffer {
 public:
  Buffer() = default;
  Buffer(Buffer&& o) noexcept { *this = std::move(o); }
  Buffer& operator=(Buffer&& o) noexcept;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer() { release(); }

  uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  size_t capacity() const { return capacity_; }
  void resize(size_t n);  // n <= capacity()
  std::span<uint8_t> span() const { return {data_, size_}; }
  explicit operator bool() const { return data_ != nullptr; }

 private:
  friend class BufferPool;
  void release();
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
  size_t capacity_ = 0;
  BufferPool* pool_ = nullptr;
};

class BufferPool {
 public:
  explicit BufferPool(size_t max_cached_bytes = 256u << 20) : max_cached_(max_cached_bytes) {}
  ~BufferPool();
  BufferPool(const BufferPool&) = delete;
  BufferPool& operator=(const BufferPool&) = delete;

  // A buffer of at least `size` bytes (size() == size), aligned. Aborts on OOM,
  // as the allocator does for every other allocation in the process.
  Buffer get(size_t size);

 private:
  friend class Buffer;
  void put(uint8_t* p, size_t capacity);
  static int size_class(size_t capacity);
  std::vector<std::vector<uint8_t*>> free_;  // by size class
  size_t cached_ = 0;
  size_t max_cached_;
};

}  // namespace hastnbd
