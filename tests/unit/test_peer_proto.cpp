#include <lz4.h>
#include <xxhash.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <random>

#include "hastnbd/peer/auth.h"
#include "hastnbd/peer/hello.h"

using namespace hastnbd;
using namespace hastnbd::peer;

namespace {

Result<Header> round_trip(const Header& h) {
  auto bytes = encode_header(h);
  return decode_header(bytes);
}

// The message of decoding `h`, or "" if it decoded.
std::string rejection(const Header& h) {
  auto r = round_trip(h);
  return r.ok() ? std::string() : r.status().message();
}

Header data_header(uint8_t type, uint32_t length) {
  Header h;
  h.type = type;
  h.seq = 7;
  h.offset = 1 << 20;
  h.length = length;
  h.payload_length = length;
  return h;
}

Header bare(uint8_t type) {
  Header h;
  h.type = type;
  h.seq = 3;
  return h;
}

std::vector<uint8_t> text(size_t n) {
  static const char kLine[] = "the quick brown fox jumps over the lazy dog, block after block. ";
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = uint8_t(kLine[i % (sizeof kLine - 1)]);
  return v;
}

std::vector<uint8_t> random_bytes(size_t n, uint32_t seed = 42) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = uint8_t(rng());
  return v;
}

// The header a sender would frame around an encoded payload.
Header frame(uint8_t type, uint32_t length, const Encoded& e, uint64_t seq = 11) {
  Header h;
  h.type = type;
  h.seq = seq;
  h.offset = 8192;
  h.length = length;
  h.flags = e.flags;
  h.payload_length = uint32_t(e.payload.size());
  h.payload_checksum = e.checksum;
  return h;
}

Hello sample_hello() {
  Hello h;
  h.resource = "data";
  h.node = "hosta";
  h.role = 2;
  h.data_size = (256ull << 20) + 4096;  // a partial last extent
  h.extent_size = 2 << 20;
  for (size_t i = 0; i < h.uuid.size(); ++i) h.uuid[i] = uint8_t(0xa0 + i);
  h.localcnt = 5;
  h.remotecnt = 3;
  h.meta_flags = 2;
  h.dirty_map.assign(17, 0);  // 129 extents -> 17 bytes
  h.dirty_map[0] = 0x81;
  h.dirty_map[16] = 0x01;
  return h;
}

}  // namespace

TEST_CASE("header layout is big-endian field by field", "[peer]") {
  Header h;
  h.type = kWrite;
  h.flags = kFlagFua | kFlagChecksummed;
  h.seq = 0x0102030405060708ULL;
  h.offset = 0x1112131415161718ULL;
  h.length = 0x21222324;
  h.payload_length = 0x31323334;
  h.payload_checksum = 0x4142434445464748ULL;
  auto b = encode_header(h);
  CHECK(b[0] == 0x48);  // "HNBD"
  CHECK(b[1] == 0x4E);
  CHECK(b[2] == 0x42);
  CHECK(b[3] == 0x44);
  CHECK(b[4] == kVersion);
  CHECK(b[5] == kWrite);
  CHECK(b[6] == 0);
  CHECK(b[7] == (kFlagFua | kFlagChecksummed));
  CHECK(b[8] == 0x01);
  CHECK(b[15] == 0x08);
  CHECK(b[16] == 0x11);
  CHECK(b[23] == 0x18);
  CHECK(b[24] == 0x21);
  CHECK(b[27] == 0x24);
  CHECK(b[28] == 0x31);
  CHECK(b[31] == 0x34);
  CHECK(b[32] == 0x41);
  CHECK(b[39] == 0x48);
  uint64_t sum = XXH3_64bits(b.data(), 40);
  for (int i = 0; i < 8; ++i) CHECK(b[40 + i] == uint8_t(sum >> (56 - 8 * i)));
}

TEST_CASE("header round trip for every record type", "[peer]") {
  std::vector<Header> valid;
  {
    Header h = data_header(kWrite, 4096);
    h.flags = kFlagFua | kFlagWantReceived | kFlagChecksummed;
    h.payload_checksum = 0x1234;
    valid.push_back(h);
  }
  {
    Header h = data_header(kWrite, kMaxDataLength);
    h.flags = kFlagHole;
    h.payload_length = 0;
    valid.push_back(h);
  }
  {
    Header h = data_header(kWrite, 65536);
    h.flags = kFlagLz4;
    h.payload_length = 300;
    valid.push_back(h);
  }
  {
    Header h = data_header(kTrim, 0);
    h.length = 1 << 30;
    h.payload_length = 0;
    h.flags = kFlagFua | kFlagWantReceived;
    valid.push_back(h);
  }
  {
    Header h = data_header(kWriteZeroes, 0);
    h.length = UINT32_MAX;
    h.payload_length = 0;
    h.flags = kFlagNoHole | kFlagFua;
    valid.push_back(h);
  }
  {
    Header h = bare(kFlush);
    h.flags = kFlagWantReceived;
    valid.push_back(h);
  }
  valid.push_back(bare(kReceived));
  valid.push_back(bare(kWritten));
  valid.push_back(bare(kKeepalive));
  {
    Header h = bare(kHello);
    h.seq = 0;
    h.payload_length = 100;
    valid.push_back(h);
  }
  {
    Header h = bare(kError);
    h.payload_length = 4;
    valid.push_back(h);
  }
  {
    Header h = data_header(kRead, 4096);
    h.payload_length = 0;
    valid.push_back(h);
  }
  {
    Header h = data_header(kReadReply, 4096);
    h.flags = kFlagChecksummed;
    h.payload_checksum = ~0ull;
    valid.push_back(h);
  }
  {
    Header h = bare(kSyncDone);
    h.payload_length = kSyncDonePayload;
    valid.push_back(h);
  }
  {
    Header h = data_header(kWrite, 4096);
    h.flags = kFlagResync;
    valid.push_back(h);
  }
  {
    Header h = data_header(kHash, 1 << 20);
    h.payload_length = kHashRequestPayload;
    h.flags = kFlagResync;
    valid.push_back(h);
  }
  {
    Header h = data_header(kHashReply, 1 << 20);
    h.payload_length = 256 * kHashBytes;
    h.flags = kFlagChecksummed;
    h.payload_checksum = 1;
    valid.push_back(h);
  }
  for (uint8_t t = kHello; t <= kHashReply; ++t)
    if (t < kAuthHello || t > kAuthProof) CHECK(std::any_of(valid.begin(), valid.end(), [t](const Header& h) { return h.type == t; }));

  for (const Header& h : valid) {
    INFO("type " << type_name(h.type));
    auto r = round_trip(h);
    REQUIRE(r.ok());
    CHECK(r->type == h.type);
    CHECK(r->flags == h.flags);
    CHECK(r->seq == h.seq);
    CHECK(r->offset == h.offset);
    CHECK(r->length == h.length);
    CHECK(r->payload_length == h.payload_length);
    CHECK(r->payload_checksum == h.payload_checksum);
  }
}

