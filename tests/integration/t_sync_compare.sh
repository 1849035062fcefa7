#!/usr/bin/env bash
# What a resynchronisation copies: fine-grained tracking of a peer's outage
# (track_granule, default 4 KiB) and checksum-based resync (sync_compare,
# default on), two real daemons over TCP on loopback.
#  1. Disconnect: b stops; 1,000 random 4 KiB writes go to a alone; a is
#     restarted cleanly (its records of the outage survive in
#     STATE_DIR/data.fine); b returns. The catch-up covers every extent
#     written but copies only the granules written: at most the bytes
#     written (the issue's bound is 2x), nothing compared.
#  2. The same with track_granule 0: every dirty extent is compared by
#     hashes and only the differing blocks are sent.
#  3. Crash: a pair in sync after random writes (keepdirty 64); a is killed
#     with SIGKILL; 5 blocks of a's disk inside its dirty extents are changed
#     while it is down (what a crash can leave: written here, never sent).
#     a returns as primary: the sync (in-step, a's dirty map, no records
#     after a crash) compares every dirty extent and copies exactly those 5
#     blocks.
#  4. sync_compare false and track_granule 0: whole extents again.
#  5. Application writes racing a catch-up that uses both (granule 16 KiB,
#     compared inside): no copy overwrites newer data.
# Every time: both disks byte-identical, syncdone COPIED COMPARED agrees
# with status, and the secondary received exactly the copied bytes.
source "$(dirname "$0")/lib.sh"
require_root
require_cmd fio cmp

MIB=1048576
EXT=$((2 * MIB))
SIZE=$((256 * MIB))
dir="$T/pair"
mkdir -p "$dir"
conf="$dir/hastnbd.yaml"
read -r pa pb <<<"$(free_ports 2)"
hook_recorder "$T/hook.sh" "$T/hook.out"
PAIR_DISK_SIZE=$SIZE PAIR_KEEPDIRTY=64 write_pair_config "$conf" "127.0.0.1:$pa" "127.0.0.1:$pb"
sed -i "s|^      a: {|      a: {exec: $T/hook.sh, |" "$conf"
start_pair "$conf"
pid_a=$PAIR_PID_A pid_b=$PAIR_PID_B
sock_a="$(nbd_socket "$conf" a data)"
field() { status_field "$conf" "$@"; }
# random_writes N SEED: N random 4 KiB writes of random data over the device through a.
random_writes() {
  (cd "$T" && with_timeout 120 fio --name=w --ioengine=nbd "--uri=$(nbd_uri "$sock_a" data)" --rw=randwrite --bs=4k \
    --iodepth=16 --size=$SIZE --number_ios="$1" --norandommap --randseed="$2" --refill_buffers \
    --output-format=json --output="$T/w.json") >/dev/null 2>"$T/w.err" || { cat "$T/w.err"; die "fio failed"; }
  local n
  n="$("$HASTNBD_PYTHON" -c 'import json,sys; print(json.load(open(sys.argv[1]))["jobs"][0]["write"]["total_ios"])' "$T/w.json")"
  [ "$n" = "$1" ] || die "fio wrote $n blocks, not $1"
}
# away_writes N SEED: b stops, N random writes go to a alone, b returns as
# secondary and the link comes up (the catch-up may be running).
away_writes() {
  stop_daemon "$pid_b"
  wait_peer_state_not "$conf" a connected 10 || die "a still connected after b stopped"
  random_writes "$1" "$2"
  start_daemon "$conf" b data
  pid_b=$DAEMON_PID
  sent
  : >"$T/hook.out"
  hastnbd_ctl "$conf" b role secondary data >/dev/null || die "role secondary on b failed"
  wait_peer_state "$conf" a connected 15 || die "a did not reconnect to b"
}
# check_sync TAG: after a sync, the copied bytes agree everywhere, and the disks are identical.
check_sync() {
  local copied compared sent1
  copied="$(field a '["sync"]["copied_bytes"]')"
  compared="$(field a '["sync"]["compared_bytes"]')"
  wait_for 10 "the syncdone hook" grep -qx "syncdone data $copied $compared" "$T/hook.out" \
    || { cat "$T/hook.out"; die "$1: no 'syncdone data $copied $compared' hook"; }
  sent1="$(field a '["peer"]["resync_bytes_sent"]')"
  [ $((sent1 - SENT0)) = "$copied" ] || die "$1: the link carried $((sent1 - SENT0)) resync bytes, status says $copied copied"
  cmp "$dir/disk-a.img" "$dir/disk-b.img" || die "$1: the disks differ after the sync"
  log "$1: $(field a '["sync"]["total_bytes"]') bytes of dirty extents, $compared compared, $copied copied; disks identical"
}
sent() { SENT0="$(field a '["peer"]["resync_bytes_sent"]')"; }

