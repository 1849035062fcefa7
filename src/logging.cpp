#include "hastnbd/logging.h"

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

namespace hastnbd {

void setup_logging(const std::string& tag, bool verbose) {
  auto logger = spdlog::stderr_logger_st("hastnbd");
  // The journal stamps lines itself; a terminal or a test log wants times.
  bool journal = ::getenv("JOURNAL_STREAM") != nullptr;
  logger->set_pattern(journal ? "%^%l%$: %v" : "%Y-%m-%d %H:%M:%S.%e " + tag + " %^%l%$: %v");
  logger->set_level(verbose ? spdlog::level::debug : spdlog::level::info);
  logger->flush_on(spdlog::level::trace);
  spdlog::set_default_logger(logger);
}

}  // namespace hastnbd
