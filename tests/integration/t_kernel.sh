#!/usr/bin/env bash
# The real Linux NBD client: Debian's own kernel (bookworm, nbd.ko) booted in
# qemu by tests/kernel/run-vm, since the host has no nbd module. Inside the VM
# (tests/kernel/guest_t_kernel.sh, which says what is checked), two daemons
# on 127.0.0.1 replicate between two virtio-blk disks, and an ext4 file system
# on /dev/nbdN survives a kill -9 of the primary and a failover:
#   client: nbd-client -unix against hastnbd's NBD socket (/dev/nbd2, nbd3);
#   device: nbd.device in the configuration, the daemon attaches /dev/nbd0 and
#           /dev/nbd1 itself on `role primary` and detaches on `role secondary`
#           (refused while mounted or open).
#   restart: the primary's daemon killed and restarted, then restarted
#           cleanly 20 times, under a mounted ext4 with a writer checking
#           every acknowledged write: no I/O error, the device re-taken.
# No KVM here: TCG, 10-30x slower than native, hence small disks and long
# timeouts. The first run downloads and unpacks the kernel package into
# /var/cache/hastnbd-kernel (about 15 s); later runs reuse it.
# HASTNBD_KERNEL_TIMEOUT (default 480 s) bounds the VM; arguments (client,
# device, restart) pick the parts.
# shellcheck source=tests/integration/lib.sh
source "$(dirname "$0")/lib.sh"
require_root
require_cmd qemu-system-x86_64 nbd-client busybox depmod xz setpriv
require_hastnbd

# 64 MiB each: the initial full sync of the whole disk runs twice (once per
# part) at TCG speed.
for n in a b; do
  make_disk "$T/vd-$n.img" 64M
done

t0=$SECONDS
rc=0
# TMPDIR: run-vm's work directory under $T, removed even if run-vm is killed.
TMPDIR="$T" "$HASTNBD_SRC/tests/kernel/run-vm" --timeout "${HASTNBD_KERNEL_TIMEOUT:-480}" --mem 1024 --cpus 2 --nbds 4 \
  --disk "$T/vd-a.img" --disk "$T/vd-b.img" \
  "$HASTNBD_SRC/tests/kernel/guest_t_kernel.sh" "$@" || rc=$?
case "$rc" in
0) ;;
124) die "the VM ran out of time (see the [vm] console above)" ;;
125) die "the VM did not run the guest script to the end (boot failure or kernel panic, see above)" ;;
126) die "the guest passed but the kernel logged a BUG, Oops, WARNING or hung task (see above)" ;;
*) die "the guest scenario failed with status $rc (see the [vm] console above)" ;;
esac
log "t_kernel: passed in $((SECONDS - t0)) s (VM included)"
