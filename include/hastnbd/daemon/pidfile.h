// The `pidfile:` of a running daemon: created (mode 0644), locked with flock
// for as long as the daemon runs, holding its pid; removed on a clean exit.
// A second daemon pointed at the same file is refused with the holder's pid.
#pragma once

#include <memory>
#include <string>

#include "hastnbd/base/status.h"

namespace hastnbd {

class PidFile {
 public:
  static Result<std::unique_ptr<PidFile>> create(const std::string& path);
  ~PidFile();  // unlinks the file, then unlocks it
  PidFile(const PidFile&) = delete;
  PidFile& operator=(const PidFile&) = delete;
  const std::string& path() const { return path_; }

 private:
  PidFile(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
  std::string path_;
  int fd_;
};

}  // namespace hastnbd
