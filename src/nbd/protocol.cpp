#include "hastnbd/nbd/protocol.h"

#include <algorithm>
#include <cstring>

namespace hastnbd::nbd {

uint32_t error_from_errno(int err) {
  switch (err) {
    case 0: return kOk;
    case EPERM: case EROFS: return kEperm;
    case ENOMEM: return kEnomem;
    case EINVAL: return kEinval;
    case ENOSPC: case EFBIG: return kEnospc;
    case EOVERFLOW: return kEoverflow;
    case ENOTSUP: return kEnotsup;
    case ESHUTDOWN: return kEshutdown;
    default: return kEio;
  }
}

std::vector<uint8_t> encode_greeting() {
  std::vector<uint8_t> out(kGreetingSize);
  put_be64(&out[0], kNbdMagic);
  put_be64(&out[8], kOptMagic);
  put_be16(&out[16], kFlagFixedNewstyle | kFlagNoZeroes);
  return out;
}

OptionHeader decode_option_header(std::span<const uint8_t, kOptionHeaderSize> b) {
  return {get_be64(&b[0]), get_be32(&b[8]), get_be32(&b[12])};
}

Result<GoRequest> decode_go(std::span<const uint8_t> p) {
  if (p.size() < 4 + 2) return Status::Error(EINVAL, "option payload shorter than 6 bytes");
  uint32_t name_len = get_be32(p.data());
  if (name_len > kMaxNameLength) return Status::Error(EINVAL, "export name too long");
  if (p.size() < size_t(4) + name_len + 2) return Status::Error(EINVAL, "export name length exceeds option");
  GoRequest go;
  go.name.assign(reinterpret_cast<const char*>(p.data() + 4), name_len);
  size_t pos = 4 + name_len;
  uint16_t n = get_be16(p.data() + pos);
  pos += 2;
  if (p.size() != pos + size_t(n) * 2) return Status::Error(EINVAL, "information request count does not match option length");
  for (uint16_t i = 0; i < n; ++i) go.info_requests.push_back(get_be16(p.data() + pos + 2 * i));
  return go;
}

std::vector<uint8_t> encode_option_reply(uint32_t option, uint32_t type, std::span<const uint8_t> data) {
  std::vector<uint8_t> out(8 + 4 + 4 + 4 + data.size());
  put_be64(&out[0], kOptReplyMagic);
  put_be32(&out[8], option);
  put_be32(&out[12], type);
  put_be32(&out[16], uint32_t(data.size()));
  std::copy(data.begin(), data.end(), out.begin() + 20);
  return out;
}

std::vector<uint8_t> encode_info_export(uint32_t option, uint64_t size, uint16_t flags) {
  uint8_t d[2 + 8 + 2];
  put_be16(d, kInfoExport);
  put_be64(d + 2, size);
  put_be16(d + 10, flags);
  return encode_option_reply(option, kRepInfo, d);
}

std::vector<uint8_t> encode_info_block_size(uint32_t option, uint32_t min, uint32_t preferred, uint32_t max) {
  uint8_t d[2 + 4 + 4 + 4];
  put_be16(d, kInfoBlockSize);
  put_be32(d + 2, min);
  put_be32(d + 6, preferred);
  put_be32(d + 10, max);
  return encode_option_reply(option, kRepInfo, d);
}

std::vector<uint8_t> encode_list_entry(std::string_view name) {
  std::vector<uint8_t> d(4 + name.size());
  put_be32(d.data(), uint32_t(name.size()));
  std::memcpy(d.data() + 4, name.data(), name.size());
  return encode_option_reply(kOptList, kRepServer, d);
}

std::vector<uint8_t> encode_export_name_reply(uint64_t size, uint16_t flags, bool no_zeroes) {
  std::vector<uint8_t> out(8 + 2 + (no_zeroes ? 0 : 124), 0);
  put_be64(&out[0], size);
  put_be16(&out[8], flags);
  return out;
}

Request decode_request(std::span<const uint8_t, kRequestSize> b) {
  return {get_be32(&b[0]), get_be16(&b[4]), get_be16(&b[6]), get_be64(&b[8]), get_be64(&b[16]), get_be32(&b[24])};
}

void encode_simple_reply(std::span<uint8_t, kSimpleReplySize> out, uint32_t error, uint64_t handle) {
  put_be32(&out[0], kSimpleReplyMagic);
  put_be32(&out[4], error);
  put_be64(&out[8], handle);
}

Verdict validate_request(const Request& r, uint64_t export_size, bool read_only) {
  Verdict v;
  if (r.type == kCmdWrite) v.payload_to_drain = r.length;
  auto reject = [&](uint32_t err, const char* why) {
    v.error = err;
    v.reason = why;
    return v;
  };
  uint16_t allowed_flags = 0;
  switch (r.type) {
    case kCmdRead: break;
    case kCmdWrite: case kCmdTrim: allowed_flags = kCmdFlagFua; break;
    case kCmdWriteZeroes: allowed_flags = kCmdFlagFua | kCmdFlagNoHole; break;
    case kCmdFlush:
      if (r.flags != 0) return reject(kEinval, "flags on FLUSH");
      return v;  // offset and length are ignored by spec convention (both 0)
    case kCmdDisc: return v;
    default: return reject(kEinval, "unsupported command");
  }
  if (r.flags & ~allowed_flags) return reject(kEinval, "unsupported command flags");
  if ((r.type == kCmdWrite || r.type == kCmdWriteZeroes) && read_only)
    return reject(kEperm, "export is read-only");
  if (r.length == 0) return reject(kEinval, "zero-length request");
  if ((r.type == kCmdRead || r.type == kCmdWrite) && r.length > kMaxPayload)
    return reject(kEinval, "request larger than the advertised maximum payload");
  if (r.offset > export_size || r.length > export_size - r.offset) {
    bool writes = r.type == kCmdWrite || r.type == kCmdWriteZeroes;
    return reject(writes ? kEnospc : kEinval, "request beyond the end of the export");
  }
  return v;
}

const char* command_name(uint16_t type) {
  switch (type) {
    case kCmdRead: return "READ";
    case kCmdWrite: return "WRITE";
    case kCmdDisc: return "DISC";
    case kCmdFlush: return "FLUSH";
    case kCmdTrim: return "TRIM";
    case kCmdCache: return "CACHE";
    case kCmdWriteZeroes: return "WRITE_ZEROES";
    case kCmdBlockStatus: return "BLOCK_STATUS";
    default: return "UNKNOWN";
  }
}

const char* option_name(uint32_t option) {
  switch (option) {
    case kOptExportName: return "EXPORT_NAME";
    case kOptAbort: return "ABORT";
    case kOptList: return "LIST";
    case kOptStartTls: return "STARTTLS";
    case kOptInfo: return "INFO";
    case kOptGo: return "GO";
    case kOptStructuredReply: return "STRUCTURED_REPLY";
    default: return "UNKNOWN";
  }
}

}  // namespace hastnbd::nbd
