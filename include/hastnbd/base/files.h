// Directories the daemon and hastnbd-ctl create for themselves
// (docs/operations.md §14.2).
#pragma once

#include <sys/types.h>

#include <string>

#include "hastnbd/base/status.h"

namespace hastnbd {

// Creates `dir` and any missing parents with `mode` (whatever the umask);
// directories that already exist keep theirs. The error names the
// directory.
Status make_directories(const std::string& dir, mode_t mode);

}  // namespace hastnbd
