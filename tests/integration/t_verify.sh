#!/usr/bin/env bash
# Online verify (hastnbd-ctl verify), two real daemons over TCP on loopback.
#  1. A pair in sync under a running fio write load (2 jobs, QD32, verified
#     reads): three verifies in a row report no difference.
#  2. Bytes flipped in b's backing file (written under the running daemon,
#     O_DIRECT, as a disk's silent corruption would be) at known places:
#     verify reports exactly those ranges (adjacent blocks as one), in
#     status, log, hooks and metrics, exits 5 and marks their extents; a
#     second verify skips the marked extents; --repair copies them; the next
#     verify is clean and both disks are byte-identical.
#  3. --stop and --resume; a verify cut by the secondary's stop and one cut
#     by a kill -9 of the primary show as interrupted with their position
#     (the primary's after its restart, from the state file), and --resume
#     finishes them.
#  4. Refusals: on the secondary, while disconnected, an unaligned or
#     too-long range, a resume with nothing to resume, bad option mixes.
source "$(dirname "$0")/lib.sh"
require_root
require_cmd fio cmp curl

MIB=1048576
SIZE=$((256 * MIB))
dir="$T/pair"
mkdir -p "$dir"
conf="$dir/hastnbd.yaml"
read -r pa pb pm <<<"$(free_ports 3)"
hook_recorder "$T/hook.sh" "$T/hook.out"
PAIR_DISK_SIZE=$SIZE write_pair_config "$conf" "127.0.0.1:$pa" "127.0.0.1:$pb" "verify_rate: 0"
sed -i "s|^      a: {|      a: {exec: $T/hook.sh, metrics: {listen: \"127.0.0.1:$pm\"}, |" "$conf"
start_pair "$conf"
pid_a=$PAIR_PID_A pid_b=$PAIR_PID_B
sock_a="$(nbd_socket "$conf" a data)"
field() { status_field "$conf" "$@"; }
verify() {  # verify ARGS...: hastnbd-ctl verify ARGS data on a; sets VRC
  VRC=0
  hastnbd_ctl "$conf" a verify "$@" data >"$T/verify.out" 2>&1 || VRC=$?
}

# 1. identical copies under load: each verify takes 4 s (64 MiB/s), fio (20 s)
# writes all along.
set_rate() {
  sed -i "s/verify_rate: .*/verify_rate: $1/" "$conf"
  hastnbd_ctl "$conf" a reload data | grep -q 'verify_rate' || die "reload did not change verify_rate to $1"
}
set_rate 64MiB
fio_verify_start "$sock_a" $((64 * MIB)) 0 60 load --time_based --runtime=20 --verify_backlog=256
for i in 1 2 3; do
  verify --wait
  [ "$VRC" = 0 ] || { cat "$T/verify.out"; show_logs; die "verify $i under load: exit $VRC, expected 0"; }
  [ "$(field a '["verify"]["mismatched_bytes"]')" = 0 ] || die "verify $i under load found differences"
  [ "$(field a '["verify"]["done_bytes"]')" = "$SIZE" ] || die "verify $i compared $(field a '["verify"]["done_bytes"]') bytes"
  log "verify $i under load: $(cat "$T/verify.out")"
done
[ -d "/proc/$FIO_PID" ] || die "fio ended before the verifies: $(cat "$T/fio-load.err")"
rc=0
wait "$FIO_PID" || rc=$?
[ "$rc" = 0 ] || { cat "$T/fio-load.err"; die "fio under the verifies failed (exit $rc)"; }
set_rate 0
grep -q 'verify:' "$T/fio-load.err" && { cat "$T/fio-load.err"; die "fio's own read-back verification failed"; }
log "fio under the verifies: $("$HASTNBD_PYTHON" -c 'import json,sys; w=json.load(open(sys.argv[1]))["jobs"]; print(sum(j["write"]["total_ios"] for j in w), "writes,", sum(j["read"]["total_ios"] for j in w), "verified reads")' "$T/fio-load.json")"
wait_in_sync "$conf" a 30 || die "not in sync after the load"

