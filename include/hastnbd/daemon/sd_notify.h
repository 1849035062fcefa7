// systemd's readiness protocol (Type=notify, libsystemd's sd_notify). Every
// call is a no-op when the daemon was not started by systemd (no
// NOTIFY_SOCKET), so the daemon behaves the same in a shell or a test.
#pragma once

#include <string>

namespace hastnbd::sd {

void ready(const std::string& status);  // READY=1 and STATUS=
void reloading();                       // RELOADING=1 with MONOTONIC_USEC
void stopping();                        // STOPPING=1
void status(const std::string& status);

}  // namespace hastnbd::sd
