#include "hastnbd/daemon/sd_notify.h"

#include <systemd/sd-daemon.h>
#include <time.h>

#include <cstdint>

namespace hastnbd::sd {

void ready(const std::string& s) { sd_notifyf(0, "READY=1\nSTATUS=%s", s.c_str()); }

void reloading() {
  struct timespec ts {};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  uint64_t usec = uint64_t(ts.tv_sec) * 1000000u + uint64_t(ts.tv_nsec) / 1000u;
  sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=reloading the configuration", (unsigned long long)usec);
}

void stopping() { sd_notify(0, "STOPPING=1\nSTATUS=draining and stopping"); }

void status(const std::string& s) { sd_notifyf(0, "STATUS=%s", s.c_str()); }

}  // namespace hastnbd::sd
