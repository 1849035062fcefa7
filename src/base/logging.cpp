#include "hastnbd/base/logging.h"

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <ctime>

namespace hastnbd {
namespace {

// "<N>" in front of a line sent to the journal: its syslog priority, so
// `journalctl -p err` and alerting on priorities work (journald reads the
// prefix; SyslogLevelPrefix= defaults to yes).
class SyslogPriority : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&, spdlog::memory_buf_t& dest) override {
    static constexpr char kPriority[] = {'7', '7', '6', '4', '3', '2', '6'};  // trace..critical, off
    const char text[] = {'<', kPriority[std::min<size_t>(size_t(msg.level), sizeof kPriority - 1)], '>'};
    dest.append(text, text + sizeof text);
  }
  std::unique_ptr<custom_flag_formatter> clone() const override { return std::make_unique<SyslogPriority>(); }
};

}  // namespace

void setup_logging(const std::string& tag, bool verbose) {
  auto logger = spdlog::stderr_logger_st("hastnbd");
  // The journal stamps lines itself; a terminal or a test log wants times.
  bool journal = ::getenv("JOURNAL_STREAM") != nullptr;
  auto formatter = std::make_unique<spdlog::pattern_formatter>();
  formatter->add_flag<SyslogPriority>('*').set_pattern(journal ? "%*%l: %v"
                                                                : "%Y-%m-%d %H:%M:%S.%e " + tag + " %^%l%$: %v");
  logger->set_formatter(std::move(formatter));
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
