#!/usr/bin/env bash
# The kernel client's path for tools/bench (target kernel-vm): runs INSIDE the
# VM of tests/kernel/run-vm (Debian's kernel, nbd.ko loaded) with three
# virtio-blk disks, and runs fio as an application on the node would: on
# /dev/nbdN, O_DIRECT, io_uring. Targets, all up at once:
#   nbdkit-memory     nbdkit memory on a Unix socket, /dev/nbd2 attached by
#                     nbd-client -unix (netlink, 4 KiB blocks): the ceiling
#   hastnbd           a standalone hastnbd primary on /dev/vdc, /dev/nbd3
#                     attached the same way through its NBD socket
#   hastnbd-fullsync  a fullsync pair on 127.0.0.1 (a on /dev/vda, b on
#                     /dev/vdb), /dev/nbd0 attached by the daemon itself
#                     (nbd.device), as a cluster manager's promotion does
# The jobs run in $HASTNBD_KBENCH_ROUNDS rounds (default 2), every job on
# every target per round, the order reversed every other round, each
# $HASTNBD_KBENCH_RUNTIME s (default 10) after a 1 s ramp. One line per run on
# stdout: "KBENCH TARGET JOB ROUND IOPS MEAN-LATENCY-US". Sockets live on the
# guest's own tmpfs ($T); everything is stopped on exit.
# shellcheck source=tests/integration/lib.sh
source "$(dirname "$0")/../integration/lib.sh"
require_root
[ "${HASTNBD_VM:-}" = 1 ] || die "guest_bench.sh runs inside the VM (tests/kernel/run-vm)"
require_cmd nbd-client nbdkit fio blockdev
require_hastnbd
_CLEANUP_STEP_TIMEOUT=15

RUNTIME="${HASTNBD_KBENCH_RUNTIME:-10}"
ROUNDS="${HASTNBD_KBENCH_ROUNDS:-2}"
declare -A JOB_ARGS=(
  [randwrite-4k-qd1]="--rw=randwrite --bs=4k --iodepth=1"
  [randwrite-4k-qd32]="--rw=randwrite --bs=4k --iodepth=32"
  [seqwrite-1m-qd4]="--rw=write --bs=1M --iodepth=4"
)
JOBS=(randwrite-4k-qd1 randwrite-4k-qd32 seqwrite-1m-qd4)
SIZE="$(blockdev --getsize64 /dev/vdc)"

# Under TCG a poll (a fork over 9p) takes up to a second: a real deadline.
wait_for() {
  local secs="$1" desc="$2" deadline=$((SECONDS + $1))
  shift 2
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || { echo "timed out after ${secs}s waiting for $desc" >&2; return 1; }
    sleep 0.2
  done
}
nbd_connected() { [ -e "/sys/block/${1#/dev/}/pid" ]; }
detach() { nbd_connected "$1" && timeout 10 nbd-client -d "$1" >/dev/null 2>&1 || true; }

declare -A DEV
# -- nbdkit memory through nbd-client
sock="$T/nbdkit.sock"
nbdkit -f --unix "$sock" memory "$SIZE" </dev/null >"$T/nbdkit.log" 2>&1 &
track_pid $! "$T/nbdkit.log"
wait_for 60 "nbdkit's socket" test -S "$sock" || die "nbdkit did not start"
with_timeout 60 nbd-client -unix "$sock" /dev/nbd2 -b 4096 >/dev/null || die "nbd-client on nbdkit failed"
on_exit "detach /dev/nbd2"
# Written once in full, or its reads and first writes would allocate.
with_timeout 300 dd if=/dev/urandom of=/dev/nbd2 bs=1M count=$((SIZE >> 20)) oflag=direct status=none || die "filling /dev/nbd2 failed"
DEV[nbdkit-memory]=/dev/nbd2

# -- a standalone hastnbd primary through nbd-client
mkdir -p "$T/s"
HASTNBD_DISK=/dev/vdc write_config "$T/s/hastnbd.yaml"
create_resource "$T/s/hastnbd.yaml" a data --force >/dev/null
start_daemon "$T/s/hastnbd.yaml" a data
make_primary "$T/s/hastnbd.yaml" a data >/dev/null
with_timeout 60 nbd-client -unix "$(nbd_socket "$T/s/hastnbd.yaml" a data)" /dev/nbd3 -N data -b 4096 >/dev/null \
  || die "nbd-client on hastnbd failed"
on_exit "detach /dev/nbd3"
DEV[hastnbd]=/dev/nbd3

# -- a fullsync pair, the kernel device attached by the primary's daemon
mkdir -p "$T/p"
ln -sf /dev/vda "$T/p/disk-a.img"
ln -sf /dev/vdb "$T/p/disk-b.img"
conf="$T/p/hastnbd.yaml"
read -r pa pb <<<"$(free_ports 2)"
PAIR_TIMEOUT=15 PAIR_KEEPDIRTY=1024 PAIR_AUTH=none write_pair_config "$conf" "127.0.0.1:$pa" "127.0.0.1:$pb" \
  "nbd: {device: /dev/nbd0}"
create_resource "$conf" a data --force >/dev/null
create_resource "$conf" b data --force >/dev/null
start_daemon "$conf" b data
start_daemon "$conf" a data
hastnbd_ctl "$conf" b role secondary data >/dev/null || die "role secondary on b failed"
on_exit "hastnbd_ctl '$conf' a role init --force data >/dev/null 2>&1 || true"
hastnbd_ctl "$conf" a role primary data >/dev/null || die "role primary on a failed"
wait_for 60 "/dev/nbd0 attached" nbd_connected /dev/nbd0 || die "/dev/nbd0 not attached by the primary"
wait_for 60 "the pair to connect" _peer_state_is "$conf" a connected || die "the pair did not connect"
wait_for 300 "the initial full sync" _in_sync "$conf" a || die "the initial full sync did not finish"
DEV[hastnbd-fullsync]=/dev/nbd0

TARGETS=(nbdkit-memory hastnbd hastnbd-fullsync)
for round in $(seq 1 "$ROUNDS"); do
  order=("${TARGETS[@]}")
  [ $((round % 2)) -eq 1 ] || order=(hastnbd-fullsync hastnbd nbdkit-memory)
  for job in "${JOBS[@]}"; do
    for t in "${order[@]}"; do
      out="$T/fio-$t-$job-$round.json"
      # shellcheck disable=SC2086  # JOB_ARGS holds several options
      with_timeout $((RUNTIME + 120)) fio --name="$job" ${JOB_ARGS[$job]} --filename="${DEV[$t]}" \
        --ioengine=io_uring --direct=1 --time_based --runtime="$RUNTIME" --ramp_time=1 \
        --output-format=json --output="$out" >"$T/fio.log" 2>&1 || { cat "$T/fio.log" >&2; die "fio $job on $t failed"; }
      "$HASTNBD_PYTHON" - "$out" "$t" "$job" "$round" <<'EOF'
import json, sys
out, t, job, rnd = sys.argv[1:]
w = json.load(open(out))["jobs"][0]["write"]
print(f"KBENCH {t} {job} {rnd} {w['iops']:.1f} {w['lat_ns']['mean'] / 1e3:.1f}", flush=True)
EOF
    done
  done
done
log "guest_bench: ${#TARGETS[@]} targets, ${#JOBS[@]} jobs, $ROUNDS rounds done"
