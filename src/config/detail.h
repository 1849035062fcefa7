// The configuration parser's private parts, shared by the files of this
// layer (config.cpp: the schema and the cascade; yaml.cpp: reading the file
// and its values; text.cpp: names, sizes and addresses; reload.cpp). Not part
// of the layer's contract: include/hastnbd/config/config.h is.
//
// Errors travel as a thrown ConfigError inside the parser because the schema
// walk is deep and every leaf can fail; the public functions catch everything
// (guarded()) and return a Status.
#pragma once

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <map>
#include <new>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "hastnbd/config/config.h"

namespace hastnbd::cfg {

inline constexpr size_t kMaxConfigBytes = 1 << 20;  // far above any real file; bounds hostile input
inline constexpr int kMaxNesting = 32;              // a valid file nests 6 deep
inline constexpr uint64_t kKiB = 1024;
inline constexpr uint64_t kMiB = kKiB << 10;
inline constexpr uint64_t kGiB = kMiB << 10;
inline constexpr uint64_t kMinExtentSize = 64 * kKiB;
inline constexpr uint64_t kMaxExtentSize = kGiB;
inline constexpr uint64_t kMinMaxInflight = kMiB;
inline constexpr uint64_t kSectorSize = 512;
inline constexpr unsigned kMaxTimeout = 3600;
inline constexpr unsigned kMaxKeepdirty = 1000000;
inline constexpr unsigned kMaxNbdConnections = 16;
inline constexpr size_t kMaxNameLength = 64;
inline constexpr size_t kMaxShownChars = 60;  // of user text quoted in a message
inline constexpr const char* kSizeExamples = "(examples: 4096, 64KiB, 2MiB, 1GiB)";
inline constexpr const char* kAddressExamples = "(examples: 192.0.2.1:8457, [2001:db8::1]:8457, host.example:8457)";

template <class E>
struct EnumName {
  const char* name;
  E value;
};
inline constexpr EnumName<Replication> kReplicationNames[] = {
    {"fullsync", Replication::kFullsync}, {"memsync", Replication::kMemsync}, {"async", Replication::kAsync}};
inline constexpr EnumName<Compression> kCompressionNames[] = {
    {"none", Compression::kNone}, {"hole", Compression::kHole}, {"lz4", Compression::kLz4}};
inline constexpr EnumName<Checksum> kChecksumNames[] = {{"none", Checksum::kNone}, {"xxh3", Checksum::kXxh3}};
inline constexpr EnumName<PeerAuth> kAuthNames[] = {{"psk", PeerAuth::kPsk}, {"none", PeerAuth::kNone}};
inline constexpr EnumName<SplitBrainPolicy> kSplitBrainNames[] = {
    {"manual", SplitBrainPolicy::kManual},
    {"discard-zero-changes", SplitBrainPolicy::kDiscardZeroChanges},
    {"discard-least-changes", SplitBrainPolicy::kDiscardLeastChanges},
    {"discard-younger-primary", SplitBrainPolicy::kDiscardYoungerPrimary}};
// The shortest pre-shared key accepted (the key file hastnbd-ctl genkey
// writes has 64 characters).
inline constexpr size_t kMinKeyChars = 32;

template <class E, size_t N>
const char* enum_name(const EnumName<E> (&names)[N], E value) {
  for (const auto& n : names)
    if (n.value == value) return n.name;
  return "unknown";
}

// ---------------------------------------------------------------------------
// Text (text.cpp)

// ASCII only, on purpose: names and hosts must not depend on the locale.
inline bool is_digit(char c) { return c >= '0' && c <= '9'; }
inline bool is_alnum(char c) { return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool all_digits(std::string_view s);
std::string lower(std::string_view s);
// User text goes into log lines: keep it on one line and short.
std::string quote(std::string_view s);
std::string dotted(std::string_view parent, std::string_view name);
size_t edit_distance(std::string_view a, std::string_view b);

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

// What decides whether two listeners collide: the address bytes for literals
// (so "::1" and "0:0::1" match), the lower-cased name otherwise.
struct HostKey {
  std::string key;
  bool wildcard = false;
};
HostKey host_key(const std::string& host);

// ---------------------------------------------------------------------------
// Errors and the file's items (yaml.cpp)

struct ConfigError {
  int code;
  std::string message;
};

inline int line_of(const YAML::Mark& mark) { return mark.line >= 0 ? mark.line + 1 : 1; }
[[noreturn]] void fail_line(std::string_view file, int line, const std::string& what, int code = EINVAL);
[[noreturn]] void fail_key(std::string_view file, int line, std::string_view key, const std::string& what,
                           int code = EINVAL);

// One "key: value" of the file, with what a message needs to point at it.
struct Item {
  std::string_view file;
  std::string key;  // dotted, e.g. resources.data.nodes.a.listen
  int line;         // 1-based line of the key
  YAML::Node value;
};

[[noreturn]] void fail(const Item& it, const std::string& what);
std::string describe(const YAML::Node& n);
std::string unknown_key(std::string_view name, const std::vector<std::string_view>& known);

// The byte scan, then yaml-cpp's event pass (nesting, anchors, documents),
// then the tree.
void check_bytes(std::string_view text, std::string_view file);
YAML::Node load_tree(std::string_view text, std::string_view file);
// At most kMaxConfigBytes + 1 bytes of the file.
Result<std::string> read_file(const std::string& path);

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

std::optional<Item> find_entry(const Item& section, std::string_view key);
void check_name(const Item& it, const std::string& parent_key, const std::string& name, const char* what);

// Values, each checked against its key's rules.
std::string scalar_of(const Item& it);
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
unsigned number_of(const Item& it, unsigned lo, unsigned hi);
bool bool_of(const Item& it);
uint64_t size_of(const Item& it);
uint64_t extent_size_of(const Item& it);
// track_granule: 0 (off) or a power of two from 4 KiB to 64 KiB.
uint64_t granule_of(const Item& it);
uint64_t export_size_of(const Item& it);
uint64_t max_inflight_of(const Item& it);
std::string path_of(const Item& it);
std::string device_of(const Item& it);  // empty means "no device"
Address address_of(const Item& it);
Address source_of(const Item& it);

// The one place where anything thrown in the parser becomes a Status.
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

}  // namespace hastnbd::cfg