set_keys() {  # KEY: VALUE lines for the resource, replacing the earlier ones; reload a
  local line
  sed -i '/^    \(sync_compare\|track_granule\|sync_rate\): /d' "$conf"
  for line in "$@"; do sed -i "s/^    keepdirty: 64$/    keepdirty: 64\n    $line/" "$conf"; done
  hastnbd_ctl "$conf" a reload data >/dev/null || die "reload of a failed"
}
# catch_up TAG WRITES: after away_writes, the catch-up's figures.
catch_up() {
  wait_in_sync "$conf" a 120 || { show_logs; die "$1: the catch-up did not finish"; }
  [ "$(field a '["peer"]["decision"]')" = primary-newer ] || die "$1: decision $(field a '["peer"]["decision"]')"
  check_sync "$1"
  total="$(field a '["sync"]["total_bytes"]')" copied="$(field a '["sync"]["copied_bytes"]')"
  compared="$(field a '["sync"]["compared_bytes"]')" fine="$(field a '["sync"]["fine_bytes"]')"
  [ "$copied" -le $((2 * $2 * 4096)) ] || die "$1: the catch-up copied $copied bytes for $2 writes of 4 KiB"
  [ "$copied" -gt $((9 * $2 * 4096 / 10)) ] || die "$1: the catch-up copied only $copied bytes for $2 random writes"
}

# 1. disconnect, fine tracking, a clean restart of a during the outage
stop_daemon "$pid_b"
wait_peer_state_not "$conf" a connected 10 || die "a still connected after b stopped"
random_writes 1000 1
[ "$(field a '["dirty"]["fine_bytes"]')" -gt $((900 * 4096)) ] || die "a recorded $(field a '["dirty"]') of the outage"
stop_daemon "$pid_a"
[ -s "$dir/state-a/data.fine" ] || die "a's clean stop saved no fine records"
start_daemon "$conf" a data
pid_a=$DAEMON_PID
[ -e "$dir/state-a/data.fine" ] && die "a's start left the fine records file in place"
grep -q "fine-tracking records of the last clean stop" "$(daemon_log a)" || die "a did not restore its records"
make_primary "$conf" a data
SENT0=0
start_daemon "$conf" b data
pid_b=$DAEMON_PID
: >"$T/hook.out"
hastnbd_ctl "$conf" b role secondary data >/dev/null || die "role secondary on b failed"
catch_up "1,000 writes during a disconnect, a restarted" 1000
[ "$compared" = 0 ] && [ "$fine" = "$total" ] || die "the catch-up did not use the records: $(field a '["sync"]')"

# 2. disconnect, no fine tracking: compared
set_keys "track_granule: 0"
away_writes 1000 5
catch_up "1,000 writes during a disconnect, track_granule 0" 1000
[ "$compared" = "$total" ] && [ "$fine" = 0 ] || die "not every dirty extent was compared: $(field a '["sync"]')"
set_keys