# 2. known differences on b
flip() {  # OFFSET: one byte of b's disk inverted, under the running daemon
  local old
  old="$(dd if="$dir/disk-b.img" bs=1 skip="$1" count=1 status=none | od -An -tu1 | tr -d ' ')"
  python3 - "$dir/disk-b.img" "$1" "$old" <<'EOF'
import os, sys, mmap
path, off, old = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
block = off // 4096 * 4096
buf = mmap.mmap(-1, 4096)
fd = os.open(path, os.O_RDWR | os.O_DIRECT)
os.preadv(fd, [buf], block)
buf[off - block] = old ^ 0xff
os.pwritev(fd, [buf], block)
os.close(fd)
EOF
}
flip $((10 * MIB + 4096 + 17))     # block 10M+4K
flip $((50 * MIB))                 # blocks 50M and 50M+4K: one range
flip $((50 * MIB + 4096 + 4095))
flip $((100 * MIB + 3))            # block 100M
flip $((SIZE - 1))                 # the last block
expect="$((10 * MIB + 4096))+4096 $((50 * MIB))+8192 $((100 * MIB))+4096 $((SIZE - 4096))+4096"
lines_a="$(wc -l <"$(daemon_log a)")"
: >"$T/hook.out"
verify --wait
[ "$VRC" = 5 ] || { cat "$T/verify.out"; show_logs; die "verify of a damaged copy: exit $VRC, expected 5"; }
cat "$T/verify.out"
got="$(hastnbd_ctl "$conf" a status --json data | "$HASTNBD_PYTHON" -c \
  'import json,sys; print(" ".join("%d+%d" % (r["offset"], r["length"]) for r in json.load(sys.stdin)["verify"]["mismatches"]))')"
