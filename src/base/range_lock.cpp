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
  return entries_.insert(entries_.end(), Entry{start, end, exclusive, false, {}});
}

awaitable<RangeLock::Guard> RangeLock::lock(uint64_t start, uint64_t end, bool exclusive) {
  return acquire(reserve(start, end, exclusive));
}

awaitable<RangeLock::Guard> RangeLock::acquire(Ticket it) {
  if (!can_grant(it)) {
    // release() grants it and resumes us.
    co_await asio::async_initiate<const asio::use_awaitable_t<>, void()>(
        [it](auto handler) { it->waiter = std::make_unique<asio::any_completion_handler<void()>>(std::move(handler)); },
        asio::use_awaitable);
  }
  it->granted = true;
  co_return Guard(this, it);
}

void RangeLock::release(std::list<Entry>::iterator it) {
  const uint64_t start = it->start, end = it->end;
  // Only later entries wait for an earlier one; of those, only the ones
  // overlapping this range may have waited for it.
  for (auto e = entries_.erase(it); e != entries_.end(); ++e) {
    if (!e->waiter || !(e->start < end && start < e->end) || !can_grant(e)) continue;
    asio::post(ex_, std::move(*e->waiter));
    e->waiter.reset();
  }
}

}  // namespace hastnbd
