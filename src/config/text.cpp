// Names, sizes and addresses: the pure pieces of the configuration parser.
#include <arpa/inet.h>
#include <unistd.h>

#include <array>
#include <numeric>

#include "detail.h"

namespace hastnbd {
namespace cfg {

char to_lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

bool all_digits(std::string_view s) { return !s.empty() && std::all_of(s.begin(), s.end(), is_digit); }

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = to_lower(c);
  return out;
}

std::string quote(std::string_view s) {
  std::string out = "'";
  for (size_t i = 0; i < s.size() && i < kMaxShownChars; ++i) {
    auto c = static_cast<unsigned char>(s[i]);
    out += (c < 0x20 || c == 0x7f) ? '?' : s[i];
  }
  if (s.size() > kMaxShownChars) out += "...";
  return out + "'";
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

}  // namespace cfg

using namespace cfg;

const char* to_string(Replication r) { return enum_name(kReplicationNames, r); }
const char* to_string(PeerAuth a) { return a == PeerAuth::kDefault ? "default" : enum_name(kAuthNames, a); }

bool is_loopback_host(const std::string& host) {
  in_addr v4{};
  if (inet_pton(AF_INET, host.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  in6_addr v6{};
  if (inet_pton(AF_INET6, host.c_str(), &v6) == 1) return IN6_IS_ADDR_LOOPBACK(&v6);
  return lower(host) == "localhost";
}
const char* to_string(Compression c) { return enum_name(kCompressionNames, c); }
const char* to_string(Checksum c) { return enum_name(kChecksumNames, c); }
const char* to_string(SplitBrainPolicy p) { return enum_name(kSplitBrainNames, p); }

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
