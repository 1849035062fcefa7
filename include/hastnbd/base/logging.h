// One spdlog setup for both binaries: stderr, which systemd sends to the journal.
#pragma once

#include <chrono>
#include <string>

namespace hastnbd {

// `tag` appears on every line (e.g. "hastnbd[data/a]"); verbose => debug level.
void setup_logging(const std::string& tag, bool verbose);

// UTC, ISO 8601 to the second: how status reports points in time.
std::string iso_time(std::chrono::system_clock::time_point t);

}  // namespace hastnbd