TEST_CASE("type names", "[peer]") {
  CHECK(std::string(type_name(kHello)) == "HELLO");
  CHECK(std::string(type_name(kWrite)) == "WRITE");
  CHECK(std::string(type_name(kWriteZeroes)) == "WRITE_ZEROES");
  CHECK(std::string(type_name(kReadReply)) == "READ_REPLY");
  CHECK(std::string(type_name(kSyncDone)) == "SYNC_DONE");
  CHECK(std::string(type_name(kHash)) == "HASH");
  CHECK(std::string(type_name(kHashReply)) == "HASH_REPLY");
  CHECK(std::string(type_name(0)) == "UNKNOWN");
  CHECK(std::string(type_name(200)) == "UNKNOWN");
}

TEST_CASE("header framing rejections: magic, version, checksum, type, flags", "[peer]") {
  Header ok = data_header(kWrite, 4096);
  auto good = encode_header(ok);

  auto b = good;
  b[0] = 'X';
  auto r = decode_header(b);
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code() == EPROTO);
  CHECK_THAT(r.status().message(), Catch::Contains("bad magic 0x584e4244") && Catch::Contains("0x484e4244"));

  b = good;
  b[4] = 2;
  r = decode_header(b);
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code() == EPROTO);
  CHECK_THAT(r.status().message(), Catch::Contains("protocol version 2") && Catch::Contains("speaks 1"));

  b = good;
  b[20] ^= 1;  // offset, checksum not updated
  r = decode_header(b);
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code() == EBADMSG);
  CHECK_THAT(r.status().message(), Catch::Contains("header checksum mismatch"));

  CHECK_THAT(rejection(bare(0)), Catch::Contains("unknown record type 0"));
  CHECK_THAT(rejection(bare(18)), Catch::Contains("unknown record type 18"));
  CHECK_THAT(rejection(bare(255)), Catch::Contains("unknown record type 255"));

  Header h = ok;
  h.flags = 0x80;
  CHECK_THAT(rejection(h), Catch::Contains("unknown flags 0x80") && Catch::Contains("known 0x7f"));
  h.flags = 0x8000;
  CHECK_THAT(rejection(h), Catch::Contains("unknown flags 0x8000"));
}

