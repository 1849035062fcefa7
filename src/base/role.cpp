#include "hastnbd/base/role.h"

#include <string>

namespace hastnbd {

const char* to_string(Role r) {
  switch (r) {
    case Role::kInit: return "init";
    case Role::kSecondary: return "secondary";
    case Role::kPrimary: return "primary";
  }
  return "?";
}

std::optional<Role> parse_role(std::string_view s) {
  if (s == "init") return Role::kInit;
  if (s == "secondary") return Role::kSecondary;
  if (s == "primary") return Role::kPrimary;
  return std::nullopt;
}

}  // namespace hastnbd
