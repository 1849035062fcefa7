// The three roles of a node (docs/design.md, "Roles").
#pragma once

#include <optional>
#include <string_view>

namespace hastnbd {

enum class Role { kInit, kSecondary, kPrimary };

const char* to_string(Role r);
std::optional<Role> parse_role(std::string_view s);

}  // namespace hastnbd
