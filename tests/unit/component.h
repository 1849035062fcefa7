// The component-test harness (docs/design.md, "Tests"): two real Resources,
// a primary and a secondary, on one io_context, joined by a socketpair link
// instead of TCP, each on a real file-backed LocalDisk wrapped in a
// fault-injecting disk. The model is LevelDB's fault-injection test: the
// faults are injected below the code under test, and what is checked is what
// a user would see (data on each disk, status, refused connections).
//
// Everything runs on the loop thread; a test is one coroutine driven by
// run_test(), which fails the test if it does not finish in time or leaves
// work behind.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "hastnbd/base/asio.h"
#include "hastnbd/base/buffer.h"
#include "hastnbd/base/status.h"
#include "hastnbd/daemon/resource.h"
#include "hastnbd/disk/disk.h"

namespace hastnbd::test {

// A Disk in front of another that fails, stalls or forgets on request.
class FaultDisk : public Disk {
 public:
  enum Op : unsigned { kRead = 1, kWrite = 2, kFlush = 4, kTrim = 8, kZeroes = 16, kModify = 2 | 8 | 16, kAny = 31 };

  FaultDisk(asio::io_context& io, BufferPool& pool, std::unique_ptr<Disk> inner);

  uint64_t size() const override { return inner_->size(); }
  uint32_t block_size() const override { return inner_->block_size(); }
  bool is_block_device() const override { return false; }
  const std::string& path() const override { return inner_->path(); }

  awaitable<Status> read(uint64_t offset, Buffer& out) override;
  awaitable<Status> write(uint64_t offset, const Buffer& data) override;
  awaitable<Status> flush() override;
  awaitable<Status> trim(uint64_t offset, uint64_t length) override;
  awaitable<Status> write_zeroes(uint64_t offset, uint64_t length, bool may_unmap) override;

  // The next `count` operations of the kinds in `ops` that touch
  // [offset, offset + length) fail with `err` without reaching the disk
  // (count < 0: every one until heal()).
  void fail(unsigned ops, int err, int count = -1, uint64_t offset = 0, uint64_t length = UINT64_MAX);
  void heal() { rules_.clear(); }
  // Operations wait before reaching the disk until resume().
  void stall();
  void resume();
  // Power loss: every modification not covered by a completed flush is
  // undone, newest first, and the disk reads as it would after a reboot.
  // (Overlapping writes in flight together are undone in completion order;
  // the block layer promises nothing about their result either.)
  awaitable<Status> lose_unflushed();
  size_t unflushed() const { return undo_.size(); }

  struct Counts {
    uint64_t reads = 0, writes = 0, flushes = 0, trims = 0, zeroes = 0, failed = 0;
  };
  const Counts& counts() const { return counts_; }

 private:
  struct Rule {
    unsigned ops;
    int err;
    int count;
    uint64_t offset, length;
  };
  struct Undo {
    uint64_t offset;
    Buffer old;
  };
  // Waits while stalled, then the injected error for this operation, if any.
  awaitable<Status> gate(Op op, uint64_t offset, uint64_t length);
  // Saves what [offset, offset + length) holds now, for lose_unflushed().
  awaitable<Result<Undo>> save(uint64_t offset, uint64_t length);

  std::unique_ptr<Disk> inner_;
  BufferPool& pool_;
  asio::steady_timer resume_;
  bool stalled_ = false;
  std::vector<Rule> rules_;
  std::vector<Undo> undo_;  // completed modifications, oldest first
  Counts counts_;
};

// The link between the two nodes: each connect of the primary's replicator
// gets a socketpair whose far end is relayed to the other node's secondary
// side, so the link can be cut, stalled or made to corrupt a byte.
class FaultLink {
 public:
  enum Direction { kToSecondary, kToPrimary };

  explicit FaultLink(asio::io_context& io) : io_(io), up_(io) {}

  // The connector of the node that connects to `target`. While the link is
  // down, a connect waits until it comes up (or the link is closed).
  PeerConnector connector(std::function<Resource*()> target);

