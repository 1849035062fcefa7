// libFuzzer target for the config parser: arbitrary bytes must give either a
// config or an error Status, never a crash, hang or escaped exception.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "hastnbd/config/config.h"

namespace {

// Checks that a successful parse is self-consistent; a violation is a bug.
void check_config(const hastnbd::ResourceConfig& c, const hastnbd::Result<std::vector<std::string>>& names) {
  if (!names.ok() || std::find(names->begin(), names->end(), c.name) == names->end()) __builtin_trap();
  if (c.local.empty() || c.local.front() != '/') __builtin_trap();
  if (c.meta.empty() || c.nbd.socket.empty()) __builtin_trap();
  if (c.timeout < 1 || c.timeout > 3600) __builtin_trap();
  if ((c.extent_size & (c.extent_size - 1)) != 0) __builtin_trap();
  for (const auto& a : {c.listen, c.remote, c.nbd.listen}) {
    if (!a) continue;
    auto again = hastnbd::parse_address(a->to_string());
    if (!again.ok() || !(*again == *a)) __builtin_trap();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto config = hastnbd::parse_resource_config(text, "fuzz.yaml", "data", "a");
  auto names = hastnbd::parse_resource_names(text, "fuzz.yaml");
  if (config.ok()) {
    check_config(*config, names);
  } else if (config.status().message().empty()) {
    __builtin_trap();
  }

  // The scalar parsers see the raw bytes too; addresses must round-trip.
  auto address = hastnbd::parse_address(text);
  if (address.ok()) {
    auto again = hastnbd::parse_address(address->to_string());
    if (!again.ok() || !(*again == *address)) __builtin_trap();
  }
  (void)hastnbd::parse_size(text);
  return 0;
}
