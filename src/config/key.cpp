// The peer link's pre-shared key: reading psk_file with the checks an admin
// expects of a secret, and writing a new one (hastnbd-ctl genkey).

#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "detail.h"
#include "hastnbd/config/config.h"

namespace hastnbd {

namespace {
constexpr size_t kMaxKeyFile = 4096;

std::string octal(mode_t m) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "%04o", unsigned(m & 07777));
  return buf;
}
}  // namespace

Result<std::string> load_peer_key(const ResourceConfig& config) {
  if (config.auth == PeerAuth::kNone) return std::string();
  if (!config.psk.empty()) {
    struct stat st {};
    if (!config.config_path.empty() && ::stat(config.config_path.c_str(), &st) == 0 && (st.st_mode & 077))
      return Status::Error(EACCES, config.config_path + " holds the psk of resource " + config.name + " but has mode " +
                                       octal(st.st_mode) + ": chmod 600 " + config.config_path +
                                       ", or better move the key to a psk_file");
    return config.psk;
  }
  if (config.psk_file.empty()) return std::string();
  const std::string& path = config.psk_file;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
  if (fd < 0) {
    int err = errno;
    return Status::Error(err, "psk_file " + path + ": " + std::strerror(err) +
                                  (err == ENOENT ? " (hastnbd-ctl genkey " + path + " writes one)" : ""));
  }
  struct stat st {};
  std::string key(kMaxKeyFile + 1, '\0');
  ssize_t n = -1;
  Status s;
  if (::fstat(fd, &st) != 0) {
    s = Status::Error(errno, "psk_file " + path + ": " + std::strerror(errno));
  } else if (!S_ISREG(st.st_mode)) {
    s = Status::Error(EINVAL, "psk_file " + path + " is not a regular file");
  } else if (st.st_mode & 077) {
    s = Status::Error(EACCES, "psk_file " + path + " has mode " + octal(st.st_mode) +
                                  ": group or others may read the key; chmod 600 " + path +
                                  " (and replace the key if others may have read it)");
  } else if (st.st_uid != 0 && st.st_uid != ::geteuid()) {
    s = Status::Error(EACCES, "psk_file " + path + " belongs to uid " + std::to_string(st.st_uid) +
                                  ", not to root: chown root " + path);
  } else if ((n = ::read(fd, key.data(), key.size())) < 0) {
    s = Status::Error(errno, "psk_file " + path + ": " + std::strerror(errno));
  }
  ::close(fd);
  if (!s.ok()) return s;
  if (size_t(n) > kMaxKeyFile)
    return Status::Error(EINVAL, "psk_file " + path + " is larger than " + std::to_string(kMaxKeyFile) +
                                     " bytes; it should hold one line, the key");
  key.resize(size_t(n));
  while (!key.empty() && (key.back() == '\n' || key.back() == '\r' || key.back() == ' ' || key.back() == '\t'))
    key.pop_back();
  if (key.size() < cfg::kMinKeyChars)
    return Status::Error(EINVAL, "psk_file " + path + " holds " + std::to_string(key.size()) +
                                     " characters; a key needs at least " + std::to_string(cfg::kMinKeyChars) +
                                     " (hastnbd-ctl genkey FILE writes one)");
  if (key.find('\n') != std::string::npos)
    return Status::Error(EINVAL, "psk_file " + path + " has more than one line; it should hold the key alone");
  return key;
}

Status write_new_key_file(const std::string& path) {
  uint8_t raw[32];
  for (size_t got = 0; got < sizeof raw;) {
    ssize_t n = ::getrandom(raw + got, sizeof raw - got, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::Error(errno, std::string("getrandom: ") + std::strerror(errno));
    got += size_t(n);
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string text;
  for (uint8_t b : raw) {
    text += kHex[b >> 4];
    text += kHex[b & 15];
  }
  text += '\n';
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) {
    int err = errno;
    return Status::Error(err, path + ": " + std::strerror(err) +
                                  (err == EEXIST ? " (an existing key is never replaced; remove it first)" : ""));
  }
  Status s;
  if (::fchmod(fd, 0600) != 0 || ::write(fd, text.data(), text.size()) != ssize_t(text.size()) || ::fsync(fd) != 0)
    s = Status::Error(errno, path + ": " + std::strerror(errno));
  ::close(fd);
  if (!s.ok()) ::unlink(path.c_str());
  return s;
}

}  // namespace hastnbd