TEST_CASE("flags only where the record type allows them", "[peer]") {
  Header h = bare(kFlush);
  h.flags = kFlagFua;
  CHECK_THAT(rejection(h), Catch::Contains("FLUSH") && Catch::Contains("flag FUA not allowed"));

  h = data_header(kTrim, 4096);
  h.payload_length = 0;
  h.flags = kFlagLz4;
  CHECK_THAT(rejection(h), Catch::Contains("TRIM") && Catch::Contains("flag LZ4 not allowed"));
  h.flags = kFlagHole;
  CHECK_THAT(rejection(h), Catch::Contains("TRIM") && Catch::Contains("flag HOLE not allowed"));
  h.flags = kFlagNoHole;
  CHECK_THAT(rejection(h), Catch::Contains("TRIM") && Catch::Contains("flag NO_HOLE not allowed"));
  h.flags = kFlagChecksummed;
  CHECK_THAT(rejection(h), Catch::Contains("TRIM") && Catch::Contains("flag CHECKSUMMED not allowed"));

  h = data_header(kWrite, 4096);
  h.flags = kFlagNoHole;
  CHECK_THAT(rejection(h), Catch::Contains("WRITE") && Catch::Contains("flag NO_HOLE not allowed"));

  h = data_header(kRead, 4096);
  h.payload_length = 0;
  h.flags = kFlagFua;
  CHECK_THAT(rejection(h), Catch::Contains("READ:") && Catch::Contains("flag FUA not allowed"));

  h = data_header(kReadReply, 4096);
  h.flags = kFlagFua;
  CHECK_THAT(rejection(h), Catch::Contains("READ_REPLY") && Catch::Contains("flag FUA not allowed"));
  h.flags = kFlagWantReceived;
  CHECK_THAT(rejection(h), Catch::Contains("READ_REPLY") && Catch::Contains("flag WANT_RECEIVED not allowed"));

  for (uint8_t t : {kReceived, kWritten, kKeepalive}) {
    h = bare(t);
    h.flags = kFlagWantReceived;
    CHECK_THAT(rejection(h), Catch::Contains(type_name(t)) && Catch::Contains("flag WANT_RECEIVED not allowed"));
  }
  h = data_header(kTrim, 4096);
  h.payload_length = 0;
  h.flags = kFlagResync;
  CHECK_THAT(rejection(h), Catch::Contains("TRIM") && Catch::Contains("flag RESYNC not allowed"));
  h = bare(kSyncDone);
  h.payload_length = kSyncDonePayload;
  h.flags = kFlagFua;
  CHECK_THAT(rejection(h), Catch::Contains("SYNC_DONE") && Catch::Contains("flag FUA not allowed"));
  h.flags = 0;
  h.payload_length = 7;
  CHECK_THAT(rejection(h), Catch::Contains("SYNC_DONE") && Catch::Contains("payload_length 7 must be 8"));
  h.payload_length = kSyncDonePayload;
  h.offset = 4096;
  CHECK_THAT(rejection(h), Catch::Contains("SYNC_DONE") && Catch::Contains("offset 4096 must be 0"));
  h = bare(kHello);
  h.payload_length = 10;
  h.flags = kFlagLz4;
  CHECK_THAT(rejection(h), Catch::Contains("HELLO") && Catch::Contains("flag LZ4 not allowed"));
  h = bare(kError);
  h.payload_length = 10;
  h.flags = kFlagHole;
  CHECK_THAT(rejection(h), Catch::Contains("ERROR") && Catch::Contains("flag HOLE not allowed"));

  h = data_header(kWrite, 4096);
  h.flags = kFlagLz4 | kFlagHole;
  h.payload_length = 0;
  CHECK_THAT(rejection(h), Catch::Contains("flags LZ4 and HOLE together"));

  h.flags = kFlagHole | kFlagChecksummed;
  CHECK_THAT(rejection(h), Catch::Contains("flags HOLE and CHECKSUMMED together"));

  h = data_header(kWrite, 4096);
  h.payload_checksum = 0xabc;
  CHECK_THAT(rejection(h), Catch::Contains("payload_checksum 0xabc set without flag CHECKSUMMED"));
}

TEST_CASE("data record lengths: WRITE and READ_REPLY", "[peer]") {
  for (uint8_t t : {kWrite, kReadReply}) {
    INFO(type_name(t));
    const std::string name = std::string(type_name(t)) + ":";
    Header h = data_header(t, 0);
    CHECK_THAT(rejection(h), Catch::Contains(name) && Catch::Contains("length 0 outside 1..33554432"));

    h = data_header(t, kMaxDataLength + 1);
    CHECK_THAT(rejection(h), Catch::Contains("length 33554433 outside 1..33554432"));

    h = data_header(t, 4096);
    h.payload_length = 4095;
    CHECK_THAT(rejection(h), Catch::Contains("payload_length 4095 differs from length 4096"));
    h.payload_length = 0;
    CHECK_THAT(rejection(h), Catch::Contains("payload_length 0 differs from length 4096"));

    h = data_header(t, 4096);
    h.flags = kFlagHole;
    h.payload_length = 1;
    CHECK_THAT(rejection(h), Catch::Contains("payload_length 1 with flag HOLE, must be 0"));

    h = data_header(t, 4096);
    h.flags = kFlagLz4;
    h.payload_length = 0;
    const std::string bound = std::to_string(LZ4_compressBound(4096));
    CHECK_THAT(rejection(h), Catch::Contains("payload_length 0 with flag LZ4 outside 1.." + bound));
    h.payload_length = uint32_t(LZ4_compressBound(4096)) + 1;
    CHECK_THAT(rejection(h), Catch::Contains("payload_length " + std::to_string(h.payload_length) +
                                             " with flag LZ4 outside 1.." + bound));
    h.payload_length = uint32_t(LZ4_compressBound(4096));
    CHECK(rejection(h).empty());

    h = data_header(t, 4096);
    h.payload_length = 70000000;
    CHECK_THAT(rejection(h), Catch::Contains("payload_length 70000000 exceeds the limit 67108864"));
    h.flags = kFlagLz4;
    CHECK_THAT(rejection(h), Catch::Contains("payload_length 70000000 exceeds the limit 67108864"));

    h = data_header(t, 4096);
    h.offset = UINT64_MAX - 100;
    CHECK_THAT(rejection(h), Catch::Contains("offset 18446744073709551515 + length 4096 overflows"));
  }
}

TEST_CASE("range records without payload: TRIM, WRITE_ZEROES, READ", "[peer]") {
  for (uint8_t t : {kTrim, kWriteZeroes, kRead}) {
    INFO(type_name(t));
    Header h = data_header(t, 0);
    CHECK_THAT(rejection(h), Catch::Contains(type_name(t)) && Catch::Contains("length 0 outside 1.."));

    h = data_header(t, 4096);
    h.payload_length = 4096;
    CHECK_THAT(rejection(h), Catch::Contains("payload_length 4096 must be 0"));
    h.payload_length = 70000000;
    CHECK_THAT(rejection(h), Catch::Contains("payload_length 70000000 exceeds the limit 67108864"));

    h = data_header(t, 4096);
    h.payload_length = 0;
    h.offset = UINT64_MAX;
    CHECK_THAT(rejection(h), Catch::Contains("overflows"));
  }
  Header h = data_header(kRead, kMaxDataLength + 1);
  h.payload_length = 0;
  CHECK_THAT(rejection(h), Catch::Contains("READ: length 33554433 outside 1..33554432"));
  h.type = kTrim;  // a trim may cover more than one data record
  CHECK(rejection(h).empty());
}

