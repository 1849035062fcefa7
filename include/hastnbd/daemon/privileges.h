// Capabilities: after start-up (metadata, disk, control socket, pid file and
// metrics listener open) the daemon keeps only what its later work needs, in
// its permitted, effective and bounding sets, so neither it nor a hook it
// runs can take the rest back:
//   CAP_SYS_ADMIN, CAP_SYS_PTRACE  with nbd.device: attach/detach over
//                                  netlink; see which processes hold the device
//   CAP_NET_BIND_SERVICE           when a configured port is below 1024 (the
//                                  peer and NBD TCP listeners bind at a role change)
// Everything else goes, CAP_DAC_OVERRIDE included: files opened later (the
// configuration on reload, hook programs) must be readable by root as owner.
// A daemon started without privileges (tests, an unprivileged user) keeps
// what it has and says so.
#pragma once

#include <string>
#include <vector>

#include "hastnbd/base/status.h"
#include "hastnbd/config/config.h"

namespace hastnbd {

// The capability numbers (linux/capability.h) a resource needs after start-up.
std::vector<int> needed_capabilities(const ResourceConfig& config);
std::string capability_names(const std::vector<int>& caps);

// Drops everything else. Call on the main thread before any other thread
// exists (capabilities are per thread).
Status drop_privileges(const ResourceConfig& config);

}  // namespace hastnbd
