#include <catch2/catch.hpp>

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "hastnbd/disk/fine_file.h"

using namespace hastnbd;

namespace {
FineSnapshot sample() {
  FineSnapshot s;
  for (size_t i = 0; i < s.uuid.size(); ++i) s.uuid[i] = uint8_t(i * 17 + 1);
  s.localcnt = 7;
  s.remotecnt = 6;
  s.data_size = 64ull << 20;
  s.extent_size = 2 << 20;
  s.granule = 4096;  // 512 bits: 8 words a record
  s.records.emplace_back(3, std::vector<uint64_t>(8, 0));
  s.records.back().second[0] = 0x5;
  s.records.emplace_back(31, std::vector<uint64_t>(8, ~0ull));
  return s;
}
}  // namespace

TEST_CASE("fine records: round trip", "[fine]") {
  const FineSnapshot s = sample();
  auto d = decode_fine(encode_fine(s));
  REQUIRE(d.ok());
  CHECK(*d == s);
  FineSnapshot empty = s;
  empty.records.clear();
  CHECK(*decode_fine(encode_fine(empty)) == empty);
}

TEST_CASE("fine records: every damage is refused", "[fine]") {
  const std::vector<uint8_t> good = encode_fine(sample());
  for (size_t i = 0; i < good.size(); i += 7) {  // any flipped byte
    auto bad = good;
    bad[i] ^= 0x20;
    INFO("byte " << i);
    CHECK_FALSE(decode_fine(bad).ok());
  }
  for (size_t n : {size_t(0), size_t(7), size_t(8), good.size() - 1}) {  // any truncation
    INFO("length " << n);
    CHECK_FALSE(decode_fine(std::span(good).first(n)).ok());
  }
  CHECK_THAT(decode_fine(std::span(good).first(good.size() - 8)).status().message(), Catch::Contains("checksum"));
}

TEST_CASE("fine records: fields that cannot fit are refused even with a good checksum", "[fine]") {
  FineSnapshot s = sample();
  s.granule = 2048;
  CHECK_THAT(decode_fine(encode_fine(s)).status().message(), Catch::Contains("granule 2048"));
  s = sample();
  s.granule = 4 << 20;  // above the extent size
  CHECK_FALSE(decode_fine(encode_fine(s)).ok());
  s = sample();
  s.records[1].first = 32;  // 32 extents of 2 MiB: 0..31
  CHECK_THAT(decode_fine(encode_fine(s)).status().message(), Catch::Contains("extent 32 out of range"));
  s = sample();
  s.records[0].second.resize(7);  // a record of the wrong size
  CHECK_THAT(decode_fine(encode_fine(s)).status().message(), Catch::Contains("do not match"));
}

TEST_CASE("fine records: save, then take reads and removes", "[fine]") {
  const std::string dir = std::filesystem::temp_directory_path() / ("hastnbd-fine-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string path = dir + "/r.fine";
  auto none = take_fine(path);
  REQUIRE(none.ok());
  CHECK_FALSE(none->has_value());
  REQUIRE(save_fine(path, sample()).ok());
  CHECK((std::filesystem::status(path).permissions() & std::filesystem::perms::all) ==
        (std::filesystem::perms::owner_read | std::filesystem::perms::owner_write));
  auto got = take_fine(path);
  REQUIRE(got.ok());
  REQUIRE(got->has_value());
  CHECK(**got == sample());
  CHECK_FALSE(std::filesystem::exists(path));
  // A damaged file is removed too, and reported.
  std::ofstream(path) << "not fine records at all";
  auto bad = take_fine(path);
  CHECK_FALSE(bad.ok());
  CHECK_FALSE(std::filesystem::exists(path));
  std::filesystem::remove_all(dir);
}
