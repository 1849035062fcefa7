#!/usr/bin/env bash
# Role changes under load, and two primaries never connect.
#  1. A pair in sync; a client writes through a, 16 requests in flight,
#     logging each acknowledged write.
#  2. `role secondary` on a is refused while the client is attached; with
#     --force, a drains the in-flight requests, disconnects the client and
#     becomes secondary.
#  3. b becomes primary, connects to a (in step: nobody wrote alone) and
#     serves every acknowledged write.
#  4. a becomes primary too: the two primaries meet, find that neither wrote
#     alone (no split-brain) and refuse each other; a back to secondary: in
#     step again.
#  5. Both disks byte-identical.
source "$(dirname "$0")/lib.sh"
require_root
require_cmd cmp

conf="$T/hastnbd.yaml"
read -r pa pb <<<"$(free_ports 2)"
write_pair_config "$conf" "127.0.0.1:$pa" "127.0.0.1:$pb"
start_pair "$conf"
pid_a=$PAIR_PID_A pid_b=$PAIR_PID_B
sock_a="$(nbd_socket "$conf" a data)" sock_b="$(nbd_socket "$conf" b data)"
field() { status_field "$conf" "$@"; }

# 1.
ledger="$T/ledger"
acked_writer_start "$sock_a" "$ledger" $((64 * 1048576)) 1000

# 2.
if hastnbd_ctl "$conf" a role secondary data 2>"$T/busy.err"; then die "role change allowed with a client attached"; fi
grep -q "NBD client(s) attached" "$T/busy.err" || die "unexpected refusal: $(cat "$T/busy.err")"
hastnbd_ctl "$conf" a role --force secondary data >/dev/null || die "forced role secondary on a failed"
wait "$ACKED_WRITER" || true
cat "$T/writer.out"
grep -q 'connection ended' "$T/writer.out" || die "the writer was not interrupted by the role change"
[ "$(field a '["role"]')" = secondary ] || die "a is not secondary"
[ "$(field a '["nbd"]["requests_in_flight"]')" = 0 ] || die "requests still in flight on a"
acked=$(($(wc -l <"$ledger") - 1))

# 3.
make_primary "$conf" b data
wait_in_sync "$conf" b 30 || die "b did not get in sync with a"
[ "$(field b '["peer"]["decision"]')" = in-step ] || die "decision $(field b '["peer"]["decision"]'), expected in-step"
[ "$(field b '["metadata"]["localcnt"]')" = 0 ] || die "b bumped its generation with the secondary connected"
"$HASTNBD_PYTHON" "$LIB_DIR/acked_writes.py" verify "$sock_b" "$ledger" || die "acknowledged writes lost in the switchover"

# 4.
make_primary "$conf" a data
sleep 4
for n in a b; do
  st="$(field "$n" '["peer"]["state"]')"
  [ "$st" != connected ] || die "two primaries connected (node $n peer state $st)"
done
[ "$(field b '["peer"]["decision"]')" = both-primary ] || die "decision $(field b '["peer"]["decision"]') between two primaries"
[ "$(field b '["peer"]["split_brain"]')" = False ] || die "two primaries that did not write alone called a split-brain"
hastnbd_ctl "$conf" a role secondary data >/dev/null || die "role secondary on a failed"
wait_in_sync "$conf" b 30 || die "b did not get back in sync with a"
[ "$(field b '["peer"]["decision"]')" = in-step ] || die "decision $(field b '["peer"]["decision"]') after the double primary"

# 5.
nbd_flush "$sock_b"
stop_daemon "$pid_b"
stop_daemon "$pid_a"
cmp "$T/disk-a.img" "$T/disk-b.img" || die "the disks differ after the switchover"
log "t_switchover: forced role change drained $acked acknowledged writes, all on b; two primaries stayed apart"
