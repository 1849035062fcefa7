// Directories and small state files the daemon and hastnbd-ctl create for
// themselves (docs/operations.md §14.2).
#pragma once

#include <sys/types.h>

#include <string>

#include "hastnbd/base/status.h"

namespace hastnbd {

// Creates `dir` and any missing parents with `mode` (whatever the umask);
// directories that already exist keep theirs. The error names the
// directory.
Status make_directories(const std::string& dir, mode_t mode);

// Replaces the contents of `path` with `text`, creating it 0600; a symbolic
// link there is refused (O_NOFOLLOW). Not synced: for RUN_DIR's tmpfs files.
Status write_private_file(const std::string& path, const std::string& text);

}  // namespace hastnbd
