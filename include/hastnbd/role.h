// Roles and which changes between them are allowed: a pure state machine.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include "hastnbd/status.h"

namespace hastnbd {

enum class Role { kInit, kSecondary, kPrimary };

const char* to_string(Role r);
std::optional<Role> parse_role(std::string_view s);

struct RoleContext {
  size_t nbd_clients = 0;        // clients attached to the export (not counting an attached /dev/nbdN)
  bool secondary_available = false;  // this build can run the secondary role
  bool force = false;
  bool sync_target = false;          // this node is the target of an unfinished sync: inconsistent data
  std::string device_users;          // who uses the attached /dev/nbdN ("" = nobody, or none attached)
};

// Ok if `from` -> `to` may proceed now (a change to the same role is a no-op
// and allowed); otherwise the reason, with EBUSY / ENOTSUP / EINVAL.
Status check_role_change(Role from, Role to, const RoleContext& ctx);

}  // namespace hastnbd
