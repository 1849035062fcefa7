#include "hastnbd/daemon/privileges.h"

#include <cap-ng.h>
#include <linux/capability.h>
#include <spdlog/spdlog.h>

#include <algorithm>

namespace hastnbd {
namespace {

bool low_port(const std::optional<Address>& a) { return a && a->port != 0 && a->port < 1024; }

}  // namespace

std::vector<int> needed_capabilities(const ResourceConfig& c) {
  std::vector<int> caps;
  if (!c.nbd.device.empty()) {
    caps.push_back(CAP_SYS_ADMIN);   // nbd netlink: connect, disconnect
    caps.push_back(CAP_SYS_PTRACE);  // /proc/PID/fd of other users' processes: who holds the device
  }
  // A reload may move the peer address but not the listeners, so only these.
  if (low_port(c.listen) || low_port(c.nbd.listen) || low_port(c.source)) caps.push_back(CAP_NET_BIND_SERVICE);
  std::sort(caps.begin(), caps.end());
  return caps;
}

std::string capability_names(const std::vector<int>& caps) {
  std::string out;
  for (int cap : caps) {
    const char* name = capng_capability_to_name(unsigned(cap));
    out += (out.empty() ? "" : ",") + std::string(name ? name : std::to_string(cap).c_str());
  }
  return out.empty() ? "none" : out;
}

Status drop_privileges(const ResourceConfig& config) {
  const std::vector<int> keep = needed_capabilities(config);
  capng_get_caps_process();
  if (capng_have_capabilities(CAPNG_SELECT_CAPS) == CAPNG_NONE) {
    spdlog::info("privileges: started without capabilities; nothing to drop");
    return Status::Ok();
  }
  // Changing the bounding set needs CAP_SETPCAP, which we are about to lose.
  const bool bounding = capng_have_capability(CAPNG_EFFECTIVE, CAP_SETPCAP) == 1;
  // Only what we hold: a capability outside the bounding set cannot come back.
  std::vector<int> held;
  for (int cap : keep)
    if (capng_have_capability(CAPNG_PERMITTED, unsigned(cap)) == 1) held.push_back(cap);
  capng_clear(bounding ? CAPNG_SELECT_BOTH : CAPNG_SELECT_CAPS);
  for (int cap : held) {
    capng_update(CAPNG_ADD, capng_type_t(CAPNG_EFFECTIVE | CAPNG_PERMITTED | (bounding ? CAPNG_BOUNDING_SET : 0)),
                 unsigned(cap));
  }
  if (int e = capng_apply(bounding ? CAPNG_SELECT_BOTH : CAPNG_SELECT_CAPS); e < 0)
    return Status::Error(EPERM, "privileges: cannot drop capabilities (capng_apply " + std::to_string(e) + ")");
  capng_get_caps_process();
  std::vector<int> kept;
  for (int cap : keep)
    if (capng_have_capability(CAPNG_EFFECTIVE, unsigned(cap)) == 1) kept.push_back(cap);
  spdlog::info("privileges: keeping {}{}", capability_names(kept),
               bounding ? "" : " (bounding set unchanged: no CAP_SETPCAP)");
  if (kept.size() != keep.size())
    spdlog::warn("privileges: needed but not held: {}; some operations will fail with EPERM",
                 capability_names(keep));
  return Status::Ok();
}

}  // namespace hastnbd
