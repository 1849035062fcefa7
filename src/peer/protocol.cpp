#include "hastnbd/peer/protocol.h"

#include <lz4.h>
#include <xxhash.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstring>

#include "hastnbd/base/bytes.h"

namespace hastnbd::peer {

namespace {

// Header field offsets; the layout table in docs/protocol.md matches these.
constexpr size_t kOffMagic = 0;
constexpr size_t kOffVersion = 4;
constexpr size_t kOffType = 5;
constexpr size_t kOffFlags = 6;
constexpr size_t kOffSeq = 8;
constexpr size_t kOffOffset = 16;
constexpr size_t kOffLength = 24;
constexpr size_t kOffPayloadLength = 28;
constexpr size_t kOffPayloadChecksum = 32;
constexpr size_t kOffHeaderChecksum = 40;  // XXH3-64 of every byte before it
static_assert(kOffHeaderChecksum + 8 == kHeaderSize);

constexpr uint32_t kErrorCodeBytes = 4;
// Linux errno values stay below this (MAX_ERRNO + 1); anything else on the wire is garbage.
constexpr uint32_t kMaxErrno = 4095;

constexpr uint16_t kDataFlags = kFlagLz4 | kFlagHole | kFlagChecksummed;
constexpr uint16_t kSyncFlags = kFlagFua | kFlagWantReceived;

// Every peer field is big-endian (base/bytes.h).
using Writer = bytes::BigWriter;
using bytes::get_be16;
using bytes::get_be32;
using bytes::get_be64;
using bytes::put_be16;
using bytes::put_be32;
using bytes::put_be64;

std::string hex(uint64_t v) {
  char buf[2 + 16 + 1];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}
std::string num(uint64_t v) { return std::to_string(v); }

std::string flag_names(uint16_t flags) {
  static const std::pair<uint16_t, const char*> names[] = {
      {kFlagLz4, "LZ4"}, {kFlagHole, "HOLE"}, {kFlagFua, "FUA"},
      {kFlagWantReceived, "WANT_RECEIVED"}, {kFlagChecksummed, "CHECKSUMMED"}, {kFlagNoHole, "NO_HOLE"},
      {kFlagResync, "RESYNC"},
  };
  std::string s;
  for (const auto& [bit, name] : names) {
    if (!(flags & bit)) continue;
    if (!s.empty()) s += '|';
    s += name;
  }
  return s.empty() ? hex(flags) : s;
}

// Flags each type may carry. Zero for types that do not exist.
uint16_t allowed_flags(uint8_t type) {
  switch (type) {
    case kHello: return kFlagChecksummed;
    case kWrite: return kDataFlags | kSyncFlags | kFlagResync;
    case kTrim: return kSyncFlags;
    case kWriteZeroes: return kSyncFlags | kFlagNoHole;
    case kFlush: return kFlagWantReceived;
    case kReceived: case kWritten: case kKeepalive: return 0;
    case kRead: return kFlagResync;
    case kError: case kSyncDone: return kFlagChecksummed;
    case kAuthHello: case kAuthChallenge: case kAuthProof: return kFlagChecksummed;
    case kReadReply: return kDataFlags | kFlagResync;
    case kHash: case kHashReply: return kFlagChecksummed | kFlagResync;
    default: return 0;
  }
}

bool known_type(uint8_t type) { return type >= kHello && type <= kHashReply; }

Status bad(const std::string& type_prefix, const std::string& what) {
  return Status::Error(EINVAL, type_prefix + what);
}

// Rules for a record that carries `length` bytes of data (WRITE, READ_REPLY).
Status check_data_lengths(const Header& h, const std::string& t) {
  if (h.length == 0 || h.length > kMaxDataLength)
    return bad(t, "length " + num(h.length) + " outside 1.." + num(kMaxDataLength));
  if (h.flags & kFlagHole) {
    if (h.payload_length != 0)
      return bad(t, "payload_length " + num(h.payload_length) + " with flag HOLE, must be 0");
  } else if (h.flags & kFlagLz4) {
    // The bound is that of the largest input, so it cannot overflow an int.
    uint32_t bound = uint32_t(LZ4_compressBound(int(h.length)));
    if (h.payload_length == 0 || h.payload_length > bound)
      return bad(t, "payload_length " + num(h.payload_length) + " with flag LZ4 outside 1.." + num(bound) +
                        " (the LZ4 bound for length " + num(h.length) + ")");
  } else if (h.payload_length != h.length) {
    return bad(t, "payload_length " + num(h.payload_length) + " differs from length " + num(h.length));
  }
  return Status::Ok();
}

Status check_range(const Header& h, const std::string& t, uint32_t max_length) {
  if (h.length == 0 || h.length > max_length)
    return bad(t, "length " + num(h.length) + " outside 1.." + num(max_length));
  if (h.offset > UINT64_MAX - h.length)
    return bad(t, "offset " + num(h.offset) + " + length " + num(h.length) + " overflows");
  return Status::Ok();
}

Status check_no_payload(const Header& h, const std::string& t) {
  if (h.payload_length != 0) return bad(t, "payload_length " + num(h.payload_length) + " must be 0");
  return Status::Ok();
}

// Records that are not about a byte range: offset and length carry nothing.
Status check_no_range(const Header& h, const std::string& t) {
  if (h.offset != 0) return bad(t, "offset " + num(h.offset) + " must be 0");
  if (h.length != 0) return bad(t, "length " + num(h.length) + " must be 0");
  return Status::Ok();
}

Status check_type_rules(const Header& h) {
  const std::string t = std::string(type_name(h.type)) + ": ";
  Status st;
  switch (h.type) {
    case kWrite:
    case kReadReply:
      if (!(st = check_range(h, t, kMaxDataLength)).ok()) return st;
      return check_data_lengths(h, t);
    case kTrim:
    case kWriteZeroes:
      // Payload-less ranges may be as large as the 32-bit field allows.
      if (!(st = check_range(h, t, UINT32_MAX)).ok()) return st;
      return check_no_payload(h, t);
    case kRead:
      if (!(st = check_range(h, t, kMaxDataLength)).ok()) return st;
      return check_no_payload(h, t);
    case kFlush:
    case kReceived:
    case kWritten:
    case kKeepalive:
      if (!(st = check_no_range(h, t)).ok()) return st;
      return check_no_payload(h, t);
    case kHello:
      if (!(st = check_no_range(h, t)).ok()) return st;
      if (h.payload_length == 0 || h.payload_length > kMaxPayload)
        return bad(t, "payload_length " + num(h.payload_length) + " outside 1.." + num(kMaxPayload));
      return Status::Ok();
    case kSyncDone:
      if (!(st = check_no_range(h, t)).ok()) return st;
      if (h.payload_length != kSyncDonePayload)
        return bad(t, "payload_length " + num(h.payload_length) + " must be " + num(kSyncDonePayload));
      return Status::Ok();
    case kAuthHello:
    case kAuthChallenge:
    case kAuthProof:
      if (!(st = check_no_range(h, t)).ok()) return st;
      if (h.payload_length == 0 || h.payload_length > kMaxAuthPayload)
        return bad(t, "payload_length " + num(h.payload_length) + " outside 1.." + num(kMaxAuthPayload));
      return Status::Ok();
    case kHash:
      if (!(st = check_range(h, t, kMaxDataLength)).ok()) return st;
      if (h.payload_length != kHashRequestPayload)
        return bad(t, "payload_length " + num(h.payload_length) + " must be " + num(kHashRequestPayload));
      return Status::Ok();
    case kHashReply: {
      if (!(st = check_range(h, t, kMaxDataLength)).ok()) return st;
      // The exact count depends on the request's block size, which the
      // receiver checks; here: whole hashes, at most one per smallest block.
      const uint64_t most = hash_count(h.length, kMinHashBlock) * kHashBytes;
      if (h.payload_length == 0 || h.payload_length % kHashBytes != 0 || h.payload_length > most)
        return bad(t, "payload_length " + num(h.payload_length) + " is not 1.." + num(most / kHashBytes) +
                          " hashes of " + num(kHashBytes) + " bytes");
      return Status::Ok();
    }
    case kError:
      if (!(st = check_no_range(h, t)).ok()) return st;
      if (h.payload_length < kErrorCodeBytes || h.payload_length > kErrorCodeBytes + kMaxErrorMessage)
        return bad(t, "payload_length " + num(h.payload_length) + " outside " + num(kErrorCodeBytes) + ".." +
                          num(kErrorCodeBytes + kMaxErrorMessage));
      return Status::Ok();
    default:
      return Status::Error(EINVAL, "unknown record type " + num(h.type));
  }
}

bool all_zero(std::span<const uint8_t> data) {
  // Comparing the buffer with itself shifted by one byte lets memcmp's
  // vectorised loop do the scan.
  return data.empty() || (data[0] == 0 && std::memcmp(data.data(), data.data() + 1, data.size() - 1) == 0);
}

}  // namespace

const char* type_name(uint8_t type) {
  switch (type) {
    case kHello: return "HELLO";
    case kWrite: return "WRITE";
    case kTrim: return "TRIM";
    case kWriteZeroes: return "WRITE_ZEROES";
    case kFlush: return "FLUSH";
    case kReceived: return "RECEIVED";
    case kWritten: return "WRITTEN";
    case kError: return "ERROR";
    case kKeepalive: return "KEEPALIVE";
    case kRead: return "READ";
    case kReadReply: return "READ_REPLY";
    case kSyncDone: return "SYNC_DONE";
    case kAuthHello: return "AUTH_HELLO";
    case kAuthChallenge: return "AUTH_CHALLENGE";
    case kAuthProof: return "AUTH_PROOF";
    case kHash: return "HASH";
    case kHashReply: return "HASH_REPLY";
    default: return "UNKNOWN";
  }
}

std::array<uint8_t, kHeaderSize> encode_header(const Header& h) {
  std::array<uint8_t, kHeaderSize> b{};
  put_be32(&b[kOffMagic], kMagic);
  b[kOffVersion] = kVersion;
  b[kOffType] = h.type;
  put_be16(&b[kOffFlags], h.flags);
  put_be64(&b[kOffSeq], h.seq);
  put_be64(&b[kOffOffset], h.offset);
  put_be32(&b[kOffLength], h.length);
  put_be32(&b[kOffPayloadLength], h.payload_length);
  put_be64(&b[kOffPayloadChecksum], h.payload_checksum);
  put_be64(&b[kOffHeaderChecksum], XXH3_64bits(b.data(), kOffHeaderChecksum));
  return b;
}

Result<Header> decode_header(std::span<const uint8_t, kHeaderSize> b) {
  uint32_t magic = get_be32(&b[kOffMagic]);
  if (magic != kMagic) return Status::Error(EPROTO, "bad magic " + hex(magic) + ", expected " + hex(kMagic));
  if (b[kOffVersion] != kVersion)
    return Status::Error(EPROTO, "protocol version " + num(b[kOffVersion]) + " not supported, this build speaks " +
                                     num(kVersion));
  uint64_t stored = get_be64(&b[kOffHeaderChecksum]);
  uint64_t computed = XXH3_64bits(b.data(), kOffHeaderChecksum);
  if (stored != computed)
    return Status::Error(EBADMSG, "header checksum mismatch: header says " + hex(stored) + ", bytes give " +
                                      hex(computed));
  Header h;
  h.type = b[kOffType];
  h.flags = get_be16(&b[kOffFlags]);
  h.seq = get_be64(&b[kOffSeq]);
  h.offset = get_be64(&b[kOffOffset]);
  h.length = get_be32(&b[kOffLength]);
  h.payload_length = get_be32(&b[kOffPayloadLength]);
  h.payload_checksum = get_be64(&b[kOffPayloadChecksum]);

  if (!known_type(h.type)) return Status::Error(EINVAL, "unknown record type " + num(h.type));
  const std::string t = std::string(type_name(h.type)) + ": ";
  if (h.flags & ~kKnownFlags)
    return bad(t, "unknown flags " + hex(h.flags & ~kKnownFlags) + " (known " + hex(kKnownFlags) + ")");
  if (uint16_t extra = h.flags & ~allowed_flags(h.type))
    return bad(t, "flag " + flag_names(extra) + " not allowed on this record type");
  if ((h.flags & kFlagLz4) && (h.flags & kFlagHole)) return bad(t, "flags LZ4 and HOLE together");
  if ((h.flags & kFlagHole) && (h.flags & kFlagChecksummed))
    return bad(t, "flags HOLE and CHECKSUMMED together (a hole has no payload to check)");
  if (!(h.flags & kFlagChecksummed) && h.payload_checksum != 0)
    return bad(t, "payload_checksum " + hex(h.payload_checksum) + " set without flag CHECKSUMMED");
  // The limit every payload is held to, whatever the type's rule below says.
  if (h.payload_length > kMaxPayload)
    return bad(t, "payload_length " + num(h.payload_length) + " exceeds the limit " + num(kMaxPayload));
  Status st = check_type_rules(h);
  if (!st.ok()) return st;
  return h;
}

uint64_t payload_checksum(std::span<const uint8_t> payload) { return XXH3_64bits(payload.data(), payload.size()); }

Encoded encode_payload(std::span<const uint8_t> data, Compression compression, Checksum checksum, bool copy_raw) {
  Encoded e;
  if (compression != Compression::kNone && all_zero(data)) {
    e.flags = kFlagHole;
    return e;
  }
  bool compressed = false;
  if (compression == Compression::kLz4 && !data.empty() && data.size() <= size_t(LZ4_MAX_INPUT_SIZE)) {
    // Worth it only if it saves an eighth: smaller gains do not pay for the
    // peer's decompression. A capped output also makes LZ4 give up early on
    // incompressible data.
    int src_size = int(data.size());
    int cap = src_size - src_size / 8;
    e.payload.resize(size_t(std::max(cap, 1)));
    int n = cap > 0 ? LZ4_compress_default(reinterpret_cast<const char*>(data.data()),
                                           reinterpret_cast<char*>(e.payload.data()), src_size, cap)
                    : 0;
    if (n > 0) {
      e.payload.resize(size_t(n));
      e.flags |= kFlagLz4;
      compressed = true;
    }
  }
  e.raw = !compressed;
  if (e.raw && copy_raw) e.payload.assign(data.begin(), data.end());
  if (checksum == Checksum::kXxh3) {
    e.flags |= kFlagChecksummed;
    std::span<const uint8_t> sent = e.raw ? data : std::span<const uint8_t>(e.payload);
    e.checksum = XXH3_64bits(sent.data(), sent.size());
  }
  return e;
}

Status verify_payload(const Header& h, std::span<const uint8_t> payload) {
  if (payload.size() != h.payload_length)
    return Status::Error(EINVAL, std::string(type_name(h.type)) + ": payload is " + num(payload.size()) +
                                     " bytes, header says payload_length " + num(h.payload_length) + " at seq " +
                                     num(h.seq));
  if ((h.flags & kFlagChecksummed) && XXH3_64bits(payload.data(), payload.size()) != h.payload_checksum)
    return Status::Error(EBADMSG, "payload checksum mismatch at seq " + num(h.seq));
  return Status::Ok();
}

Status decode_payload(const Header& h, std::span<const uint8_t> payload, std::span<uint8_t> out) {
  const std::string t = std::string(type_name(h.type)) + ": ";
  if (out.size() != h.length)
    return bad(t, "output buffer is " + num(out.size()) + " bytes, length is " + num(h.length));
  Status st = verify_payload(h, payload);
  if (!st.ok()) return st;
  if ((h.flags & kFlagHole) && (h.flags & kFlagLz4)) return bad(t, "flags LZ4 and HOLE together");
  if (h.flags & kFlagHole) {
    if (!payload.empty()) return bad(t, "hole with " + num(payload.size()) + " payload bytes at seq " + num(h.seq));
    std::fill(out.begin(), out.end(), uint8_t(0));
    return Status::Ok();
  }
  if (h.flags & kFlagLz4) {
    if (payload.size() > size_t(INT_MAX) || out.size() > size_t(INT_MAX))
      return bad(t, "LZ4 block too large at seq " + num(h.seq));
    int n = LZ4_decompress_safe(reinterpret_cast<const char*>(payload.data()), reinterpret_cast<char*>(out.data()),
                                int(payload.size()), int(out.size()));
    if (n < 0) return bad(t, "corrupt LZ4 block at seq " + num(h.seq));
    if (size_t(n) != out.size())
      return bad(t, "LZ4 block expands to " + num(uint64_t(n)) + " bytes, length is " + num(h.length) + " at seq " +
                        num(h.seq));
    return Status::Ok();
  }
  if (payload.size() != out.size())
    return bad(t, "raw payload is " + num(payload.size()) + " bytes, length is " + num(h.length) + " at seq " +
                      num(h.seq));
  std::copy(payload.begin(), payload.end(), out.begin());
  return Status::Ok();
}

std::vector<uint8_t> encode_sync_done(uint64_t primary_localcnt) {
  std::vector<uint8_t> out;
  Writer w(out);
  w.u64(primary_localcnt);
  return out;
}

Result<uint64_t> decode_sync_done(std::span<const uint8_t> payload) {
  if (payload.size() != kSyncDonePayload)
    return Status::Error(EINVAL, "SYNC_DONE: payload of " + num(payload.size()) + " bytes, expected " +
                                     num(kSyncDonePayload));
  return get_be64(payload.data());
}

std::vector<uint8_t> encode_hash_request(uint32_t block) {
  std::vector<uint8_t> out;
  Writer w(out);
  w.u32(block);
  return out;
}

Result<uint32_t> decode_hash_request(std::span<const uint8_t> payload) {
  if (payload.size() != kHashRequestPayload)
    return Status::Error(EINVAL, "HASH: payload of " + num(payload.size()) + " bytes, expected " +
                                     num(kHashRequestPayload));
  const uint32_t block = get_be32(payload.data());
  if (block < kMinHashBlock || block > kMaxHashBlock || (block & (block - 1)) != 0)
    return Status::Error(EINVAL, "HASH: block size " + num(block) + " is not a power of two in " +
                                     num(kMinHashBlock) + ".." + num(kMaxHashBlock));
  return block;
}

std::vector<uint8_t> hash_blocks(std::span<const uint8_t> data, uint32_t block) {
  std::vector<uint8_t> out(hash_count(data.size(), block) * kHashBytes);
  uint8_t* o = out.data();
  for (size_t pos = 0; pos < data.size(); pos += block, o += kHashBytes) {
    const XXH128_hash_t h = XXH3_128bits(data.data() + pos, std::min<size_t>(block, data.size() - pos));
    put_be64(o, h.high64);
    put_be64(o + 8, h.low64);
  }
  return out;
}

std::vector<std::pair<uint64_t, uint64_t>> differing_runs(std::span<const uint8_t> ours,
                                                          std::span<const uint8_t> theirs, uint64_t length,
                                                          uint32_t block, const std::function<bool(size_t)>& skip) {
  std::vector<std::pair<uint64_t, uint64_t>> runs;
  const size_t blocks = std::min(ours.size(), theirs.size()) / kHashBytes;
  for (size_t b = 0; b < blocks; ++b) {
    if ((skip && skip(b)) ||
        std::equal(ours.begin() + long(b * kHashBytes), ours.begin() + long((b + 1) * kHashBytes),
                   theirs.begin() + long(b * kHashBytes)))
      continue;
    const uint64_t at = uint64_t(b) * block;
    const uint64_t n = std::min<uint64_t>(block, length - at);
    if (!runs.empty() && runs.back().first + runs.back().second == at) runs.back().second += n;
    else runs.emplace_back(at, n);
  }
  return runs;
}

std::vector<uint8_t> encode_error(int err, const std::string& message) {
  // errno 0 or out of range would be rejected by the peer; say EIO instead.
  uint32_t code = (err > 0 && uint32_t(err) <= kMaxErrno) ? uint32_t(err) : uint32_t(EIO);
  size_t n = std::min<size_t>(message.size(), kMaxErrorMessage);
  std::vector<uint8_t> out;
  out.reserve(kErrorCodeBytes + n);
  Writer w(out);
  w.u32(code);
  w.bytes(message.data(), n);
  return out;
}

Result<std::pair<int, std::string>> decode_error(std::span<const uint8_t> payload) {
  if (payload.size() < kErrorCodeBytes || payload.size() > kErrorCodeBytes + kMaxErrorMessage)
    return Status::Error(EINVAL, "ERROR: payload of " + num(payload.size()) + " bytes outside " +
                                     num(kErrorCodeBytes) + ".." + num(kErrorCodeBytes + kMaxErrorMessage));
  uint32_t code = get_be32(payload.data());
  if (code == 0 || code > kMaxErrno)
    return Status::Error(EINVAL, "ERROR: errno " + num(code) + " outside 1.." + num(kMaxErrno));
  // The text goes into our log: control bytes become '?' so a peer cannot
  // forge log lines.
  std::string message(payload.begin() + kErrorCodeBytes, payload.end());
  for (char& c : message)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
  return std::pair<int, std::string>{int(code), std::move(message)};
}

}  // namespace hastnbd::peer
