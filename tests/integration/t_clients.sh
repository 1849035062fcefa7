#!/usr/bin/env bash
# A standalone primary against every real client: nbdinfo, nbdcopy (256 MiB
# round trip), qemu-io patterns, fio verify (QD32, 2 jobs), ext4 through
# nbdfuse + loop with fsck, unaligned 512-byte writes; and `dump` showing
# exactly the extents a workload wrote.
source "$(dirname "$0")/lib.sh"
require_root
require_cmd nbdinfo nbdcopy qemu-io fio nbdfuse mkfs.ext4 e2fsck losetup

conf="$T/hastnbd.yaml"
HASTNBD_DISK_SIZE=512M write_config "$conf"
create_resource "$conf" a data
start_daemon "$conf" a data
pid=$DAEMON_PID
make_primary "$conf" a data
sock="$(nbd_socket "$conf" a data)"
uri="$(nbd_uri "$sock" data)"

# --- dump shows exactly the extents written (extent 2 MiB) ------------------
MIB=1048576
with_timeout 60 qemu-io -f raw "$uri" \
  -c "write -P 0x11 $((3 * 2 * MIB + 2 * MIB - 512)) 1024" \
  -c "write -P 0x22 $((100 * 2 * MIB)) 4096" \
  -c "write -z $((200 * 2 * MIB)) 65536" \
  -c "flush" >/dev/null || die "qemu-io writes failed"
dirty="$(hastnbd_ctl "$conf" a dump --json data | "$HASTNBD_PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["dirty"])')"
[ "$dirty" = "[[3, 4], [100, 100], [200, 200]]" ] || die "dump shows dirty extents $dirty, want [[3, 4], [100, 100], [200, 200]]"
localcnt="$(hastnbd_ctl "$conf" a status --json data | "$HASTNBD_PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["metadata"]["localcnt"])')"
[ "$localcnt" = 1 ] || die "localcnt is $localcnt after the first degraded writes, want 1"
log "dump: dirty extents exactly those written; localcnt bumped once"

# --- every client ------------------------------------------------------------
check_nbdinfo "$sock" data $((512 * MIB))
check_nbdcopy "$sock" data 256
check_qemu_io "$sock" data
check_fio_verify "$sock" data 64M
check_ext4_nbdfuse "$sock" data
raw_scenario "$sock" unaligned
raw_scenario "$sock" rmw-race
raw_scenario "$sock" pipeline
raw_scenario "$sock" flush-fua

# The status counters moved with the traffic.
hastnbd_ctl "$conf" a status --json data >"$T/status.json"
"$HASTNBD_PYTHON" - "$T/status.json" <<'PY' || die "status counters do not reflect the traffic"
import json, sys
s = json.load(open(sys.argv[1]))
n = s["nbd"]
assert s["role"] == "primary", s["role"]
assert n["bytes_written"] >= 256 << 20, n
assert n["bytes_read"] >= 256 << 20, n
assert n["clients"] == 0 and n["requests_in_flight"] == 0, n
assert s["dirty"]["extents"] == 256, s["dirty"]   # the whole 512 MiB was written
assert s["metadata"]["localcnt"] == 1 and not s["metadata"]["fresh"], s["metadata"]
PY

stop_daemon "$pid"
log "t_clients: all clients passed"