TEST_CASE("records without range or payload: FLUSH, RECEIVED, WRITTEN, KEEPALIVE", "[peer]") {
  for (uint8_t t : {kFlush, kReceived, kWritten, kKeepalive}) {
    INFO(type_name(t));
    Header h = bare(t);
    CHECK(rejection(h).empty());
    h.payload_length = 1;
    CHECK_THAT(rejection(h), Catch::Contains(type_name(t)) && Catch::Contains("payload_length 1 must be 0"));
    h = bare(t);
    h.length = 512;
    CHECK_THAT(rejection(h), Catch::Contains("length 512 must be 0"));
    h = bare(t);
    h.offset = 4096;
    CHECK_THAT(rejection(h), Catch::Contains("offset 4096 must be 0"));
  }
}

TEST_CASE("HELLO and ERROR payload lengths", "[peer]") {
  Header h = bare(kHello);
  CHECK_THAT(rejection(h), Catch::Contains("HELLO: payload_length 0 outside 1..67108864"));
  h.payload_length = kMaxPayload;
  CHECK(rejection(h).empty());
  h.payload_length = kMaxPayload + 1;
  CHECK_THAT(rejection(h), Catch::Contains("payload_length 67108865 exceeds the limit 67108864"));
  h.payload_length = 10;
  h.length = 10;
  CHECK_THAT(rejection(h), Catch::Contains("HELLO: length 10 must be 0"));

  h = bare(kError);
  h.payload_length = 3;
  CHECK_THAT(rejection(h), Catch::Contains("ERROR: payload_length 3 outside 4..1028"));
  h.payload_length = 1029;
  CHECK_THAT(rejection(h), Catch::Contains("ERROR: payload_length 1029 outside 4..1028"));
  h.payload_length = 1028;
  CHECK(rejection(h).empty());
}

TEST_CASE("a flipped bit anywhere in a header is detected", "[peer]") {
  Header h = data_header(kWrite, 4096);
  h.flags = kFlagChecksummed | kFlagFua;
  h.payload_checksum = 0x0123456789abcdefULL;
  const auto good = encode_header(h);
  REQUIRE(decode_header(good).ok());
  for (size_t byte = 0; byte < kHeaderSize; ++byte) {
    for (int bit = 0; bit < 8; ++bit) {
      auto b = good;
      b[byte] ^= uint8_t(1 << bit);
      INFO("byte " << byte << " bit " << bit);
      CHECK_FALSE(decode_header(b).ok());
    }
  }
}

TEST_CASE("payload encoding: zeros", "[peer]") {
  std::vector<uint8_t> zeros(65536, 0);
  std::vector<uint8_t> out(zeros.size(), 0xee);

  SECTION("compression none sends the bytes") {
    Encoded e = encode_payload(zeros, Compression::kNone, Checksum::kNone);
    CHECK(e.flags == 0);
    CHECK(e.payload == zeros);
    Header h = frame(kWrite, 65536, e);
    REQUIRE(round_trip(h).ok());
    REQUIRE(decode_payload(h, e.payload, out).ok());
    CHECK(out == zeros);
  }
  SECTION("compression hole sends a flag") {
    Encoded e = encode_payload(zeros, Compression::kHole, Checksum::kXxh3);
    CHECK(e.flags == kFlagHole);  // no payload, so no checksum
    CHECK(e.payload.empty());
    CHECK(e.checksum == 0);
    Header h = frame(kWrite, 65536, e);
    REQUIRE(round_trip(h).ok());
    REQUIRE(decode_payload(h, e.payload, out).ok());
    CHECK(out == zeros);
  }
  SECTION("compression lz4 also sends a hole") {
    Encoded e = encode_payload(zeros, Compression::kLz4, Checksum::kNone);
    CHECK(e.flags == kFlagHole);
    CHECK(e.payload.empty());
    Header h = frame(kReadReply, 65536, e);
    REQUIRE(round_trip(h).ok());
    REQUIRE(decode_payload(h, e.payload, out).ok());
    CHECK(out == zeros);
  }
  SECTION("one non-zero byte at the end is not a hole") {
    zeros.back() = 1;
    Encoded e = encode_payload(zeros, Compression::kHole, Checksum::kNone);
    CHECK(e.flags == 0);
    CHECK(e.payload == zeros);
  }
}

TEST_CASE("payload encoding: lz4 only when it saves bytes", "[peer]") {
  SECTION("compressible text") {
    auto data = text(128 * 1024);
    Encoded e = encode_payload(data, Compression::kLz4, Checksum::kXxh3);
    CHECK(e.flags == (kFlagLz4 | kFlagChecksummed));
    CHECK(e.payload.size() < data.size() / 4);
    CHECK(e.checksum == XXH3_64bits(e.payload.data(), e.payload.size()));
    Header h = frame(kWrite, uint32_t(data.size()), e);
    REQUIRE(round_trip(h).ok());
    std::vector<uint8_t> out(data.size());
    REQUIRE(decode_payload(h, e.payload, out).ok());
    CHECK(out == data);
  }
  SECTION("random data falls back to raw") {
    auto data = random_bytes(65536);
    Encoded e = encode_payload(data, Compression::kLz4, Checksum::kXxh3);
    CHECK(e.flags == kFlagChecksummed);
    CHECK(e.payload == data);
    Header h = frame(kWrite, uint32_t(data.size()), e);
    REQUIRE(round_trip(h).ok());
    std::vector<uint8_t> out(data.size());
    REQUIRE(decode_payload(h, e.payload, out).ok());
    CHECK(out == data);
  }
  SECTION("compression hole does not compress") {
    auto data = text(8192);
    Encoded e = encode_payload(data, Compression::kHole, Checksum::kNone);
    CHECK(e.flags == 0);
    CHECK(e.payload == data);
  }
  SECTION("the largest record") {
    auto data = text(kMaxDataLength);
    Encoded e = encode_payload(data, Compression::kLz4, Checksum::kNone);
    CHECK(e.flags == kFlagLz4);
    Header h = frame(kWrite, kMaxDataLength, e);
    REQUIRE(round_trip(h).ok());
    std::vector<uint8_t> out(data.size());
    REQUIRE(decode_payload(h, e.payload, out).ok());
    CHECK(out == data);
  }
}

