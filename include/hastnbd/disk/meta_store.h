// The metadata of a running resource: the file (header and mapped bitmap),
// the activemap over that bitmap, and the two ways they reach the disk.
//
//  - update(): the header changes only through a transition (old header ->
//    new header, replication/transitions.h). Updates run one at a time in the
//    order asked; each transition sees the header the previous one left, so
//    concurrent updates compose instead of overwriting each other. A
//    transition that changes nothing writes nothing.
//  - bitmap_durable(): the one path that makes bitmap changes durable. It
//    coalesces: one fdatasync at a time, covering every change made before it
//    started; callers wait for the first sync whose start saw their change.
//
// Loop thread only; the Uring outlives it.
#pragma once

#include <functional>
#include <memory>

#include "hastnbd/base/asio.h"
#include "hastnbd/base/status.h"
#include "hastnbd/disk/activemap.h"
#include "hastnbd/disk/metadata.h"
#include "hastnbd/disk/uring.h"

namespace hastnbd {

class MetaStore {
 public:
  using Transition = std::function<MetaHeader(const MetaHeader&)>;

  MetaStore(asio::io_context& io, Uring& uring, std::unique_ptr<MetadataFile> file, unsigned keepdirty);

  const MetaHeader& header() const { return file_->header(); }
  const MetadataFile& file() const { return *file_; }
  ActiveMap& map() { return map_; }
  const ActiveMap& map() const { return map_; }

  awaitable<Status> update(Transition transition);

  // Every bitmap change with a sequence <= `ticket` (ActiveMap::write_start,
  // change_seq) is durable when this returns ok.
  awaitable<Status> bitmap_durable(uint64_t ticket);
  // Every change made so far.
  awaitable<Status> bitmap_durable() { return bitmap_durable(map_.change_seq()); }
  uint64_t bitmap_syncs() const { return bitmap_syncs_; }

 private:
  Uring& uring_;
  std::unique_ptr<MetadataFile> file_;
  ActiveMap map_;
  bool syncing_ = false;
  bool updating_ = false;
  uint64_t bitmap_syncs_ = 0;
  AsyncCondition changed_;
};

}  // namespace hastnbd
