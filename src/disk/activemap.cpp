#include "hastnbd/disk/activemap.h"

#include <algorithm>
#include <bit>

namespace hastnbd {

ActiveMap::ActiveMap(std::span<uint8_t> bitmap, uint64_t data_size, uint64_t extent_size, unsigned keepdirty)
    : bitmap_(bitmap),
      data_size_(data_size),
      extent_size_(extent_size),
      extents_((data_size + extent_size - 1) / extent_size),
      keepdirty_(keepdirty),
      needs_sync_((extents_ + 63) / 64, 0) {
  // Bits dirty at load time stay dirty until a sync covers them: we do not
  // know whether the peer ever got those writes.
  for (uint64_t e = 0; e < extents_; ++e) {
    if (is_dirty(e)) {
      ++dirty_count_;
      set_needs_sync(e, true);
    }
  }
}

void ActiveMap::set_needs_sync(uint64_t e, bool v) {
  uint64_t& word = needs_sync_[e >> 6];
  const uint64_t bit = uint64_t(1) << (e & 63);
  if (!v) {
    fine_.erase(e);  // synced or clean: the record is done with
  } else if (auto it = copying_.find(e); it != copying_.end()) {
    it->second = true;
  }
  if (bool(word & bit) == v) return;
  word ^= bit;
  if (v) ++needs_sync_count_;
  else --needs_sync_count_;
}

uint64_t ActiveMap::next_needs_sync(uint64_t from) const {
  if (from >= extents_) return extents_;
  uint64_t w = from >> 6;
  uint64_t word = needs_sync_[w] & (~uint64_t(0) << (from & 63));
  while (word == 0) {
    if (++w >= needs_sync_.size()) return extents_;
    word = needs_sync_[w];
  }
  return std::min(extents_, (w << 6) + uint64_t(std::countr_zero(word)));
}

std::pair<uint64_t, uint64_t> ActiveMap::extent_range(uint64_t offset, uint64_t length) const {
  uint64_t first = offset / extent_size_;
  uint64_t last = (offset + length - 1) / extent_size_;
  return {first, std::min(last, extents_ - 1)};
}

// A bit going 0 -> 1 gets a change sequence its writers wait for (durable).
void ActiveMap::set_bit(uint64_t e) {
  if (is_dirty(e)) return;
  bitmap_[e >> 3] = uint8_t(bitmap_[e >> 3] | (1u << (e & 7)));
  ++dirty_count_;
  pending_[e] = ++change_seq_;
}

void ActiveMap::clear_bit(uint64_t e) {
  bitmap_[e >> 3] = uint8_t(bitmap_[e >> 3] & ~(1u << (e & 7)));
  --dirty_count_;
  ++change_seq_;  // nobody waits for a clear, but the next sync makes it durable
}

void ActiveMap::touch_lru(uint64_t e) {
  State& s = state_[e];
  if (s.in_lru) {
    lru_.splice(lru_.begin(), lru_, s.lru_pos);
    return;
  }
  lru_.push_front(e);
  s.in_lru = true;
  s.lru_pos = lru_.begin();
  while (lru_.size() > keepdirty_) {
    uint64_t old = lru_.back();
    lru_.pop_back();
    state_[old].in_lru = false;
    maybe_clear(old);
  }
}

uint64_t ActiveMap::write_start(uint64_t offset, uint64_t length) {
  auto [first, last] = extent_range(offset, length);
  uint64_t ticket = 0;
  for (uint64_t e = first; e <= last; ++e) {
    ++state_[e].inflight;
    set_bit(e);
    if (auto it = pending_.find(e); it != pending_.end()) ticket = std::max(ticket, it->second);
  }
  // After the in-flight counts are up, so eviction cannot clear our own bits.
  for (uint64_t e = first; e <= last; ++e) touch_lru(e);
  return ticket;
}

void ActiveMap::write_done(uint64_t offset, uint64_t length, bool confirmed) {
  auto [first, last] = extent_range(offset, length);
  for (uint64_t e = first; e <= last; ++e) {
    State& s = state_[e];
    --s.inflight;
    if (!confirmed) note_range(e, offset, length, needs_sync(e));
    maybe_clear(e);
  }
}

void ActiveMap::set_granule(uint64_t granule) {
  granule_ = granule;
  fine_.clear();
}

// [offset, offset+length) of extent e may differ on the peer. `was_needed`:
// e needed a sync before; without a record then, all of it may differ.
void ActiveMap::note_range(uint64_t e, uint64_t offset, uint64_t length, bool was_needed) {
  set_needs_sync(e, true);
  if (granule_ == 0) return;
  auto it = fine_.find(e);
  if (it == fine_.end()) {
    if (was_needed) return;
    it = fine_.emplace(e, std::vector<uint64_t>((extent_size_ / granule_ + 63) / 64, 0)).first;
  }
  const uint64_t base = e * extent_size_;
  const uint64_t from = std::max(offset, base) - base;
  const uint64_t to = std::min(offset + length, base + extent_size_) - base;
  for (uint64_t g = from / granule_; g * granule_ < to; ++g) it->second[g >> 6] |= uint64_t(1) << (g & 63);
}

void ActiveMap::mark_range(uint64_t offset, uint64_t length) {
  auto [first, last] = extent_range(offset, length);
  for (uint64_t e = first; e <= last; ++e) {
    const bool was_needed = needs_sync(e);
    set_bit(e);
    note_range(e, offset, length, was_needed);
  }
}

std::optional<std::vector<std::pair<uint64_t, uint64_t>>> ActiveMap::fine_ranges(uint64_t e) const {
  auto it = fine_.find(e);
  if (it == fine_.end()) return std::nullopt;
  std::vector<std::pair<uint64_t, uint64_t>> out;
  const uint64_t base = e * extent_size_;
  const uint64_t end = std::min(base + extent_size_, data_size_);
  const uint64_t granules = extent_size_ / granule_;
  for (uint64_t g = 0; g < granules; ++g) {
    if (!((it->second[g >> 6] >> (g & 63)) & 1)) continue;
    const uint64_t at = base + g * granule_;
    if (at >= end) break;
    const uint64_t n = std::min(granule_, end - at);
    if (!out.empty() && out.back().first + out.back().second == at) out.back().second += n;
    else out.emplace_back(at, n);
  }
  return out;
}

bool ActiveMap::restore_fine(uint64_t e, std::vector<uint64_t> bits) {
  // An empty record would let a sync clear the extent without copying.
  if (granule_ == 0 || e >= extents_ || !needs_sync(e) || fine_.contains(e) ||
      bits.size() != (extent_size_ / granule_ + 63) / 64 ||
      std::all_of(bits.begin(), bits.end(), [](uint64_t w) { return w == 0; }))
    return false;
  fine_.emplace(e, std::move(bits));
  return true;
}

uint64_t ActiveMap::fine_bytes() const {
  uint64_t n = 0;
  for (const auto& [e, bits] : fine_)
    for (uint64_t w : bits) n += uint64_t(std::popcount(w));
  return n * granule_;
}

void ActiveMap::maybe_clear(uint64_t e) {
  if (needs_sync(e)) return;
  auto it = state_.find(e);
  if (it != state_.end()) {
    if (it->second.inflight > 0 || it->second.in_lru) return;
    state_.erase(it);
  }
  if (is_dirty(e)) clear_bit(e);
  pending_.erase(e);
}

bool ActiveMap::peer_has(uint64_t offset, uint64_t length) const {
  auto [first, last] = extent_range(offset, length);
  for (uint64_t e = first; e <= last; ++e)
    if (needs_sync(e)) return false;
  return true;
}

void ActiveMap::mark_durable(uint64_t seq) {
  durable_seq_ = std::max(durable_seq_, seq);
  std::erase_if(pending_, [&](const auto& kv) { return kv.second <= seq; });
}

void ActiveMap::synced(uint64_t e) {
  set_needs_sync(e, false);
  maybe_clear(e);
}

bool ActiveMap::end_copy(uint64_t e) {
  auto it = copying_.find(e);
  if (it == copying_.end()) return false;
  const bool again = it->second;
  copying_.erase(it);
  return again;
}

bool ActiveMap::may_differ(uint64_t offset) const {
  const uint64_t e = offset / extent_size_;
  if (e >= extents_ || !needs_sync(e)) return false;
  auto it = fine_.find(e);
  if (it == fine_.end()) return true;
  const uint64_t g = (offset - e * extent_size_) / granule_;
  return (it->second[g >> 6] >> (g & 63)) & 1;
}

void ActiveMap::mark_needs_sync(uint64_t e) {
  set_bit(e);
  set_needs_sync(e, true);
  fine_.erase(e);  // whatever it recorded, all of it may differ now
}

void ActiveMap::mark_all_needs_sync() {
  for (uint64_t e = 0; e < extents_; ++e) mark_needs_sync(e);
}

void ActiveMap::reset_clean() {
  for (uint64_t e = next_needs_sync(0); e < extents_; e = next_needs_sync(e + 1)) set_needs_sync(e, false);
  state_.clear();
  lru_.clear();
  pending_.clear();
  for (uint64_t e = 0; e < extents_; ++e)
    if (is_dirty(e)) clear_bit(e);
  ++change_seq_;  // even with nothing to clear: the caller's sync then covers every earlier change
}

std::vector<std::pair<uint64_t, uint64_t>> bitmap_dirty_runs(std::span<const uint8_t> bitmap, uint64_t extents) {
  std::vector<std::pair<uint64_t, uint64_t>> runs;
  uint64_t e = 0;
  while (e < extents) {
    uint8_t byte = bitmap[e >> 3];
    if ((e & 7) == 0 && byte == 0) {
      e += 8;
      continue;
    }
    if ((byte >> (e & 7)) & 1) {
      uint64_t start = e;
      while (e < extents && ((bitmap[e >> 3] >> (e & 7)) & 1)) ++e;
      runs.emplace_back(start, e - 1);
    } else {
      ++e;
    }
  }
  return runs;
}

std::vector<std::pair<uint64_t, uint64_t>> ActiveMap::dirty_runs() const {
  return bitmap_dirty_runs(bitmap_, extents_);
}

}  // namespace hastnbd
