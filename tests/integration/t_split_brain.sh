#!/usr/bin/env bash
# Split-brain, end to end, with two nodes in two network namespaces joined by
# a veth pair: a primary, b secondary, in sync; the link is cut; b is promoted
# (it was in sync, so that is allowed) and both nodes write different data
# without the other. When the link comes back, both must see the split-brain
# (peer.state split-brain, "SPLIT-BRAIN" in the log and in human status, the
# split-brain hook with counters matching status), refuse to connect and keep
# serving. Recovery: b leaves primary, discards its data, a reconnects by
# itself and runs a full sync to b; afterwards the disks are identical and
# hold a's split-brain write, not b's.
# The control and NBD sockets are Unix sockets on the shared file system, so
# hastnbd-ctl and qemu-io run from the root namespace.
source "$(dirname "$0")/lib.sh"
require_root
require_cmd ip qemu-io cmp

TIMEOUT=3
MIB=1048576
DISK_SIZE=64M

netns_pair s 232

dir="$T/pair"
mkdir -p "$dir"
conf="$dir/hastnbd.yaml"
pa=$((20000 + RANDOM % 39999))
pb=$((pa + 1))
PAIR_DISK_SIZE=$DISK_SIZE PAIR_TIMEOUT=$TIMEOUT write_pair_config "$conf" "$IP_A:$pa" "$IP_B:$pb"

# One hook program per node (the `exec` key in the node's own section), each
# appending its arguments as one line to its own file.
for n in a b; do
  cat >"$T/hook-$n.sh" <<EOF
#!/bin/sh
printf '%s\n' "\$*" >>"$T/hook-$n.out"
EOF
  chmod +x "$T/hook-$n.sh"
  : >"$T/hook-$n.out"
  sed -i "s|^      $n: {|      $n: {exec: $T/hook-$n.sh, |" "$conf"
done
grep -q "exec: $T/hook-a.sh" "$conf" && grep -q "exec: $T/hook-b.sh" "$conf" || die "exec keys not in $conf"

show_logs() {
  show_log "$(daemon_log a)"
  show_log "$(daemon_log b)"
  echo "---- hooks of a ----" >&2; cat "$T/hook-a.out" >&2
  echo "---- hooks of b ----" >&2; cat "$T/hook-b.out" >&2
}

# field NODE SUBSCRIPT: one field of the node's status.
field() {
  status_field "$conf" "$1" "$2"
}

start_both "$conf" "$NS_A" "$NS_B"
pid_a=$PAIR_PID_A
pid_b=$PAIR_PID_B
hastnbd_ctl "$conf" b role secondary data >/dev/null || die "role secondary on b failed"
make_primary "$conf" a data
wait_peer_state "$conf" a connected 10 || { show_logs; die "no link over the veth within 10 s"; }
wait_in_sync "$conf" a 30 || { show_logs; die "the initial full sync did not finish within 30 s"; }
wait_in_sync "$conf" b 10 || { show_logs; die "b does not say in sync after the initial sync"; }
sock_a="$(nbd_socket "$conf" a data)"
sock_b="$(nbd_socket "$conf" b data)"
uri_a="$(nbd_uri "$sock_a" data)"

# Replicated data, on both disks: 0x11 over the first 4 MiB.
_qemu_io "$uri_a" "write -P 0x11 0 $((4 * MIB))" "flush" >/dev/null
cmp_region "$dir/disk-a.img" "$dir/disk-b.img" 0 $((4 * MIB)) || die "the first write is not on b's disk"
wait_in_sync "$conf" a 10 || { show_logs; die "a not in sync after a replicated write"; }
log "pair in sync over the veth, 4 MiB of 0x11 replicated"

# Cut the link on b's side: each side notices within the timeout.
ip -n "$NS_B" link set dev "$VETH_B" down
wait_peer_state_not "$conf" a connected $((TIMEOUT + 4)) || { show_logs; die "a still connected after the cut"; }
wait_peer_state_not "$conf" b connected $((TIMEOUT + 4)) || { show_logs; die "b still connected after the cut"; }
log "link cut: a sees $(field a '["peer"]["state"]'), b sees $(field b '["peer"]["state"]')"

# b was in sync, so it may become primary without --force.
[ "$(field b '["metadata"]["inconsistent"]')" = False ] || die "b is inconsistent after an in-sync disconnect"
make_primary "$conf" b data
log "b promoted to primary while the link is down"

# Both write without the other: a at [0, 1M), b at [1M, 2M).
_qemu_io "$uri_a" "write -P 0xaa 0 $MIB" "flush" >/dev/null
_qemu_io "$(nbd_uri "$sock_b" data)" "write -P 0xbb $MIB $MIB" "flush" >/dev/null
for n in a b; do
  [ "$(field $n '["metadata"]["localcnt"]')" = 1 ] \
    || die "node $n: localcnt $(field $n '["metadata"]["localcnt"]') after writing alone, want 1"
  [ "$(field $n '["metadata"]["remotecnt"]')" = 0 ] || die "node $n: remotecnt changed while alone"
done
log "a wrote 0xaa at 0+1M, b wrote 0xbb at 1M+1M, each alone (localcnt 1 on both)"

# Link up: both must detect the split-brain within 20 s.
lines_a="$(wc -l <"$(daemon_log a)")"
lines_b="$(wc -l <"$(daemon_log b)")"
ip -n "$NS_B" link set dev "$VETH_B" up
wait_for 10 "veth link up" _veth_pair_up || die "veth pair did not come up again"
t0=$(date +%s)
for n in a b; do
  if ! wait_peer_state "$conf" "$n" split-brain 20; then
    show_logs
    die "node $n: peer.state is '$(field $n '["peer"]["state"]')', not split-brain, 20 s after the link came back"
  fi
