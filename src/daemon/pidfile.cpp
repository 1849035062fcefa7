#include "hastnbd/daemon/pidfile.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace hastnbd {

Result<std::unique_ptr<PidFile>> PidFile::create(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (fd < 0) {
    int err = errno;
    return Status::Error(err, "pidfile " + path + ": " + std::strerror(err));
  }
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    int err = errno;
    char buf[32] = {};
    ssize_t n = ::pread(fd, buf, sizeof buf - 1, 0);
    ::close(fd);
    std::string holder = n > 0 ? std::string(buf, size_t(n)) : std::string();
    while (!holder.empty() && (holder.back() == '\n' || holder.back() == ' ')) holder.pop_back();
    if (err == EWOULDBLOCK)
      return Status::Error(EBUSY, "pidfile " + path + " is locked by " +
                                      (holder.empty() ? std::string("another process") : "pid " + holder) +
                                      ": is hastnbd already running for this resource?");
    return Status::Error(err, "pidfile " + path + ": flock: " + std::strerror(err));
  }
  std::string text = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, text.data(), text.size(), 0) != ssize_t(text.size())) {
    int err = errno;
    ::close(fd);
    return Status::Error(err, "pidfile " + path + ": write: " + std::strerror(err));
  }
  return std::unique_ptr<PidFile>(new PidFile(path, fd));
}

PidFile::~PidFile() {
  ::unlink(path_.c_str());
  ::close(fd_);
}

}  // namespace hastnbd
