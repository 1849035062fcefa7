#include "hastnbd/daemon/role_change.h"

#include <string>

namespace hastnbd {

Status check_role_change(Role from, Role to, const RoleContext& ctx) {
  if (from == to) return Status::Ok();
  if (to == Role::kSecondary && !ctx.secondary_available)
    return Status::Error(ENOTSUP, "the secondary role is not available in this build (no replication yet)");
  if (from == Role::kPrimary && ctx.nbd_clients > 0 && !ctx.force)
    return Status::Error(EBUSY, std::to_string(ctx.nbd_clients) +
                                    " NBD client(s) attached; detach them (umount, nbd-client -d) or use --force, "
                                    "which finishes their in-flight requests and disconnects them");
  if (from == Role::kPrimary && !ctx.device_users.empty() && !ctx.force)
    return Status::Error(EBUSY, "the kernel device is in use: " + ctx.device_users +
                                    ". Unmount it and stop its users, or use --force, which detaches it from "
                                    "under them (their I/O fails)");
  if (to == Role::kPrimary && ctx.sync_target && !ctx.force)
    return Status::Error(EPERM, "this node is the target of an unfinished synchronisation: its data is "
                                "inconsistent. Make the peer primary, or use --force to take this node's data "
                                "as it is");
  return Status::Ok();
}

}  // namespace hastnbd