TEST_CASE("payload checksum on and off", "[peer]") {
  auto data = random_bytes(4096, 7);
  for (Compression c : {Compression::kNone, Compression::kLz4}) {
    for (Checksum k : {Checksum::kNone, Checksum::kXxh3}) {
      INFO(to_string(c) << " " << to_string(k));
      Encoded e = encode_payload(data, c, k);
      CHECK(bool(e.flags & kFlagChecksummed) == (k == Checksum::kXxh3));
      if (k == Checksum::kNone) CHECK(e.checksum == 0);
      Header h = frame(kWrite, 4096, e);
      REQUIRE(round_trip(h).ok());
      std::vector<uint8_t> out(4096);
      REQUIRE(decode_payload(h, e.payload, out).ok());
      CHECK(out == data);
    }
  }
}

TEST_CASE("payload corruption is detected", "[peer]") {
  SECTION("raw payload with a checksum") {
    auto data = random_bytes(4096, 9);
    Encoded e = encode_payload(data, Compression::kLz4, Checksum::kXxh3);
    Header h = frame(kWrite, 4096, e, 1234);
    std::vector<uint8_t> out(4096);
    for (size_t i : {size_t(0), size_t(1000), size_t(4095)}) {
      auto bad = e.payload;
      bad[i] ^= 0x10;
      Status st = decode_payload(h, bad, out);
      REQUIRE_FALSE(st.ok());
      CHECK(st.code() == EBADMSG);
      CHECK_THAT(st.message(), Catch::Contains("payload checksum mismatch at seq 1234"));
    }
  }
  SECTION("lz4 payload with a checksum") {
    auto data = text(16384);
    Encoded e = encode_payload(data, Compression::kLz4, Checksum::kXxh3);
    REQUIRE((e.flags & kFlagLz4));
    Header h = frame(kWrite, 16384, e, 99);
    auto bad = e.payload;
    bad[bad.size() / 2] ^= 0x01;
    std::vector<uint8_t> out(16384);
    CHECK_THAT(decode_payload(h, bad, out).message(), Catch::Contains("payload checksum mismatch at seq 99"));
  }
  SECTION("without a checksum a corrupt lz4 block is still refused, not overrun") {
    std::vector<uint8_t> garbage = {0xff, 0xff, 0xff, 0xff, 0x00, 0x01};
    Header h = data_header(kWrite, 4096);
    h.flags = kFlagLz4;
    h.payload_length = uint32_t(garbage.size());
    std::vector<uint8_t> out(4096);
    Status st = decode_payload(h, garbage, out);
    CHECK_FALSE(st.ok());
    CHECK_THAT(st.message(), Catch::Contains("LZ4"));
  }
}

TEST_CASE("lz4 payload must expand to exactly length bytes", "[peer]") {
  auto data = text(4096);
  Encoded e = encode_payload(data, Compression::kLz4, Checksum::kXxh3);
  REQUIRE((e.flags & kFlagLz4));

  Header h = frame(kWrite, 8192, e, 5);  // says more than the block holds
  REQUIRE(round_trip(h).ok());
  std::vector<uint8_t> big(8192);
  Status st = decode_payload(h, e.payload, big);
  REQUIRE_FALSE(st.ok());
  CHECK_THAT(st.message(), Catch::Contains("LZ4 block expands to 4096 bytes, length is 8192 at seq 5"));

  h = frame(kWrite, 2048, e, 6);  // says less: the block does not fit
  std::vector<uint8_t> small(2048);
  st = decode_payload(h, e.payload, small);
  REQUIRE_FALSE(st.ok());
  CHECK_THAT(st.message(), Catch::Contains("corrupt LZ4 block at seq 6"));
}

TEST_CASE("decode_payload checks its inputs against the header", "[peer]") {
  auto data = random_bytes(4096, 3);
  Encoded e = encode_payload(data, Compression::kNone, Checksum::kNone);
  Header h = frame(kWrite, 4096, e, 8);
  std::vector<uint8_t> out(4095);
  CHECK_THAT(decode_payload(h, e.payload, out).message(), Catch::Contains("output buffer is 4095 bytes, length is 4096"));

  out.resize(4096);
  std::span<const uint8_t> short_payload(e.payload.data(), 100);
  CHECK_THAT(decode_payload(h, short_payload, out).message(),
             Catch::Contains("payload is 100 bytes, header says payload_length 4096 at seq 8"));

  Header hole = data_header(kWrite, 4096);
  hole.flags = kFlagHole;
  hole.payload_length = 0;
  CHECK(decode_payload(hole, {}, out).ok());
  CHECK(std::all_of(out.begin(), out.end(), [](uint8_t b) { return b == 0; }));
  CHECK_FALSE(decode_payload(hole, e.payload, out).ok());

  // A header built by hand, not decoded: raw payload length differs from length.
  Header raw = data_header(kWrite, 4096);
  raw.payload_length = 100;
  CHECK_THAT(decode_payload(raw, short_payload, out).message(), Catch::Contains("raw payload is 100 bytes"));
}

