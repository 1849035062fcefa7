// hastnbd [-c CONFIG] [--node NAME] RESOURCE: one resource's daemon, in the
// foreground (systemd runs it). Starts in role init.
#include <signal.h>
#include <spdlog/spdlog.h>

#include <boost/program_options.hpp>
#include <filesystem>
#include <iostream>

#include "hastnbd/base/files.h"
#include "hastnbd/config/config.h"
#include "hastnbd/base/logging.h"
#include "hastnbd/daemon/pidfile.h"
#include "hastnbd/daemon/privileges.h"
#include "hastnbd/daemon/resource.h"
#include "hastnbd/daemon/sd_notify.h"

namespace po = boost::program_options;
using namespace hastnbd;

int main(int argc, char** argv) {
  std::string config_path = kDefaultConfigPath, node, resource;
  po::options_description opts("Usage: hastnbd [-c CONFIG] [--node NAME] RESOURCE\nOptions");
  opts.add_options()("help,h", "show this help")("version", "print the version")(
      "config,c", po::value(&config_path), "configuration file (default /etc/hastnbd/hastnbd.yaml)")(
      "node", po::value(&node), "this node's name in the configuration (default: short hostname)")(
      "verbose,v", "debug logging");
  po::options_description hidden;  // the positional RESOURCE, not an option to show
  hidden.add_options()("resource", po::value(&resource));
  po::options_description all;
  all.add(opts).add(hidden);
  po::positional_options_description pos;
  pos.add("resource", 1);
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(argc, argv).options(all).positional(pos).run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    std::cerr << "hastnbd: " << e.what() << "\n" << opts;
    return 2;
  }
  if (vm.count("help")) {
    std::cout << opts;
    return 0;
  }
  if (vm.count("version")) {
    std::cout << "hastnbd " << HASTNBD_VERSION << "\n";
    return 0;
  }
  if (resource.empty()) {
    std::cerr << "hastnbd: no resource given\n" << opts;
    return 2;
  }
  auto config = load_resource_config(config_path, resource, node);
  if (!config.ok()) {
    std::cerr << "hastnbd: " << config.status().message() << "\n";
    return 2;
  }
  setup_logging("hastnbd[" + resource + "/" + config->node + "]", vm.count("verbose") > 0);
  ::signal(SIGPIPE, SIG_IGN);

  std::unique_ptr<PidFile> pidfile;
  if (!config->pidfile.empty()) {
    // e.g. /run/hastnbd when not started by systemd (RuntimeDirectory=);
    // a failure shows in PidFile::create's error.
    (void)make_directories(std::filesystem::path(config->pidfile).parent_path().string(), 0750);
    auto p = PidFile::create(config->pidfile);
    if (!p.ok()) {
      spdlog::critical("cannot start: {}", p.status().message());
      return 1;
    }
    pidfile = std::move(*p);
  }

  asio::io_context io(1);
  auto res = Resource::open(io, *config);
  if (!res.ok()) {
    spdlog::critical("cannot start: {}", res.status().message());
    return 1;
  }
  Resource& r = **res;
  if (Status s = r.start(); !s.ok()) {
    spdlog::critical("cannot start: {}", s.message());
    return 1;
  }
  // Everything that needed full privileges is open; no thread exists yet.
  if (Status s = drop_privileges(*config); !s.ok()) {
    spdlog::critical("cannot start: {}", s.message());
    return 1;
  }
  asio::signal_set stop_signals(io, SIGTERM, SIGINT);
  stop_signals.async_wait([&](error_code ec, int sig) {
    if (ec) return;
    spdlog::info("signal {}: draining and stopping", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    sd::stopping();
    asio::co_spawn(io, [&]() -> awaitable<void> {
      co_await r.shutdown();
      io.stop();
    }, asio::detached);
  });
  asio::signal_set hup(io, SIGHUP);
  std::function<void(error_code, int)> on_hup = [&](error_code ec, int) {
    if (ec) return;
    spdlog::info("SIGHUP: reloading {}", config->config_path);
    r.reload();
    hup.async_wait(on_hup);
  };
  hup.async_wait(on_hup);
  // Ready once the control socket answers: systemd orders `hastnbd-ctl role`
  // (and a cluster manager's promote) after this.
  sd::ready("role init");
  io.run();
  return 0;
}
