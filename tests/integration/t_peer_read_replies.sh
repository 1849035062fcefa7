#!/usr/bin/env bash
# The primary's read-through-the-secondary path against a lying secondary.
# The primary's disk fails every read on demand (nbdkit memory + error
# filter, through nbdfuse and a direct-I/O loop device, as in
# t_remote_read), so a client read goes to the secondary as a READ record.
# The secondary is hostile_peer.py, answering the READ:
#   correct      a proper READ_REPLY (the control): the client gets its bytes;
#   short        a READ_REPLY for half the length asked for;
#   other_range  a READ_REPLY for another offset;
#   written      a WRITTEN instead of a READ_REPLY (no data at all).
# For each wrong answer the primary must not use it: the client's read
# fails (EIO) instead of returning bytes that are not the data, the primary
# keeps running, and it drops the link to the peer that broke the protocol.
source "$(dirname "$0")/lib.sh"
require_root
require_cmd nbdkit nbdfuse losetup qemu-io ss

HOSTILE="$LIB_DIR/hostile_peer.py"
MIB=1048576

nbdkit -U "$T/faulty.sock" -P "$T/nbdkit.pid" --filter=error memory 256M \
  error-pread-rate=100% error-pread=EIO "error-pread-file=$T/trigger" || die "nbdkit failed"
wait_for 10 "nbdkit pid file" test -s "$T/nbdkit.pid" || die "nbdkit did not start"
on_exit "kill \$(cat $T/nbdkit.pid)"
mkdir -p "$T/fuse"
nbdfuse "$T/fuse/disk" "nbd+unix:///?socket=$T/faulty.sock" </dev/null >"$T/nbdfuse.log" 2>&1 &
track_pid $!
wait_for 10 "nbdfuse" test -e "$T/fuse/disk" || die "nbdfuse did not start"
on_exit "umount $T/fuse"
dev="$(losetup -f --show --direct-io=on "$T/fuse/disk")" || die "losetup failed"
on_exit "_loop_detach $dev $T/fuse/disk"

read -r pa pb <<<"$(free_ports 2)"
conf="$T/hastnbd.yaml"
write_pair_config "$conf" "127.0.0.1:$pa" "127.0.0.1:$pb"
sed -i "s|local: $T/disk-a.img|local: $dev|" "$conf"
grep -q "local: $dev" "$conf" || die "config does not use $dev"
create_resource "$conf" a data >/dev/null
log_a="$(daemon_log a)"

# variant NAME: fake secondary NAME, primary up and connected, all local
# reads failing, one 128 KiB client read. Leaves the read's output in
# $T/read-NAME.out and its exit status in READ_RC.
variant() {
  local v="$1"
  rm -f "$T/trigger" "$T/hostile.ready"
  HOSTILE_READY="$T/hostile.ready" with_timeout 60 "$HASTNBD_PYTHON" "$HOSTILE" secondary 127.0.0.1 "$pb" \
    bad_read_reply --variant "$v" --key-file "$T/peer.key" --deadline 30 >"$T/fake-$v.json" 2>"$T/fake-$v.err" &
  FAKE_PID=$!
  track_pid "$FAKE_PID"
  wait_for 10 "fake secondary ($v)" test -e "$T/hostile.ready" || die "$v: fake secondary did not start"
  start_daemon "$conf" a data
  PID_A=$DAEMON_PID
  make_primary "$conf" a data
  wait_peer_state "$conf" a connected 15 || { show_log "$log_a"; die "$v: primary did not connect to the fake"; }
  # The fake is fresh: the primary full-syncs to it first (the fake acks
  # every copy). Until an extent is synchronised the secondary's copy of it
  # is not the data, and the primary rightly never reads it there.
  wait_in_sync "$conf" a 30 || { show_log "$log_a"; die "$v: the full sync to the fake did not finish"; }
  touch "$T/trigger"  # every local read fails from now on
  READ_RC=0
  with_timeout 30 qemu-io -f raw -c "read -v $MIB 131072" "$(nbd_uri "$(nbd_socket "$conf" a data)" data)" \
    >"$T/read-$v.out" 2>&1 || READ_RC=$?
  rm -f "$T/trigger"
  [ "$READ_RC" -ne 124 ] || die "$v: the client read hung"
}

# The control: a correct READ_REPLY is served to the client.
variant correct
[ "$READ_RC" -eq 0 ] && grep -q "^read 131072/131072" "$T/read-correct.out" \
  || { cat "$T/read-correct.out" >&2; die "correct: read through the secondary failed (is the setup right?)"; }
grep -q "^00100000:  c3 c3 c3 c3" "$T/read-correct.out" || { head -n 5 "$T/read-correct.out" >&2; die "correct: not the secondary's bytes"; }
[ "$(status_field "$conf" a '["writes"]["remote_reads"]')" -ge 1 ] || die "correct: no remote read counted"
stop_daemon "$PID_A"
kill_pid "$FAKE_PID" 2
log "correct: a proper READ_REPLY is served to the client"

for v in short other_range written; do
  n=$(wc -l <"$log_a")
  variant "$v"
  sleep 0.5
  if ! kill -0 "$PID_A" 2>/dev/null; then
    rc=0
    wait "$PID_A" 2>/dev/null || rc=$?
    log_since "$log_a" "$n" >&2
    die "$v: the primary died (exit status $rc$( [ "$rc" -gt 128 ] && echo ", signal $((rc - 128))")) when the secondary answered a READ with $v"
  fi
  if [ "$READ_RC" -eq 0 ]; then
    head -n 3 "$T/read-$v.out" >&2
    die "$v: the primary served a client read from a bogus answer to its READ (want EIO)"
  fi
  grep -q "Input/output error" "$T/read-$v.out" || { cat "$T/read-$v.out" >&2; die "$v: read failed, but not with EIO"; }
  wait_peer_state_not "$conf" a connected 5 \
    || die "$v: the primary kept the link to a secondary that answered a READ with $v"
  hastnbd_ctl "$conf" a status data >/dev/null || die "$v: primary does not answer status"
  stop_daemon "$PID_A"
  kill_pid "$FAKE_PID" 2
  log "$v: refused; the client got EIO, the primary dropped the link and kept running"
done
log "t_peer_read_replies: only a READ_REPLY that matches the READ is served"
