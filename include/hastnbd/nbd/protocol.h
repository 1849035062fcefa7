// NBD wire format (fixed newstyle handshake, simple replies): constants and a
// pure codec. No sockets here: the server feeds bytes in and sends what these
// functions produce. Every multi-byte field is big-endian on the wire and is
// encoded field by field. Reference: NetworkBlockDevice/nbd doc/proto.md.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "hastnbd/base/bytes.h"
#include "hastnbd/base/status.h"

namespace hastnbd::nbd {

// Every NBD field is big-endian (base/bytes.h).
using bytes::get_be16;
using bytes::get_be32;
using bytes::get_be64;
using bytes::put_be16;
using bytes::put_be32;
using bytes::put_be64;

// Handshake.
inline constexpr uint64_t kNbdMagic = 0x4e42444d41474943ULL;      // "NBDMAGIC"
inline constexpr uint64_t kOptMagic = 0x49484156454F5054ULL;      // "IHAVEOPT"
inline constexpr uint64_t kOptReplyMagic = 0x0003e889045565a9ULL;
inline constexpr uint16_t kFlagFixedNewstyle = 1 << 0;
inline constexpr uint16_t kFlagNoZeroes = 1 << 1;
inline constexpr uint32_t kClientFlagFixedNewstyle = 1 << 0;
inline constexpr uint32_t kClientFlagNoZeroes = 1 << 1;
inline constexpr size_t kGreetingSize = 8 + 8 + 2;
inline constexpr size_t kOptionHeaderSize = 8 + 4 + 4;
inline constexpr uint32_t kMaxOptionLength = 64 * 1024;  // options are small; more is hostile
inline constexpr uint32_t kMaxNameLength = 4096;

enum Option : uint32_t {
  kOptExportName = 1,
  kOptAbort = 2,
  kOptList = 3,
  kOptStartTls = 5,
  kOptInfo = 6,
  kOptGo = 7,
  kOptStructuredReply = 8,
};

enum Reply : uint32_t {
  kRepAck = 1,
  kRepServer = 2,
  kRepInfo = 3,
  kRepErrUnsup = 0x80000001u,
  kRepErrPolicy = 0x80000002u,
  kRepErrInvalid = 0x80000003u,
  kRepErrPlatform = 0x80000004u,
  kRepErrTlsReqd = 0x80000005u,
  kRepErrUnknown = 0x80000006u,
  kRepErrShutdown = 0x80000007u,
  kRepErrBlockSizeReqd = 0x80000008u,
  kRepErrTooBig = 0x80000009u,
};

enum Info : uint16_t {
  kInfoExport = 0,
  kInfoName = 1,
  kInfoDescription = 2,
  kInfoBlockSize = 3,
};

// Transmission flags.
inline constexpr uint16_t kTxHasFlags = 1 << 0;
inline constexpr uint16_t kTxReadOnly = 1 << 1;
inline constexpr uint16_t kTxSendFlush = 1 << 2;
inline constexpr uint16_t kTxSendFua = 1 << 3;
inline constexpr uint16_t kTxRotational = 1 << 4;
inline constexpr uint16_t kTxSendTrim = 1 << 5;
inline constexpr uint16_t kTxSendWriteZeroes = 1 << 6;
inline constexpr uint16_t kTxCanMultiConn = 1 << 8;

// Transmission phase.
inline constexpr uint32_t kRequestMagic = 0x25609513;
inline constexpr uint32_t kSimpleReplyMagic = 0x67446698;
inline constexpr size_t kRequestSize = 4 + 2 + 2 + 8 + 8 + 4;
inline constexpr size_t kSimpleReplySize = 4 + 4 + 8;

enum Command : uint16_t {
  kCmdRead = 0,
  kCmdWrite = 1,
  kCmdDisc = 2,
  kCmdFlush = 3,
  kCmdTrim = 4,
  kCmdCache = 5,
  kCmdWriteZeroes = 6,
  kCmdBlockStatus = 7,
};

inline constexpr uint16_t kCmdFlagFua = 1 << 0;
inline constexpr uint16_t kCmdFlagNoHole = 1 << 1;

// Errors as NBD numbers them (they happen to match Linux errno values).
enum Error : uint32_t {
  kOk = 0,
  kEperm = 1,
  kEio = 5,
  kEnomem = 12,
  kEinval = 22,
  kEnospc = 28,
  kEoverflow = 75,
  kEnotsup = 95,
  kEshutdown = 108,
};
// Map an errno from the I/O path to what NBD may carry (unknown => EIO).
uint32_t error_from_errno(int err);

// Block size constraints we advertise.
inline constexpr uint32_t kMinBlock = 512;
inline constexpr uint32_t kPreferredBlock = 4096;
inline constexpr uint32_t kMaxPayload = 32 * 1024 * 1024;

std::vector<uint8_t> encode_greeting();

struct OptionHeader {
  uint64_t magic;
  uint32_t option;
  uint32_t length;
};
OptionHeader decode_option_header(std::span<const uint8_t, kOptionHeaderSize> bytes);

// NBD_OPT_INFO / NBD_OPT_GO payload: u32 namelen, name, u16 n, n x u16.
struct GoRequest {
  std::string name;
  std::vector<uint16_t> info_requests;
};
// Fails (EINVAL, with a reason) on any length inconsistency.
Result<GoRequest> decode_go(std::span<const uint8_t> payload);

// One option reply: magic, option, type, length, data.
std::vector<uint8_t> encode_option_reply(uint32_t option, uint32_t type,
                                         std::span<const uint8_t> data = {});
std::vector<uint8_t> encode_info_export(uint32_t option, uint64_t size, uint16_t flags);
std::vector<uint8_t> encode_info_block_size(uint32_t option, uint32_t min, uint32_t preferred,
                                            uint32_t max);
std::vector<uint8_t> encode_list_entry(std::string_view name);
// Reply to NBD_OPT_EXPORT_NAME: size, flags and (unless no_zeroes) 124 zero bytes.
std::vector<uint8_t> encode_export_name_reply(uint64_t size, uint16_t flags, bool no_zeroes);

struct Request {
  uint32_t magic;
  uint16_t flags;
  uint16_t type;
  uint64_t handle;
  uint64_t offset;
  uint32_t length;
};
Request decode_request(std::span<const uint8_t, kRequestSize> bytes);
void encode_simple_reply(std::span<uint8_t, kSimpleReplySize> out, uint32_t error, uint64_t handle);

// Validation of a transmission-phase request against the export, in one place.
// Returns kOk or the NBD error to reply with; `payload_to_drain` tells the
// caller how many payload bytes follow the header on the wire regardless of
// the verdict (a rejected WRITE still carries its payload).
struct Verdict {
  uint32_t error = kOk;
  uint64_t payload_to_drain = 0;
  const char* reason = "";
};
Verdict validate_request(const Request& r, uint64_t export_size, bool read_only);

const char* command_name(uint16_t type);
const char* option_name(uint32_t option);

}  // namespace hastnbd::nbd
