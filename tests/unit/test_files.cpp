// base/files: make_directories gives the mode asked for whatever the umask,
// leaves existing directories alone and names what is in the way;
// write_private_file replaces a 0600 file and refuses a symbolic link.
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

TEST_CASE("write_private_file: contents replaced, mode 0600 whatever the umask, a symbolic link refused") {
  char tmpl[] = "/tmp/hastnbd-files.XXXXXX";
  REQUIRE(::mkdtemp(tmpl) != nullptr);
  const std::string base = tmpl;
  const mode_t old = ::umask(0);
  REQUIRE(write_private_file(base + "/f", "secondary\n").ok());
  REQUIRE(write_private_file(base + "/f", "init\n").ok());
  ::umask(old);
  CHECK(mode_of(base + "/f") == 0600);
  std::ifstream in(base + "/f");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  CHECK(text == "init\n");
  REQUIRE(::symlink((base + "/f").c_str(), (base + "/link").c_str()) == 0);
  Status s = write_private_file(base + "/link", "primary\n");
  CHECK_FALSE(s.ok());
  CHECK_THAT(s.message(), Catch::Contains(base + "/link"));
  std::ifstream again(base + "/f");
  std::string after((std::istreambuf_iterator<char>(again)), std::istreambuf_iterator<char>());
  CHECK(after == "init\n");
  std::filesystem::remove_all(base);
}
