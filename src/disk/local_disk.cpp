#include "hastnbd/disk/local_disk.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <spdlog/spdlog.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>

namespace hastnbd {

namespace {

constexpr size_t kZeroChunk = 1 << 20;  // fallback zeroing writes this much at a time
constexpr size_t kFileHandles = 64;      // concurrent O_DIRECT operations (see Handle)

std::string errstr(int err) { return std::strerror(err); }

// The smallest offset/length alignment O_DIRECT accepts on this file.
uint32_t probe_direct_alignment(int fd, bool is_block_device) {
  if (is_block_device) {
    int ssz = 0;
    if (::ioctl(fd, BLKSSZGET, &ssz) == 0 && ssz >= 512) return uint32_t(ssz);
    return 4096;
  }
#ifdef STATX_DIOALIGN
  struct statx stx {};
  if (::statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &stx) == 0 && (stx.stx_mask & STATX_DIOALIGN) &&
      stx.stx_dio_offset_align >= 512)
    return std::max<uint32_t>(stx.stx_dio_offset_align, 512);
#endif
  // Ask the file system: a 512-byte direct read at offset 512 is refused with
  // EINVAL when it needs more. (This runs once at open, before the loop.)
  void* p = nullptr;
  if (posix_memalign(&p, kBufferAlign, 4096) != 0) return 4096;
  ssize_t n = ::pread(fd, p, 512, 512);
  std::free(p);
  return (n < 0 && errno == EINVAL) ? 4096 : 512;
}

}  // namespace

LocalDisk::LocalDisk(asio::io_context& io, Uring& uring, BufferPool& pool)
    : uring_(uring), pool_(pool), lock_(io.get_executor()) {}

LocalDisk::~LocalDisk() {
  if (handles_.empty() && fd_ >= 0) ::close(fd_);
}  // otherwise the handles close their descriptors, fd_ among them

// Holds a handle busy for the duration of one operation.
class LocalDisk::HandleLease {
 public:
  explicit HandleLease(Handle& h) : h_(h) { ++h_.busy; }
  ~HandleLease() { --h_.busy; }
  asio::random_access_file& file() { return h_.file; }

 private:
  Handle& h_;
};

LocalDisk::Handle& LocalDisk::pick_handle() {
  // Prefer an idle handle, scanning from where the last search stopped.
  size_t best = next_handle_ % handles_.size();
  for (size_t i = 0; i < handles_.size(); ++i) {
    size_t k = (next_handle_ + i) % handles_.size();
    if (handles_[k]->busy == 0) {
      best = k;
      break;
    }
    if (handles_[k]->busy < handles_[best]->busy) best = k;
  }
  next_handle_ = best + 1;
  return *handles_[best];
}

Result<std::unique_ptr<LocalDisk>> LocalDisk::open(asio::io_context& io, Uring& uring, BufferPool& pool,
                                                   const std::string& path, std::optional<uint64_t> size) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0)
    return Status::Error(errno, "local device " + path + ": " + errstr(errno));
  bool blk = S_ISBLK(st.st_mode);
  if (!blk && !S_ISREG(st.st_mode))
    return Status::Error(EINVAL, "local device " + path + ": not a block device or regular file");
  int flags = O_RDWR | O_DIRECT | O_CLOEXEC | (blk ? O_EXCL : 0);
  int fd = ::open(path.c_str(), flags);
  if (fd < 0) {
    int err = errno;
    std::string hint = err == EBUSY ? " (in use: mounted, or held by another process?)" : "";
    return Status::Error(err, "local device " + path + ": open O_DIRECT: " + errstr(err) + hint);
  }
  std::unique_ptr<LocalDisk> d(new LocalDisk(io, uring, pool));
  d->fd_ = fd;
  for (size_t i = 0; i < kFileHandles; ++i) {
    int hfd = i == 0 ? fd : ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (hfd < 0) return Status::Error(errno, "local device " + path + ": dup: " + errstr(errno));
    auto h = std::make_unique<Handle>(io);
    error_code ec;
    h->file.assign(hfd, ec);
    if (ec) {
      ::close(hfd);
      return Status::Error(ec.value(), "local device " + path + ": " + ec.message());
    }
    d->handles_.push_back(std::move(h));
  }
  d->path_ = path;
  d->is_block_device_ = blk;
  uint64_t device_size = uint64_t(st.st_size);
  if (blk && ::ioctl(fd, BLKGETSIZE64, &device_size) != 0)
    return Status::Error(errno, "local device " + path + ": BLKGETSIZE64: " + errstr(errno));
  d->block_size_ = probe_direct_alignment(fd, blk);
  d->size_ = size.value_or(device_size);
  if (d->size_ > device_size)
    return Status::Error(ENOSPC, "local device " + path + " holds " + std::to_string(device_size) +
                                     " bytes, less than the configured size " + std::to_string(d->size_));
  if (d->size_ == 0) return Status::Error(EINVAL, "local device " + path + " is empty (size 0)");
  if (d->size_ % d->block_size_ != 0)
    return Status::Error(EINVAL, "local device " + path + ": size " + std::to_string(d->size_) +
                                     " is not a multiple of its block size " + std::to_string(d->block_size_));
  return d;
}

Status LocalDisk::io_error(const char* what, uint64_t offset, uint64_t length, int err) const {
  return Status::Error(err, std::string(what) + " " + path_ + " at " + std::to_string(offset) + "+" +
                                std::to_string(length) + ": " + errstr(err));
}

awaitable<Status> LocalDisk::read_aligned(uint64_t offset, uint8_t* dst, size_t length) {
  HandleLease lease(pick_handle());
  auto [ec, n] = co_await asio::async_read_at(lease.file(), offset, asio::buffer(dst, length), large_transfers, use_nothrow);
  if (ec == asio::error::eof) co_return io_error("short read from", offset, length, EIO);
  if (ec) co_return io_error("read from", offset, length, ec.value());
  co_return Status::Ok();
}

