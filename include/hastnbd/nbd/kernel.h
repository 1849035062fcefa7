// The Linux nbd driver, driven over its generic-netlink interface ("nbd"
// family, libnl-genl-3): the daemon hands the kernel one end of a socketpair
// per connection and serves the other end itself, so /dev/nbdN needs no
// nbd-client and no handshake on the wire.
//
// Every call here is blocking (netlink round trips, opening the block
// device, walking /proc) and some can wait on I/O that the daemon's own loop
// must answer (opening /dev/nbdN may read its partition table through us), so
// they run on a helper thread, never on the loop (Resource::blocking).
// Errors name the device and say what to do.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "hastnbd/base/status.h"

namespace hastnbd::kernel_nbd {

inline constexpr unsigned kNbdMajor = 43;

struct AttachParams {
  int index = 0;
  uint64_t size = 0;                 // bytes
  uint64_t block_size = 4096;        // logical block size the kernel uses
  uint64_t server_flags = 0;         // NBD transmission flags, as in the handshake
  uint64_t timeout_s = 0;            // per-request timeout (0 = kernel default)
  uint64_t dead_conn_timeout_s = 0;  // how long I/O waits for a dead connection to be replaced
  std::string backend;               // shown in /sys/block/nbdN/backend: who serves it
  std::vector<int> fds;              // the kernel's socket ends; the caller closes them afterwards
};

// NBD_CMD_CONNECT. EBUSY when the device is already connected; ENOENT when
// the "nbd" generic-netlink family is missing (the message says how to get
// it, modprobe nbd, and that the Unix socket stays usable with nbd-client).
Status connect(const AttachParams& p);
// NBD_CMD_RECONFIGURE: hands the kernel new sockets for connections it has
// marked dead (their server end closed: the daemon exited or was killed, or
// the kernel gave up on a request), so the device goes on without being
// detached: requests waiting for a live connection are sent on the new
// sockets, and those that were in flight on a dead one are sent again when
// their request timeout passes (docs/design.md, "Kernel device"). The
// backend identifier must match the device's (the kernel refuses
// otherwise): EINVAL when the device is not connected or is another
// backend's. The kernel takes a socket only while it has a dead connection
// and silently ignores the rest (drivers/block/nbd.c turns ENOSPC into
// success): `taken` says which of p.fds it took, found by closing them
// (the caller must hold no other reference) and seeing which of
// `our_ends` was hung up on. p.fds are closed on every path, failures
// included. Timeouts of 0 are left unchanged.
Status reconfigure(const AttachParams& p, const std::vector<int>& our_ends, std::vector<bool>& taken);
// NBD_CMD_DISCONNECT: the kernel sends NBD_CMD_DISC on each connection, shuts
// its ends, and fails whatever is still queued.
Status disconnect(int index);

// Whether /dev/nbdN is connected (to anybody), and what it says serves it
// ("" when not connected or the kernel predates backend identifiers, so a
// match with a non-empty identifier implies connected).
bool connected(int index);
std::string backend(int index);

// Who uses the device: "" when nobody, else a description such as
// "mounted or held exclusively (EBUSY on O_EXCL); open by pid 812 (postgres)".
// Checks an exclusive open (mounts, device-mapper, md, swap), holders in
// sysfs, and every process's open files (needs CAP_SYS_PTRACE to see
// processes with more privileges than the daemon).
std::string users(const std::string& path, int index);

}  // namespace hastnbd::kernel_nbd
