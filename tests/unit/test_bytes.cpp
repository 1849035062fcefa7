#include <catch2/catch.hpp>

#include "hastnbd/base/bytes.h"

using namespace hastnbd::bytes;

TEST_CASE("put and get in both byte orders", "[bytes]") {
  uint8_t b[8];
  put_be16(b, 0xBEEF);
  CHECK(b[0] == 0xBE);
  CHECK(get_be16(b) == 0xBEEF);
  put_be32(b, 0x25609513);
  CHECK(b[0] == 0x25);
  CHECK(b[3] == 0x13);
  CHECK(get_be32(b) == 0x25609513);
  put_be64(b, 0x0102030405060708ULL);
  CHECK(b[0] == 1);
  CHECK(b[7] == 8);
  CHECK(get_be64(b) == 0x0102030405060708ULL);
  put<Order::kLittle>(b, uint64_t(0x0102030405060708ULL));
  CHECK(b[0] == 8);
  CHECK(b[7] == 1);
  CHECK((get<Order::kLittle, uint64_t>(b)) == 0x0102030405060708ULL);
  put<Order::kLittle>(b, uint32_t(0xA1B2C3D4));
  CHECK(b[0] == 0xD4);
  CHECK((get<Order::kLittle, uint32_t>(b)) == 0xA1B2C3D4);
  // Every byte value survives (no sign extension on the way back).
  put_be64(b, 0xFFFEFDFCFBFAF9F8ULL);
  CHECK(get_be64(b) == 0xFFFEFDFCFBFAF9F8ULL);
}

TEST_CASE("writer and reader round trip", "[bytes]") {
  std::vector<uint8_t> out;
  BigWriter w(out);
  w.u8(7);
  w.u16(0x1234);
  w.u32(0xDEADBEEF);
  w.u64(42);
  w.bytes("abc", 3);
  w.zeros(2);
  REQUIRE(out.size() == 1 + 2 + 4 + 8 + 3 + 2);
  CHECK(out[1] == 0x12);

  BigReader r(out);
  CHECK(r.u8("a") == 7);
  CHECK(r.u16("b") == 0x1234);
  CHECK(r.u32("c") == 0xDEADBEEF);
  CHECK(r.u64("d") == 42);
  char s[3];
  r.bytes(s, 3, "e");
  CHECK(std::string(s, 3) == "abc");
  r.skip(2, "f");
  CHECK(r.ok());
  CHECK(r.remaining() == 0);

  std::vector<uint8_t> le;
  LittleWriter lw(le);
  lw.u32(1);
  CHECK(le == std::vector<uint8_t>{1, 0, 0, 0});
}

TEST_CASE("reader refuses to run past the end and names the field", "[bytes]") {
  const std::vector<uint8_t> in{1, 2, 3};
  BigReader r(in);
  CHECK(r.u16("first") == 0x0102);
  CHECK(r.u32("second") == 0);
  CHECK_FALSE(r.ok());
  CHECK(r.error() == "truncated at second: needs 4 bytes at offset 2, 1 left");
  // Later reads keep the first error and return nothing.
  CHECK(r.u8("third") == 0);
  CHECK(r.error() == "truncated at second: needs 4 bytes at offset 2, 1 left");
  CHECK(r.pos() == 2);
  uint8_t big[16];
  BigReader r2(in);
  r2.bytes(big, sizeof big, "blob");
  CHECK(r2.error() == "truncated at blob: needs 16 bytes at offset 0, 3 left");
}