awaitable<Status> LocalDisk::write_aligned(uint64_t offset, const uint8_t* src, size_t length) {
  HandleLease lease(pick_handle());
  auto [ec, n] = co_await asio::async_write_at(lease.file(), offset, asio::buffer(src, length), large_transfers, use_nothrow);
  if (ec) co_return io_error("write to", offset, length, ec.value());
  co_return Status::Ok();
}

awaitable<Status> LocalDisk::read(uint64_t offset, Buffer& out) {
  size_t length = out.size();
  if (aligned(offset, length)) co_return co_await read_aligned(offset, out.data(), length);
  uint64_t start = offset & ~uint64_t(block_size_ - 1);
  uint64_t end = (offset + length + block_size_ - 1) & ~uint64_t(block_size_ - 1);
  Buffer tmp = pool_.get(end - start);
  Status s = co_await read_aligned(start, tmp.data(), tmp.size());
  if (s.ok()) std::memcpy(out.data(), tmp.data() + (offset - start), length);
  co_return s;
}

awaitable<Status> LocalDisk::write(uint64_t offset, const Buffer& data) {
  if (!aligned(offset, data.size())) co_return co_await write_unaligned(offset, data.data(), data.size());
  auto guard = co_await lock_.lock(offset, offset + data.size(), /*exclusive=*/false);
  co_return co_await write_aligned(offset, data.data(), data.size());
}

awaitable<Status> LocalDisk::write_unaligned(uint64_t offset, const uint8_t* src, size_t length) {
  const uint64_t mask = block_size_ - 1;
  uint64_t start = offset & ~mask;
  uint64_t end = (offset + length + mask) & ~mask;
  // Exclusive over the whole expanded range: another write landing on a
  // partial block between our read and our write would be silently undone.
  auto guard = co_await lock_.lock(start, end, /*exclusive=*/true);
  Buffer tmp = pool_.get(end - start);
  if (offset != start) {
    Status s = co_await read_aligned(start, tmp.data(), block_size_);
    if (!s.ok()) co_return s;
  }
  uint64_t tail = end - block_size_;
  if ((offset + length) != end && (tail != start || offset == start)) {
    Status s = co_await read_aligned(tail, tmp.data() + (tail - start), block_size_);
    if (!s.ok()) co_return s;
  }
  std::memcpy(tmp.data() + (offset - start), src, length);
  co_return co_await write_aligned(start, tmp.data(), tmp.size());
}

awaitable<Status> LocalDisk::flush() {
  int rc = co_await uring_.fdatasync(fd_);
  if (rc < 0) co_return Status::Error(-rc, "fdatasync " + path_ + ": " + errstr(-rc));
  co_return Status::Ok();
}

awaitable<Status> LocalDisk::trim(uint64_t offset, uint64_t length) {
  const uint64_t mask = block_size_ - 1;
  uint64_t start = (offset + mask) & ~mask;
  uint64_t end = (offset + length) & ~mask;
  if (end <= start) co_return Status::Ok();
  auto guard = co_await lock_.lock(start, end, /*exclusive=*/false);
  // A hole in a file, or on a device an unmapping write-zeroes (the kernel's
  // fallocate on a block device): afterwards the range reads as zeroes on
  // every replica alike. A device that cannot do that has simply kept the
  // data: TRIM is advisory.
  int rc = co_await uring_.fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, start, end - start);
  if (rc < 0 && rc != -EOPNOTSUPP && rc != -EINVAL)
    co_return io_error("discard on", start, end - start, -rc);
  co_return Status::Ok();
}

awaitable<Status> LocalDisk::write_zeroes(uint64_t offset, uint64_t length, bool may_unmap) {
  const uint64_t mask = block_size_ - 1;
  uint64_t start = (offset + mask) & ~mask;
  uint64_t end = (offset + length) & ~mask;
  if (end <= start) co_return co_await zero_by_writing(offset, length);
  if (offset < start) {
    Status s = co_await zero_by_writing(offset, start - offset);
    if (!s.ok()) co_return s;
  }
  if (offset + length > end) {
    Status s = co_await zero_by_writing(end, offset + length - end);
    if (!s.ok()) co_return s;
  }
  int rc;
  {
    auto guard = co_await lock_.lock(start, end, /*exclusive=*/false);
    int mode = (may_unmap ? FALLOC_FL_PUNCH_HOLE : FALLOC_FL_ZERO_RANGE) | FALLOC_FL_KEEP_SIZE;
    rc = co_await uring_.fallocate(fd_, mode, start, end - start);
  }
  if (rc == -EOPNOTSUPP || rc == -EINVAL) co_return co_await zero_by_writing(start, end - start);
  if (rc < 0) co_return io_error("zeroing", start, end - start, -rc);
  co_return Status::Ok();
}

awaitable<Status> LocalDisk::zero_by_writing(uint64_t offset, uint64_t length) {
  Buffer zeroes = pool_.get(std::min<uint64_t>(length + 2 * block_size_, kZeroChunk));
  std::memset(zeroes.data(), 0, zeroes.size());
  while (length > 0) {
    size_t n = std::min<uint64_t>(length, kZeroChunk);
    Status s;
    if (aligned(offset, n)) {
      auto guard = co_await lock_.lock(offset, offset + n, false);
      s = co_await write_aligned(offset, zeroes.data(), n);
    } else {
      s = co_await write_unaligned(offset, zeroes.data(), n);
    }
    if (!s.ok()) co_return s;
    offset += n;
    length -= n;
  }
  co_return Status::Ok();
}

}  // namespace hastnbd