# 3. crash of the primary
random_writes 2000 2
wait_in_sync "$conf" a 30 || die "not in sync after the writes"
kill -KILL "$pid_a"
wait "$pid_a" 2>/dev/null || true  # gone, its metadata lock released (slow under ASan)
wait_peer_state_not "$conf" b connected 10 || die "b did not notice a die"
mapfile -t dirty < <(dump_field "$conf" a '["dirty"]' | "$HASTNBD_PYTHON" -c '
import ast, sys
for a, b in ast.literal_eval(sys.stdin.read()):
    for e in range(a, b + 1): print(e)')
[ "${#dirty[@]}" -ge 5 ] || die "a's metadata holds ${#dirty[@]} dirty extents after the crash, expected its hot set"
for i in 0 1 2 3 4; do  # block 3 of five dirty extents, changed on a's disk alone
  e="${dirty[$((i * ${#dirty[@]} / 5))]}"
  printf 'crash-%d' "$i" | dd of="$dir/disk-a.img" bs=1 seek=$((e * EXT + 3 * 4096 + 100)) conv=notrunc status=none
done
start_daemon "$conf" a data
pid_a=$DAEMON_PID
SENT0=0  # a new daemon's counter
: >"$T/hook.out"
make_primary "$conf" a data
wait_peer_state "$conf" a connected 15 || die "a did not reconnect after its crash"
wait_in_sync "$conf" a 60 || { show_logs; die "the sync after the crash did not finish"; }
[ "$(field a '["peer"]["decision"]')" = in-step ] || die "decision $(field a '["peer"]["decision"]') after the crash"
[ "$(field a '["sync"]["total_bytes"]')" = $((${#dirty[@]} * EXT)) ] || die "the sync covered $(field a '["sync"]["total_bytes"]') bytes, not the ${#dirty[@]} dirty extents"
[ "$(field a '["sync"]["copied_bytes"]')" = $((5 * 4096)) ] || die "the sync after the crash copied $(field a '["sync"]["copied_bytes"]') bytes, expected the 5 changed blocks"
check_sync "kill -9 of the primary, ${#dirty[@]} dirty extents, 5 blocks changed"

[ "$(field a '["sync"]["compared_bytes"]')" = "$(field a '["sync"]["total_bytes"]')" ] || die "after a crash every dirty extent is compared"

# 4. whole extents without either
set_keys "sync_compare: false" "track_granule: 0"
away_writes 100 3
wait_in_sync "$conf" a 120 || { show_logs; die "the catch-up did not finish"; }
[ "$(field a '["sync"]["compared_bytes"]')" = 0 ] || die "compared with sync_compare false"
[ "$(field a '["sync"]["copied_bytes"]')" = "$(field a '["sync"]["total_bytes"]')" ] || die "sync_compare false did not copy whole extents"
check_sync "100 writes during a disconnect, sync_compare false, track_granule 0"

# 5. application writes racing a catch-up: b away while a's whole device is
# rewritten, then a catch-up at 16 MiB/s (~16 s) from 16 KiB granules,
# compared inside, with verified fio writes all over the device meanwhile.
# No copy may overwrite newer data on b: after a flush and in sync, the
# disks are identical.
set_keys "sync_rate: 16MiB" "track_granule: 16KiB"
away_writes 20000 4
fio_verify_start "$sock_a" $((SIZE / 2)) 0 60 race --time_based --runtime=8 --verify_backlog=256
_sync_running() { [ "$(field a '["sync"]["state"]')" = running ]; }
sleep 8
_sync_running || die "the compared sync was not running any more when fio ended (too short to race)"
rc=0
wait "$FIO_PID" || rc=$?
[ "$rc" = 0 ] && ! grep -q 'verify:' "$T/fio-race.err" || { cat "$T/fio-race.err"; die "fio racing the sync failed"; }
wait_in_sync "$conf" a 120 || { show_logs; die "the compared sync did not finish"; }
nbd_flush "$sock_a"
[ "$(field a '["sync"]["compared_bytes"]')" -gt 0 ] && [ "$(field a '["sync"]["fine_bytes"]')" -gt 0 ] \
  || die "the catch-up did not use its records and compare: $(field a '["sync"]')"
check_sync "writes racing a compared sync"
