#include "hastnbd/peer/hello.h"

#include <algorithm>
#include <cstdint>

#include "hastnbd/base/bytes.h"
#include "hastnbd/base/role.h"
#include "names.h"

namespace hastnbd::peer {

namespace {

std::string num(uint64_t v) { return std::to_string(v); }

std::string quoted(const std::string& s) { return "'" + s + "'"; }

}  // namespace

std::vector<uint8_t> encode_hello(const Hello& h) {
  std::vector<uint8_t> out;
  Writer w(out);
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
  if (h.generation_time) w.u64(*h.generation_time);
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
  // feature kFeatureGenerationTime: exactly one u64 more, or nothing.
  if (r.remaining() == 8) h.generation_time = r.u64("generation_time");
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

}  // namespace hastnbd::peer
