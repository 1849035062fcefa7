#!/usr/bin/env bash
# after_split_brain, two real daemons over TCP on loopback. For each
# scenario the pair starts in sync; a writes alone (b stopped), then b is
# promoted and writes alone (a stopped): both changed, a split-brain. Then a
# is made primary and b secondary, and the policy decides:
#  - manual and discard-zero-changes: refused both ways (status split-brain);
#  - discard-least-changes, a changed more: b's changes are discarded, the
#    union of both maps is copied a -> b (not the device), the hook
#    split-brain-resolved runs on both, the disks end identical with a's
#    data and none of b's;
#  - discard-least-changes, a changed less: refused while a is primary
#    ("never done under its users"); roles swapped (b primary, a
#    secondary): resolved with a as the target;
#  - discard-younger-primary: b started writing alone later: b discarded.
# And a side that wrote nothing is no split-brain whatever the policy: the
# pair resynchronises by itself (primary-newer).
source "$(dirname "$0")/lib.sh"
require_root
require_cmd qemu-io cmp

MIB=1048576
EXT=$((2 * MIB))
dir="$T/pair"
mkdir -p "$dir"
conf="$dir/hastnbd.yaml"
read -r pa pb <<<"$(free_ports 2)"
field() { status_field "$conf" "$@"; }
write_on() {  # NODE PATTERN OFFSET LENGTH: through NODE's export
  _qemu_io "$(nbd_uri "$(nbd_socket "$conf" "$1" data)" data)" "write -P $2 $3 $4" "flush" >/dev/null
}
pattern_at() {  # FILE OFFSET: the byte there, as two hex digits
  dd if="$1" bs=1 skip="$2" count=1 status=none | od -An -tx1 | tr -d ' \n'
}

