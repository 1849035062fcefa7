// Reading the configuration file: the byte scan, the event pass that refuses
// what yaml-cpp cannot be trusted with, and the checked values of its items.
#include <fcntl.h>
#include <unistd.h>
#include <yaml-cpp/eventhandler.h>

#include <sstream>
#include <system_error>

#include "detail.h"

namespace hastnbd::cfg {

[[noreturn]] void fail_line(std::string_view file, int line, const std::string& what, int code) {
  throw ConfigError{code, std::string(file) + ":" + std::to_string(line) + ": " + what};
}

[[noreturn]] void fail_key(std::string_view file, int line, std::string_view key, const std::string& what,
                           int code) {
  fail_line(file, line, std::string(key) + ": " + what, code);
}

[[noreturn]] void fail(const Item& it, const std::string& what) { fail_key(it.file, it.line, it.key, what); }

std::string describe(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Map:
      return "a map";
    case YAML::NodeType::Scalar:
      return quote(n.Scalar());
    default:
      return "nothing";
  }
}

std::string unknown_key(std::string_view name, const std::vector<std::string_view>& known) {
  // A suggestion more than 2 edits away, or rewriting half of a short name,
  // confuses more than it helps.
  std::string_view best;
  size_t best_distance = 3;
  if (name.size() <= kMaxShownChars) {
    for (std::string_view k : known) {
      size_t d = edit_distance(name, k);
      if (d < best_distance && d * 2 <= name.size()) {
        best = k;
        best_distance = d;
      }
    }
  }
  if (!best.empty()) return "unknown key; did you mean '" + std::string(best) + "'?";
  return "unknown key (known keys: " + join(known, known.size()) + ")";
}

void check_bytes(std::string_view text, std::string_view file) {
  if (text.size() > kMaxConfigBytes) {
    throw ConfigError{EINVAL, std::string(file) + ": " + std::to_string(text.size()) +
                                  " bytes is more than the 1 MiB a config file may have"};
  }
  size_t nul = text.find('\0');
  if (nul != std::string_view::npos) {
    int line = 1 + static_cast<int>(std::count(text.begin(), text.begin() + nul, '\n'));
    fail_line(file, line, "contains a NUL byte; a config file is text");
  }
}

[[noreturn]] void fail_syntax(std::string_view file, const YAML::Exception& e) {
  fail_line(file, line_of(e.mark), "YAML syntax error: " + e.msg);
}

// yaml-cpp recurses once per nesting level (deep input exhausts the stack) and
// shares aliased nodes (a "billion laughs" file makes any walk exponential).
// This pass sees each event before the parser descends and stops at the first
// one we refuse, so neither can happen in the tree-building pass.
class EventGuard final : public YAML::EventHandler {
 public:
  explicit EventGuard(std::string_view file) : file_(file) {}

  void OnDocumentStart(const YAML::Mark& mark) override {
    if (++documents_ > 1) {
      fail_line(file_, line_of(mark), "a second YAML document ('---'); the file must hold one");
    }
  }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark& mark, YAML::anchor_t anchor) override { check_anchor(mark, anchor); }
  void OnAlias(const YAML::Mark& mark, YAML::anchor_t) override { refuse_anchors(mark); }
  void OnScalar(const YAML::Mark& mark, const std::string&, YAML::anchor_t anchor,
                const std::string&) override {
    check_anchor(mark, anchor);
  }
  void OnSequenceStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t anchor,
                       YAML::EmitterStyle::value) override {
    enter(mark, anchor);
  }
  void OnSequenceEnd() override { --depth_; }
  void OnMapStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t anchor,
                  YAML::EmitterStyle::value) override {
    enter(mark, anchor);
  }
  void OnMapEnd() override { --depth_; }
  void OnAnchor(const YAML::Mark& mark, const std::string&) override { refuse_anchors(mark); }

 private:
  void enter(const YAML::Mark& mark, YAML::anchor_t anchor) {
    check_anchor(mark, anchor);
    if (++depth_ > kMaxNesting) {
      fail_line(file_, line_of(mark), "YAML nested deeper than " + std::to_string(kMaxNesting) + " levels");
    }
  }
  void check_anchor(const YAML::Mark& mark, YAML::anchor_t anchor) {
    if (anchor != YAML::NullAnchor) refuse_anchors(mark);
  }
  [[noreturn]] void refuse_anchors(const YAML::Mark& mark) {
    fail_line(file_, line_of(mark),
              "YAML anchors (&name) and aliases (*name) are not supported; write the values out");
  }

  std::string_view file_;
  int depth_ = 0;
  int documents_ = 0;
};

YAML::Node load_tree(std::string_view text, std::string_view file) {
  const std::string copy(text);
  try {
    std::istringstream events(copy);
    YAML::Parser parser(events);
    EventGuard guard(file);
    while (parser.HandleNextDocument(guard)) {
    }
    return YAML::Load(copy);
  } catch (const YAML::Exception& e) {
    fail_syntax(file, e);
  }
}

