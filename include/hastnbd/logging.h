// One spdlog setup for both binaries: stderr, which systemd sends to the journal.
#pragma once

#include <string>

namespace hastnbd {

// `tag` appears on every line (e.g. "hastnbd[data/a]"); verbose => debug level.
void setup_logging(const std::string& tag, bool verbose);

}  // namespace hastnbd
