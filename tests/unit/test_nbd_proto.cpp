#include <catch2/catch.hpp>

#include "hastnbd/nbd/protocol.h"

using namespace hastnbd;
using namespace hastnbd::nbd;

TEST_CASE("greeting is NBDMAGIC IHAVEOPT and fixed-newstyle flags", "[nbd]") {
  auto g = encode_greeting();
  REQUIRE(g.size() == 18);
  CHECK(std::string(g.begin(), g.begin() + 8) == "NBDMAGIC");
  CHECK(std::string(g.begin() + 8, g.begin() + 16) == "IHAVEOPT");
  CHECK(get_be16(&g[16]) == (kFlagFixedNewstyle | kFlagNoZeroes));
}

namespace {
std::vector<uint8_t> go_payload(const std::string& name, std::vector<uint16_t> infos) {
  std::vector<uint8_t> p(4 + name.size() + 2 + 2 * infos.size());
  put_be32(p.data(), uint32_t(name.size()));
  std::copy(name.begin(), name.end(), p.begin() + 4);
  put_be16(p.data() + 4 + name.size(), uint16_t(infos.size()));
  for (size_t i = 0; i < infos.size(); ++i) put_be16(p.data() + 6 + name.size() + 2 * i, infos[i]);
  return p;
}
}  // namespace

TEST_CASE("NBD_OPT_GO payload decoding", "[nbd]") {
  auto ok = decode_go(go_payload("data", {kInfoBlockSize, kInfoName}));
  REQUIRE(ok.ok());
  CHECK(ok->name == "data");
  CHECK(ok->info_requests == std::vector<uint16_t>{kInfoBlockSize, kInfoName});

  auto empty = decode_go(go_payload("", {}));
  REQUIRE(empty.ok());
  CHECK(empty->name.empty());

  SECTION("name length beyond the payload") {
    auto p = go_payload("data", {});
    put_be32(p.data(), 1000);
    CHECK_FALSE(decode_go(p).ok());
  }
  SECTION("info count beyond the payload") {
    auto p = go_payload("data", {1});
    put_be16(p.data() + 8, 5);
    CHECK_FALSE(decode_go(p).ok());
  }
  SECTION("trailing garbage") {
    auto p = go_payload("data", {});
    p.push_back(0);
    CHECK_FALSE(decode_go(p).ok());
  }
  SECTION("too short") {
    std::vector<uint8_t> p = {0, 0, 0};
    CHECK_FALSE(decode_go(p).ok());
  }
  SECTION("absurd name length") {
    auto p = go_payload(std::string(kMaxNameLength + 1, 'x'), {});
    CHECK_FALSE(decode_go(p).ok());
  }
}

TEST_CASE("option replies are framed with magic, option, type and length", "[nbd]") {
  auto r = encode_info_export(kOptGo, 1ull << 30, kTxHasFlags | kTxSendFlush);
  REQUIRE(r.size() == 20 + 12);
  CHECK(get_be64(&r[0]) == kOptReplyMagic);
  CHECK(get_be32(&r[8]) == kOptGo);
  CHECK(get_be32(&r[12]) == kRepInfo);
  CHECK(get_be32(&r[16]) == 12);
  CHECK(get_be16(&r[20]) == kInfoExport);
  CHECK(get_be64(&r[22]) == (1ull << 30));
  CHECK(get_be16(&r[30]) == (kTxHasFlags | kTxSendFlush));

  auto bs = encode_info_block_size(kOptInfo, 512, 4096, kMaxPayload);
  REQUIRE(bs.size() == 20 + 14);
  CHECK(get_be16(&bs[20]) == kInfoBlockSize);
  CHECK(get_be32(&bs[22]) == 512);
  CHECK(get_be32(&bs[26]) == 4096);
  CHECK(get_be32(&bs[30]) == kMaxPayload);

  auto l = encode_list_entry("data");
  REQUIRE(l.size() == 20 + 8);
  CHECK(get_be32(&l[12]) == kRepServer);
  CHECK(get_be32(&l[20]) == 4);

  CHECK(encode_export_name_reply(512, 1, false).size() == 134);
  CHECK(encode_export_name_reply(512, 1, true).size() == 10);
}

