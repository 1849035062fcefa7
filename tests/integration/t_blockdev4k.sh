#!/usr/bin/env bash
# A real block device with 4096-byte logical sectors (a loop device with
# --sector-size 4096 over a file): O_DIRECT needs 4 KiB alignment there, so
# every 512-byte request is a read-modify-write that must be serialised
# against overlapping writes. Also TRIM and WRITE_ZEROES on a block device.
source "$(dirname "$0")/lib.sh"
require_root
require_cmd losetup qemu-io

make_disk "$T/backing.img" 256M
dev="$(losetup -f --show --sector-size 4096 --direct-io=on "$T/backing.img")" || die "losetup failed"
on_exit "losetup -d $dev"
[ "$(blockdev --getss "$dev")" = 4096 ] || die "$dev does not have 4096-byte sectors"

conf="$T/hastnbd.yaml"
HASTNBD_DISK="$dev" write_config "$conf"
create_resource "$conf" a data
start_daemon "$conf" a data
pid=$DAEMON_PID
make_primary "$conf" a data
sock="$(nbd_socket "$conf" a data)"

block="$(hastnbd_ctl "$conf" a status --json data | "$HASTNBD_PYTHON" -c 'import json,sys; l=json.load(sys.stdin)["local"]; print(l["block_size"], l["block_device"])')"
[ "$block" = "4096 True" ] || die "status reports local block '$block', want '4096 True'"

# The device is held O_EXCL: mkfs or mount (which open it O_EXCL too) fail.
"$HASTNBD_PYTHON" - "$dev" <<'PY' || die "$dev could be opened O_EXCL while hastnbd serves it"
import errno, os, sys
try:
    os.close(os.open(sys.argv[1], os.O_RDONLY | os.O_EXCL))
except OSError as e:
    sys.exit(0 if e.errno == errno.EBUSY else f"unexpected {e}")
sys.exit("O_EXCL open succeeded")
PY

raw_scenario "$sock" unaligned
raw_scenario "$sock" rmw-race
raw_scenario "$sock" flush-fua
check_qemu_io "$sock" data
check_fio_verify "$sock" data 32M

# Data really went to the device, at the right place: write through NBD,
# stop the daemon, read the device directly.
uri="$(nbd_uri "$sock" data)"
with_timeout 60 qemu-io -f raw "$uri" -c "write -P 0x5a 1536 512" -c "write -P 0xa5 $((8 << 20)) 1048576" \
  -c flush >/dev/null || die "qemu-io write failed"
stop_daemon "$pid"
cmp <(head -c 512 /dev/zero | tr '\0' '\132') <(dd if="$dev" bs=512 skip=3 count=1 status=none) \
  || die "512-byte write at 1536 not on the device"
cmp <(head -c 1048576 /dev/zero | tr '\0' '\245') <(dd if="$dev" bs=1M skip=8 count=1 status=none) \
  || die "1 MiB write at 8 MiB not on the device"
log "t_blockdev4k: 4Kn block device with 512-byte requests ok"
