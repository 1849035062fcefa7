#include "hastnbd/logging.h"

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <ctime>

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

std::string iso_time(std::chrono::system_clock::time_point t) {
  std::time_t tt = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

}  // namespace hastnbd
