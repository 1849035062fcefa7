// The HELLO record each side sends first (docs/protocol.md, "Handshake"):
// who the sender is and what it holds. Pure codec, hostile input checked
// field by field before anything is allocated.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "hastnbd/base/status.h"
#include "hastnbd/peer/protocol.h"

namespace hastnbd::peer {

// Handshake content. Encoded big-endian field by field; strings as u16 length
// + bytes; the bitmap as u32 length + bytes.
struct Hello {
  uint32_t protocol_version = kProtocolMax;  // the version agreed in the AUTH exchange
  std::string resource;         // <= 64 bytes
  std::string node;             // sender's node name, <= 64 bytes
  uint8_t role = 0;             // hastnbd::Role of the sender
  uint64_t data_size = 0;
  uint64_t extent_size = 0;
  std::array<uint8_t, 16> uuid{};
  uint64_t localcnt = 0;
  uint64_t remotecnt = 0;
  uint32_t meta_flags = 0;      // MetaFlags of the sender
  std::vector<uint8_t> dirty_map;  // sender's bitmap, extents() bits, rounded up to bytes
  // After the bitmap, only when feature kFeatureGenerationTime was agreed:
  // the sender's MetaHeader::generation_time (unix ns, 0 unknown).
  std::optional<uint64_t> generation_time;
  bool operator==(const Hello&) const = default;
};
std::vector<uint8_t> encode_hello(const Hello& h);
Result<Hello> decode_hello(std::span<const uint8_t> payload);

// Checks that `theirs` describes the same resource as `ours` (name, data size,
// extent size, protocol version, and that it comes from the expected peer
// node). The message names both values: "extent size differs: here 2097152,
// peer b has 1048576".
Status check_hello(const Hello& ours, const Hello& theirs, const std::string& expected_peer_node);

}  // namespace hastnbd::peer
