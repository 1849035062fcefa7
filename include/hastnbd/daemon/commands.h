// The control socket's commands (docs/design.md, "Control"): one JSON
// request in, one JSON reply out (daemon/control.h carries them). Each
// command is checked here, carried out by the Resource, and answered with
// "ok" or control_error(). hastnbd-ctl is the client.
#pragma once

#include <nlohmann/json.hpp>

#include "hastnbd/base/asio.h"

namespace hastnbd {

class Resource;

// ping, status, role {role, force}, reload, discard-my-data,
// verify {offset, length, repair, resume, stop}.
awaitable<nlohmann::json> handle_command(Resource& resource, const nlohmann::json& request);

}  // namespace hastnbd
