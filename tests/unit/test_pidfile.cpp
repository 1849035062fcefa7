// The pid file: created with our pid, a second holder refused with the
// first one's pid, removed when released.
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <string>

#include "hastnbd/daemon/pidfile.h"

using namespace hastnbd;

TEST_CASE("pidfile: held, refused to a second holder, removed on release", "[pidfile]") {
  auto dir = std::filesystem::temp_directory_path() / ("hastnbd-pidfile-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "data.pid").string();
  {
    auto first = PidFile::create(path);
    REQUIRE(first.ok());
    std::ifstream in(path);
    std::string text;
    std::getline(in, text);
    CHECK(text == std::to_string(::getpid()));

    auto second = PidFile::create(path);
    REQUIRE_FALSE(second.ok());
    CHECK(second.status().code() == EBUSY);
    CHECK(second.status().message() == "pidfile " + path + " is locked by pid " + std::to_string(::getpid()) +
                                           ": is hastnbd already running for this resource?");
  }
  CHECK_FALSE(std::filesystem::exists(path));
  // A stale file from a crashed daemon (not locked) is taken over.
  { std::ofstream(path) << "999999\n"; }
  {
    auto again = PidFile::create(path);
    REQUIRE(again.ok());
  }
  auto missing_dir = PidFile::create((dir / "no" / "such.pid").string());
  REQUIRE_FALSE(missing_dir.ok());
  CHECK(missing_dir.status().message().find("No such file or directory") != std::string::npos);
  std::filesystem::remove_all(dir);
}
