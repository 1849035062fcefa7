#!/usr/bin/env bash
# The secondary holds the newer data: the primary synchronises from it and,
# until each extent is copied, reads it through the secondary.
#  1. A pair in sync; a stops; b becomes primary and writes 16 MiB alone; b
#     stops.
#  2. a returns as primary (its data is older but it never wrote alone), b
#     as secondary: the decision is "secondary newer"; with sync_rate 2MiB
#     the copy b -> a takes ~8 s, and a read through a's export at once
#     already returns b's data.
#  3. b is killed mid-sync: a, now inconsistent and alone, fails reads of
#     the extents not yet copied and every write with EIO rather than serve
#     old data or start a generation that would turn this into a split-brain.
#  4. b returns: the sync resumes, a gets in sync, both disks identical.
source "$(dirname "$0")/lib.sh"
require_root
require_cmd qemu-io cmp

EXT=$((2 * 1048576))
conf="$T/hastnbd.yaml"
read -r pa pb <<<"$(free_ports 2)"
write_pair_config "$conf" "127.0.0.1:$pa" "127.0.0.1:$pb"
start_pair "$conf"
pid_a=$PAIR_PID_A pid_b=$PAIR_PID_B
sock_a="$(nbd_socket "$conf" a data)" sock_b="$(nbd_socket "$conf" b data)"
field() { status_field "$conf" "$@"; }
qio() {  # SOCK CMD
  with_timeout 60 qemu-io -f raw -c "$2" "$(nbd_uri "$1" data)"
}

# 1. b writes alone
stop_daemon "$pid_a"
wait_peer_state_not "$conf" b connected 10 || die "b still connected after a stopped"
make_primary "$conf" b data
qio "$sock_b" "write -P 0x77 $((32 * 1048576)) $((16 * 1048576))" >/dev/null || die "write through b failed"
stop_daemon "$pid_b"

# 2. a primary, b secondary: b is newer
write_pair_config "$conf" "127.0.0.1:$pa" "127.0.0.1:$pb" "sync_rate: 2MiB"
start_daemon "$conf" b data
pid_b=$DAEMON_PID
hastnbd_ctl "$conf" b role secondary data >/dev/null || die "role secondary on b failed"
start_daemon "$conf" a data
pid_a=$DAEMON_PID
make_primary "$conf" a data
wait_peer_state "$conf" a connected 15 || die "a did not connect to b"
[ "$(field a '["peer"]["decision"]')" = secondary-newer ] || die "decision $(field a '["peer"]["decision"]')"
[ "$(field a '["sync"]["direction"]')" = from-peer ] || die "sync direction $(field a '["sync"]["direction"]')"
[ "$(field a '["metadata"]["inconsistent"]')" = True ] || die "a does not record that it is the target of a sync"
# The last extent of b's write is copied last: read it now, through a.
qio "$sock_a" "read -P 0x77 $((46 * 1048576)) $((2 * 1048576))" >"$T/read.out" \
  || die "a served old data for an extent the secondary holds newer: $(cat "$T/read.out")"
[ "$(field a '["writes"]["remote_reads"]')" -ge 1 ] || die "the read was not served by the secondary"
# A write to a stale extent goes to both; the copy later keeps it.
qio "$sock_a" "write -P 0x78 $((44 * 1048576)) 4096" >/dev/null || die "write to a stale extent during the sync failed"

# 3. the source dies mid-sync
_done_some() { [ "$(field a '["sync"]["done_bytes"]')" -ge "$EXT" ]; }
wait_for 20 "one extent copied" _done_some || die "the sync from b made no progress"
kill -KILL "$pid_b"
wait_peer_state_not "$conf" a connected 10 || die "a did not notice b die"
wait_for 10 "the sync to stop" _sync_state_is "$conf" a interrupted || die "sync state $(field a '["sync"]["state"]') after b died"
if qio "$sock_a" "read -P 0x77 $((46 * 1048576)) 4096" >"$T/stale.out" 2>&1 && ! grep -qi 'error' "$T/stale.out"; then
  die "a served a stale extent with its source gone: $(cat "$T/stale.out")"
fi
if qio "$sock_a" "write -P 0x11 0 4096" >"$T/w.out" 2>&1 && ! grep -qi 'error' "$T/w.out"; then
  die "an inconsistent primary accepted a write alone: $(cat "$T/w.out")"
fi
[ "$(field a '["metadata"]["localcnt"]')" = 0 ] || die "the inconsistent primary started a generation"
[ "$(field a '["writes"]["stale_refused"]')" -ge 2 ] || die "stale_refused not counted"

# 4. the source returns
start_daemon "$conf" b data
pid_b=$DAEMON_PID
hastnbd_ctl "$conf" b role secondary data >/dev/null || die "role secondary on b failed"
wait_in_sync "$conf" a 60 || { show_log "$(daemon_log a)"; die "a not in sync 60 s after b returned"; }
[ "$(field a '["metadata"]["inconsistent"]')" = False ] || die "a still inconsistent after the sync"
qio "$sock_a" "read -P 0x78 $((44 * 1048576)) 4096" >/dev/null || die "the write made during the sync was lost"
nbd_flush "$sock_a"
stop_daemon "$pid_a"
stop_daemon "$pid_b"
cmp "$T/disk-a.img" "$T/disk-b.img" || die "the disks differ after the sync from the secondary"
log "t_sync_from_secondary: reads through the secondary, EIO while alone and inconsistent, resumed, identical"
