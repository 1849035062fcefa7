#include "hastnbd/peer_proto.h"

#include <lz4.h>
#include <xxhash.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstring>

#include "hastnbd/role.h"

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

// Big-endian writer that appends; reader that refuses to run past the end.
struct Writer {
  std::vector<uint8_t>& out;
  void u8(uint8_t v) { out.push_back(v); }
  void u16(uint16_t v) { for (int i = 1; i >= 0; --i) out.push_back(uint8_t(v >> (8 * i))); }
  void u32(uint32_t v) { for (int i = 3; i >= 0; --i) out.push_back(uint8_t(v >> (8 * i))); }
  void u64(uint64_t v) { for (int i = 7; i >= 0; --i) out.push_back(uint8_t(v >> (8 * i))); }
  void bytes(const uint8_t* p, size_t n) { out.insert(out.end(), p, p + n); }
};

void put_u16(uint8_t* p, uint16_t v) { for (int i = 0; i < 2; ++i) p[i] = uint8_t(v >> (8 - 8 * i)); }
void put_u32(uint8_t* p, uint32_t v) { for (int i = 0; i < 4; ++i) p[i] = uint8_t(v >> (24 - 8 * i)); }
void put_u64(uint8_t* p, uint64_t v) { for (int i = 0; i < 8; ++i) p[i] = uint8_t(v >> (56 - 8 * i)); }
uint16_t get_u16(const uint8_t* p) { return uint16_t((p[0] << 8) | p[1]); }
uint32_t get_u32(const uint8_t* p) {
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | p[3];
}
uint64_t get_u64(const uint8_t* p) { return (uint64_t(get_u32(p)) << 32) | get_u32(p + 4); }

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
    case kReadReply: return kDataFlags | kFlagResync;
    default: return 0;
  }
}

bool known_type(uint8_t type) { return type >= kHello && type <= kSyncDone; }

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

bool valid_name(const std::string& s) {
  auto ok = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
           c == '-';
  };
  return !s.empty() && s.size() <= kMaxNameBytes && std::all_of(s.begin(), s.end(), ok);
}

// Reads fields in order; every read says what it was for, so a truncated
// Hello is reported by field and offset.
class Reader {
 public:
  explicit Reader(std::span<const uint8_t> in) : in_(in) {}
  bool ok() const { return error_.empty(); }
  const std::string& error() const { return error_; }
  size_t pos() const { return pos_; }
  size_t remaining() const { return in_.size() - pos_; }

  uint8_t u8(const char* what) { return need(1, what) ? in_[pos_++] : 0; }
  uint16_t u16(const char* what) { return need(2, what) ? advance(2, get_u16(&in_[pos_])) : 0; }
  uint32_t u32(const char* what) { return need(4, what) ? advance(4, get_u32(&in_[pos_])) : 0; }
  uint64_t u64(const char* what) { return need(8, what) ? advance(8, get_u64(&in_[pos_])) : 0; }
  void bytes(uint8_t* dst, size_t n, const char* what) {
    if (!need(n, what)) return;
    std::copy_n(in_.begin() + pos_, n, dst);
    pos_ += n;
  }
  void fail(std::string message) {
    if (ok()) error_ = std::move(message);
  }

 private:
  bool need(size_t n, const char* what) {
    if (!ok()) return false;
    if (remaining() < n) {
      fail(std::string("truncated at ") + what + ": needs " + num(n) + " bytes at offset " + num(pos_) + ", " +
           num(remaining()) + " left");
      return false;
    }
    return true;
  }
  template <class T>
  T advance(size_t n, T v) {
    pos_ += n;
    return v;
  }

  std::span<const uint8_t> in_;
  size_t pos_ = 0;
  std::string error_;
};

// u16 length + bytes; the length is checked against `max` before anything is copied.
std::string read_name(Reader& r, const char* what) {
  uint16_t n = r.u16(what);
  if (!r.ok()) return {};
  if (n == 0 || n > kMaxNameBytes) {
    r.fail(std::string(what) + " length " + num(n) + " outside 1.." + num(kMaxNameBytes));
    return {};
  }
  std::string s(n, '\0');
  r.bytes(reinterpret_cast<uint8_t*>(s.data()), n, what);
  if (r.ok() && !valid_name(s)) r.fail(std::string(what) + " is not a valid name (A-Z a-z 0-9 _ . -)");
  return s;
}

