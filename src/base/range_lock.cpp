#include "hastnbd/base/range_lock.h"

namespace hastnbd {

bool RangeLock::can_grant(std::list<Entry>::iterator it) const {
  for (auto e = entries_.begin(); e != it; ++e) {
    bool overlap = e->start < it->end && it->start < e->end;
    if (overlap && (e->exclusive || it->exclusive)) return false;
  }
  return true;
}

RangeLock::Ticket RangeLock::reserve(uint64_t start, uint64_t end, bool exclusive) {
  return entries_.insert(entries_.end(), Entry{start, end, exclusive, false});
}

awaitable<RangeLock::Guard> RangeLock::lock(uint64_t start, uint64_t end, bool exclusive) {
  return acquire(reserve(start, end, exclusive));
}

awaitable<RangeLock::Guard> RangeLock::acquire(Ticket it) {
  if (!can_grant(it)) {
    ++waiting_;
    do {
      co_await changed_.wait();
    } while (!can_grant(it));
    --waiting_;
  }
  it->granted = true;
  co_return Guard(this, it);
}

void RangeLock::release(std::list<Entry>::iterator it) {
  entries_.erase(it);
  if (waiting_ > 0) changed_.notify_all();
}

}  // namespace hastnbd