TEST_CASE("verify_payload checks HELLO and ERROR payloads too", "[peer]") {
  auto p = encode_error(EIO, "disk on fire");
  Header h = bare(kError);
  h.flags = kFlagChecksummed;
  h.payload_length = uint32_t(p.size());
  h.payload_checksum = XXH3_64bits(p.data(), p.size());
  REQUIRE(round_trip(h).ok());
  CHECK(verify_payload(h, p).ok());
  p[5] ^= 1;
  Status st = verify_payload(h, p);
  CHECK(st.code() == EBADMSG);
  CHECK_THAT(st.message(), Catch::Contains("payload checksum mismatch at seq 3"));
}

TEST_CASE("hello round trip with a dirty bitmap", "[peer]") {
  Hello h = sample_hello();
  auto bytes = encode_hello(h);
  // 4 + (2+4) + (2+5) + 1 + 8 + 8 + 16 + 8 + 8 + 4 + 4 + 17
  CHECK(bytes.size() == 91);
  CHECK(bytes[0] == 0);
  CHECK(bytes[3] == kProtocolMax);
  CHECK(bytes[4] == 0);
  CHECK(bytes[5] == 4);
  CHECK(std::string(bytes.begin() + 6, bytes.begin() + 10) == "data");
  auto r = decode_hello(bytes);
  REQUIRE(r.ok());
  CHECK(*r == h);

  SECTION("exact multiple of the extent size") {
    Hello e = sample_hello();
    e.data_size = 64ull * e.extent_size;
    e.dirty_map.assign(8, 0xff);
    auto d = decode_hello(encode_hello(e));
    REQUIRE(d.ok());
    CHECK(*d == e);
  }
  SECTION("a single extent") {
    Hello e = sample_hello();
    e.data_size = 4096;
    e.extent_size = 4096;
    e.dirty_map = {1};
    auto d = decode_hello(encode_hello(e));
    REQUIRE(d.ok());
    CHECK(*d == e);
  }
}

TEST_CASE("hello truncated at every byte position is rejected", "[peer]") {
  auto bytes = encode_hello(sample_hello());
  for (size_t n = 0; n < bytes.size(); ++n) {
    INFO("length " << n);
    auto r = decode_hello(std::span<const uint8_t>(bytes.data(), n));
    REQUIRE_FALSE(r.ok());
    CHECK_THAT(r.status().message(), Catch::Contains("truncated"));
  }
  CHECK_THAT(decode_hello(std::span<const uint8_t>(bytes.data(), 3)).status().message(),
             Catch::Contains("truncated at protocol_version: needs 4 bytes at offset 0, 3 left"));
}

TEST_CASE("hello field validation", "[peer]") {
  auto message = [](const Hello& h) {
    auto r = decode_hello(encode_hello(h));
    return r.ok() ? std::string() : r.status().message();
  };
  Hello h = sample_hello();
  h.resource = "";
  CHECK_THAT(message(h), Catch::Contains("resource length 0 outside 1..64"));
  h.resource = std::string(65, 'r');
  CHECK_THAT(message(h), Catch::Contains("resource length 65 outside 1..64"));
  h.resource = std::string(64, 'r');
  CHECK(message(h).empty());
  h.resource = "da\nta";
  CHECK_THAT(message(h), Catch::Contains("resource is not a valid name"));

  h = sample_hello();
  h.node = "";
  CHECK_THAT(message(h), Catch::Contains("node length 0 outside 1..64"));
  h.node = std::string(100, 'n');
  CHECK_THAT(message(h), Catch::Contains("node length 100 outside 1..64"));
  h.node = "host a";
  CHECK_THAT(message(h), Catch::Contains("node is not a valid name"));

  h = sample_hello();
  h.role = 3;
  CHECK_THAT(message(h), Catch::Contains("role 3 is not a known role"));

  h = sample_hello();
  h.extent_size = 0;
  CHECK_THAT(message(h), Catch::Contains("extent_size 0 is not a power of two >= 4096"));
  h.extent_size = 3 << 20;
  CHECK_THAT(message(h), Catch::Contains("extent_size 3145728 is not a power of two"));
  h.extent_size = 2048;
  CHECK_THAT(message(h), Catch::Contains("extent_size 2048 is not a power of two >= 4096"));

  h = sample_hello();
  h.data_size = 0;
  h.dirty_map.clear();
  CHECK_THAT(message(h), Catch::Contains("data_size is 0"));

  h = sample_hello();
  h.dirty_map.resize(16);
  CHECK_THAT(message(h), Catch::Contains("dirty_map length 16 differs from 17 (one bit per extent for 129 extents)"));
  h.dirty_map.resize(18);
  CHECK_THAT(message(h), Catch::Contains("dirty_map length 18 differs from 17"));

  auto bytes = encode_hello(sample_hello());
  bytes.push_back(0);
  auto r = decode_hello(bytes);
  REQUIRE_FALSE(r.ok());
  CHECK_THAT(r.status().message(), Catch::Contains("1 trailing bytes after offset 91"));

  // A size whose bitmap no payload could carry is refused before anything is allocated.
  Hello huge = sample_hello();
  huge.data_size = 1ull << 62;
  huge.extent_size = 4096;  // 2^50 extents: a bitmap no payload can carry
  auto hb = encode_hello(huge);
  CHECK_THAT(decode_hello(hb).status().message(), Catch::Contains("dirty_map length 17 differs from 140737488355328"));
}

