// Private to the peer layer: the name fields its records share (resource
// and node names: u16 length + bytes, 1..kMaxNameBytes of A-Z a-z 0-9 _ . -,
// as in the configuration).
#pragma once

#include <algorithm>
#include <string>

#include "hastnbd/base/bytes.h"
#include "hastnbd/peer/protocol.h"

namespace hastnbd::peer {

using Writer = bytes::BigWriter;
using Reader = bytes::BigReader;

inline bool valid_name(const std::string& s) {
  auto ok = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
           c == '-';
  };
  return !s.empty() && s.size() <= kMaxNameBytes && std::all_of(s.begin(), s.end(), ok);
}

// u16 length + bytes; the length is checked against `max` before anything is copied.
inline std::string read_name(Reader& r, const char* what) {
  uint16_t n = r.u16(what);
  if (!r.ok()) return {};
  if (n == 0 || n > kMaxNameBytes) {
    r.fail(std::string(what) + " length " + std::to_string(n) + " outside 1.." + std::to_string(kMaxNameBytes));
    return {};
  }
  std::string s(n, '\0');
  r.bytes(s.data(), n, what);
  if (r.ok() && !valid_name(s)) r.fail(std::string(what) + " is not a valid name (A-Z a-z 0-9 _ . -)");
  return s;
}

inline void write_name(Writer& w, const std::string& s) {
  // An over-long name is sent as is (length capped only so the field cannot
  // wrap); the peer rejects it and says why.
  size_t n = std::min<size_t>(s.size(), UINT16_MAX);
  w.u16(uint16_t(n));
  w.bytes(s.data(), n);
}

}  // namespace hastnbd::peer
