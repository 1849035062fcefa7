// Config parsing: YAML text -> validated, cascaded ResourceConfig per node.
//
// Three passes over the text, cheapest first: a byte scan (size, NUL bytes), a
// yaml-cpp event pass that refuses deep nesting, anchors and extra documents
// before any tree exists, then yaml-cpp's tree walked against the schema below.
// Inside this file errors travel as a thrown ConfigError because the schema walk
// is deep and every leaf can fail; the public functions catch everything
// (ConfigError, yaml-cpp's exceptions, bad_alloc) and return a Status.

#include "hastnbd/config/config.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <unistd.h>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <array>
#include <map>
#include <numeric>
#include <optional>
#include <span>
#include <sstream>
#include <system_error>
#include <tuple>

namespace hastnbd {
namespace {

constexpr size_t kMaxConfigBytes = 1 << 20;  // far above any real file; bounds hostile input
constexpr int kMaxNesting = 32;              // a valid file nests 6 deep
constexpr uint64_t kKiB = 1024;
constexpr uint64_t kMiB = kKiB << 10;
constexpr uint64_t kGiB = kMiB << 10;
constexpr uint64_t kMinExtentSize = 64 * kKiB;
constexpr uint64_t kMaxExtentSize = kGiB;
constexpr uint64_t kMinMaxInflight = kMiB;
constexpr uint64_t kSectorSize = 512;
constexpr unsigned kMaxTimeout = 3600;
constexpr unsigned kMaxKeepdirty = 1000000;
constexpr unsigned kMaxNbdConnections = 16;
constexpr size_t kMaxNameLength = 64;
constexpr size_t kMaxShownChars = 60;  // of user text quoted in a message
constexpr const char* kSizeExamples = "(examples: 4096, 64KiB, 2MiB, 1GiB)";
constexpr const char* kAddressExamples = "(examples: 192.0.2.1:8457, [2001:db8::1]:8457, host.example:8457)";

template <class E>
struct EnumName {
  const char* name;
  E value;
};
constexpr EnumName<Replication> kReplicationNames[] = {
    {"fullsync", Replication::kFullsync}, {"memsync", Replication::kMemsync}, {"async", Replication::kAsync}};
constexpr EnumName<Compression> kCompressionNames[] = {
    {"none", Compression::kNone}, {"hole", Compression::kHole}, {"lz4", Compression::kLz4}};
constexpr EnumName<Checksum> kChecksumNames[] = {{"none", Checksum::kNone}, {"xxh3", Checksum::kXxh3}};

template <class E, size_t N>
const char* enum_name(const EnumName<E> (&names)[N], E value) {
  for (const auto& n : names)
    if (n.value == value) return n.name;
  return "unknown";
}

// ---------------------------------------------------------------------------
// Text helpers

// ASCII only, on purpose: names and hosts must not depend on the locale.
bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_alnum(char c) { return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
char to_lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

bool all_digits(std::string_view s) { return !s.empty() && std::all_of(s.begin(), s.end(), is_digit); }

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = to_lower(c);
  return out;
}

// User text goes into log lines: keep it on one line and short.
std::string quote(std::string_view s) {
  std::string out = "'";
  for (size_t i = 0; i < s.size() && i < kMaxShownChars; ++i) {
    auto c = static_cast<unsigned char>(s[i]);
    out += (c < 0x20 || c == 0x7f) ? '?' : s[i];
  }
  if (s.size() > kMaxShownChars) out += "...";
  return out + "'";
}

// Lists in messages stop after `limit` items so a huge file cannot produce a
// huge log line.
template <class Range>
std::string join(const Range& items, size_t limit = 20) {
  std::string out;
  size_t n = 0;
  for (const auto& item : items) {
    if (n == limit) return out + ", ... (" + std::to_string(std::size(items) - limit) + " more)";
    if (n++ > 0) out += ", ";
    out += item;
  }
  return out;
}

std::string dotted(std::string_view parent, std::string_view name) {
  return parent.empty() ? std::string(name) : std::string(parent) + "." + std::string(name);
}

size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  std::iota(row.begin(), row.end(), 0);
  for (size_t i = 0; i < a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i + 1;
    for (size_t j = 0; j < b.size(); ++j) {
      size_t above = row[j + 1];
      row[j + 1] = std::min({above + 1, row[j] + 1, diagonal + (a[i] != b[j] ? 1 : 0)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

// ---------------------------------------------------------------------------
// Address and size pieces (pure, shared by the public parsers)

std::optional<unsigned> unit_shift(std::string_view unit) {
  static constexpr std::pair<char, unsigned> kPrefixes[] = {{'k', 10}, {'m', 20}, {'g', 30}, {'t', 40}};
  std::string u = lower(unit);
  if (u.empty() || u == "b") return 0;
  for (auto [prefix, shift] : kPrefixes) {
    std::string p(1, prefix);
    if (u == p || u == p + "b" || u == p + "ib") return shift;
  }
  return std::nullopt;
}

bool is_ipv4_literal(std::string_view host) {
  in_addr a;
  return inet_pton(AF_INET, std::string(host).c_str(), &a) == 1;
}

bool is_ipv6_literal(std::string_view host) {
  in6_addr a;
  return inet_pton(AF_INET6, std::string(host).c_str(), &a) == 1;
}

bool is_dns_label(std::string_view label) {
  auto ok = [](char c) { return is_alnum(c) || c == '-' || c == '_'; };
  return !label.empty() && label.size() <= 63 && std::all_of(label.begin(), label.end(), ok) &&
         label.front() != '-' && label.back() != '-';
}

// A numeric last label means a mistyped IPv4 address ("1.2.3.400"), not a name.
bool is_dns_name(std::string_view host) {
  if (host.empty() || host.size() > 253) return false;
  std::string_view last;
  for (size_t start = 0;;) {
    size_t dot = host.find('.', start);
    last = host.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start);
    if (!is_dns_label(last)) return false;
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  return !all_digits(last);
}

std::optional<uint16_t> parse_port(std::string_view text) {
  if (!all_digits(text) || text.size() > 5) return std::nullopt;
  unsigned port = 0;
  for (char c : text) port = port * 10 + static_cast<unsigned>(c - '0');
  if (port < 1 || port > 65535) return std::nullopt;
  return static_cast<uint16_t>(port);
}

// What decides whether two listeners collide: the address bytes for literals
// (so "::1" and "0:0::1" match), the lower-cased name otherwise.
struct HostKey {
  std::string key;
  bool wildcard = false;
};

HostKey host_key(const std::string& host) {
  std::array<unsigned char, sizeof(in6_addr)> bytes{};
  for (int family : {AF_INET, AF_INET6}) {
    if (inet_pton(family, host.c_str(), bytes.data()) != 1) continue;
    size_t len = family == AF_INET ? sizeof(in_addr) : sizeof(in6_addr);
    bool zero = std::all_of(bytes.begin(), bytes.begin() + len, [](unsigned char b) { return b == 0; });
    return {std::to_string(family) + ":" + std::string(bytes.begin(), bytes.begin() + len), zero};
  }
  return {lower(host), false};
}

// ---------------------------------------------------------------------------
// Errors

// Thrown only inside this file; see the comment at the top.
struct ConfigError {
  int code;
  std::string message;
};

int line_of(const YAML::Mark& mark) { return mark.line >= 0 ? mark.line + 1 : 1; }

[[noreturn]] void fail_line(std::string_view file, int line, const std::string& what, int code = EINVAL) {
  throw ConfigError{code, std::string(file) + ":" + std::to_string(line) + ": " + what};
}

[[noreturn]] void fail_key(std::string_view file, int line, std::string_view key, const std::string& what,
                           int code = EINVAL) {
  fail_line(file, line, std::string(key) + ": " + what, code);
}

// One "key: value" of the file, with what a message needs to point at it.
struct Item {
  std::string_view file;
  std::string key;  // dotted, e.g. resources.data.nodes.a.listen
  int line;         // 1-based line of the key
  YAML::Node value;
};

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

// ---------------------------------------------------------------------------
// Pre-checks before yaml-cpp builds a tree

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

// ---------------------------------------------------------------------------
// Walking maps

// Calls fn(item, name) for each entry of a map; a null section counts as empty
// so that "hosta:" with every setting inherited is allowed.
template <class Fn>
void for_each_entry(const Item& section, Fn&& fn) {
  if (section.value.IsNull()) return;
  if (!section.value.IsMap()) fail(section, "expected a map of KEY: VALUE, got " + describe(section.value));
  std::map<std::string, int> seen;
  for (const auto& kv : section.value) {
    int line = line_of(kv.first.Mark());
    if (!kv.first.IsScalar())
      fail_key(section.file, line, section.key, "keys must be plain names, got " + describe(kv.first));
    const std::string name = kv.first.Scalar();
    Item child{section.file, dotted(section.key, name), line, kv.second};
    auto [first, fresh] = seen.emplace(name, line);
    if (!fresh) fail(child, "duplicate key (first at line " + std::to_string(first->second) + ")");
    fn(child, name);
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

// ---------------------------------------------------------------------------
// Values

std::string scalar_of(const Item& it) {
  if (it.value.IsNull()) fail(it, "has no value");
  if (!it.value.IsScalar()) fail(it, "expected a single value, got " + describe(it.value));
  const std::string& s = it.value.Scalar();
  if (s.find('\0') != std::string::npos) fail(it, "contains a NUL character");
  return s;
}

template <class E, size_t N>
E enum_of(const Item& it, const EnumName<E> (&names)[N]) {
  std::string s = scalar_of(it);
  std::vector<std::string_view> choices;
  for (const auto& n : names) {
    if (s == n.name) return n.value;
    choices.push_back(n.name);
  }
  fail(it, quote(s) + " is not one of " + join(choices));
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

// ---------------------------------------------------------------------------
// Settings and the cascade

// Where a value that the cross-checks compare came from, to name both sides.
struct Origin {
  std::string key;
  int line = 0;
};

// One node's view of one resource while defaults, resource and node sections
// are applied on top of each other.
struct Cascade {
  ResourceConfig cfg;
  Origin listen, nbd_listen, metrics_listen, local, meta, nbd_socket, pidfile;
};

Origin origin_of(const Item& it) { return {it.key, it.line}; }

using Setter = void (*)(const Item&, Cascade&);
struct Key {
  std::string_view name;
  Setter apply;
};

std::vector<std::string_view> key_names(std::span<const Key> keys, std::string_view extra = {}) {
  std::vector<std::string_view> names;
  for (const Key& k : keys) names.push_back(k.name);
  if (!extra.empty()) names.push_back(extra);
  return names;
}

// `skip` is a key walked by the caller (a resource's `nodes`).
void apply_entries(const Item& section, std::span<const Key> keys, Cascade& c, std::string_view skip = {}) {
  for_each_entry(section, [&](const Item& it, const std::string& name) {
    if (!skip.empty() && name == skip) return;
    auto k = std::find_if(keys.begin(), keys.end(), [&](const Key& key) { return key.name == name; });
    if (k == keys.end()) fail(it, unknown_key(name, key_names(keys, skip)));
    k->apply(it, c);
  });
}

const Key kNbdKeys[] = {
    {"socket",
     [](const Item& it, Cascade& c) {
       c.cfg.nbd.socket = path_of(it);
       c.nbd_socket = origin_of(it);
     }},
    {"listen",
     [](const Item& it, Cascade& c) {
       c.cfg.nbd.listen = address_of(it);
       c.nbd_listen = origin_of(it);
     }},
    {"device", [](const Item& it, Cascade& c) { c.cfg.nbd.device = device_of(it); }},
    {"connections",
     [](const Item& it, Cascade& c) { c.cfg.nbd.connections = number_of(it, 1, kMaxNbdConnections); }},
};

const Key kMetricsKeys[] = {
    {"listen",
     [](const Item& it, Cascade& c) {
       c.cfg.metrics_listen = address_of(it);
       c.metrics_listen = origin_of(it);
     }},
};

const Key kSettingKeys[] = {
    {"replication", [](const Item& it, Cascade& c) { c.cfg.replication = enum_of(it, kReplicationNames); }},
    {"compression", [](const Item& it, Cascade& c) { c.cfg.compression = enum_of(it, kCompressionNames); }},
    {"checksum", [](const Item& it, Cascade& c) { c.cfg.checksum = enum_of(it, kChecksumNames); }},
    {"timeout", [](const Item& it, Cascade& c) { c.cfg.timeout = number_of(it, 1, kMaxTimeout); }},
    {"run_dir", [](const Item& it, Cascade& c) { c.cfg.run_dir = path_of(it); }},
    {"state_dir", [](const Item& it, Cascade& c) { c.cfg.state_dir = path_of(it); }},
    {"exec", [](const Item& it, Cascade& c) { c.cfg.exec = scalar_of(it); }},
    {"extent_size", [](const Item& it, Cascade& c) { c.cfg.extent_size = extent_size_of(it); }},
    {"keepdirty", [](const Item& it, Cascade& c) { c.cfg.keepdirty = number_of(it, 0, kMaxKeepdirty); }},
    {"metaflush", [](const Item& it, Cascade& c) { c.cfg.metaflush = bool_of(it); }},
    {"sync_rate", [](const Item& it, Cascade& c) { c.cfg.sync_rate = size_of(it); }},
    {"max_inflight", [](const Item& it, Cascade& c) { c.cfg.max_inflight = max_inflight_of(it); }},
    {"size", [](const Item& it, Cascade& c) { c.cfg.size = export_size_of(it); }},
    {"psk", [](const Item& it, Cascade& c) { c.cfg.psk = scalar_of(it); }},
    {"local",
     [](const Item& it, Cascade& c) {
       c.cfg.local = path_of(it);
       c.local = origin_of(it);
     }},
    {"listen",
     [](const Item& it, Cascade& c) {
       c.cfg.listen = address_of(it);
       c.listen = origin_of(it);
     }},
    {"remote", [](const Item& it, Cascade& c) { c.cfg.remote = address_of(it); }},
    {"source", [](const Item& it, Cascade& c) { c.cfg.source = source_of(it); }},
    {"pidfile",
     [](const Item& it, Cascade& c) {
       c.cfg.pidfile = path_of(it);
       c.pidfile = origin_of(it);
     }},
    {"meta",
     [](const Item& it, Cascade& c) {
       c.cfg.meta = path_of(it);
       c.meta = origin_of(it);
     }},
    {"nbd", [](const Item& it, Cascade& c) { apply_entries(it, kNbdKeys, c); }},
    {"metrics", [](const Item& it, Cascade& c) { apply_entries(it, kMetricsKeys, c); }},
};

constexpr std::string_view kNodesKey = "nodes";

// Paths derived from directories get the node section as their origin, under
// the key they would have had if written out.
void finish_node(const Item& node, const std::string& resource_key, Cascade& c) {
  ResourceConfig& cfg = c.cfg;
  if (cfg.local.empty()) {
    fail(node,
         "no 'local' (the backing device or file); set it here, in " + resource_key + " or in defaults");
  }
  if (cfg.nbd.socket.empty()) {
    cfg.nbd.socket = cfg.run_dir + "/" + cfg.name + ".sock";
    c.nbd_socket = {node.key + ".nbd.socket", node.line};
  }
  if (cfg.meta.empty()) {
    cfg.meta = cfg.state_dir + "/" + cfg.name + ".meta";
    c.meta = {node.key + ".meta", node.line};
  }
}

// ---------------------------------------------------------------------------
// The whole file

struct NodeEntry {
  std::string name;
  Cascade c;
};

struct ResourceEntry {
  std::string name;
  Origin nodes;  // where the `nodes` key is, for "no section for node" errors
  std::vector<NodeEntry> node_list;
};

struct ParsedFile {
  std::vector<ResourceEntry> resources;
};

ResourceEntry walk_resource(const Item& res, const std::string& name, const Item& defaults) {
  Cascade scratch;  // validates resource-level keys even if no node used them
  apply_entries(res, kSettingKeys, scratch, kNodesKey);
  std::optional<Item> nodes = find_entry(res, kNodesKey);
  if (!nodes) {
    fail(res, "has no 'nodes' section (one entry per node, e.g. nodes: {hosta: {local: /dev/vdb}})");
  }
  ResourceEntry entry{name, origin_of(*nodes), {}};
  for_each_entry(*nodes, [&](const Item& node, const std::string& node_name) {
    check_name(node, nodes->key, node_name, "node");
    Cascade c;
    c.cfg.config_path = std::string(res.file);
    c.cfg.name = name;
    c.cfg.node = node_name;
    apply_entries(defaults, kSettingKeys, c);
    apply_entries(res, kSettingKeys, c, kNodesKey);
    apply_entries(node, kSettingKeys, c);
    finish_node(node, res.key, c);
    entry.node_list.push_back({node_name, std::move(c)});
  });
  if (entry.node_list.empty()) fail(*nodes, "no nodes; add one section per node");
  if (entry.node_list.size() > 2)
    fail(*nodes, "has " + std::to_string(entry.node_list.size()) +
                     " nodes; a resource is replicated between exactly two (a primary and a secondary)");
  return entry;
}

struct Use {
  Origin from;
  std::string resource;
  std::string shown;
};

std::string used_by(const Use& u) {
  return u.from.key + " (line " + std::to_string(u.from.line) + ", resource " + u.resource + ")";
}

// Per node, across all resources: two listeners on one port collide when their
// hosts match or either is a wildcard. Maps keep this linear in the listeners.
void check_ports(const ParsedFile& f, std::string_view file) {
  using NodePort = std::pair<std::string, uint16_t>;
  std::map<NodePort, Use> first, wildcard;
  std::map<std::pair<NodePort, std::string>, Use> exact;
  for (const ResourceEntry& r : f.resources) {
    for (const NodeEntry& n : r.node_list) {
      for (auto [addr, from] :
           {std::pair{&n.c.cfg.listen, &n.c.listen}, std::pair{&n.c.cfg.nbd.listen, &n.c.nbd_listen},
            std::pair{&n.c.cfg.metrics_listen, &n.c.metrics_listen}}) {
        if (!addr->has_value()) continue;
        Use me{*from, r.name, (*addr)->to_string()};
        NodePort np{n.name, (*addr)->port};
        HostKey host = host_key((*addr)->host);
        const Use* other = nullptr;
        if (auto w = wildcard.find(np); w != wildcard.end()) {
          other = &w->second;
        } else if (auto any = first.find(np); host.wildcard && any != first.end()) {
          other = &any->second;
        } else if (auto e = exact.find({np, host.key}); e != exact.end()) {
          other = &e->second;
        }
        if (other) {
          fail_key(file, me.from.line, me.from.key,
                   me.shown + " (resource " + r.name + ") collides with " + other->shown + " from " +
                       used_by(*other) + ": node '" + n.name + "' would listen twice on port " +
                       std::to_string(np.second));
        }
        first.emplace(np, me);
        exact.emplace(std::pair{np, host.key}, me);
        if (host.wildcard) wildcard.emplace(np, me);
      }
    }
  }
}

// Two resources of one node on the same disk, metadata file, socket or pid
// file would destroy each other's data or fail to start; catch it before
// either runs.
void check_paths(const ParsedFile& f, std::string_view file) {
  std::map<std::pair<std::string, std::string>, Use> seen;
  for (const ResourceEntry& r : f.resources) {
    for (const NodeEntry& n : r.node_list) {
      const ResourceConfig& cfg = n.c.cfg;
      for (auto [path, from] : {std::pair{&cfg.local, &n.c.local}, std::pair{&cfg.meta, &n.c.meta},
                                std::pair{&cfg.nbd.socket, &n.c.nbd_socket}, std::pair{&cfg.pidfile, &n.c.pidfile}}) {
        if (path->empty()) continue;  // no pidfile
        Use me{*from, r.name, *path};
        auto [other, fresh] = seen.emplace(std::pair{n.name, *path}, me);
        if (!fresh) {
          fail_key(file, me.from.line, me.from.key,
                   quote(*path) + " is also used by " + used_by(other->second) + " on node '" + n.name +
                       "'; each needs its own");
        }
      }
    }
  }
}

ParsedFile walk_file(const YAML::Node& root, std::string_view file) {
  if (!root.IsNull() && !root.IsMap()) {
    fail_key(file, line_of(root.Mark()), "top level",
             "expected a map with 'defaults' and 'resources', got " + describe(root));
  }
  Item top{file, "", 1, root};
  std::optional<Item> defaults_entry, resources;
  for_each_entry(top, [&](const Item& it, const std::string& name) {
    if (name == "defaults") {
      defaults_entry.emplace(it);
    } else if (name == "resources") {
      resources.emplace(it);
    } else {
      fail(it, unknown_key(name, {"defaults", "resources"}));
    }
  });
  const Item none{file, "defaults", 1, YAML::Node()};
  const Item& defaults = defaults_entry ? *defaults_entry : none;
  Cascade scratch;  // validates defaults even when no resource follows
  apply_entries(defaults, kSettingKeys, scratch);
  if (!resources) fail_key(file, 1, "resources", "missing; the file needs at least one resource");

  ParsedFile f;
  for_each_entry(*resources, [&](const Item& res, const std::string& name) {
    check_name(res, resources->key, name, "resource");
    f.resources.push_back(walk_resource(res, name, defaults));
  });
  if (f.resources.empty()) fail(*resources, "no resources; add at least one");
  check_ports(f, file);
  check_paths(f, file);
  return f;
}

ParsedFile parse_file(std::string_view text, std::string_view file) {
  check_bytes(text, file);
  return walk_file(load_tree(text, file), file);
}

std::vector<std::string> resource_names(const ParsedFile& f) {
  std::vector<std::string> names;
  for (const ResourceEntry& r : f.resources) names.push_back(r.name);
  return names;
}

ResourceConfig select(const ParsedFile& f, std::string_view file, std::string_view resource,
                      std::string_view node) {
  auto r = std::find_if(f.resources.begin(), f.resources.end(),
                        [&](const ResourceEntry& e) { return e.name == resource; });
  if (r == f.resources.end()) {
    throw ConfigError{ENOENT, std::string(file) + ": no resource " + quote(resource) +
                                  " (resources: " + join(resource_names(f)) + ")"};
  }
  const std::string want = node.empty() ? default_node_name() : std::string(node);
  std::vector<std::string> names;
  for (const NodeEntry& n : r->node_list) {
    if (n.name != want) continue;
    ResourceConfig cfg = n.c.cfg;
    for (const NodeEntry& other : r->node_list)
      if (other.name != want) cfg.peer_node = other.name;
    return cfg;
  }
  for (const NodeEntry& n : r->node_list) names.push_back(n.name);
  fail_key(file, r->nodes.line, r->nodes.key,
           "no section for node " + quote(want) + " (nodes: " + join(names) + "); use --node NAME", ENOENT);
}

// The one place where anything thrown below becomes a Status.
template <class Fn>
auto guarded(std::string_view file, Fn&& fn) -> Result<decltype(fn())> {
  try {
    return fn();
  } catch (const ConfigError& e) {
    return Status::Error(e.code, e.message);
  } catch (const YAML::Exception& e) {
    return Status::Error(
        EINVAL, std::string(file) + ":" + std::to_string(line_of(e.mark)) + ": YAML error: " + e.msg);
  } catch (const std::bad_alloc&) {
    return Status::Error(ENOMEM, std::string(file) + ": out of memory while parsing");
  } catch (const std::exception& e) {
    return Status::Error(EINVAL, std::string(file) + ": " + e.what());
  } catch (...) {
    return Status::Error(EINVAL, std::string(file) + ": unexpected error while parsing");
  }
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

}  // namespace

const char* to_string(Replication r) { return enum_name(kReplicationNames, r); }
const char* to_string(Compression c) { return enum_name(kCompressionNames, c); }
const char* to_string(Checksum c) { return enum_name(kChecksumNames, c); }

Result<Address> parse_address(std::string_view text) {
  auto bad = [&](const std::string& why) {
    return Status::Error(EINVAL, quote(text) + " " + why + " " + kAddressExamples);
  };
  std::string_view host, port;
  if (!text.empty() && text.front() == '[') {
    size_t close = text.find(']');
    if (close == std::string_view::npos) return bad("has no closing ']'");
    host = text.substr(1, close - 1);
    if (!is_ipv6_literal(host)) return bad("has no IPv6 address inside [ ]");
    if (close + 1 >= text.size() || text[close + 1] != ':') return bad("has no :PORT after ']'");
    port = text.substr(close + 2);
  } else {
    size_t colon = text.rfind(':');
    if (colon == std::string_view::npos) return bad("has no :PORT");
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    if (host.find(':') != std::string_view::npos) return bad("is an IPv6 address without [ ]");
    if (host.empty()) return bad("has no host (0.0.0.0 means every address)");
    if (!is_ipv4_literal(host) && !is_dns_name(host)) return bad("has no valid IPv4 address or host name");
  }
  std::optional<uint16_t> p = parse_port(port);
  if (!p) return bad("needs a port from 1 to 65535");
  return Address{std::string(host), *p};
}

Result<Address> parse_source_address(std::string_view text) {
  auto bad = [&](const std::string& why) {
    return Status::Error(EINVAL, quote(text) + " " + why +
                                     " (examples: 192.0.2.1, 192.0.2.1:0, [2001:db8::1], [2001:db8::1]:9000)");
  };
  std::string_view host = text, port;
  if (!text.empty() && text.front() == '[') {
    size_t close = text.find(']');
    if (close == std::string_view::npos) return bad("has no closing ']'");
    host = text.substr(1, close - 1);
    if (close + 1 < text.size()) {
      if (text[close + 1] != ':') return bad("has something other than :PORT after ']'");
      port = text.substr(close + 2);
    }
    if (!is_ipv6_literal(host)) return bad("has no IPv6 address inside [ ]");
  } else if (is_ipv6_literal(text)) {
    host = text;
  } else {
    size_t colon = text.rfind(':');
    if (colon != std::string_view::npos) {
      host = text.substr(0, colon);
      port = text.substr(colon + 1);
    }
    if (!is_ipv4_literal(host)) return bad("is not an IP address");
  }
  uint16_t p = 0;
  if (!port.empty() && port != "0") {
    std::optional<uint16_t> parsed = parse_port(port);
    if (!parsed) return bad("needs a port from 0 to 65535");
    p = *parsed;
  }
  return Address{std::string(host), p};
}

namespace {
std::string opt_address(const std::optional<Address>& a) { return a ? a->to_string() : "(none)"; }
}  // namespace

ReloadDiff apply_reload(ResourceConfig& cur, const ResourceConfig& next) {
  ReloadDiff d;
  auto note = [&](bool ok, const char* key, const std::string& from, const std::string& to) {
    if (from == to) return false;
    std::string line = std::string(key) + ": " + from + " -> " + to;
    (ok ? d.applied : d.refused).push_back(std::move(line));
    return ok;
  };
  auto text = [](const std::string& s) { return s.empty() ? std::string("(none)") : s; };
  // Changed in place.
  if (note(true, "timeout", std::to_string(cur.timeout), std::to_string(next.timeout))) cur.timeout = next.timeout;
  if (note(true, "exec", text(cur.exec), text(next.exec))) cur.exec = next.exec;
  if (note(true, "sync_rate", std::to_string(cur.sync_rate), std::to_string(next.sync_rate)))
    cur.sync_rate = next.sync_rate;
  if (note(true, "compression", to_string(cur.compression), to_string(next.compression)))
    cur.compression = next.compression;
  if (note(true, "checksum", to_string(cur.checksum), to_string(next.checksum))) cur.checksum = next.checksum;
  if (note(true, "max_inflight", std::to_string(cur.max_inflight), std::to_string(next.max_inflight)))
    cur.max_inflight = next.max_inflight;
  if (note(true, "source", opt_address(cur.source), opt_address(next.source))) cur.source = next.source;
  // A new address for the same peer; adding or removing the peer is a
  // different resource layout.
  if (note(bool(cur.remote) == bool(next.remote), "remote", opt_address(cur.remote), opt_address(next.remote)))
    cur.remote = next.remote;
  // Needs a restart.
  note(false, "replication", to_string(cur.replication), to_string(next.replication));
  note(false, "peer node", text(cur.peer_node), text(next.peer_node));
  note(false, "local", cur.local, next.local);
  note(false, "meta", cur.meta, next.meta);
  note(false, "size", cur.size ? std::to_string(*cur.size) : "(device)", next.size ? std::to_string(*next.size) : "(device)");
  note(false, "extent_size", std::to_string(cur.extent_size), std::to_string(next.extent_size));
  note(false, "keepdirty", std::to_string(cur.keepdirty), std::to_string(next.keepdirty));
  note(false, "metaflush", cur.metaflush ? "true" : "false", next.metaflush ? "true" : "false");
  note(false, "listen", opt_address(cur.listen), opt_address(next.listen));
  note(false, "run_dir", cur.run_dir, next.run_dir);
  note(false, "state_dir", cur.state_dir, next.state_dir);
  note(false, "pidfile", text(cur.pidfile), text(next.pidfile));
  if (cur.psk != next.psk) d.refused.push_back("psk: changed (values not shown)");
  note(false, "nbd.socket", cur.nbd.socket, next.nbd.socket);
  note(false, "nbd.listen", opt_address(cur.nbd.listen), opt_address(next.nbd.listen));
  note(false, "nbd.device", text(cur.nbd.device), text(next.nbd.device));
  note(false, "nbd.connections", std::to_string(cur.nbd.connections), std::to_string(next.nbd.connections));
  note(false, "metrics.listen", opt_address(cur.metrics_listen), opt_address(next.metrics_listen));
  return d;
}

Result<uint64_t> parse_size(std::string_view text) {
  size_t digits = 0;
  uint64_t n = 0;
  bool overflow = false;
  for (; digits < text.size() && is_digit(text[digits]); ++digits) {
    auto d = static_cast<uint64_t>(text[digits] - '0');
    overflow = overflow || n > (UINT64_MAX - d) / 10;
    if (!overflow) n = n * 10 + d;
  }
  std::optional<unsigned> shift = digits == 0 ? std::nullopt : unit_shift(text.substr(digits));
  if (!shift) return Status::Error(EINVAL, quote(text) + " is not a size " + kSizeExamples);
  if (overflow || (*shift > 0 && n > (UINT64_MAX >> *shift))) {
    return Status::Error(EINVAL, quote(text) + " is too large for a 64-bit byte count");
  }
  return n << *shift;
}

std::string default_node_name() {
  char buf[256] = {};
  if (gethostname(buf, sizeof buf - 1) != 0) return "";
  std::string name(buf);
  return name.substr(0, name.find('.'));
}

Result<ResourceConfig> parse_resource_config(std::string_view yaml, std::string_view path,
                                             std::string_view resource, std::string_view node) {
  return guarded(path, [&] { return select(parse_file(yaml, path), path, resource, node); });
}

Result<ResourceConfig> load_resource_config(const std::string& path, std::string_view resource,
                                            std::string_view node) {
  Result<std::string> text = read_file(path);
  if (!text.ok()) return text.status();
  return parse_resource_config(*text, path, resource, node);
}

Result<std::vector<std::string>> parse_resource_names(std::string_view yaml, std::string_view path) {
  return guarded(path, [&] { return resource_names(parse_file(yaml, path)); });
}

Result<std::vector<std::string>> load_resource_names(const std::string& path) {
  Result<std::string> text = read_file(path);
  if (!text.ok()) return text.status();
  return parse_resource_names(*text, path);
}

Result<int> nbd_device_index(const std::string& path) {
  const std::string prefix = "/dev/nbd";
  if (path.rfind(prefix, 0) != 0 || path.size() == prefix.size() || path.size() > prefix.size() + 6)
    return Status::Error(EINVAL, "'" + path + "' is not an nbd device path (like /dev/nbd0)");
  int n = 0;
  for (size_t i = prefix.size(); i < path.size(); ++i) {
    if (path[i] < '0' || path[i] > '9')
      return Status::Error(EINVAL, "'" + path + "' is not an nbd device path (like /dev/nbd0)");
    n = n * 10 + (path[i] - '0');
  }
  return n;
}

}  // namespace hastnbd