TEST_CASE("check_hello names both values", "[peer]") {
  Hello ours = sample_hello();
  Hello theirs = sample_hello();
  theirs.node = "b";
  CHECK(check_hello(ours, theirs, "b").ok());
  CHECK(check_hello(ours, theirs, "").ok());

  Hello t = theirs;
  t.protocol_version = 3;
  Status st = check_hello(ours, t, "b");
  CHECK(st.code() == EPROTO);
  CHECK_THAT(st.message(), Catch::Contains("protocol version differs: here 2, peer 'b' has 3"));

  t = theirs;
  t.resource = "other";
  st = check_hello(ours, t, "b");
  CHECK(st.code() == EINVAL);
  CHECK_THAT(st.message(), Catch::Contains("resource name differs: here 'data', peer 'b' has 'other'"));

  ours.data_size = 268435456;
  t = theirs;
  t.data_size = 536870912;
  st = check_hello(ours, t, "b");
  CHECK(st.code() == EINVAL);
  CHECK_THAT(st.message(), Catch::Contains("resource size differs: here 268435456 bytes, peer 'b' has 536870912"));
  ours = sample_hello();

  t = theirs;
  t.extent_size = 1 << 20;
  st = check_hello(ours, t, "b");
  CHECK(st.code() == EINVAL);
  CHECK_THAT(st.message(), Catch::Contains("extent size differs: here 2097152, peer 'b' has 1048576"));

  t = theirs;
  t.node = "c";
  st = check_hello(ours, t, "b");
  CHECK(st.code() == EINVAL);
  CHECK_THAT(st.message(), Catch::Contains("peer identifies as node 'c', expected 'b'"));

  t = theirs;
  t.node = ours.node;
  st = check_hello(ours, t, "");
  CHECK(st.code() == EINVAL);
  CHECK_THAT(st.message(), Catch::Contains("peer identifies as this node 'hosta'"));

  // Counters, uuid, role and bitmap are for the sync decision, not a mismatch.
  t = theirs;
  t.localcnt = 99;
  t.uuid[0] ^= 1;
  t.role = 1;
  t.dirty_map.assign(17, 0xff);
  CHECK(check_hello(ours, t, "b").ok());
}

TEST_CASE("error payload round trip and validation", "[peer]") {
  auto p = encode_error(ENOSPC, "no space left on /dev/vdb");
  REQUIRE(p.size() == 4 + 25);
  CHECK(p[3] == ENOSPC);
  auto r = decode_error(p);
  REQUIRE(r.ok());
  CHECK(r->first == ENOSPC);
  CHECK(r->second == "no space left on /dev/vdb");

  auto empty = decode_error(encode_error(EIO, ""));
  REQUIRE(empty.ok());
  CHECK(empty->first == EIO);
  CHECK(empty->second.empty());

  auto long_message = encode_error(EIO, std::string(5000, 'x'));
  CHECK(long_message.size() == 4 + kMaxErrorMessage);
  REQUIRE(decode_error(long_message).ok());
  CHECK(decode_error(long_message)->second.size() == kMaxErrorMessage);

  CHECK(decode_error(encode_error(0, "x"))->first == EIO);
  CHECK(decode_error(encode_error(-5, "x"))->first == EIO);

  std::vector<uint8_t> shortp = {0, 0, 5};
  CHECK_THAT(decode_error(shortp).status().message(), Catch::Contains("payload of 3 bytes outside 4..1028"));
  std::vector<uint8_t> longp(4 + kMaxErrorMessage + 1, 'a');
  longp[0] = longp[1] = longp[2] = 0;
  longp[3] = 5;
  CHECK_THAT(decode_error(longp).status().message(), Catch::Contains("payload of 1029 bytes outside 4..1028"));
  std::vector<uint8_t> zero = {0, 0, 0, 0, 'x'};
  CHECK_THAT(decode_error(zero).status().message(), Catch::Contains("errno 0 outside 1..4095"));
  std::vector<uint8_t> huge = {0xff, 0xff, 0xff, 0xff};
  CHECK_THAT(decode_error(huge).status().message(), Catch::Contains("errno 4294967295 outside 1..4095"));

  auto forged = encode_error(EIO, "bad\nhastnbd: split-brain\x1b[0m");
  auto f = decode_error(forged);
  REQUIRE(f.ok());
  CHECK(f->second == "bad?hastnbd: split-brain?[0m");
}

TEST_CASE("SYNC_DONE payload carries the primary's localcnt", "[peer]") {
  auto p = encode_sync_done(0x0102030405060708ull);
  REQUIRE(p.size() == kSyncDonePayload);
  CHECK(p[0] == 1);
  CHECK(p[7] == 8);
  auto v = decode_sync_done(p);
  REQUIRE(v.ok());
  CHECK(*v == 0x0102030405060708ull);
  p.pop_back();
  CHECK_FALSE(decode_sync_done(p).ok());
  CHECK_THAT(decode_sync_done(p).status().message(), Catch::Contains("7 bytes, expected 8"));
}

