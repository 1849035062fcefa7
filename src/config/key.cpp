// The peer link's pre-shared key: reading psk_file with the checks an admin
// expects of a secret, and writing a new one (hastnbd-ctl genkey).

#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <tuple>

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
// A file whose contents matter: a regular file of at most `max` bytes. A
// secret besides: owned by root or us, no access for group or others.
Result<std::string> read_private_file(const std::string& path, const char* what, size_t max, bool secret) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
  if (fd < 0) {
    int err = errno;
    return Status::Error(err, std::string(what) + " " + path + ": " + std::strerror(err));
  }
  const std::string name = std::string(what) + " " + path;
  struct stat st {};
  std::string text(max + 1, '\0');
  ssize_t n = -1;
  Status s;
  if (::fstat(fd, &st) != 0) {
    s = Status::Error(errno, name + ": " + std::strerror(errno));
  } else if (!S_ISREG(st.st_mode)) {
    s = Status::Error(EINVAL, name + " is not a regular file");
  } else if (secret && (st.st_mode & 077)) {
    s = Status::Error(EACCES, name + " has mode " + octal(st.st_mode) + ": group or others may read the key; chmod 600 " +
                                  path + " (and replace the key if others may have read it)");
  } else if (secret && st.st_uid != 0 && st.st_uid != ::geteuid()) {
    s = Status::Error(EACCES, name + " belongs to uid " + std::to_string(st.st_uid) + ", not to root: chown root " + path);
  } else if ((n = ::read(fd, text.data(), text.size())) < 0) {
    s = Status::Error(errno, name + ": " + std::strerror(errno));
  }
  ::close(fd);
  if (!s.ok()) return s;
  if (size_t(n) > max)
    return Status::Error(EINVAL, name + " is larger than " + std::to_string(max) + " bytes");
  text.resize(size_t(n));
  return text;
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
  auto text = read_private_file(path, "psk_file", kMaxKeyFile, true);
  if (!text.ok()) {
    if (text.status().code() == ENOENT)
      return Status::Error(ENOENT, text.status().message() + " (hastnbd-ctl genkey " + path + " writes one)");
    return text.status();
  }
  std::string key = std::move(*text);
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

Result<TlsMaterial> load_tls_material(const ResourceConfig& config) {
  TlsMaterial m;
  if (!config.tls.enabled()) return m;
  constexpr size_t kMaxPem = 1 << 20;  // a chain of a few certificates is a few KiB
  for (auto [path, what, out, secret] : {std::tuple{&config.tls.cert, "tls.cert", &m.cert_pem, false},
                                         std::tuple{&config.tls.key, "tls.key", &m.key_pem, true},
                                         std::tuple{&config.tls.ca, "tls.ca", &m.ca_pem, false}}) {
    auto text = read_private_file(*path, what, kMaxPem, secret);
    if (!text.ok()) return text.status();
    if (text->find("-----BEGIN ") == std::string::npos)
      return Status::Error(EINVAL, std::string(what) + " " + *path + " holds no PEM block (-----BEGIN ...)");
    *out = std::move(*text);
  }
  return m;
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
