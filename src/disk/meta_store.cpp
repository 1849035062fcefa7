#include "hastnbd/disk/meta_store.h"

namespace hastnbd {

MetaStore::MetaStore(asio::io_context& io, Uring& uring, std::unique_ptr<MetadataFile> file, unsigned keepdirty)
    : uring_(uring),
      file_(std::move(file)),
      map_(file_->bitmap(), file_->header().data_size, file_->header().extent_size, keepdirty),
      changed_(io.get_executor()) {}

awaitable<Status> MetaStore::update(Transition transition) {
  while (updating_) co_await changed_.wait();
  MetaHeader next = transition(file_->header());
  if (next == file_->header()) co_return Status::Ok();
  updating_ = true;
  Status s = co_await file_->write_header(uring_, std::move(next));
  updating_ = false;
  changed_.notify_all();
  co_return s;
}

awaitable<Status> MetaStore::bitmap_durable(uint64_t ticket) {
  while (map_.durable_seq() < ticket) {
    if (syncing_) {
      co_await changed_.wait();
      continue;
    }
    syncing_ = true;
    const uint64_t target = map_.change_seq();
    Status s = co_await file_->sync_bitmap(uring_);
    syncing_ = false;
    ++bitmap_syncs_;
    if (s.ok()) map_.mark_durable(target);
    changed_.notify_all();
    if (!s.ok()) co_return s;
  }
  co_return Status::Ok();
}

}  // namespace hastnbd
