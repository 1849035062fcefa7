// Feeds arbitrary bytes to the peer protocol codec as a hostile peer would:
// a stream of frames, each a 48-byte header and what follows it. A payload is
// only ever looked at, and an output buffer only ever sized, after its header
// passed decode_header, as the daemon does.
//
// The stream is read twice: once as sent, and once with every header's
// checksum recomputed, so mutated fields reach the type rules and the payload
// decoders instead of stopping at the checksum the fuzzer cannot forge.
#include <xxhash.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <span>
#include <vector>

#include "hastnbd/peer/auth.h"
#include "hastnbd/peer/hello.h"

using namespace hastnbd;
using namespace hastnbd::peer;

namespace {

void decode_frame(const Header& h, std::span<const uint8_t> payload) {
  switch (h.type) {
    case kWrite:
    case kReadReply: {
      std::vector<uint8_t> out(h.length);
      (void)decode_payload(h, payload, out);
      break;
    }
    case kHello:
      if (verify_payload(h, payload).ok()) (void)decode_hello(payload);
      (void)decode_hello(payload);  // also unverified: the parser must stand on its own
      break;
    case kError:
      (void)decode_error(payload);
      break;
    case kSyncDone:
      (void)decode_sync_done(payload);
      break;
    case kAuthHello:
      (void)decode_auth_hello(payload);
      break;
    case kAuthChallenge:
      (void)decode_auth_challenge(payload);
      break;
    case kAuthProof:
      (void)decode_auth_proof(payload);
      break;
    case kHash:
      (void)decode_hash_request(payload);
      break;
    default:
      break;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::span<const uint8_t> in(data, size);

  for (bool repair : {false, true}) {
    size_t pos = 0;
    while (in.size() - pos >= kHeaderSize) {
      std::array<uint8_t, kHeaderSize> raw;
      std::copy_n(in.begin() + pos, kHeaderSize, raw.begin());
      pos += kHeaderSize;
      if (repair) {
        uint64_t sum = XXH3_64bits(raw.data(), kHeaderSize - 8);
        for (int i = 0; i < 8; ++i) raw[kHeaderSize - 8 + i] = uint8_t(sum >> (56 - 8 * i));
      }
      auto h = decode_header(raw);
      if (!h.ok()) continue;
      size_t take = std::min<size_t>(h->payload_length, in.size() - pos);
      decode_frame(*h, in.subspan(pos, take));
      pos += take;
    }
  }

  (void)decode_hello(in);
  (void)decode_error(in);
  (void)decode_auth_hello(in);
  (void)decode_auth_challenge(in);
  return 0;
}
