#include "component.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>

#include "hastnbd/config/config.h"
#include "hastnbd/disk/local_disk.h"
#include "hastnbd/disk/metadata.h"
#include "hastnbd/replication/transitions.h"

namespace hastnbd::test {

namespace {
constexpr auto kForever = asio::steady_timer::time_point::max();
constexpr const char* kResource = "r0";
}  // namespace

// ---- FaultDisk

FaultDisk::FaultDisk(asio::io_context& io, BufferPool& pool, std::unique_ptr<Disk> inner)
    : inner_(std::move(inner)), pool_(pool), resume_(io) {}

void FaultDisk::fail(unsigned ops, int err, int count, uint64_t offset, uint64_t length) {
  rules_.push_back(Rule{ops, err, count, offset, length});
}

void FaultDisk::stall() {
  stalled_ = true;
  resume_.expires_at(kForever);  // here, not per waiter: a new expiry cancels the waits
}

void FaultDisk::resume() {
  stalled_ = false;
  resume_.cancel();
}

awaitable<Status> FaultDisk::gate(Op op, uint64_t offset, uint64_t length) {
  while (stalled_) co_await resume_.async_wait(use_nothrow);
  for (auto it = rules_.begin(); it != rules_.end(); ++it) {
    const bool overlaps = op == kFlush || (offset < it->offset + std::min(it->length, UINT64_MAX - it->offset) &&
                                           it->offset < offset + length);
    if (!(it->ops & op) || !overlaps) continue;
    const int err = it->err;
    if (it->count > 0 && --it->count == 0) rules_.erase(it);
    ++counts_.failed;
    co_return Status::Error(err, "injected: " + std::string(std::strerror(err)));
  }
  co_return Status::Ok();
}

awaitable<Result<FaultDisk::Undo>> FaultDisk::save(uint64_t offset, uint64_t length) {
  Undo u{offset, pool_.get(length)};
  if (Status s = co_await inner_->read(offset, u.old); !s.ok()) co_return s;
  co_return std::move(u);
}

awaitable<Status> FaultDisk::read(uint64_t offset, Buffer& out) {
  ++counts_.reads;
  if (Status s = co_await gate(kRead, offset, out.size()); !s.ok()) co_return s;
  co_return co_await inner_->read(offset, out);
}

awaitable<Status> FaultDisk::write(uint64_t offset, const Buffer& data) {
  ++counts_.writes;
  if (Status s = co_await gate(kWrite, offset, data.size()); !s.ok()) co_return s;
  auto undo = co_await save(offset, data.size());
  if (!undo.ok()) co_return undo.status();
  Status s = co_await inner_->write(offset, data);
  if (s.ok()) undo_.push_back(std::move(*undo));
  co_return s;
}

awaitable<Status> FaultDisk::trim(uint64_t offset, uint64_t length) {
  ++counts_.trims;
  if (Status s = co_await gate(kTrim, offset, length); !s.ok()) co_return s;
  auto undo = co_await save(offset, length);
  if (!undo.ok()) co_return undo.status();
  Status s = co_await inner_->trim(offset, length);
  if (s.ok()) undo_.push_back(std::move(*undo));
  co_return s;
}

awaitable<Status> FaultDisk::write_zeroes(uint64_t offset, uint64_t length, bool may_unmap) {
  ++counts_.zeroes;
  if (Status s = co_await gate(kZeroes, offset, length); !s.ok()) co_return s;
  auto undo = co_await save(offset, length);
  if (!undo.ok()) co_return undo.status();
  Status s = co_await inner_->write_zeroes(offset, length, may_unmap);
  if (s.ok()) undo_.push_back(std::move(*undo));
  co_return s;
}

awaitable<Status> FaultDisk::flush() {
  ++counts_.flushes;
  if (Status s = co_await gate(kFlush, 0, 0); !s.ok()) co_return s;
  const size_t covered = undo_.size();  // what completed before the flush started
  Status s = co_await inner_->flush();
  if (s.ok()) undo_.erase(undo_.begin(), undo_.begin() + static_cast<std::ptrdiff_t>(covered));
  co_return s;
}

awaitable<Status> FaultDisk::lose_unflushed() {
  std::vector<Undo> undo = std::move(undo_);
  undo_.clear();
  for (auto it = undo.rbegin(); it != undo.rend(); ++it)
    if (Status s = co_await inner_->write(it->offset, it->old); !s.ok()) co_return s;
  co_return co_await inner_->flush();
}

// ---- FaultLink

struct FaultLink::Pipe {
  PeerConnection::Socket primary, secondary;  // the relay's ends of the two socketpairs
  bool closed = false;
  void close() {
    closed = true;
    error_code ignored;
    primary.close(ignored);
    secondary.close(ignored);
  }
};

PeerConnector FaultLink::connector(std::function<Resource*()> target) {
  return [this, target = std::move(target)]() -> awaitable<Result<PeerConnection::Socket>> {
    while (down_ && !closed_) co_await up_.async_wait(use_nothrow);
    // A connect completes asynchronously, like every Asio operation: the
    // caller has finished what it was doing (a role change) before it does.
    co_await asio::post(io_, asio::use_awaitable);
    if (closed_) co_return Status::Error(ECONNREFUSED, "the link is closed");
    Resource* to = target();
    if (!to) co_return Status::Error(ECONNREFUSED, "the peer is not running");
    asio::local::stream_protocol::socket p0(io_), p1(io_), s0(io_), s1(io_);
    asio::local::connect_pair(p0, p1);
    asio::local::connect_pair(s0, s1);
    if (Status s = to->accept_peer(PeerConnection::Socket(std::move(s1)), "link"); !s.ok()) co_return s;
    auto pipe =
        std::make_shared<Pipe>(Pipe{PeerConnection::Socket(std::move(p1)), PeerConnection::Socket(std::move(s0))});
    if (current_) current_->close();
    current_ = pipe;
    ++connects_;
    asio::co_spawn(io_, relay(pipe, kToSecondary), asio::detached);
    asio::co_spawn(io_, relay(pipe, kToPrimary), asio::detached);
    co_return PeerConnection::Socket(std::move(p0));
  };
}

awaitable<void> FaultLink::relay(std::shared_ptr<Pipe> pipe, Direction d) {
  ++relays_;
  PeerConnection::Socket& from = d == kToSecondary ? pipe->primary : pipe->secondary;
  PeerConnection::Socket& to = d == kToSecondary ? pipe->secondary : pipe->primary;
  std::vector<uint8_t> buf(64 << 10);
  asio::steady_timer wait(io_);
  while (!pipe->closed) {
    auto [ec, n] = co_await from.async_read_some(asio::buffer(buf), use_nothrow);
    if (ec) break;
    while (stalled_ && !pipe->closed) {  // poll: a stalled link is the rare case
      wait.expires_after(std::chrono::milliseconds(10));
      co_await wait.async_wait(use_nothrow);
    }
    if (pipe->closed) break;
    if (int64_t& at = corrupt_at_[d]; at >= 0) {
      if (uint64_t(at) < n) {
        buf[size_t(at)] ^= 0x10;
        at = -1;
      } else {
        at -= int64_t(n);
      }
    }
    auto [wec, written] = co_await asio::async_write(to, asio::buffer(buf.data(), n), use_nothrow);
    if (wec) break;
  }
  pipe->close();
  --relays_;
}

void FaultLink::cut() {
  down_ = true;
  up_.expires_at(kForever);
  if (current_) current_->close();
  current_.reset();
}

void FaultLink::restore() {
  down_ = false;
  up_.cancel();
}

void FaultLink::stall() { stalled_ = true; }
void FaultLink::resume() { stalled_ = false; }
void FaultLink::corrupt(Direction d, uint64_t after) { corrupt_at_[d] = int64_t(after); }

void FaultLink::close() {
  closed_ = true;
  up_.cancel();
  if (current_) current_->close();
  current_.reset();
}

// ---- Node and Pair

std::vector<uint8_t> Node::file_bytes(uint64_t offset, uint64_t length) const {
  std::vector<uint8_t> out(length);
  int fd = ::open((dir / "disk").c_str(), O_RDONLY | O_CLOEXEC);
  REQUIRE(fd >= 0);
  ssize_t n = ::pread(fd, out.data(), length, off_t(offset));
  ::close(fd);
  REQUIRE(n == ssize_t(length));
  return out;
}

std::vector<uint8_t> pattern(uint64_t length, uint8_t seed) {
  std::vector<uint8_t> v(length);
  uint32_t x = 0x9e3779b9u * (seed + 1u);
  for (auto& b : v) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    b = uint8_t(x);
  }
  return v;
}

