#include "hastnbd/base/files.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

namespace hastnbd {

Status make_directories(const std::string& dir, mode_t mode) {
  if (dir.empty()) return Status::Ok();
  std::string path;
  for (const auto& part : std::filesystem::path(dir)) {
    path = (std::filesystem::path(path) / part).string();
    if (part == "/") continue;
    if (::mkdir(path.c_str(), mode) == 0) {
      // mkdir applies the umask; the mode asked for is the mode given.
      if (::chmod(path.c_str(), mode) != 0)
        return Status::Error(errno, "cannot set mode of directory " + path + ": " + std::strerror(errno));
    } else if (errno != EEXIST) {
      return Status::Error(errno, "cannot create directory " + path + ": " + std::strerror(errno));
    }
  }
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    return Status::Error(ENOTDIR, "cannot create directory " + dir + ": a file of that name is in the way");
  return Status::Ok();
}

Status write_private_file(const std::string& path, const std::string& text) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return Status::Error(errno, "cannot write " + path + ": " + std::strerror(errno));
  const ssize_t n = ::write(fd, text.data(), text.size());
  const int err = n < 0 ? errno : EIO;
  ::close(fd);
  if (n != ssize_t(text.size())) return Status::Error(err, "cannot write " + path + ": " + std::strerror(err));
  return Status::Ok();
}

}  // namespace hastnbd