TEST_CASE("HASH and HASH_REPLY: lengths, payloads, flags", "[peer]") {
  Header h = data_header(kHash, 0);
  h.payload_length = kHashRequestPayload;
  CHECK_THAT(rejection(h), Catch::Contains("HASH: length 0 outside 1..33554432"));
  h.length = kMaxDataLength + 1;
  CHECK_THAT(rejection(h), Catch::Contains("HASH: length 33554433"));
  h.length = 4096;
  h.payload_length = 8;
  CHECK_THAT(rejection(h), Catch::Contains("HASH: payload_length 8 must be 4"));
  h.payload_length = kHashRequestPayload;
  h.flags = kFlagLz4;
  CHECK_THAT(rejection(h), Catch::Contains("HASH") && Catch::Contains("flag LZ4 not allowed"));
  h.flags = kFlagFua;
  CHECK_THAT(rejection(h), Catch::Contains("flag FUA not allowed"));
  h.flags = 0;
  h.offset = UINT64_MAX - 100;
  CHECK_THAT(rejection(h), Catch::Contains("overflows"));

  Header r = data_header(kHashReply, 8192);  // at most 2 hashes
  r.payload_length = 3 * kHashBytes;
  CHECK_THAT(rejection(r), Catch::Contains("HASH_REPLY: payload_length 48 is not 1..2 hashes"));
  r.payload_length = 17;
  CHECK_THAT(rejection(r), Catch::Contains("HASH_REPLY: payload_length 17"));
  r.payload_length = 0;
  CHECK_THAT(rejection(r), Catch::Contains("HASH_REPLY: payload_length 0"));
  r.payload_length = 2 * kHashBytes;
  CHECK(round_trip(r).ok());
  r.flags = kFlagHole;
  CHECK_THAT(rejection(r), Catch::Contains("flag HOLE not allowed"));
}

TEST_CASE("HASH request payload: the block size", "[peer]") {
  for (uint32_t b : {4096u, 65536u, 1u << 20}) {
    auto p = encode_hash_request(b);
    REQUIRE(p.size() == kHashRequestPayload);
    auto d = decode_hash_request(p);
    REQUIRE(d.ok());
    CHECK(*d == b);
  }
  for (uint32_t b : {0u, 512u, 2048u, 4097u, 12288u, 2u << 20, UINT32_MAX}) {
    INFO(b);
    auto d = decode_hash_request(encode_hash_request(b));
    REQUIRE_FALSE(d.ok());
    CHECK_THAT(d.status().message(), Catch::Contains("block size " + std::to_string(b)));
  }
  std::vector<uint8_t> short_payload(3);
  CHECK_THAT(decode_hash_request(short_payload).status().message(), Catch::Contains("3 bytes, expected 4"));
}

TEST_CASE("hash_blocks: one XXH3-128 per block, the last one short, big-endian", "[peer]") {
  std::vector<uint8_t> data(3 * 4096 + 100);
  for (size_t i = 0; i < data.size(); ++i) data[i] = uint8_t(i * 7 + 3);
  auto hashes = hash_blocks(data, 4096);
  REQUIRE(hashes.size() == 4 * kHashBytes);
  CHECK(hash_count(data.size(), 4096) == 4);
  for (size_t b = 0; b < 4; ++b) {
    const size_t n = std::min<size_t>(4096, data.size() - b * 4096);
    XXH128_hash_t x = XXH3_128bits(data.data() + b * 4096, n);
    uint64_t hi = 0, lo = 0;
    for (int i = 0; i < 8; ++i) {
      hi = hi << 8 | hashes[b * 16 + i];
      lo = lo << 8 | hashes[b * 16 + 8 + i];
    }
    CHECK(hi == x.high64);
    CHECK(lo == x.low64);
  }
  // One flipped byte changes exactly its block's hash.
  auto other = data;
  other[4096 + 17] ^= 0x40;
  auto h2 = hash_blocks(other, 4096);
  for (size_t b = 0; b < 4; ++b)
    CHECK(std::equal(hashes.begin() + long(b * 16), hashes.begin() + long(b * 16 + 16), h2.begin() + long(b * 16)) ==
          (b != 1));
  CHECK(hash_blocks({}, 4096).empty());
}

TEST_CASE("hello: generation_time after the bitmap, with feature kFeatureGenerationTime", "[peer]") {
  Hello h = sample_hello();
  const auto plain = encode_hello(h);
  auto d = decode_hello(plain);
  REQUIRE(d.ok());
  CHECK_FALSE(d->generation_time.has_value());  // an older peer's HELLO
  h.generation_time = 1765148400123456789ull;
  const auto with = encode_hello(h);
  CHECK(with.size() == plain.size() + 8);
  d = decode_hello(with);
  REQUIRE(d.ok());
  CHECK(*d == h);
  auto odd = with;
  odd.push_back(0);  // 9 bytes after the bitmap: neither form
  CHECK_THAT(decode_hello(odd).status().message(), Catch::Contains("trailing bytes"));
  CHECK(peer::kFeatures & peer::kFeatureGenerationTime);
}

TEST_CASE("differing_runs: adjacent differing blocks merged, the short last block, skipped blocks", "[peer]") {
  std::vector<uint8_t> a(5 * 4096 + 100), b;
  for (size_t i = 0; i < a.size(); ++i) a[i] = uint8_t(i * 13 + 1);
  b = a;
  b[4096 + 1] ^= 1;      // block 1
  b[2 * 4096] ^= 1;      // block 2: joins block 1
  b[5 * 4096 + 50] ^= 1; // the short last block
  const auto ha = hash_blocks(a, 4096), hb = hash_blocks(b, 4096);
  using Runs = std::vector<std::pair<uint64_t, uint64_t>>;
  CHECK(differing_runs(ha, hb, a.size(), 4096) == Runs{{4096, 8192}, {5 * 4096, 100}});
  CHECK(differing_runs(ha, hb, a.size(), 4096, [](size_t i) { return i == 1; }) ==
        Runs{{2 * 4096, 4096}, {5 * 4096, 100}});
  CHECK(differing_runs(ha, ha, a.size(), 4096).empty());
}