Pair::Pair(asio::io_context& io, PairOptions options) : link(io), io_(io), options_(std::move(options)) {
  // Under the working directory (the build tree under CTest): O_DIRECT needs
  // a real file system, and Unix socket paths must stay short.
  std::string tmpl = (std::filesystem::current_path() / "cmp.XXXXXX").string();
  REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
  root_ = tmpl;
  a.name = "a";
  b.name = "b";
  for (Node* n : {&a, &b}) {
    n->dir = root_ / n->name;
    std::filesystem::create_directories(n->dir);
    std::ofstream(n->dir / "disk").close();
    std::filesystem::resize_file(n->dir / "disk", options_.size);
  }
  // The link is authenticated as on real nodes (peer/auth.h).
  REQUIRE(write_new_key_file((a.dir / "key").string()).ok());
  if (options_.different_keys) {
    REQUIRE(write_new_key_file((b.dir / "key").string()).ok());
  } else {
    std::filesystem::copy_file(a.dir / "key", b.dir / "key");
    std::filesystem::permissions(b.dir / "key", std::filesystem::perms::owner_read);
  }
}

Pair::~Pair() {
  std::error_code ignored;
  std::filesystem::remove_all(root_, ignored);
}

std::string Pair::yaml() const {
  std::string y = "resources:\n  r0:\n    replication: " + options_.replication +
                  "\n    timeout: 2\n    extent_size: 64KiB\n    keepdirty: 4\n" + options_.extra + "    nodes:\n";
  for (const Node* n : {&a, &b}) {
    const std::string d = n->dir.string();
    // listen/remote are never bound or dialled: the link is a socketpair.
    y += "      " + n->name + ":\n        local: " + d + "/disk\n        run_dir: " + d + "\n        state_dir: " + d +
         "\n        listen: \"127.0.0.1:" + (n == &a ? "1" : "2") +
         "\"\n        remote: \"127.0.0.1:" + (n == &a ? "2" : "1") + "\"\n        psk_file: " + d + "/key\n";
  }
  return y;
}

