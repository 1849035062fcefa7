#include "hastnbd/disk/metadata.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <cstring>
#include <ctime>

#include "hastnbd/base/bytes.h"
#include "hastnbd/disk/uring.h"

namespace hastnbd {

namespace {

std::string errstr(int e) { return std::strerror(e); }

Status sys_error(const std::string& path, const char* what) {
  int e = errno;
  return Status::Error(e, "metadata " + path + ": " + what + ": " + errstr(e));
}

}  // namespace

std::string MetaHeader::uuid_string() const {
  static const char* hex = "0123456789abcdef";
  std::string s;
  for (size_t i = 0; i < uuid.size(); ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) s += '-';
    s += hex[uuid[i] >> 4];
    s += hex[uuid[i] & 15];
  }
  return s;
}

std::array<uint8_t, 16> random_uuid() {
  std::array<uint8_t, 16> u{};
  size_t got = 0;
  while (got < u.size()) {
    ssize_t n = ::getrandom(u.data() + got, u.size() - got, 0);
    if (n > 0) got += size_t(n);
  }
  u[6] = uint8_t((u[6] & 0x0f) | 0x40);  // RFC 4122 version 4
  u[8] = uint8_t((u[8] & 0x3f) | 0x80);
  return u;
}

std::array<uint8_t, kMetaSlotSize> encode_meta_header(const MetaHeader& h) {
  std::vector<uint8_t> out;
  out.reserve(kMetaHeaderBytes);
  bytes::LittleWriter w(out);
  w.u64(kMetaMagic);
  w.u32(kMetaVersion);
  w.u32(kMetaHeaderBytes);
  w.u64(h.sequence);
  char name[kMetaNameMax] = {};
  std::memcpy(name, h.resource.data(), std::min(h.resource.size(), kMetaNameMax));
  w.bytes(name, kMetaNameMax);
  w.u64(h.data_size);
  w.u64(h.extent_size);
  w.u32(h.keepdirty);
  w.u32(h.flags);
  w.u8(uint8_t(h.sync_direction));
  w.zeros(7);
  w.bytes(h.uuid.data(), h.uuid.size());
  w.u64(h.localcnt);
  w.u64(h.remotecnt);
  w.u64(h.created);
  w.u64(kMetaBitmapOffset);
  w.u64(h.bitmap_bytes());
  w.u64(h.generation_time);
  w.zeros(kMetaHeaderBytes - 8 - out.size());
  w.u64(XXH3_64bits(out.data(), kMetaHeaderBytes - 8));
  std::array<uint8_t, kMetaSlotSize> slot{};
  std::copy(out.begin(), out.end(), slot.begin());
  return slot;
}

Result<MetaHeader> decode_meta_header(std::span<const uint8_t> slot) {
  if (slot.size() < kMetaHeaderBytes) return Status::Error(EINVAL, "header truncated");
  bytes::LittleReader r(slot.first(kMetaHeaderBytes));
  if (r.u64("magic") != kMetaMagic) return Status::Error(EINVAL, "bad magic (not a hastnbd metadata file)");
  uint32_t version = r.u32("version");
  if (version != kMetaVersion)
    return Status::Error(EINVAL, "unsupported metadata version " + std::to_string(version) + " (this build reads " +
                                     std::to_string(kMetaVersion) + ")");
  if (r.u32("header length") != kMetaHeaderBytes) return Status::Error(EINVAL, "bad header length");
  if (bytes::get<bytes::Order::kLittle, uint64_t>(slot.data() + kMetaHeaderBytes - 8) !=
      XXH3_64bits(slot.data(), kMetaHeaderBytes - 8))
    return Status::Error(EINVAL, "header checksum mismatch (torn or corrupted write)");
  MetaHeader h;
  h.sequence = r.u64("sequence");
  char name[kMetaNameMax + 1] = {};
  r.bytes(name, kMetaNameMax, "resource");
  h.resource = name;
  h.data_size = r.u64("data size");
  h.extent_size = r.u64("extent size");
  h.keepdirty = r.u32("keepdirty");
  h.flags = r.u32("flags");
  h.sync_direction = SyncDirection(r.u8("sync direction"));
  r.skip(7, "padding");
  r.bytes(h.uuid.data(), h.uuid.size(), "uuid");
  h.localcnt = r.u64("localcnt");
  h.remotecnt = r.u64("remotecnt");
  h.created = r.u64("created");
  uint64_t bitmap_offset = r.u64("bitmap offset");
  uint64_t bitmap_bytes = r.u64("bitmap bytes");
  h.generation_time = r.u64("generation time");
  if (h.extent_size == 0 || (h.extent_size & (h.extent_size - 1)) != 0)
    return Status::Error(EINVAL, "extent size " + std::to_string(h.extent_size) + " is not a power of two");
  if (h.data_size == 0) return Status::Error(EINVAL, "data size is 0");
  if (bitmap_offset != kMetaBitmapOffset || bitmap_bytes != h.bitmap_bytes())
    return Status::Error(EINVAL, "bitmap position does not match data size and extent size");
  if (uint8_t(h.sync_direction) > uint8_t(SyncDirection::kFromPeer))
    return Status::Error(EINVAL, "bad sync direction");
  return h;
}