# scenario POLICY A_EXTENTS B_EXTENTS: a fresh pair; a writes 0xaa over
# A_EXTENTS extents from extent 4, then b writes 0xbb over B_EXTENTS from
# extent 8 (overlapping a's from extent 8 on). Leaves a primary and b
# secondary (b started last), both daemons running.
scenario() {
  local policy="$1" na="$2" nb="$3"
  stop_all
  rm -rf "$dir"/*
  for n in a b; do hook_recorder "$T/hook-$n.sh" "$T/hook-$n.out"; done
  PAIR_DISK_SIZE=64M PAIR_KEEPDIRTY=4 write_pair_config "$conf" "127.0.0.1:$pa" "127.0.0.1:$pb" \
    "after_split_brain: $policy"
  for n in a b; do sed -i "s|^      $n: {|      $n: {exec: $T/hook-$n.sh, |" "$conf"; done
  start_pair "$conf"
  pid_a=$PAIR_PID_A pid_b=$PAIR_PID_B
  stop_daemon "$pid_b"
  [ "$na" -gt 0 ] && write_on a 0xaa $((4 * EXT)) $((na * EXT))
  stop_daemon "$pid_a"
  start_daemon "$conf" b data
  pid_b=$DAEMON_PID
  make_primary "$conf" b data
  sleep 0.1  # a later generation start for b
  [ "$nb" -gt 0 ] && write_on b 0xbb $((8 * EXT)) $((nb * EXT))
  hastnbd_ctl "$conf" b role secondary data >/dev/null || die "role secondary on b failed"
  start_daemon "$conf" a data
  pid_a=$DAEMON_PID
  make_primary "$conf" a data
}
stop_all() {
  [ -n "${pid_a:-}" ] && stop_daemon "$pid_a" 2>/dev/null
  [ -n "${pid_b:-}" ] && stop_daemon "$pid_b" 2>/dev/null
  pid_a="" pid_b=""
  true
}
refused() {  # TAG PATTERN: a stays in split-brain with PATTERN in b's refusal
  wait_for 15 "split-brain seen by a" eval '[ "$(field a "[\"peer\"][\"state\"]")" = split-brain ]' \
    || { show_logs; die "$1: a does not report split-brain"; }
  [ "$(field b '["peer"]["split_brain"]')" = True ] || die "$1: b does not report split-brain"
  grep -q "$2" "$(daemon_log a)" || { show_log "$(daemon_log a)"; die "$1: a's log does not say '$2'"; }
  grep -q '^split-brain-resolved' "$T/hook-a.out" "$T/hook-b.out" && die "$1: resolved although refused"
  log "$1: refused, split-brain kept"
}
resolved() {  # TAG WINNER LOSER A_EXTENTS B_EXTENTS
  local tag="$1" winner="$2" loser="$3"
  wait_peer_state "$conf" "$winner" connected 15 || { show_logs; die "$tag: no connection"; }
  wait_in_sync "$conf" "$winner" 60 || { show_logs; die "$tag: the resolving sync did not finish"; }
  [ "$(field "$winner" '["peer"]["decision"]')" = split-brain-resolved ] || die "$tag: decision $(field "$winner" '["peer"]["decision"]')"
  grep -qx "split-brain-resolved data $POLICY $loser" "$T/hook-$winner.out" || { cat "$T/hook-$winner.out"; die "$tag: no hook on $winner"; }
  grep -qx "split-brain-resolved data $POLICY $loser" "$T/hook-$loser.out" || { cat "$T/hook-$loser.out"; die "$tag: no hook on $loser"; }
  # Not a full sync: the union of the changed extents (+ kept-dirty ones).
  [ "$(field "$winner" '["sync"]["full"]')" = False ] || die "$tag: a full sync"
  [ "$(field "$winner" '["sync"]["total_bytes"]')" -le $((($4 + $5 + 8) * EXT)) ] || die "$tag: synchronised $(field "$winner" '["sync"]["total_bytes"]') bytes"
  nbd_flush "$(nbd_socket "$conf" "$winner" data)"
  cmp "$dir/disk-a.img" "$dir/disk-b.img" || die "$tag: the disks differ"
  [ "$(field "$winner" '["in_sync"]')" = True ] && [ "$(field "$loser" '["metadata"]["inconsistent"]')" = False ] \
    || die "$tag: not in step afterwards"
  log "$tag: resolved, $loser discarded, $(field "$winner" '["sync"]["total_bytes"]') bytes synchronised, disks identical"
}
hastnbd_ctl_b_secondary() { hastnbd_ctl "$conf" b role secondary data >/dev/null || die "role secondary on b failed"; }

for POLICY in manual discard-zero-changes; do
  scenario "$POLICY" 6 2
  refused "$POLICY" "split-brain: both nodes wrote"
done

POLICY=discard-least-changes
scenario "$POLICY" 6 2
resolved "$POLICY, a changed 6 extents, b 2" a b 6 2
# a's data everywhere, b's gone: 0xaa where both wrote (extent 8), a's
# pre-split content (zero) where only b wrote (extent 12).
[ "$(pattern_at "$dir/disk-b.img" $((8 * EXT)))" = aa ] || die "b still holds its own data at extent 8"
[ "$(pattern_at "$dir/disk-b.img" $((9 * EXT + 5)))" = aa ] || die "b still holds its own data at extent 9"

scenario "$POLICY" 2 6
refused "$POLICY, a changed less" "never done under its users"
hastnbd_ctl "$conf" a role secondary data >/dev/null || die "role secondary on a failed"
make_primary "$conf" b data
resolved "$POLICY, roles swapped" b a 2 6
[ "$(pattern_at "$dir/disk-a.img" $((8 * EXT)))" = bb ] || die "a kept its data at extent 8"
[ "$(pattern_at "$dir/disk-a.img" $((4 * EXT)))" = 00 ] || die "a kept its data at extent 4"

POLICY=discard-younger-primary
scenario "$POLICY" 2 6   # b promoted and wrote later, with more changes
resolved "$POLICY" a b 2 6
[ "$(pattern_at "$dir/disk-b.img" $((12 * EXT)))" = 00 ] || die "b kept its data at extent 12"

# A side that wrote nothing: no split-brain, whatever the policy.
POLICY=manual
scenario "$POLICY" 3 0
wait_in_sync "$conf" a 60 || { show_logs; die "no resync when b wrote nothing"; }
[ "$(field a '["peer"]["decision"]')" = primary-newer ] || die "decision $(field a '["peer"]["decision"]') when b wrote nothing"
cmp "$dir/disk-a.img" "$dir/disk-b.img" || die "the disks differ after b wrote nothing"
log "b promoted but wrote nothing: primary-newer, resynchronised by itself"
stop_all