[ "$got" = "$expect" ] || die "verify reported '$got', expected '$expect'"
[ "$(field a '["verify"]["mismatched_ranges"]')" = 4 ] || die "mismatched_ranges $(field a '["verify"]["mismatched_ranges"]')"
[ "$(field a '["verify"]["mismatched_bytes"]')" = $((5 * 4096)) ] || die "mismatched_bytes $(field a '["verify"]')"
[ "$(field a '["dirty"]["needs_sync_extents"]')" = 4 ] || die "needs_sync_extents $(field a '["dirty"]'), expected the 4 extents"
[ "$(log_since "$(daemon_log a)" "$lines_a" | grep -c "the secondary's copy differs at")" = 4 ] \
  || { show_log "$(daemon_log a)"; die "the log does not name the 4 ranges"; }
for r in $expect; do
  grep -q "^verify-mismatch data ${r%+*} ${r#*+}$" "$T/hook.out" || { cat "$T/hook.out"; die "no verify-mismatch hook for $r"; }
done
grep -q "^verifydone data $SIZE $((5 * 4096)) 4$" "$T/hook.out" || { cat "$T/hook.out"; die "no verifydone hook with the totals"; }
curl -s "http://127.0.0.1:$pm/metrics" >"$T/metrics"
grep -q "^hastnbd_verify_mismatched_bytes{resource=\"data\"[^}]*} $((5 * 4096))$" "$T/metrics" \
  || { grep verify "$T/metrics"; die "metrics do not show the mismatched bytes"; }
hastnbd_ctl "$conf" a status data | grep '^  verify:' | grep -q 'DIFFER' || die "status does not show the difference"
# The marks are durable: in the metadata file, not only in memory.
[ "$(dump_field "$conf" a '["dirty_extents"]')" -ge 4 ] || die "the marked extents are not in a's metadata"

verify --wait   # the marked blocks are skipped (known to differ), the rest compared
[ "$VRC" = 0 ] || { cat "$T/verify.out"; die "a verify over marked extents: exit $VRC"; }
[ "$(field a '["verify"]["skipped_bytes"]')" = $((5 * 4096)) ] || die "skipped $(field a '["verify"]["skipped_bytes"]'), expected the 5 marked blocks"
verify --repair --wait
[ "$VRC" = 0 ] || { cat "$T/verify.out"; die "verify --repair: exit $VRC"; }
wait_in_sync "$conf" a 60 || { show_logs; die "the repair did not finish"; }
# The marks are fine records: the repair copies those 5 blocks, not 4 extents.
[ "$(field a '["sync"]["copied_bytes"]')" = $((5 * 4096)) ] || die "the repair copied $(field a '["sync"]["copied_bytes"]') bytes"
[ "$(field a '["dirty"]["needs_sync_extents"]')" = 0 ] || die "extents still need sync after the repair"
verify --wait
[ "$VRC" = 0 ] && [ "$(field a '["verify"]["skipped_bytes"]')" = 0 ] \
  || { cat "$T/verify.out"; die "the verify after the repair is not clean"; }
cmp "$dir/disk-a.img" "$dir/disk-b.img" || die "the disks differ after the repair"
log "damage found at exactly $expect, repaired, disks identical"

# 3. stop, resume, interruptions
hastnbd_ctl "$conf" a verify --stop data 2>/dev/null && die "verify --stop with nothing running succeeded"
set_rate 32MiB
_verify_at_least() { [ "$(field a '["verify"]["done_bytes"]')" -ge "$1" ]; }
verify
[ "$VRC" = 0 ] || { cat "$T/verify.out"; die "verify did not start"; }
wait_for 20 "some of the verify" _verify_at_least $((16 * MIB)) || die "the verify made no progress"
hastnbd_ctl "$conf" a verify --stop data >/dev/null || die "verify --stop failed"
wait_for 10 "the verify to stop" eval '[ "$(field a "[\"verify\"][\"state\"]")" = stopped ]' || die "state $(field a '["verify"]')"
pos="$(field a '["verify"]["position"]')"
[ "$pos" -gt 0 ] && [ "$pos" -lt "$SIZE" ] || die "stopped at $pos"
verify --resume --wait
[ "$VRC" = 0 ] || { cat "$T/verify.out"; die "verify --resume: exit $VRC"; }
[ "$(field a '["verify"]["done_bytes"]')" = "$SIZE" ] || die "the resumed verify covered $(field a '["verify"]["done_bytes"]')"
log "stopped at $pos, resumed to the end"

verify --range 64MiB:128MiB
wait_for 20 "some of the verify" _verify_at_least $((8 * MIB)) || die "the verify made no progress"
stop_daemon "$pid_b"
wait_for 10 "the verify to be interrupted" eval '[ "$(field a "[\"verify\"][\"state\"]")" = interrupted ]' \
  || die "state $(field a '["verify"]') after the secondary stopped"
field a '["verify"]["last_error"]' | grep -q 'link' || die "no reason: $(field a '["verify"]')"
grep -q '^verifyintr data' "$T/hook.out" || die "no verifyintr hook"
verify --resume
[ "$VRC" != 0 ] && grep -q 'not connected' "$T/verify.out" || die "verify while disconnected: $(cat "$T/verify.out")"
start_daemon "$conf" b data
pid_b=$DAEMON_PID
wait_peer_state "$conf" a connected 15 || die "b did not come back"
wait_in_sync "$conf" a 30 || die "not in sync after b's return"
verify --resume --wait
[ "$VRC" = 0 ] || { cat "$T/verify.out"; die "resume after the secondary's return: exit $VRC"; }
[ "$(field a '["verify"]["offset"]')" = $((64 * MIB)) ] && [ "$(field a '["verify"]["length"]')" = $((128 * MIB)) ] \
  || die "the resumed range is $(field a '["verify"]')"

verify
# Past the state file's first rewrite (every 2 s): 96 MiB at 32 MiB/s.
wait_for 30 "some of the verify" _verify_at_least $((96 * MIB)) || die "the verify made no progress"
kill -KILL "$pid_a"
wait "$pid_a" 2>/dev/null || true  # gone, its metadata lock released (slow under ASan)
start_daemon "$conf" a data
pid_a=$DAEMON_PID
[ "$(field a '["verify"]["state"]')" = interrupted ] || die "after a kill -9 the verify shows $(field a '["verify"]')"
field a '["verify"]["last_error"]' | grep -q 'daemon stopped' || die "no reason: $(field a '["verify"]')"
pos="$(field a '["verify"]["position"]')"
[ "$pos" -gt 0 ] || die "no position after the kill"
hastnbd_ctl "$conf" a status data | grep '^  verify:' | grep -q interrupted || die "status does not say interrupted"
make_primary "$conf" a data
wait_peer_state "$conf" a connected 15 || die "a did not reconnect"
wait_in_sync "$conf" a 60 || die "a not in sync after its restart"
verify --resume --wait
[ "$VRC" = 0 ] || { cat "$T/verify.out"; die "resume after the primary's kill: exit $VRC"; }
log "interrupted by the secondary's stop and the primary's kill -9 (at $pos), resumed both"

# 4. refusals
refused() {  # WHAT PATTERN NODE ARGS...
  local what="$1" pattern="$2" node="$3"
  shift 3
  if hastnbd_ctl "$conf" "$node" verify "$@" data >"$T/refused.out" 2>&1; then die "$what was not refused"; fi
  grep -q "$pattern" "$T/refused.out" || die "$what: $(cat "$T/refused.out")"
}
refused "verify on the secondary" "runs on the primary" b
refused "an unaligned range" "multiple of 4096" a --range 100:4096
refused "a range past the end" "beyond the device" a --range 0:$((SIZE + 4096))
refused "an offset past the end" "beyond the device" a --range $((SIZE)):0
refused "a bad range" "OFFSET:LENGTH" a --range 12
refused "stop with other options" "takes no other option" a --stop --repair
refused "resume with a range" "does not apply" a --resume --range 0:4096
refused "resume after a finished run" "no stopped or interrupted verify" a --resume
cmp "$dir/disk-a.img" "$dir/disk-b.img" || die "the disks differ at the end"
log "refusals ok; disks identical"
