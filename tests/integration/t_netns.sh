#!/usr/bin/env bash
# Two nodes in two network namespaces joined by a veth pair, as two machines
# would be: replication over the veth (byte-identical copies, also with the
# link shaped to 1 Gbit/s by tbf), then the primary's link pulled down in
# the middle of a verified fio run: the primary notices within the timeout,
# every client request completes, the extents written meanwhile stay dirty;
# link up again: the primary reconnects by itself, catches up only what
# was written meanwhile and replicates; the disks end byte-identical.
# The control and NBD sockets are Unix sockets on the shared file system, so
# hastnbd-ctl, qemu-io and fio run from the root namespace.
source "$(dirname "$0")/lib.sh"
require_root
require_cmd ip tc fio qemu-io cmp

KEEPDIRTY=8
TIMEOUT=3
MIB=1048576

netns_pair n 231

dir="$T/pair"
mkdir -p "$dir"
conf="$dir/hastnbd.yaml"
# Ports only matter inside our own namespaces; random anyway, as elsewhere.
pa=$((20000 + RANDOM % 39999))
pb=$((pa + 1))
PAIR_KEEPDIRTY=$KEEPDIRTY PAIR_TIMEOUT=$TIMEOUT write_pair_config "$conf" "$IP_A:$pa" "$IP_B:$pb"
start_both "$conf" "$NS_A" "$NS_B"
pid_a=$PAIR_PID_A
pid_b=$PAIR_PID_B
hastnbd_ctl "$conf" b role secondary data >/dev/null || die "role secondary failed"
make_primary "$conf" a data
wait_peer_state "$conf" a connected 10 || { show_log "$(daemon_log a)"; die "no link over the veth within 10 s"; }
# The link really is the veth: the secondary sees the primary's veth address.
sock="$(nbd_socket "$conf" a data)"
grep -q "primary a connected from $IP_A:" "$(daemon_log b)" || die "the secondary did not see a connection from $IP_A"

_inflight_zero() {
  [ "$(status_field "$conf" a '["peer"]["inflight_bytes"]')" = 0 ]
}

# replicated_region TAG OFFSET: fio over 2 x 32 MiB from OFFSET, flushed,
# drained, and that region identical on both disks.
replicated_region() {
  local tag="$1" off="$2" deg0
  deg0="$(status_field "$conf" a '["writes"]["degraded"]')"
  fio_verify "$sock" $((32 * MIB)) "$off" 90 "$tag"
  nbd_flush "$sock"
  wait_for 20 "link drained" _inflight_zero || die "$tag: records in flight 20 s after the flush"
  [ "$(status_field "$conf" a '["writes"]["degraded"]')" = "$deg0" ] || die "$tag: writes degraded"
  cmp_region "$dir/disk-a.img" "$dir/disk-b.img" "$off" $((64 * MIB)) \
    || die "$tag: region differs between the nodes after flush"
  log "$tag: 64 MiB replicated over the veth, identical on both nodes"
}

replicated_region veth 0
[ "$(status_field "$conf" a '["peer"]["records_sent"]')" -gt 0 ] || die "records_sent is 0"

# 1 Gbit/s, both directions.
for pair in "$NS_A $VETH_A" "$NS_B $VETH_B"; do
  read -r n v <<<"$pair"
  ip netns exec "$n" tc qdisc add dev "$v" root tbf rate 1gbit burst 256kb latency 50ms \
    || die "tc tbf on $v failed"
done
replicated_region tbf $((64 * MIB))
ip netns exec "$NS_A" tc -s qdisc show dev "$VETH_A" | grep -q "tbf" || die "tbf qdisc missing"

# Pull the primary's link down in the middle of a verified fio run.
deg0="$(status_field "$conf" a '["writes"]["degraded"]')"
fio_verify_start "$sock" $((48 * MIB)) $((128 * MIB)) 60 linkdown --rate=12m
sleep 1.5
kill -0 "$FIO_PID" 2>/dev/null || die "fio finished before the link went down"
_peer_state_is "$conf" a connected || die "link not up before the cut"
t0=$(date +%s%3N)
ip netns exec "$NS_A" ip link set "$VETH_A" down
if ! wait_peer_state_not "$conf" a connected $((TIMEOUT + 3)); then
  show_log "$(daemon_log a)"
  die "the primary still shows the peer connected $((TIMEOUT + 3)) s after its link went down"
fi
log "link down: the primary noticed after $(($(date +%s%3N) - t0)) ms"
fio_verify_check linkdown
log "link down: fio completed $(($(date +%s%3N) - t0)) ms after the cut"
[ "$(status_field "$conf" a '["writes"]["degraded"]')" -gt "$deg0" ] || die "no degraded write with the link down"
dirty="$(status_field "$conf" a '["dirty"]["extents"]')"
[ "$dirty" -gt "$KEEPDIRTY" ] || die "only $dirty extents dirty after degraded writes over 48 extents"
[ "$(dump_field "$conf" a '["dirty_extents"]')" = "$dirty" ] || die "dump and status disagree on dirty extents"
[ "$(status_field "$conf" a '["metadata"]["localcnt"]')" = 1 ] || die "localcnt not 1 after the degraded period"
kill -0 "$pid_a" && kill -0 "$pid_b" || die "a daemon died with the link down"

ip netns exec "$NS_A" ip link set "$VETH_A" up
t0=$(date +%s%3N)
if ! wait_peer_state "$conf" a connected 20; then
  show_log "$(daemon_log a)"
  show_log "$(daemon_log b)"
  die "the primary did not reconnect within 20 s of the link coming back"
fi
log "link up: reconnected after $(($(date +%s%3N) - t0)) ms"
# The reconnect catches up: only what was written while the link was down.
wait_catch_up "$conf" a "$dirty" "$KEEPDIRTY" "link up"
log "link up: caught up $CAUGHT_UP bytes ($dirty dirty extents)"
replicated_region after-linkup $((192 * MIB))
wait_in_sync "$conf" a 30 || die "not in sync after the last writes"
cmp "$dir/disk-a.img" "$dir/disk-b.img" || die "the disks differ after the catch-up"

stop_daemon "$pid_a"
stop_daemon "$pid_b"
log "t_netns: replication over veth (also at 1 Gbit/s), link loss survived, reconnects"