  void cut();      // ends the current connection (both sides see it) and keeps the link down
  void restore();  // the link comes up; a waiting connect proceeds
  void stall();    // bytes stop moving, in both directions, until resume()
  void resume();
  // Flips one bit of the byte `after` bytes from now in that direction.
  void corrupt(Direction d, uint64_t after);
  void close();  // for good: waiting connects fail, the relays end

  uint64_t connects() const { return connects_; }
  bool idle() const { return relays_ == 0; }

 private:
  struct Pipe;
  awaitable<void> relay(std::shared_ptr<Pipe> pipe, Direction d);

  asio::io_context& io_;
  asio::steady_timer up_;  // cancelled when the link comes up or closes
  bool down_ = false, closed_ = false, stalled_ = false;
  uint64_t connects_ = 0;
  int relays_ = 0;
  std::shared_ptr<Pipe> current_;
  int64_t corrupt_at_[2] = {-1, -1};  // bytes left before the bit flip, per direction
};

// One node: its files, its disk, its Resource.
struct Node {
  std::string name;
  std::filesystem::path dir;
  FaultDisk* disk = nullptr;  // owned by the resource
  std::unique_ptr<Resource> resource;

  Resource& r() { return *resource; }
  nlohmann::json status() const { return resource->status(); }
  // What the backing file holds, read with ordinary I/O.
  std::vector<uint8_t> file_bytes(uint64_t offset, uint64_t length) const;
};

struct PairOptions {
  std::string replication = "fullsync";
  uint64_t size = 8 << 20;
  std::string extra;  // more YAML for the resource (indented by 4)
  // Each node has a psk_file; false: the same key on both, true: b's differs.
  bool different_keys = false;
};

// Two nodes "a" and "b" of resource "r0" under a new directory of the
// build tree (not tmpfs: the disks are opened O_DIRECT).
class Pair {
 public:
  Pair(asio::io_context& io, PairOptions options = {});
  ~Pair();

  Node a, b;
  FaultLink link;
  BufferPool pool;

  Node& other(Node& n) { return &n == &a ? b : a; }

  // Fresh metadata on a node (hastnbd-ctl create), then its resource opened
  // and started (role init). reopen() keeps the metadata.
  void create(Node& n);
  Status open(Node& n);
  awaitable<void> close(Node& n);  // Resource::shutdown, then gone
  awaitable<Status> role(Node& n, Role role, bool force = false) { return n.r().change_role(role, force); }

  // Primary `p`'s view through its NBD export.
  awaitable<Status> write(Node& p, uint64_t offset, std::vector<uint8_t> bytes, bool fua = false);
  awaitable<Result<std::vector<uint8_t>>> read(Node& p, uint64_t offset, uint64_t length);
  awaitable<Status> flush(Node& p);

  // Polls until `done()` holds, or fails the test after `limit`.
  awaitable<bool> until(const std::function<bool()>& done, std::chrono::milliseconds limit, const std::string& what);
  awaitable<bool> connected(std::chrono::milliseconds limit = std::chrono::seconds(10));
  awaitable<bool> in_sync(Node& p, std::chrono::milliseconds limit = std::chrono::seconds(20));

  // Both backing files equal over the exported size.
  bool disks_equal() const;

  awaitable<void> shutdown();  // every open node closed, the link closed

 private:
  std::string yaml() const;
  asio::io_context& io_;
  PairOptions options_;
  std::filesystem::path root_;
};

// Runs `body` with a new Pair on a new io_context, then shuts the pair
// down (also when `body` failed). The test fails if that has not finished
// after `limit` or leaves work on the loop.
void run_pair(PairOptions options, const std::function<awaitable<void>(Pair&)>& body,
              std::chrono::seconds limit = std::chrono::seconds(60));

std::vector<uint8_t> pattern(uint64_t length, uint8_t seed);

}  // namespace hastnbd::test