void write_name(Writer& w, const std::string& s) {
  // An over-long name is sent as is (length capped only so the field cannot
  // wrap); the peer rejects it and says why.
  size_t n = std::min<size_t>(s.size(), UINT16_MAX);
  w.u16(uint16_t(n));
  w.bytes(reinterpret_cast<const uint8_t*>(s.data()), n);
}

std::string quoted(const std::string& s) { return "'" + s + "'"; }

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
    default: return "UNKNOWN";
  }
}

std::array<uint8_t, kHeaderSize> encode_header(const Header& h) {
  std::array<uint8_t, kHeaderSize> b{};
  put_u32(&b[kOffMagic], kMagic);
  b[kOffVersion] = kVersion;
  b[kOffType] = h.type;
  put_u16(&b[kOffFlags], h.flags);
  put_u64(&b[kOffSeq], h.seq);
  put_u64(&b[kOffOffset], h.offset);
  put_u32(&b[kOffLength], h.length);
  put_u32(&b[kOffPayloadLength], h.payload_length);
  put_u64(&b[kOffPayloadChecksum], h.payload_checksum);
  put_u64(&b[kOffHeaderChecksum], XXH3_64bits(b.data(), kOffHeaderChecksum));
  return b;
}

Result<Header> decode_header(std::span<const uint8_t, kHeaderSize> b) {
  uint32_t magic = get_u32(&b[kOffMagic]);
  if (magic != kMagic) return Status::Error(EPROTO, "bad magic " + hex(magic) + ", expected " + hex(kMagic));
  if (b[kOffVersion] != kVersion)
    return Status::Error(EPROTO, "protocol version " + num(b[kOffVersion]) + " not supported, this build speaks " +
                                     num(kVersion));
  uint64_t stored = get_u64(&b[kOffHeaderChecksum]);
  uint64_t computed = XXH3_64bits(b.data(), kOffHeaderChecksum);
  if (stored != computed)
    return Status::Error(EBADMSG, "header checksum mismatch: header says " + hex(stored) + ", bytes give " +
                                      hex(computed));
  Header h;
  h.type = b[kOffType];
  h.flags = get_u16(&b[kOffFlags]);
  h.seq = get_u64(&b[kOffSeq]);
  h.offset = get_u64(&b[kOffOffset]);
  h.length = get_u32(&b[kOffLength]);
  h.payload_length = get_u32(&b[kOffPayloadLength]);
  h.payload_checksum = get_u64(&b[kOffPayloadChecksum]);

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

std::vector<uint8_t> encode_hello(const Hello& h) {
  std::vector<uint8_t> out;
  Writer w{out};
  w.u32(h.protocol_version);
  write_name(w, h.resource);
  write_name(w, h.node);
  w.u8(h.role);
  w.u64(h.data_size);
  w.u64(h.extent_size);
  w.bytes(h.uuid.data(), h.uuid.size());
  w.u64(h.localcnt);
  w.u64(h.remotecnt);
  w.u32(h.meta_flags);
  w.u32(uint32_t(std::min<size_t>(h.dirty_map.size(), UINT32_MAX)));
  w.bytes(h.dirty_map.data(), std::min<size_t>(h.dirty_map.size(), UINT32_MAX));
  return out;
}

Result<Hello> decode_hello(std::span<const uint8_t> payload) {
  constexpr uint64_t kMinExtentSize = 4096;
  Reader r(payload);
  Hello h;
  auto fail = [&]() { return Status::Error(EINVAL, "HELLO: " + r.error()); };

  h.protocol_version = r.u32("protocol_version");
  h.resource = read_name(r, "resource");
  h.node = read_name(r, "node");
  h.role = r.u8("role");
  if (r.ok() && h.role > uint8_t(Role::kPrimary)) r.fail("role " + num(h.role) + " is not a known role");
  h.data_size = r.u64("data_size");
  h.extent_size = r.u64("extent_size");
  r.bytes(h.uuid.data(), h.uuid.size(), "uuid");
  h.localcnt = r.u64("localcnt");
  h.remotecnt = r.u64("remotecnt");
  h.meta_flags = r.u32("meta_flags");
  uint32_t map_bytes = r.u32("dirty_map length");
  if (!r.ok()) return fail();

  // Validated after the fixed fields so a truncated Hello is reported as such.
  if (h.data_size == 0) return Status::Error(EINVAL, "HELLO: data_size is 0");
  if (h.extent_size < kMinExtentSize || (h.extent_size & (h.extent_size - 1)) != 0)
    return Status::Error(EINVAL, "HELLO: extent_size " + num(h.extent_size) + " is not a power of two >= " +
                                     num(kMinExtentSize));
  uint64_t extents = h.data_size / h.extent_size + (h.data_size % h.extent_size != 0);
  uint64_t expected = extents / 8 + (extents % 8 != 0);
  if (map_bytes != expected)
    return Status::Error(EINVAL, "HELLO: dirty_map length " + num(map_bytes) + " differs from " + num(expected) +
                                     " (one bit per extent for " + num(extents) + " extents)");
  // Bounded by the bytes actually present, never by the length field alone.
  if (map_bytes > r.remaining())
    return Status::Error(EINVAL, "HELLO: truncated at dirty_map: needs " + num(map_bytes) + " bytes at offset " +
                                     num(r.pos()) + ", " + num(r.remaining()) + " left");
  h.dirty_map.resize(map_bytes);
  r.bytes(h.dirty_map.data(), map_bytes, "dirty_map");
  if (!r.ok()) return fail();
  if (r.remaining() != 0)
    return Status::Error(EINVAL, "HELLO: " + num(r.remaining()) + " trailing bytes after offset " + num(r.pos()));
  return h;
}

Status check_hello(const Hello& ours, const Hello& theirs, const std::string& expected_peer_node) {
  if (theirs.protocol_version != ours.protocol_version)
    return Status::Error(EPROTO, "protocol version differs: here " + num(ours.protocol_version) + ", peer " +
                                     quoted(theirs.node) + " has " + num(theirs.protocol_version));
  // Identity first: if the wrong machine answered, every other difference is
  // a consequence of that.
  if (!expected_peer_node.empty() && theirs.node != expected_peer_node)
    return Status::Error(EINVAL, "peer identifies as node " + quoted(theirs.node) + ", expected " +
                                     quoted(expected_peer_node));
  if (theirs.node == ours.node)
    return Status::Error(EINVAL, "peer identifies as this node " + quoted(ours.node) +
                                     " (is the remote address this node's own listen address?)");
  if (theirs.resource != ours.resource)
    return Status::Error(EINVAL, "resource name differs: here " + quoted(ours.resource) + ", peer " +
                                     quoted(theirs.node) + " has " + quoted(theirs.resource));
  if (theirs.data_size != ours.data_size)
    return Status::Error(EINVAL, "resource size differs: here " + num(ours.data_size) + " bytes, peer " +
                                     quoted(theirs.node) + " has " + num(theirs.data_size));
  if (theirs.extent_size != ours.extent_size)
    return Status::Error(EINVAL, "extent size differs: here " + num(ours.extent_size) + ", peer " +
                                     quoted(theirs.node) + " has " + num(theirs.extent_size));
  return Status::Ok();
}

std::vector<uint8_t> encode_sync_done(uint64_t primary_localcnt) {
  std::vector<uint8_t> out;
  Writer w{out};
  w.u64(primary_localcnt);
  return out;
}

Result<uint64_t> decode_sync_done(std::span<const uint8_t> payload) {
  if (payload.size() != kSyncDonePayload)
    return Status::Error(EINVAL, "SYNC_DONE: payload of " + num(payload.size()) + " bytes, expected " +
                                     num(kSyncDonePayload));
  return get_u64(payload.data());
}

std::vector<uint8_t> encode_error(int err, const std::string& message) {
  // errno 0 or out of range would be rejected by the peer; say EIO instead.
  uint32_t code = (err > 0 && uint32_t(err) <= kMaxErrno) ? uint32_t(err) : uint32_t(EIO);
  size_t n = std::min<size_t>(message.size(), kMaxErrorMessage);
  std::vector<uint8_t> out;
  out.reserve(kErrorCodeBytes + n);
  Writer w{out};
  w.u32(code);
  w.bytes(reinterpret_cast<const uint8_t*>(message.data()), n);
  return out;
}

Result<std::pair<int, std::string>> decode_error(std::span<const uint8_t> payload) {
  if (payload.size() < kErrorCodeBytes || payload.size() > kErrorCodeBytes + kMaxErrorMessage)
    return Status::Error(EINVAL, "ERROR: payload of " + num(payload.size()) + " bytes outside " +
                                     num(kErrorCodeBytes) + ".." + num(kErrorCodeBytes + kMaxErrorMessage));
  uint32_t code = get_u32(payload.data());
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
