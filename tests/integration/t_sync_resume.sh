#!/usr/bin/env bash
# A secondary away during writes catches up, and a sync interrupted by
# killing either side resumes where it stopped.
#  1. A pair in sync; b stops; 96 MiB are written through a alone.
#  2. a restarts with sync_rate 16MiB; b returns: a -> b sync of what a
#     wrote (48 extents), not the device.
#  3. b is killed with SIGKILL mid-sync; a keeps the extents not yet
#     confirmed; b, the target of an unfinished sync, refuses to become
#     primary without --force. b returns: the sync plans only what was left.
#  4. a is killed mid-sync; it restarts as primary: again only what was left.
#  5. In sync: both disks byte-identical.
source "$(dirname "$0")/lib.sh"
require_root
require_cmd qemu-io cmp

EXT=$((2 * 1048576))
conf="$T/hastnbd.yaml"
read -r pa pb <<<"$(free_ports 2)"
PAIR_KEEPDIRTY=4 write_pair_config "$conf" "127.0.0.1:$pa" "127.0.0.1:$pb"
start_pair "$conf"
pid_a=$PAIR_PID_A pid_b=$PAIR_PID_B
sock_a="$(nbd_socket "$conf" a data)"
field() { status_field "$conf" "$@"; }

# 1. b away; a writes alone
stop_daemon "$pid_b"
wait_peer_state_not "$conf" a connected 10 || die "a still connected after b stopped"
with_timeout 60 qemu-io -f raw -c "write -P 0x3c $((16 * 1048576)) $((96 * 1048576))" "$(nbd_uri "$sock_a" data)" \
  >/dev/null || die "write through a failed"
[ "$(field a '["dirty"]["needs_sync_extents"]')" = 48 ] || die "a should need 48 extents synchronised: $(field a '["dirty"]')"
stop_daemon "$pid_a"

# 2. rate-limited catch-up
PAIR_KEEPDIRTY=4 write_pair_config "$conf" "127.0.0.1:$pa" "127.0.0.1:$pb" "sync_rate: 16MiB"
start_daemon "$conf" a data
pid_a=$DAEMON_PID
make_primary "$conf" a data
start_daemon "$conf" b data
pid_b=$DAEMON_PID
hastnbd_ctl "$conf" b role secondary data >/dev/null || die "role secondary on b failed"
wait_peer_state "$conf" a connected 15 || die "a did not reconnect to b"
[ "$(field a '["peer"]["decision"]')" = primary-newer ] || die "decision $(field a '["peer"]["decision"]'), expected primary-newer"
total1="$(field a '["sync"]["total_bytes"]')"
[ "$total1" = $((48 * EXT)) ] || die "catch-up plans $total1 bytes, expected the 48 extents a wrote ($((48 * EXT)))"
hastnbd_ctl "$conf" a status data | grep '^  sync:' || die "no sync line in the human status"

# 3. kill the target mid-sync
_done_at_least() { [ "$(field a '["sync"]["done_bytes"]')" -ge "$1" ]; }
wait_for 30 "a third of the catch-up" _done_at_least $((16 * EXT)) || die "the sync made no progress"
kill -KILL "$pid_b"
wait_peer_state_not "$conf" a connected 10 || die "a did not notice b die"
wait_for 10 "the sync to stop" _sync_state_is "$conf" a interrupted || die "sync state $(field a '["sync"]["state"]') after the target died"
left="$(field a '["dirty"]["needs_sync_extents"]')"
log "b killed mid-sync: $left extents left of 48"
[ "$left" -lt 48 ] && [ "$left" -gt 0 ] || die "$left extents left after an interrupted sync"
start_daemon "$conf" b data
pid_b=$DAEMON_PID
[ "$(field b '["metadata"]["inconsistent"]')" = True ] || die "b does not know it is the target of an unfinished sync"
if hastnbd_ctl "$conf" b role primary data 2>"$T/refused.err"; then die "the target of an unfinished sync became primary"; fi
grep -q "target of an unfinished synchronisation" "$T/refused.err" || die "unexpected refusal: $(cat "$T/refused.err")"
hastnbd_ctl "$conf" b role secondary data >/dev/null || die "role secondary on b failed"
wait_peer_state "$conf" a connected 15 || die "a did not reconnect to b"
total2="$(field a '["sync"]["total_bytes"]')"
log "resumed after the target's death: $total2 bytes planned"
[ "$total2" -le $((left * EXT)) ] || die "the resumed sync plans $total2 bytes, more than the $left extents left"

# 4. kill the source mid-sync
wait_for 30 "some of the resumed sync" _done_at_least $((4 * EXT)) || die "the resumed sync made no progress"
kill -KILL "$pid_a"
wait_peer_state_not "$conf" b connected 10 || die "b did not notice a die"
left="$(dump_field "$conf" a '["dirty_extents"]')"
log "a killed mid-sync: $left extents dirty in its metadata"
start_daemon "$conf" a data
pid_a=$DAEMON_PID
make_primary "$conf" a data
wait_peer_state "$conf" a connected 15 || die "a did not reconnect to b"
total3="$(field a '["sync"]["total_bytes"]')"
log "resumed after the source's death: $total3 bytes planned"
[ "$total3" -le $((left * EXT)) ] || die "the resumed sync plans $total3 bytes, more than the $left extents left"
[ "$total3" -lt "$total2" ] || die "the second resume plans $total3 bytes, no less than the first ($total2)"

# 5. done
wait_in_sync "$conf" a 60 || die "not in sync 60 s after the last resume"
[ "$(field b '["metadata"]["inconsistent"]')" = False ] || die "b still inconsistent after the sync"
[ "$(field b '["in_sync"]')" = True ] || die "b does not say in sync"
nbd_flush "$sock_a"
stop_daemon "$pid_a"
stop_daemon "$pid_b"
cmp "$T/disk-a.img" "$T/disk-b.img" || die "the disks differ after the resumed syncs"
log "t_sync_resume: catch-up of 48 extents, resumed after each side died ($total1 -> $total2 -> $total3 bytes), identical"
