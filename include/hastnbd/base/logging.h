// One spdlog setup for both binaries: stderr, which systemd sends to the journal.
#pragma once

#include <chrono>
#include <string>

namespace hastnbd {

// `tag` appears on every line (e.g. "hastnbd[data/a]"); verbose => debug level.
void setup_logging(const std::string& tag, bool verbose);

// At most one log line per `every` for a kind of event a remote party can
// provoke at will (failed accepts, refused handshakes): allow() says whether
// to log now, and suppressed() how many were skipped since the last line.
class LogLimiter {
 public:
  explicit LogLimiter(std::chrono::seconds every = std::chrono::seconds(10)) : every_(every) {}
  bool allow() {
    const auto now = std::chrono::steady_clock::now();
    if (logged_ && now - last_ < every_) {
      ++skipped_;
      return false;
    }
    logged_ = true;
    last_ = now;
    suppressed_ = skipped_;
    skipped_ = 0;
    return true;
  }
  // After allow() returned true: the events not logged before this one.
  uint64_t suppressed() const { return suppressed_; }
  std::string suppressed_note(const char* what) const {
    return suppressed_ ? " (and " + std::to_string(suppressed_) + " more " + what + " not logged)" : std::string();
  }

 private:
  std::chrono::seconds every_;
  std::chrono::steady_clock::time_point last_{};
  bool logged_ = false;
  uint64_t skipped_ = 0, suppressed_ = 0;
};

// UTC, ISO 8601 to the second: how status reports points in time.
std::string iso_time(std::chrono::system_clock::time_point t);

}  // namespace hastnbd