void Pair::create(Node& n) {
  auto cfg = parse_resource_config(yaml(), "component.yaml", kResource, n.name);
  INFO(cfg.status().message());
  REQUIRE(cfg.ok());
  MetaHeader h = meta::create(cfg->name, options_.size, cfg->extent_size, cfg->keepdirty, random_uuid(),
                              uint64_t(std::time(nullptr)));
  Status s = MetadataFile::create(cfg->meta, h, /*force=*/true);
  INFO(s.message());
  REQUIRE(s.ok());
}

Status Pair::open(Node& n) {
  REQUIRE(!n.resource);
  auto cfg = parse_resource_config(yaml(), "component.yaml", kResource, n.name);
  if (!cfg.ok()) return cfg.status();
  ResourceSeams seams;
  seams.open_disk = [&n](asio::io_context& io, Uring& uring, BufferPool& node_pool,
                         const ResourceConfig& c) -> Result<std::unique_ptr<Disk>> {
    auto local = LocalDisk::open(io, uring, node_pool, c.local, c.size);
    if (!local.ok()) return local.status();
    auto disk = std::make_unique<FaultDisk>(io, node_pool, std::move(*local));
    n.disk = disk.get();
    return std::unique_ptr<Disk>(std::move(disk));
  };
  seams.connect = link.connector([this, &n] { return other(n).resource.get(); });
  seams.peer_listener = false;
  auto r = Resource::open(io_, std::move(*cfg), std::move(seams));
  if (!r.ok()) return r.status();
  if (Status s = (*r)->start(); !s.ok()) return s;
  n.resource = std::move(*r);
  return Status::Ok();
}