TEST_CASE("request decoding and simple reply encoding", "[nbd]") {
  std::array<uint8_t, kRequestSize> b{};
  put_be32(&b[0], kRequestMagic);
  put_be16(&b[4], kCmdFlagFua);
  put_be16(&b[6], kCmdWrite);
  put_be64(&b[8], 0xdeadbeefcafef00dULL);
  put_be64(&b[16], 4096);
  put_be32(&b[24], 512);
  Request r = decode_request(b);
  CHECK(r.magic == kRequestMagic);
  CHECK(r.flags == kCmdFlagFua);
  CHECK(r.type == kCmdWrite);
  CHECK(r.handle == 0xdeadbeefcafef00dULL);
  CHECK(r.offset == 4096);
  CHECK(r.length == 512);

  std::array<uint8_t, kSimpleReplySize> out{};
  encode_simple_reply(out, kEinval, r.handle);
  CHECK(get_be32(&out[0]) == kSimpleReplyMagic);
  CHECK(get_be32(&out[4]) == 22);
  CHECK(get_be64(&out[8]) == r.handle);
}

TEST_CASE("request validation", "[nbd]") {
  const uint64_t size = 1 << 20;
  auto req = [](uint16_t type, uint64_t off, uint32_t len, uint16_t flags = 0) {
    return Request{kRequestMagic, flags, type, 1, off, len};
  };
  CHECK(validate_request(req(kCmdRead, 0, 4096), size, false).error == kOk);
  CHECK(validate_request(req(kCmdRead, size - 512, 512), size, false).error == kOk);
  CHECK(validate_request(req(kCmdRead, size - 512, 1024), size, false).error == kEinval);
  CHECK(validate_request(req(kCmdRead, ~0ull - 10, 4096), size, false).error == kEinval);  // overflow
  CHECK(validate_request(req(kCmdRead, 0, 0), size, false).error == kEinval);
  CHECK(validate_request(req(kCmdRead, 0, kMaxPayload + 1), 1ull << 40, false).error == kEinval);

  auto w = validate_request(req(kCmdWrite, size, 4096), size, false);
  CHECK(w.error == kEnospc);
  CHECK(w.payload_to_drain == 4096);  // a refused write still carries its payload
  auto big = validate_request(req(kCmdWrite, 0, kMaxPayload + 4096), 1ull << 40, false);
  CHECK(big.error == kEinval);
  CHECK(big.payload_to_drain == kMaxPayload + 4096);
  CHECK(validate_request(req(kCmdWrite, 0, 4096), size, true).error == kEperm);
  CHECK(validate_request(req(kCmdWrite, 0, 4096, kCmdFlagFua), size, false).error == kOk);
  CHECK(validate_request(req(kCmdWrite, 0, 4096, kCmdFlagNoHole), size, false).error == kEinval);
  CHECK(validate_request(req(kCmdWriteZeroes, 0, 8192, kCmdFlagNoHole | kCmdFlagFua), size, false).error == kOk);
  CHECK(validate_request(req(kCmdWriteZeroes, size - 4096, 8192), size, false).error == kEnospc);
  CHECK(validate_request(req(kCmdTrim, 0, uint32_t(size)), size, false).error == kOk);
  CHECK(validate_request(req(kCmdFlush, 0, 0), size, false).error == kOk);
  CHECK(validate_request(req(kCmdFlush, 0, 0, kCmdFlagFua), size, false).error == kEinval);
  CHECK(validate_request(req(kCmdBlockStatus, 0, 4096), size, false).error == kEinval);
  CHECK(validate_request(req(99, 0, 4096), size, false).error == kEinval);
  CHECK(validate_request(req(99, 0, 4096), size, false).payload_to_drain == 0);
}

TEST_CASE("errno mapping", "[nbd]") {
  CHECK(error_from_errno(0) == kOk);
  CHECK(error_from_errno(EIO) == kEio);
  CHECK(error_from_errno(ENOSPC) == kEnospc);
  CHECK(error_from_errno(EROFS) == kEperm);
  CHECK(error_from_errno(EBADF) == kEio);
}