done
log "split-brain seen on both nodes $(($(date +%s) - t0)) s after the link came back"

# Status, hooks and logs agree on the counters.
for n in a b; do
  [ "$n" = a ] && p=b || p=a
  [ "$(field $n '["peer"]["split_brain"]')" = True ] || die "node $n: peer.split_brain not true"
  l="$(field $n '["metadata"]["localcnt"]')"
  r="$(field $n '["metadata"]["remotecnt"]')"
  pl="$(field $n '["peer"]["localcnt"]')"
  pr="$(field $n '["peer"]["remotecnt"]')"
  [ "$pl" = "$(field "$p" '["metadata"]["localcnt"]')" ] || die "node $n: peer.localcnt $pl is not $p's localcnt"
  [ "$pr" = "$(field "$p" '["metadata"]["remotecnt"]')" ] || die "node $n: peer.remotecnt $pr is not $p's remotecnt"
  want="split-brain data $p $l $r $pl $pr"
  wait_for 10 "split-brain hook on $n" grep -qx "$want" "$T/hook-$n.out" \
    || { show_logs; die "node $n: no hook line '$want'"; }
  [ "$(grep -c '^split-brain ' "$T/hook-$n.out")" = 1 ] || die "node $n: split-brain hook ran more than once"
  log_since "$(daemon_log $n)" "$([ $n = a ] && echo "$lines_a" || echo "$lines_b")" | grep -q "SPLIT-BRAIN" \
    || { show_logs; die "node $n: no SPLIT-BRAIN in the log"; }
  hastnbd_ctl "$conf" "$n" status data | grep -q "SPLIT-BRAIN:" || die "node $n: human status has no SPLIT-BRAIN line"
  kill -0 "${DAEMON_PIDS[$n]}" || die "node $n: the daemon died"
  log "node $n: hook '$want', SPLIT-BRAIN logged and in status"
done

# The split-brain lasts (the primary retries and is refused again) and both
# primaries keep serving their own data.
sleep 3
for n in a b; do
  _peer_state_is "$conf" "$n" split-brain || die "node $n: split-brain state did not last"
done
_qemu_io "$uri_a" "read -P 0xaa 0 $MIB" "read -P 0x11 $MIB $MIB" >/dev/null
_qemu_io "$(nbd_uri "$sock_b" data)" "read -P 0x11 0 $MIB" "read -P 0xbb $MIB $MIB" >/dev/null
log "both nodes keep serving their own data during the split-brain"

# Recovery: b is the victim. It leaves primary (no clients), then discards.
# Counted before: a may reconnect and start the recovery sync the moment the
# discard returns.
syncstarts0="$(grep -c '^syncstart ' "$T/hook-a.out" || true)"
hastnbd_ctl "$conf" b role secondary data >/dev/null || { show_logs; die "role secondary on b failed"; }
hastnbd_ctl "$conf" b discard-my-data data >/dev/null || { show_logs; die "discard-my-data on b failed"; }
[ "$(field b '["metadata"]["fresh"]')" = True ] || die "b's metadata not fresh after discard-my-data"
t0=$(date +%s)
# The primary retries at most every 10 s.
wait_peer_state "$conf" a connected 15 || { show_logs; die "a did not reconnect within 15 s of the discard"; }
wait_in_sync "$conf" a 30 || { show_logs; die "the full sync after the discard did not finish within 30 s"; }
wait_in_sync "$conf" b 10 || { show_logs; die "b does not say in sync after the full sync"; }
log "a reconnected and synchronised b in $(($(date +%s) - t0)) s"
[ "$(field a '["sync"]["state"]')" = "done" ] || die "a: sync.state $(field a '["sync"]["state"]'), want done"
[ "$(field a '["sync"]["full"]')" = True ] || die "a: the sync after the discard was not full"
[ "$(field a '["sync"]["direction"]')" = to-peer ] || die "a: the sync after the discard was not to the peer"
[ "$(field a '["sync"]["total_bytes"]')" = $((64 * MIB)) ] || die "a: the full sync did not cover the device"
for n in a b; do
  _peer_state_is "$conf" "$n" connected || die "node $n: peer not connected after the recovery"
  [ "$(field $n '["peer"]["split_brain"]')" = False ] || die "node $n: still split-brain after the recovery"
done
# The hook saw the recovery sync on a, after the split-brain.
tail_a="$(sed -n '/^split-brain /,$p' "$T/hook-a.out")"
grep -qx "syncstart data to-peer $((64 * MIB))" <<<"$tail_a" || { show_logs; die "a: no syncstart hook for the recovery"; }
wait_for 10 "syncdone hook on a" bash -c "sed -n '/^split-brain /,\$p' '$T/hook-a.out' | grep -qx 'syncdone data $((64 * MIB)) 0'" \
  || { show_logs; die "a: no syncdone hook for the recovery"; }
[ "$(grep -c '^syncstart ' "$T/hook-a.out")" -gt "$syncstarts0" ] || die "a: syncstart count did not grow"

stop_daemon "$pid_a"
stop_daemon "$pid_b"
cmp "$dir/disk-a.img" "$dir/disk-b.img" || die "the disks differ after the recovery sync"
# a's split-brain write survived; b's is gone.
_qemu_io "$dir/disk-b.img" "read -P 0xaa 0 $MIB" "read -P 0x11 $MIB $((3 * MIB))" >/dev/null
log "t_split_brain: detected on both sides, hooks and status agree, recovered by discard-my-data + full sync"
