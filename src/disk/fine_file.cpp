#include "hastnbd/disk/fine_file.h"

#include <fcntl.h>
#include <unistd.h>
#include <xxhash.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "hastnbd/base/bytes.h"

namespace hastnbd {

namespace {
constexpr uint64_t kFineMagic = 0x454e494644424e48ULL;  // "HNBDFINE" little-endian
constexpr uint32_t kFineVersion = 1;
constexpr uint64_t kMaxFineFile = 1ull << 30;

uint64_t words_per_record(uint64_t extent_size, uint64_t granule) { return (extent_size / granule + 63) / 64; }

Status os_error(const std::string& what, const std::string& path) {
  return Status::Error(errno, what + " " + path + ": " + std::strerror(errno));
}
}  // namespace

std::vector<uint8_t> encode_fine(const FineSnapshot& s) {
  std::vector<uint8_t> out;
  bytes::LittleWriter w(out);
  w.u64(kFineMagic);
  w.u32(kFineVersion);
  w.bytes(s.uuid.data(), s.uuid.size());
  for (uint64_t v : {s.localcnt, s.remotecnt, s.data_size, s.extent_size, s.granule, uint64_t(s.records.size())})
    w.u64(v);
  for (const auto& [extent, bits] : s.records) {
    w.u64(extent);
    for (uint64_t word : bits) w.u64(word);
  }
  w.u64(XXH3_64bits(out.data(), out.size()));
  return out;
}

Result<FineSnapshot> decode_fine(std::span<const uint8_t> in) {
  if (in.size() < 8) return Status::Error(EINVAL, "fine records: " + std::to_string(in.size()) + " bytes, too short");
  const auto body = in.first(in.size() - 8);
  bytes::LittleReader sum(in.subspan(in.size() - 8));
  if (sum.u64("checksum") != XXH3_64bits(body.data(), body.size()))
    return Status::Error(EBADMSG, "fine records: checksum mismatch (a torn or damaged file)");
  bytes::LittleReader r(body);
  if (r.u64("magic") != kFineMagic) return Status::Error(EINVAL, "fine records: bad magic");
  if (uint32_t v = r.u32("version"); v != kFineVersion)
    return Status::Error(EINVAL, "fine records: version " + std::to_string(v) + ", this build reads 1");
  FineSnapshot s;
  r.bytes(s.uuid.data(), s.uuid.size(), "uuid");
  s.localcnt = r.u64("localcnt");
  s.remotecnt = r.u64("remotecnt");
  s.data_size = r.u64("data_size");
  s.extent_size = r.u64("extent_size");
  s.granule = r.u64("granule");
  const uint64_t count = r.u64("count");
  if (!r.ok()) return Status::Error(EINVAL, "fine records: " + r.error());
  const auto pow2 = [](uint64_t v) { return v != 0 && (v & (v - 1)) == 0; };
  if (!pow2(s.extent_size) || !pow2(s.granule) || s.granule < 4096 || s.granule > s.extent_size ||
      s.data_size == 0)
    return Status::Error(EINVAL, "fine records: granule " + std::to_string(s.granule) + " and extent size " +
                                     std::to_string(s.extent_size) + " do not fit");
  const uint64_t extents = (s.data_size + s.extent_size - 1) / s.extent_size;
  const uint64_t words = words_per_record(s.extent_size, s.granule);
  if (count > extents || count * (8 + 8 * words) != r.remaining())
    return Status::Error(EINVAL, "fine records: " + std::to_string(count) + " records do not match the " +
                                     std::to_string(r.remaining()) + " bytes that follow");
  for (uint64_t i = 0; i < count; ++i) {
    const uint64_t extent = r.u64("extent");
    if (extent >= extents) return Status::Error(EINVAL, "fine records: extent " + std::to_string(extent) + " out of range");
    std::vector<uint64_t> bits(words);
    for (uint64_t& word : bits) word = r.u64("bits");
    s.records.emplace_back(extent, std::move(bits));
  }
  if (!r.ok()) return Status::Error(EINVAL, "fine records: " + r.error());
  return s;
}

Status save_fine(const std::string& path, const FineSnapshot& s) {
  const std::vector<uint8_t> data = encode_fine(s);
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return os_error("cannot write", tmp);
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n <= 0) {
      Status e = os_error("cannot write", tmp);
      ::close(fd);
      return e;
    }
    done += size_t(n);
  }
  if (::fdatasync(fd) != 0) {
    Status e = os_error("cannot sync", tmp);
    ::close(fd);
    return e;
  }
  ::close(fd);
  if (std::rename(tmp.c_str(), path.c_str()) != 0) return os_error("cannot rename to", path);
  return Status::Ok();
}

Result<std::optional<FineSnapshot>> take_fine(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    if (errno == ENOENT) return std::optional<FineSnapshot>();
    return os_error("cannot open", path);
  }
  std::vector<uint8_t> data;
  uint8_t buf[65536];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof buf)) > 0 && data.size() < kMaxFineFile) data.insert(data.end(), buf, buf + n);
  const int err = n < 0 ? errno : 0;
  ::close(fd);
  // Gone before it is used, durably: a crash (or power loss) from here on
  // must not find it again.
  if (::unlink(path.c_str()) != 0) return os_error("cannot remove", path);
  const std::string dir = path.find('/') == std::string::npos ? "." : path.substr(0, path.rfind('/') + 1);
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return os_error("cannot open", dir);
  const int synced = ::fsync(dfd);
  ::close(dfd);
  if (synced != 0) return os_error("cannot sync", dir);
  if (err != 0) return Status::Error(err, "cannot read " + path + ": " + std::strerror(err));
  if (data.size() >= kMaxFineFile) return Status::Error(EFBIG, path + " is too large to be fine records");
  auto s = decode_fine(data);
  if (!s.ok()) return s.status();
  return std::optional<FineSnapshot>(std::move(*s));
}

}  // namespace hastnbd
