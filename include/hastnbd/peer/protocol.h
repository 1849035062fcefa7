// The peer protocol: framed records between primary and secondary over TCP.
// Pure codec: no sockets. Everything from the network is hostile until
// validated here: lengths are checked against limits before anything is
// allocated, checksums before anything is used. docs/protocol.md describes the
// bytes; this header is the contract.
//
// Frame = 48-byte header (big-endian, field by field) + payload_length bytes:
//   u32 magic  u8 version  u8 type  u16 flags  u64 seq  u64 offset
//   u32 length  u32 payload_length  u64 payload_checksum  u64 header_checksum
// header_checksum is XXH3-64 over the first 40 bytes and is always checked;
// payload_checksum is XXH3-64 over the payload as sent, checked when the
// kFlagChecksummed flag is set (config `checksum: xxh3`).
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "hastnbd/config/config.h"
#include "hastnbd/base/status.h"

namespace hastnbd::peer {

inline constexpr uint32_t kMagic = 0x484E4244;  // "HNBD"
inline constexpr uint8_t kVersion = 1;  // of the record format (header byte 4)
// Protocol versions this build speaks (docs/protocol.md, "Versions"): 2 is
// the first that authenticates (version 1 began with HELLO). The AUTH
// exchange agrees on one, and HELLO carries it.
inline constexpr uint32_t kProtocolMin = 2;
inline constexpr uint32_t kProtocolMax = 2;
inline constexpr size_t kHeaderSize = 48;
inline constexpr uint32_t kMaxDataLength = 32u << 20;  // one WRITE/READ_REPLY carries at most this
// Largest payload accepted on the wire: raw data, an lz4 block of it, or a
// handshake with a dirty bitmap (1 bit per extent; 64 MiB covers 512 Mi extents).
inline constexpr uint32_t kMaxPayload = 64u << 20;
inline constexpr uint32_t kMaxErrorMessage = 1024;
// Resource and node names in a Hello: 1..64 of A-Z a-z 0-9 _ . - (as in the config).
inline constexpr size_t kMaxNameBytes = 64;

enum Type : uint8_t {
  kHello = 1,         // handshake, both directions; payload = Hello
  kWrite = 2,         // offset, length, payload = data (maybe compressed or a hole)
  kTrim = 3,          // offset, length; no payload
  kWriteZeroes = 4,   // offset, length; no payload
  kFlush = 5,         // all records before it durable on the secondary
  kReceived = 6,      // secondary -> primary: record `seq` received (memsync)
  kWritten = 7,       // secondary -> primary: record `seq` applied (durable if FUA/FLUSH)
  kError = 8,         // record `seq` failed; payload = u32 errno + message
  kKeepalive = 9,     // no payload
  kRead = 10,         // primary -> secondary: read offset, length
  kReadReply = 11,    // secondary -> primary: seq = the kRead's seq; payload = data
  kSyncDone = 12,     // primary -> secondary: synchronisation complete; payload = u64 primary localcnt
  kAuthHello = 13,     // initiator -> responder, first on every link (peer/auth.h)
  kAuthChallenge = 14, // responder -> initiator
  kAuthProof = 15,     // initiator -> responder
  kHash = 16,          // primary -> secondary: hash offset, length in blocks; payload = u32 block size
  kHashReply = 17,     // secondary -> primary: seq = the kHash's seq; payload = one Hash128 per block
};
// Any AUTH_* payload; also what a link accepts at all until it is authenticated.
inline constexpr uint32_t kMaxAuthPayload = 512;
inline constexpr uint32_t kSyncDonePayload = 8;
const char* type_name(uint8_t type);

enum Flags : uint16_t {
  kFlagLz4 = 1 << 0,          // payload is an LZ4 block that expands to `length` bytes
  kFlagHole = 1 << 1,         // data is `length` zero bytes; no payload
  kFlagFua = 1 << 2,          // the secondary makes this write durable before kWritten
  kFlagWantReceived = 1 << 3, // the secondary sends kReceived on arrival (memsync)
  kFlagChecksummed = 1 << 4,  // payload_checksum is valid
  kFlagNoHole = 1 << 5,       // kWriteZeroes: the range must stay allocated
  kFlagResync = 1 << 6,       // kWrite / kRead / kReadReply: copy made by the synchronisation, not the application
};
inline constexpr uint16_t kKnownFlags = 0x7f;

struct Header {
  uint8_t type = 0;
  uint16_t flags = 0;
  uint64_t seq = 0;
  uint64_t offset = 0;
  uint32_t length = 0;
  uint32_t payload_length = 0;
  uint64_t payload_checksum = 0;
};

std::array<uint8_t, kHeaderSize> encode_header(const Header& h);
// Checks magic, version, header checksum, type, flags, and every length
// against the limits and the type's rules (e.g. kTrim carries no payload,
// kWrite's payload never exceeds what `length` bytes can compress to).
// The message names the field and both values.
Result<Header> decode_header(std::span<const uint8_t, kHeaderSize> bytes);

// What the sender does to a data payload before framing it.
struct Encoded {
  uint16_t flags = 0;            // kFlagLz4 / kFlagHole / kFlagChecksummed as applied
  std::vector<uint8_t> payload;  // empty for a hole; data copied or compressed otherwise
  uint64_t checksum = 0;
  bool raw = false;              // the payload is the data as is
};
// Chooses per record: all-zero data becomes a hole (compression hole or lz4),
// lz4 is used only when it saves bytes. Pure function of its inputs.
// With copy_raw false, a raw result leaves `payload` empty: the caller sends
// the data itself (no copy of a buffer it owns).
Encoded encode_payload(std::span<const uint8_t> data, Compression compression, Checksum checksum,
                       bool copy_raw = true);
// XXH3-64 of a payload as sent, for payload_checksum.
uint64_t payload_checksum(std::span<const uint8_t> payload);
// Verifies the checksum if flagged and expands into `out` (exactly h.length bytes).
Status decode_payload(const Header& h, std::span<const uint8_t> payload, std::span<uint8_t> out);
// Checks that `payload` is h.payload_length bytes and, if kFlagChecksummed is
// set, that it matches h.payload_checksum (EBADMSG). decode_payload calls it;
// call it yourself before decode_hello (peer/hello.h) / decode_error.
Status verify_payload(const Header& h, std::span<const uint8_t> payload);

// kSyncDone payload: the primary's localcnt, which the secondary stores as its remotecnt.
std::vector<uint8_t> encode_sync_done(uint64_t primary_localcnt);
Result<uint64_t> decode_sync_done(std::span<const uint8_t> payload);

// kHash / kHashReply (feature kFeatureHash, docs/protocol.md "Hashes"):
// the secondary hashes [offset, offset+length) in blocks of `block` bytes
// (the last one may be shorter) with XXH3-128 and answers with the hashes
// in order, each as its high and low 64 bits, big-endian.
inline constexpr uint32_t kHashRequestPayload = 4;
inline constexpr uint32_t kMinHashBlock = 4096;
inline constexpr uint32_t kMaxHashBlock = 1u << 20;
inline constexpr uint32_t kHashBytes = 16;
std::vector<uint8_t> encode_hash_request(uint32_t block);
// The block size: a power of two, kMinHashBlock..kMaxHashBlock.
Result<uint32_t> decode_hash_request(std::span<const uint8_t> payload);
// Hashes of `length` bytes in blocks of `block`: ceil(length / block).
inline uint64_t hash_count(uint64_t length, uint32_t block) { return (length + block - 1) / block; }
// One kHashBytes hash per block of `data`, in wire order.
std::vector<uint8_t> hash_blocks(std::span<const uint8_t> data, uint32_t block);
// Where two hash_blocks() results for the same `length` bytes differ
// (ours.size() == theirs.size()): runs of adjacent differing blocks, merged,
// as (offset in the range, bytes; the last block may be short). Blocks for
// which `skip(index)` is true are left out.
std::vector<std::pair<uint64_t, uint64_t>> differing_runs(std::span<const uint8_t> ours,
                                                          std::span<const uint8_t> theirs, uint64_t length,
                                                          uint32_t block,
                                                          const std::function<bool(size_t)>& skip = {});

// kError payload.
std::vector<uint8_t> encode_error(int err, const std::string& message);
Result<std::pair<int, std::string>> decode_error(std::span<const uint8_t> payload);

}  // namespace hastnbd::peer
