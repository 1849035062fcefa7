#!/usr/bin/env bash
# Failover in fullsync mode loses no acknowledged write, and the old primary
# returns as secondary with only the changed extents synchronised.
#  1. A fresh pair (a primary, b secondary) after its initial full sync.
#  2. A client writes 4 KiB blocks through a, 16 in flight, logging every
#     write whose reply said success (acked_writes.py); a is killed with
#     SIGKILL in the middle of it.
#  3. b is promoted; every acknowledged write reads back intact through b's
#     NBD export.
#  4. b writes 8 more extents alone (degraded: its localcnt goes up).
#  5. a restarts as secondary: b -> a synchronises the union of both dirty
#     maps only (bounded by what b changed plus what a had dirty when it
#     died), not the device; then both disks are byte-identical.
source "$(dirname "$0")/lib.sh"
require_root
require_cmd qemu-io cmp

EXT=$((2 * 1048576))
conf="$T/hastnbd.yaml"
read -r pa pb <<<"$(free_ports 2)"
PAIR_KEEPDIRTY=8 PAIR_TIMEOUT=3 write_pair_config "$conf" "127.0.0.1:$pa" "127.0.0.1:$pb"
start_pair "$conf"
pid_a=$PAIR_PID_A pid_b=$PAIR_PID_B
sock_a="$(nbd_socket "$conf" a data)" sock_b="$(nbd_socket "$conf" b data)"
[ "$(status_field "$conf" a '["sync"]["full"]')" = True ] || die "the first connect of a fresh pair was not a full sync"

# 2. writes through a, a killed under them
ledger="$T/ledger"
acked_writer_start "$sock_a" "$ledger" $((48 * 1048576)) 2000
kill -KILL "$pid_a"
wait "$ACKED_WRITER" || true
cat "$T/writer.out"
acked=$(($(wc -l <"$ledger") - 1))
log "a killed with $acked writes acknowledged"
grep -q 'connection ended' "$T/writer.out" || die "the writer finished before a was killed: nothing was in flight"

# 3. failover
wait_peer_state_not "$conf" b connected 15 || die "b still sees a connected 15 s after a died"
[ "$(status_field "$conf" b '["metadata"]["inconsistent"]')" = False ] || die "b thinks it is inconsistent"
make_primary "$conf" b data
"$HASTNBD_PYTHON" "$LIB_DIR/acked_writes.py" verify "$sock_b" "$ledger" || die "acknowledged writes lost in the failover"

# 4. b writes alone: 8 extents from 64 MiB
with_timeout 60 qemu-io -f raw -c "write -P 0x5b $((64 * 1048576)) $((8 * EXT))" "$(nbd_uri "$sock_b" data)" >/dev/null \
  || die "write through b failed"
[ "$(status_field "$conf" b '["metadata"]["localcnt"]')" -ge 1 ] || die "b wrote alone without bumping localcnt"
b_needs="$(status_field "$conf" b '["dirty"]["needs_sync_extents"]')"
a_dirty="$(dump_field "$conf" a '["dirty_extents"]')" || die "dump of a's metadata failed"
log "b needs $b_needs extents synchronised, a died with $a_dirty dirty"
[ "$b_needs" -ge 8 ] || die "b's 8 degraded extents are not all marked for sync ($b_needs)"

# 5. a returns as secondary
start_daemon "$conf" a data
pid_a=$DAEMON_PID
hastnbd_ctl "$conf" a role secondary data >/dev/null || die "role secondary on a failed"
wait_in_sync "$conf" b 60 || { show_log "$(daemon_log b)"; die "b did not get in sync with a within 60 s"; }
sync_json="$(hastnbd_ctl "$conf" b status --json data)"
total="$(status_field "$conf" b '["sync"]["total_bytes"]')"
full="$(status_field "$conf" b '["sync"]["full"]')"
dir="$(status_field "$conf" b '["sync"]["direction"]')"
decision="$(status_field "$conf" b '["peer"]["decision"]')"
sent="$(status_field "$conf" b '["peer"]["resync_bytes_sent"]')"
bound=$(((b_needs + a_dirty) * EXT))
log "resync b -> a: decision $decision, direction $dir, full $full, $total bytes planned, $sent sent, bound $bound"
[ "$decision" = primary-newer ] || die "decision $decision, expected primary-newer: $sync_json"
[ "$full" = False ] || die "the returning node got a full sync"
[ "$dir" = to-peer ] || die "sync direction $dir, expected to-peer"
[ "$total" -gt 0 ] || die "nothing synchronised: a's in-flight and b's new extents must be"
[ "$total" -le "$bound" ] || die "synchronised $total bytes, more than the $bound the two dirty maps cover"
[ "$sent" -le "$bound" ] || die "sent $sent bytes of resync, more than the $bound the two dirty maps cover"
[ "$(status_field "$conf" a '["metadata"]["remotecnt"]')" = "$(status_field "$conf" b '["metadata"]["localcnt"]')" ] \
  || die "a's remotecnt does not match b's localcnt after the sync"

nbd_flush "$sock_b"
stop_daemon "$pid_b"
stop_daemon "$pid_a"
cmp "$T/disk-a.img" "$T/disk-b.img" || die "the disks differ after the resync"
log "t_failover: $acked acknowledged writes survived; resync of $total bytes (bound $bound) made the disks identical"
