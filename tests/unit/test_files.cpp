// base/files: make_directories gives the mode asked for whatever the umask,
// leaves existing directories alone and names what is in the way.
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>

#include "hastnbd/base/files.h"

using namespace hastnbd;

namespace {
mode_t mode_of(const std::string& p) {
  struct stat st {};
  REQUIRE(::stat(p.c_str(), &st) == 0);
  return st.st_mode & 07777;
}
}  // namespace

TEST_CASE("make_directories: missing levels get the mode, existing ones keep theirs") {
  char tmpl[] = "/tmp/hastnbd-files.XXXXXX";
  REQUIRE(::mkdtemp(tmpl) != nullptr);
  const std::string base = tmpl;
  ::chmod(base.c_str(), 0711);
  const mode_t old = ::umask(GENERATE(mode_t(0022), mode_t(0077), mode_t(0)));
  REQUIRE(make_directories(base + "/a/b/c", 0750).ok());
  ::umask(old);
  CHECK(mode_of(base) == 0711);
  CHECK(mode_of(base + "/a") == 0750);
  CHECK(mode_of(base + "/a/b/c") == 0750);
  CHECK(make_directories(base + "/a/b", 0700).ok());  // exists: unchanged
  CHECK(mode_of(base + "/a/b") == 0750);
  std::ofstream(base + "/file") << "x";
  Status s = make_directories(base + "/file/d", 0750);
  CHECK_FALSE(s.ok());
  CHECK_THAT(s.message(), Catch::Contains(base + "/file"));
  s = make_directories(base + "/file", 0750);
  CHECK_FALSE(s.ok());
  CHECK_THAT(s.message(), Catch::Contains("in the way"));
  std::filesystem::remove_all(base);
}