// Items are only ever copy-constructed (emplace), never assigned: assigning a
// YAML::Node that holds a node rewrites that node inside the tree.
std::optional<Item> find_entry(const Item& section, std::string_view key) {
  std::optional<Item> found;
  for_each_entry(section, [&](const Item& it, const std::string& name) {
    if (name == key) found.emplace(it);
  });
  return found;
}

void check_name(const Item& it, const std::string& parent_key, const std::string& name, const char* what) {
  auto ok = [](char c) {
    return is_alnum(c) || c == '_' || c == '.' || c == '-';
  };
  if (name.empty() || name.size() > kMaxNameLength || !std::all_of(name.begin(), name.end(), ok)) {
    fail_key(it.file, it.line, parent_key,
             quote(name) + " is not a valid " + what + " name (1 to 64 of A-Z a-z 0-9 _ . -)");
  }
}

std::string scalar_of(const Item& it) {
  if (it.value.IsNull()) fail(it, "has no value");
  if (!it.value.IsScalar()) fail(it, "expected a single value, got " + describe(it.value));
  const std::string& s = it.value.Scalar();
  if (s.find('\0') != std::string::npos) fail(it, "contains a NUL character");
  return s;
}

unsigned number_of(const Item& it, unsigned lo, unsigned hi) {
  std::string s = scalar_of(it);
  uint64_t n = 0;
  bool ok = all_digits(s) && s.size() <= 10;  // 10 digits cannot overflow 64 bits
  if (ok) {
    for (char c : s) n = n * 10 + static_cast<unsigned>(c - '0');
  }
  if (!ok || n < lo || n > hi) {
    fail(it, quote(s) + " is not a whole number from " + std::to_string(lo) + " to " + std::to_string(hi));
  }
  return static_cast<unsigned>(n);
}

bool bool_of(const Item& it) {
  std::string s = scalar_of(it);
  std::string l = lower(s);
  if (l == "true" || l == "yes" || l == "on") return true;
  if (l == "false" || l == "no" || l == "off") return false;
  fail(it, quote(s) + " is not true or false");
}

uint64_t size_of(const Item& it) {
  Result<uint64_t> r = parse_size(scalar_of(it));
  if (!r.ok()) fail(it, r.status().message());
  return *r;
}

uint64_t extent_size_of(const Item& it) {
  uint64_t n = size_of(it);
  bool power_of_two = n != 0 && (n & (n - 1)) == 0;
  if (!power_of_two || n < kMinExtentSize || n > kMaxExtentSize) {
    fail(it, quote(it.value.Scalar()) + " is not a power of two from 64KiB to 1GiB");
  }
  return n;
}

uint64_t granule_of(const Item& it) {
  uint64_t n = size_of(it);
  bool power_of_two = (n & (n - 1)) == 0;
  if (n != 0 && (!power_of_two || n < 4096 || n > 65536))
    fail(it, quote(it.value.Scalar()) + " is not 0 (off) or a power of two from 4KiB to 64KiB");
  return n;
}

uint64_t export_size_of(const Item& it) {
  uint64_t n = size_of(it);
  if (n == 0 || n % kSectorSize != 0) {
    fail(it, quote(it.value.Scalar()) + " is not a positive multiple of 512 bytes");
  }
  return n;
}

uint64_t max_inflight_of(const Item& it) {
  uint64_t n = size_of(it);
  if (n < kMinMaxInflight) fail(it, quote(it.value.Scalar()) + " is too small (at least 1MiB)");
  return n;
}

std::string path_of(const Item& it) {
  std::string s = scalar_of(it);
  if (s.empty() || s.front() != '/') fail(it, quote(s) + " is not an absolute path (it must start with /)");
  return s;
}

// Empty means "no device" so a node can override a device set above it.
std::string device_of(const Item& it) {
  std::string s = scalar_of(it);
  if (!s.empty() && !nbd_device_index(s).ok()) fail(it, quote(s) + " is not an nbd device (like /dev/nbd0)");
  return s;
}

Address address_of(const Item& it) {
  Result<Address> r = parse_address(scalar_of(it));
  if (!r.ok()) fail(it, r.status().message());
  return *r;
}

Address source_of(const Item& it) {
  Result<Address> r = parse_source_address(scalar_of(it));
  if (!r.ok()) fail(it, r.status().message());
  return *r;
}

// Reads at most one byte past the limit so a wrong path (a disk, /dev/zero)
// fails fast instead of filling memory.
Result<std::string> read_file(const std::string& path) {
  auto error = [&](int code) {
    return Status::Error(code, path + ": " + std::generic_category().message(code));
  };
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return error(errno);
  std::string text;
  char buf[64 * 1024];
  while (text.size() <= kMaxConfigBytes) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int code = errno;
      ::close(fd);
      return error(code);
    }
    if (n == 0) break;
    text.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return text;
}

}  // namespace hastnbd::cfg