awaitable<void> Pair::close(Node& n) {
  if (!n.resource) co_return;
  co_await n.r().shutdown();
  // The coroutines that shutdown() ended (links, listeners, timers) leave the
  // loop within a few turns; the resource must outlive them.
  asio::steady_timer t(io_);
  t.expires_after(std::chrono::milliseconds(100));
  co_await t.async_wait(use_nothrow);
  n.resource.reset();
  n.disk = nullptr;
}

awaitable<Status> Pair::write(Node& p, uint64_t offset, std::vector<uint8_t> bytes, bool fua) {
  Buffer buf = pool.get(bytes.size());
  std::memcpy(buf.data(), bytes.data(), bytes.size());
  co_return co_await p.r().backend().write(offset, buf, fua);
}

awaitable<Result<std::vector<uint8_t>>> Pair::read(Node& p, uint64_t offset, uint64_t length) {
  Buffer buf = pool.get(length);
  if (Status s = co_await p.r().backend().read(offset, buf); !s.ok()) co_return s;
  co_return std::vector<uint8_t>(buf.data(), buf.data() + length);
}

awaitable<Status> Pair::flush(Node& p) { co_return co_await p.r().backend().flush(); }

awaitable<bool> Pair::until(const std::function<bool()>& done, std::chrono::milliseconds limit,
                            const std::string& what) {
  const auto end = std::chrono::steady_clock::now() + limit;
  asio::steady_timer t(io_);
  while (!done()) {
    if (std::chrono::steady_clock::now() > end) {
      UNSCOPED_INFO("a: " << (a.resource ? a.status().dump() : "closed"));
      UNSCOPED_INFO("b: " << (b.resource ? b.status().dump() : "closed"));
      FAIL_CHECK("timed out after " << limit.count() << " ms waiting for " << what);
      co_return false;
    }
    t.expires_after(std::chrono::milliseconds(10));
    co_await t.async_wait(use_nothrow);
  }
  co_return true;
}

awaitable<bool> Pair::connected(std::chrono::milliseconds limit) {
  co_return co_await until(
      [this] {
        for (Node* n : {&a, &b})
          if (!n->resource || n->status()["peer"]["state"] != "connected") return false;
        return true;
      },
      limit, "both nodes connected");
}

awaitable<bool> Pair::in_sync(Node& p, std::chrono::milliseconds limit) {
  co_return co_await until(
      [this, &p] { return p.resource && other(p).resource && p.status()["in_sync"] && other(p).status()["in_sync"]; },
      limit, "the pair in sync, " + p.name + " primary");
}

bool Pair::disks_equal() const { return a.file_bytes(0, options_.size) == b.file_bytes(0, options_.size); }

awaitable<void> Pair::shutdown() {
  for (Node* n : {&a, &b}) co_await close(*n);
  link.close();
  asio::steady_timer t(io_);
  while (!link.idle()) {
    t.expires_after(std::chrono::milliseconds(10));
    co_await t.async_wait(use_nothrow);
  }
}

void run_pair(PairOptions options, const std::function<awaitable<void>(Pair&)>& body, std::chrono::seconds limit) {
  auto io = std::make_unique<asio::io_context>();
  auto pair = std::make_unique<Pair>(*io, std::move(options));
  std::exception_ptr failure;
  bool done = false;
  asio::co_spawn(
      *io,
      [&]() -> awaitable<void> {
        try {
          co_await body(*pair);
        } catch (...) {
          failure = std::current_exception();
        }
        co_await pair->shutdown();
        done = true;
      },
      asio::detached);
  io->run_for(limit);
  if (!done || !io->stopped()) {
    // Something still runs on the loop and may point into the pair: leak
    // both rather than free memory a pending coroutine will touch.
    FAIL_CHECK((done ? "work still pending on the loop after shutdown" : "the test did not finish in time"));
    (void)pair.release();
    (void)io.release();
    return;
  }
  pair.reset();
  io.reset();
  if (failure) std::rethrow_exception(failure);
}

}  // namespace hastnbd::test
