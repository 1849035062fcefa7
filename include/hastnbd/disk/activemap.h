// Which extents are dirty, and when a dirty bit may be cleared.
//
// The bitmap memory is borrowed (the mmap'd part of the metadata file, or a
// vector in tests). Rules (docs/design.md, "The write path"):
//  - write_start() sets the bits of every extent a write touches. A bit that
//    goes 0 -> 1 must be durable before the data write is issued: the call
//    returns a ticket (the bitmap change sequence) the caller waits for with
//    durable_seq() >= ticket, after calling mark_durable() from its flusher
//    (MetaStore::bitmap_durable). Every change to the bitmap, a bit cleared
//    too, advances the sequence, so a sync up to change_seq() covers all.
//  - A bit is cleared only when no write to the extent is in flight, every
//    write to it was confirmed by the secondary, and the extent has left the
//    keepdirty set (LRU of the N most recently written extents).
//  - An extent with an unconfirmed write (degraded mode, or dirty when the map
//    was loaded, or dirty in the peer's map) "needs sync": it stays dirty
//    until the syncer calls synced().
//  - Fine tracking (set_granule, docs/design.md "Fine-grained tracking"): an
//    extent that comes to need a sync through known ranges (unconfirmed
//    writes, a verify's mismatches) gets a fine record, one bit per
//    granule, of what may differ; later such ranges add to it. An extent
//    marked for an unknown reason (dirty at load, the peer's map, a full
//    sync: mark_needs_sync) has no record: all of it may differ. A record
//    ends when the extent is synced.
// Pure: no I/O, single-threaded.
#pragma once

#include <cstdint>
#include <list>
#include <optional>
#include <span>
#include <unordered_map>
#include <utility>
#include <vector>

namespace hastnbd {

class ActiveMap {
 public:
  ActiveMap(std::span<uint8_t> bitmap, uint64_t data_size, uint64_t extent_size, unsigned keepdirty);

  uint64_t extents() const { return extents_; }
  uint64_t extent_size() const { return extent_size_; }
  // First and last extent touched by [offset, offset+length), length > 0.
  std::pair<uint64_t, uint64_t> extent_range(uint64_t offset, uint64_t length) const;

  // A write to [offset, offset+length) begins. Returns 0 if the bits it needs
  // are already durable, else the change sequence to wait for.
  uint64_t write_start(uint64_t offset, uint64_t length);
  // That write ended; `confirmed` = the secondary has it too.
  void write_done(uint64_t offset, uint64_t length, bool confirmed);

  // The flusher's side: the current change sequence (take it before syncing),
  // then mark_durable(seq) once the bitmap sync completed.
  uint64_t change_seq() const { return change_seq_; }
  uint64_t durable_seq() const { return durable_seq_; }
  void mark_durable(uint64_t seq);

  // The syncer copied extent e: it is clean on both sides unless written since.
  void synced(uint64_t extent);
  // Around a copy of extent e: end_copy() says whether e was marked as
  // needing sync again while it ran (a write the secondary failed with the
  // link up), in which case the copy must not clear it (synced).
  void begin_copy(uint64_t extent) { copying_[extent] = false; }
  bool end_copy(uint64_t extent);
  // Whether the byte at `offset` is known to differ on the peer, or may:
  // its extent needs a sync and either has no fine record or the record
  // holds its granule.
  bool may_differ(uint64_t offset) const;
  bool has_record(uint64_t extent) const { return fine_.contains(extent); }
  // Mark an extent as needing sync, all of it (e.g. dirty in the peer's map):
  // a fine record it had is dropped.
  void mark_needs_sync(uint64_t extent);
  // These bytes may differ on the peer: their extents need sync, with a fine
  // record of the granules where the extent had none and did not need sync,
  // added to the record where it had one (a verify's mismatches).
  void mark_range(uint64_t offset, uint64_t length);

  // Fine tracking: bytes per bit of a record, a power of two from 4096 to
  // the extent size; 0 (the default) records nothing.
  void set_granule(uint64_t granule);
  uint64_t granule() const { return granule_; }
  // The byte ranges of extent e that may differ, merged and in order, when
  // it has a fine record; nullopt: the whole extent.
  std::optional<std::vector<std::pair<uint64_t, uint64_t>>> fine_ranges(uint64_t extent) const;
  // The records, for saving at a clean stop (extent -> granule bits), and
  // taking one back at start: only for an extent that needs sync and has
  // none; a record of the wrong size is refused (false).
  const std::unordered_map<uint64_t, std::vector<uint64_t>>& fine_records() const { return fine_; }
  bool restore_fine(uint64_t extent, std::vector<uint64_t> bits);
  uint64_t fine_bytes() const;  // granules recorded, in bytes
  void mark_all_needs_sync();
  // Whether the two copies of the extent may differ, and how many may.
  bool needs_sync(uint64_t extent) const { return (needs_sync_[extent >> 6] >> (extent & 63)) & 1; }
  uint64_t needs_sync_count() const { return needs_sync_count_; }
  // The first extent >= from that needs sync, or extents() if none.
  uint64_t next_needs_sync(uint64_t from) const;
  // Everything is clean on both sides (a secondary told that a sync covering
  // its whole map completed, or metadata discarded): no bit, no state. Only
  // when no write is in flight.
  void reset_clean();

  // Whether the secondary holds every completed write to these extents (no
  // unconfirmed write, nothing dirty from before): it may serve their reads.
  bool peer_has(uint64_t offset, uint64_t length) const;

  bool is_dirty(uint64_t extent) const { return (bitmap_[extent >> 3] >> (extent & 7)) & 1; }
  uint64_t dirty_count() const { return dirty_count_; }
  // Dirty extents as [first, last] runs.
  std::vector<std::pair<uint64_t, uint64_t>> dirty_runs() const;
  size_t keepdirty_size() const { return lru_.size(); }

 private:
  struct State {
    uint32_t inflight = 0;
    bool in_lru = false;
    std::list<uint64_t>::iterator lru_pos;
  };
  void set_bit(uint64_t e);  // if clear: set, with a pending change sequence
  void clear_bit(uint64_t e);
  void maybe_clear(uint64_t e);
  void touch_lru(uint64_t e);
  void set_needs_sync(uint64_t e, bool v);
  void note_range(uint64_t e, uint64_t offset, uint64_t length, bool was_needed);

  std::span<uint8_t> bitmap_;
  uint64_t data_size_;
  uint64_t extent_size_;
  uint64_t extents_;
  unsigned keepdirty_;
  uint64_t dirty_count_ = 0;
  uint64_t change_seq_ = 0;
  uint64_t durable_seq_ = 0;
  std::unordered_map<uint64_t, uint64_t> pending_;  // extent -> seq that set it, until durable
  std::unordered_map<uint64_t, State> state_;       // extents written in flight or in the LRU
  std::vector<uint64_t> needs_sync_;                // one bit per extent
  uint64_t needs_sync_count_ = 0;
  std::list<uint64_t> lru_;                         // front = most recently written
  uint64_t granule_ = 0;
  std::unordered_map<uint64_t, bool> copying_;  // extents being copied -> marked again meanwhile
  std::unordered_map<uint64_t, std::vector<uint64_t>> fine_;  // extent -> one bit per granule
};

// Dirty-run helpers for the bitmap alone (used by dump on a file at rest).
std::vector<std::pair<uint64_t, uint64_t>> bitmap_dirty_runs(std::span<const uint8_t> bitmap, uint64_t extents);

}  // namespace hastnbd
