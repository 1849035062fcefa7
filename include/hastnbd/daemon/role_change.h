// Which role changes are allowed now: a pure state machine over the role and
// what the node knows about its clients, device and data (docs/design.md,
// "Roles").
#pragma once

#include <cstddef>
#include <string>

#include "hastnbd/base/role.h"
#include "hastnbd/base/status.h"

namespace hastnbd {

struct RoleContext {
  size_t nbd_clients = 0;            // clients attached to the export (not counting an attached /dev/nbdN)
  bool secondary_available = false;  // this build can run the secondary role
  bool force = false;
  bool sync_target = false;  // this node is the target of an unfinished sync: inconsistent data
  std::string device_users;  // who uses the attached /dev/nbdN ("" = nobody, or none attached)
};

// Ok if `from` -> `to` may proceed now (a change to the same role is a no-op
// and allowed); otherwise the reason, with EBUSY / ENOTSUP / EINVAL.
Status check_role_change(Role from, Role to, const RoleContext& ctx);

}  // namespace hastnbd
