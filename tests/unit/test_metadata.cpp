#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "hastnbd/disk/metadata.h"

using namespace hastnbd;

namespace {

MetaHeader sample() {
  MetaHeader h;
  h.sequence = 7;
  h.resource = "data";
  h.data_size = 1ull << 30;
  h.extent_size = 2 << 20;
  h.keepdirty = 64;
  h.flags = kMetaFresh;
  h.sync_direction = SyncDirection::kToPeer;
  h.uuid = random_uuid();
  h.localcnt = 3;
  h.remotecnt = 2;
  h.created = 1700000000;
  return h;
}

struct TempDir {
  std::filesystem::path path;
  TempDir() {
    char tmpl[] = "/tmp/hastnbd-unit-XXXXXX";
    path = ::mkdtemp(tmpl);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
};

}  // namespace

TEST_CASE("metadata header round trip", "[metadata]") {
  MetaHeader h = sample();
  auto slot = encode_meta_header(h);
  auto back = decode_meta_header(slot);
  REQUIRE(back.ok());
  CHECK(*back == h);
  CHECK(h.extents() == 512);
  CHECK(h.bitmap_bytes() == 4096);
  CHECK(h.uuid_string().size() == 36);
  // generation_time sits where earlier headers had zero padding: an old
  // header reads as 0 (unknown), a new one keeps it.
  h.generation_time = 1765148400000000000ull;
  back = decode_meta_header(encode_meta_header(h));
  REQUIRE(back.ok());
  CHECK(back->generation_time == h.generation_time);
}

TEST_CASE("metadata header corruption is detected and explained", "[metadata]") {
  auto slot = encode_meta_header(sample());
  SECTION("flipped bit in the payload") {
    slot[40] ^= 1;
    auto r = decode_meta_header(slot);
    REQUIRE_FALSE(r.ok());
    CHECK_THAT(r.status().message(), Catch::Contains("checksum"));
  }
  SECTION("bad magic") {
    slot[0] ^= 0xff;
    CHECK_THAT(decode_meta_header(slot).status().message(), Catch::Contains("magic"));
  }
  SECTION("future version") {
    slot[8] = 99;
    CHECK_THAT(decode_meta_header(slot).status().message(), Catch::Contains("version 99"));
  }
  SECTION("all zero") {
    std::array<uint8_t, kMetaSlotSize> zero{};
    CHECK_FALSE(decode_meta_header(zero).ok());
  }
}

TEST_CASE("the newest valid slot wins; a torn slot falls back to the other", "[metadata]") {
  MetaHeader a = sample(), b = sample();
  a.sequence = 10;
  b.sequence = 11;
  b.localcnt = 99;
  auto sa = encode_meta_header(a), sb = encode_meta_header(b);
  CHECK(pick_meta_header(sa, sb)->localcnt == 99);
  CHECK(pick_meta_header(sb, sa)->localcnt == 99);
  sb[100] ^= 0x55;  // torn write of the newer slot
  CHECK(pick_meta_header(sa, sb)->sequence == 10);
  sa[100] ^= 0x55;
  auto none = pick_meta_header(sa, sb);
  REQUIRE_FALSE(none.ok());
  CHECK_THAT(none.status().message(), Catch::Contains("slot 0") && Catch::Contains("slot 1"));
}

TEST_CASE("metadata file create, open, header update, refusal of foreign files", "[metadata]") {
  TempDir dir;
  std::string path = (dir.path / "data.meta").string();
  MetaHeader h = sample();
  h.flags = kMetaFresh;
  REQUIRE(MetadataFile::create(path, h, false).ok());
  auto again = MetadataFile::create(path, h, false);
  CHECK(again.code() == EEXIST);

  {
    auto m = MetadataFile::open(path, true, true);
    REQUIRE(m.ok());
    CHECK((*m)->header().resource == "data");
    CHECK((*m)->bitmap().size() == 4096);
    CHECK((*m)->check_matches("data", 1ull << 30, 2 << 20).ok());
    CHECK_THAT((*m)->check_matches("other", 1ull << 30, 2 << 20).message(), Catch::Contains("belongs to resource 'data'"));
    CHECK_THAT((*m)->check_matches("data", 1ull << 29, 2 << 20).message(), Catch::Contains("536870912"));
    CHECK_THAT((*m)->check_matches("data", 1ull << 30, 1 << 20).message(), Catch::Contains("extent size"));

    // A second opener is refused while the lock is held, and create --force too.
    auto second = MetadataFile::open(path, true, true);
    CHECK(second.status().code() == EBUSY);
    CHECK(MetadataFile::create(path, h, true).code() == EBUSY);

    (*m)->bitmap()[0] = 0x05;
    MetaHeader nh = (*m)->header();
    nh.localcnt = 42;
    REQUIRE((*m)->write_header_now(nh).ok());
    nh.remotecnt = 41;
    REQUIRE((*m)->write_header_now(nh).ok());
    REQUIRE((*m)->sync_now().ok());
  }
  auto m = MetadataFile::open(path, true, false);
  REQUIRE(m.ok());
  CHECK((*m)->header().localcnt == 42);
  CHECK((*m)->header().remotecnt == 41);
  CHECK((*m)->header().sequence == 3);
  CHECK((*m)->bitmap()[0] == 0x05);
}

TEST_CASE("a corrupt or truncated metadata file is refused with the reason", "[metadata]") {
  TempDir dir;
  std::string path = (dir.path / "data.meta").string();
  REQUIRE(MetadataFile::create(path, sample(), false).ok());
  SECTION("both header slots damaged") {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(50);
    f.put('X');
    f.seekp(4096 + 50);
    f.put('X');
    f.close();
    auto m = MetadataFile::open(path, true, true);
    REQUIRE_FALSE(m.ok());
    CHECK_THAT(m.status().message(), Catch::Contains("corrupt"));
  }
  SECTION("bitmap cut off") {
    std::filesystem::resize_file(path, 8192 + 100);
    auto m = MetadataFile::open(path, true, true);
    REQUIRE_FALSE(m.ok());
    CHECK_THAT(m.status().message(), Catch::Contains("truncated"));
  }
  SECTION("not there") {
    auto m = MetadataFile::open((dir.path / "nope.meta").string(), true, true);
    CHECK(m.status().code() == ENOENT);
    CHECK_THAT(m.status().message(), Catch::Contains("hastnbd-ctl create"));
  }
}