Result<MetaHeader> pick_meta_header(std::span<const uint8_t> slot0, std::span<const uint8_t> slot1) {
  auto a = decode_meta_header(slot0);
  auto b = decode_meta_header(slot1);
  if (a.ok() && b.ok()) return a->sequence >= b->sequence ? a : b;
  if (a.ok()) return a;
  if (b.ok()) return b;
  return Status::Error(EINVAL, "no valid header: slot 0: " + a.status().message() +
                                   "; slot 1: " + b.status().message());
}

Status MetadataFile::create(const std::string& path, const MetaHeader& header, bool force) {
  if (!force && ::access(path.c_str(), F_OK) == 0)
    return Status::Error(EEXIST, "metadata " + path + " already exists; use --force to overwrite it "
                                 "(this forgets which extents are dirty and makes the node fresh)");
  // Build the new file beside the old one and rename it into place: a crash
  // leaves either the old file or the complete new one.
  std::string tmp = path + ".new";
  int fd = ::open(tmp.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return sys_error(tmp, "create");
  // An existing file may be in use by a running daemon.
  int old = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (old >= 0) {
    bool busy = ::flock(old, LOCK_EX | LOCK_NB) != 0;
    ::close(old);
    if (busy) {
      ::close(fd);
      ::unlink(tmp.c_str());
      return Status::Error(EBUSY, "metadata " + path + " is in use by a running hastnbd; stop it first");
    }
  }
  MetaHeader h = header;
  h.sequence = 1;
  auto slot = encode_meta_header(h);
  Status s;
  if (::ftruncate(fd, off_t(h.file_size())) != 0) s = sys_error(tmp, "ftruncate");
  else if (::pwrite(fd, slot.data(), slot.size(), 0) != ssize_t(slot.size())) s = sys_error(tmp, "write");
  else if (::fsync(fd) != 0) s = sys_error(tmp, "fsync");
  ::close(fd);
  if (s.ok() && ::rename(tmp.c_str(), path.c_str()) != 0) s = sys_error(path, "rename");
  if (!s.ok()) {
    ::unlink(tmp.c_str());
    return s;
  }
  std::string dir = path.substr(0, path.find_last_of('/') + 1);
  int dfd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  return Status::Ok();
}

Result<std::unique_ptr<MetadataFile>> MetadataFile::open(const std::string& path, bool lock, bool writable) {
  std::unique_ptr<MetadataFile> m(new MetadataFile());
  m->path_ = path;
  m->fd_ = ::open(path.c_str(), (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC);
  if (m->fd_ < 0) {
    if (errno == ENOENT)
      return Status::Error(ENOENT, "metadata " + path + " does not exist; run 'hastnbd-ctl create RESOURCE' first");
    return sys_error(path, "open");
  }
  if (lock && ::flock(m->fd_, LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK)
      return Status::Error(EBUSY, "metadata " + path + " is locked by another hastnbd process for this resource");
    return sys_error(path, "flock");
  }
  uint8_t slots[2 * kMetaSlotSize];
  ssize_t n = ::pread(m->fd_, slots, sizeof slots, 0);
  if (n < 0) return sys_error(path, "read");
  if (size_t(n) < sizeof slots)
    return Status::Error(EINVAL, "metadata " + path + " is truncated (" + std::to_string(n) + " bytes)");
  auto h = pick_meta_header({slots, kMetaSlotSize}, {slots + kMetaSlotSize, kMetaSlotSize});
  if (!h.ok()) return Status::Error(EINVAL, "metadata " + path + " is corrupt: " + h.status().message());
  m->header_ = *h;
  auto s0 = decode_meta_header({slots, kMetaSlotSize});
  m->newest_slot_ = (s0.ok() && s0->sequence == h->sequence) ? 0 : 1;
  struct stat st {};
  if (::fstat(m->fd_, &st) != 0) return sys_error(path, "fstat");
  if (uint64_t(st.st_size) < m->header_.file_size())
    return Status::Error(EINVAL, "metadata " + path + " is truncated: " + std::to_string(st.st_size) +
                                     " bytes, the bitmap needs " + std::to_string(m->header_.file_size()));
  void* p = ::mmap(nullptr, m->header_.bitmap_bytes(), PROT_READ | (writable ? PROT_WRITE : 0), MAP_SHARED,
                   m->fd_, off_t(kMetaBitmapOffset));
  if (p == MAP_FAILED) return sys_error(path, "mmap bitmap");
  m->bitmap_ = static_cast<uint8_t*>(p);
  m->slot_buf_ = std::make_unique<std::array<uint8_t, kMetaSlotSize>>();
  return m;
}

MetadataFile::~MetadataFile() {
  if (bitmap_) ::munmap(bitmap_, header_.bitmap_bytes());
  if (fd_ >= 0) ::close(fd_);
}

Status MetadataFile::check_matches(const std::string& resource, uint64_t data_size, uint64_t extent_size) const {
  const auto& h = header_;
  if (h.resource != resource)
    return Status::Error(EINVAL, "metadata " + path_ + " belongs to resource '" + h.resource + "', not '" + resource +
                                     "'");
  if (h.data_size != data_size)
    return Status::Error(EINVAL, "metadata " + path_ + " was created for " + std::to_string(h.data_size) +
                                     " bytes of data, but the local device now provides " +
                                     std::to_string(data_size) +
                                     " bytes; recreate it with 'hastnbd-ctl create --force' (forces a full sync)");
  if (h.extent_size != extent_size)
    return Status::Error(EINVAL, "metadata " + path_ + " uses extent size " + std::to_string(h.extent_size) +
                                     ", the configuration says " + std::to_string(extent_size) +
                                     "; recreate it with 'hastnbd-ctl create --force' (forces a full sync)");
  return Status::Ok();
}

awaitable<Status> MetadataFile::write_header(Uring& uring, MetaHeader h) {
  h.sequence = header_.sequence + 1;
  int slot = 1 - newest_slot_;
  *slot_buf_ = encode_meta_header(h);
  int rc = co_await uring.pwrite(fd_, *slot_buf_, uint64_t(slot) * kMetaSlotSize);
  if (rc >= 0 && size_t(rc) != kMetaSlotSize) rc = -EIO;
  if (rc >= 0) rc = co_await uring.fdatasync(fd_);
  if (rc < 0) co_return Status::Error(-rc, "metadata " + path_ + ": header write: " + errstr(-rc));
  header_ = h;
  newest_slot_ = slot;
  co_return Status::Ok();
}

awaitable<Status> MetadataFile::sync_bitmap(Uring& uring) {
  int rc = co_await uring.fdatasync(fd_);
  if (rc < 0) co_return Status::Error(-rc, "metadata " + path_ + ": bitmap sync: " + errstr(-rc));
  co_return Status::Ok();
}

Status MetadataFile::write_header_now(MetaHeader h) {
  h.sequence = header_.sequence + 1;
  int slot = 1 - newest_slot_;
  auto bytes = encode_meta_header(h);
  if (::pwrite(fd_, bytes.data(), bytes.size(), off_t(slot) * kMetaSlotSize) != ssize_t(bytes.size()))
    return sys_error(path_, "header write");
  if (::fdatasync(fd_) != 0) return sys_error(path_, "fdatasync");
  header_ = h;
  newest_slot_ = slot;
  return Status::Ok();
}

Status MetadataFile::sync_now() {
  if (::fdatasync(fd_) != 0) return sys_error(path_, "fdatasync");
  return Status::Ok();
}

}  // namespace hastnbd
