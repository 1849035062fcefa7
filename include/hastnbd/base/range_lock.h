// Byte-range locks for coroutines on the single loop thread.
//
// Shared holders of overlapping ranges coexist (ordinary aligned writes: NBD
// leaves the order of overlapping in-flight writes to the server); an exclusive
// holder excludes every overlapping holder (read-modify-write of a partial
// block, and later the copy of an extent by the syncer). Grants are FIFO among
// conflicting requests, so a steady stream of shared writes cannot starve an
// exclusive one. Releasing is RAII through Guard. A release wakes only the
// waiters it may unblock (later entries overlapping the released range), so
// many requests in flight over distinct ranges cost O(n) per release, not a
// wake-up and a rescan for every waiter.
#pragma once

#include <cstdint>
#include <list>
#include <memory>

#include "hastnbd/base/asio.h"

namespace hastnbd {

class RangeLock {
 public:
  struct Entry {
    uint64_t start, end;  // [start, end)
    bool exclusive;
    bool granted;
    // Set while acquire() waits. (By pointer: any_completion_handler's
    // unconstrained constructor would make a copy of Entry wrap itself.)
    std::unique_ptr<asio::any_completion_handler<void()>> waiter;
  };

  class Guard {
   public:
    Guard() = default;
    Guard(RangeLock* lock, std::list<Entry>::iterator it) : lock_(lock), it_(it) {}
    Guard(Guard&& o) noexcept : lock_(o.lock_), it_(o.it_) { o.lock_ = nullptr; }
    Guard& operator=(Guard&& o) noexcept {
      if (this != &o) {
        release();
        lock_ = o.lock_;
        it_ = o.it_;
        o.lock_ = nullptr;
      }
      return *this;
    }
    Guard(const Guard&) = delete;
    Guard& operator=(const Guard&) = delete;
    ~Guard() { release(); }
    bool held() const { return lock_ != nullptr; }
    void release() {
      if (lock_) lock_->release(it_);
      lock_ = nullptr;
    }

   private:
    RangeLock* lock_ = nullptr;
    std::list<Entry>::iterator it_;
  };

  explicit RangeLock(const asio::any_io_executor& ex) : ex_(ex) {}

  awaitable<Guard> lock(uint64_t start, uint64_t end, bool exclusive);
  // Two steps, for callers that must fix their place in the FIFO now (in
  // arrival order) but wait later: reserve() queues synchronously, acquire()
  // waits for the grant. Every reserved ticket must be acquired.
  using Ticket = std::list<Entry>::iterator;
  Ticket reserve(uint64_t start, uint64_t end, bool exclusive);
  awaitable<Guard> acquire(Ticket ticket);
  size_t size() const { return entries_.size(); }  // held + waiting

 private:
  bool can_grant(std::list<Entry>::iterator it) const;
  void release(std::list<Entry>::iterator it);

  std::list<Entry> entries_;  // arrival order
  asio::any_io_executor ex_;
};

}  // namespace hastnbd
