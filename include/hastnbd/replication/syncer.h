// Background resynchronisation on the primary (docs/design.md, "Synchronisation").
//
// When the link comes up, the handshake's decision (sync_decision.h) becomes
// a plan: the extents to copy (everything for a full sync, else the union of
// both nodes' dirty maps) are marked "needs sync" in the activemap and made
// durable, the direction is written into the metadata header, and extents are
// copied one by one while the primary serves I/O:
//  - to the peer: read locally, send as RESYNC WRITE records;
//  - from the peer: READ them from the secondary, write locally; until an
//    extent is copied the local copy is stale, so reads of it go to the peer
//    (WritePath::stale: the header says this node is the sync target, which
//    the handshake recorded before the link came up).
// Each copy holds the extent exclusively in the write path's range lock while it
// reads and queues the data, so an application write to the extent is either
// entirely before the copy (and in it) or after it (and after it on the wire):
// it never loses to the copy.
// A sync that is not full compares first (`sync_compare`, and a peer with the
// HASH feature): the target's hashes of the chunk (HASH, 4 KiB blocks) against
// the source's, all under the same lock, and only the blocks that differ are
// copied; progress counts the bytes compared and copied. A bit clears when its copy is confirmed, so an
// interrupted sync resumes where it stopped. When nothing is left, SYNC_DONE
// tells the secondary, and both store the other's localcnt as remotecnt.
// Loop thread only.
#pragma once

#include <chrono>
#include <deque>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "hastnbd/base/asio.h"
#include "hastnbd/base/buffer.h"
#include "hastnbd/base/pacer.h"
#include "hastnbd/base/status.h"
#include "hastnbd/config/config.h"
#include "hastnbd/disk/disk.h"
#include "hastnbd/disk/meta_store.h"
#include "hastnbd/replication/replicator.h"
#include "hastnbd/replication/sync_progress.h"

namespace hastnbd {

class WritePath;

struct SyncPlan {
  bool full = false;
  bool from_peer = false;
  uint64_t peer_localcnt = 0;  // the secondary's localcnt as the connect left it: our remotecnt at the end
  std::vector<uint8_t> peer_map;  // the secondary's dirty bitmap from its HELLO
};

class Syncer {
 public:
  Syncer(asio::io_context& io, BufferPool& pool, const ResourceConfig& config, Disk& disk, MetaStore& store,
         WritePath& write_path, Replicator& replicator);

  // The link came up with this plan: mark the work now (synchronously, before
  // any other request runs) and copy in the background.
  void start(SyncPlan plan);
  // The link went down (or the role changes): the copy loop ends at its next
  // step; the bits not yet cleared stay for the next connect.
  void interrupt(const std::string& why);
  awaitable<void> stop();  // interrupt and wait for the loop to end

  // Also from start() until the run takes over: a plan is in place.
  bool running() const { return running_ || starting_; }
  const SyncProgress& progress() const { return progress_; }

  // rate in bytes/s, 0 = unlimited (SIGHUP may change it).
  void set_rate(uint64_t rate) { pacer_.set_rate(rate); }

  std::function<void(bool from_peer, uint64_t total_bytes)> on_start;
  std::function<void(uint64_t copied, uint64_t compared)> on_done;
  std::function<void(const std::string& why)> on_interrupted;

 private:
  awaitable<void> run(uint64_t run_id, SyncPlan plan);
  awaitable<Status> copy_extent(uint64_t run_id, uint64_t extent, bool from_peer, bool compare);
  // One chunk compared by hashes; the blocks that differ are copied
  // (to the peer: queued into `recs`). The caller holds the chunk's lock.
  awaitable<Status> compare_chunk(uint64_t pos, uint32_t n, bool from_peer,
                                  std::vector<std::shared_ptr<Record>>& recs);
  awaitable<Status> finish(uint64_t peer_localcnt);
  uint64_t extent_bytes(uint64_t e) const;
  bool current(uint64_t run_id) const { return run_id == run_id_ && replicator_.connected(); }

  asio::io_context& io_;
  BufferPool& pool_;
  const ResourceConfig& config_;
  Disk& disk_;
  MetaStore& store_;
  ActiveMap& map_;
  WritePath& write_path_;
  Replicator& replicator_;
  Pacer pacer_;
  uint64_t run_id_ = 0;
  bool running_ = false;
  bool starting_ = false;  // start() called, run() not yet running
  uint64_t starting_run_ = 0;  // the run that clears starting_
  uint64_t copies_in_flight_ = 0;
  std::vector<uint64_t> in_flight_;  // extents being copied
  Status failure_;                   // why the current run gave up
  SyncProgress progress_;
  AsyncCondition changed_;
};

}  // namespace hastnbd
