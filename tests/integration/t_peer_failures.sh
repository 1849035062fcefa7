#!/usr/bin/env bash
# The secondary fails under load and the primary keeps serving.
#  (a) kill -9 of the secondary during a verified fio run through the
#      primary: fio completes without an error, the primary sees the peer
#      gone within timeout + 2 s, counts degraded writes, bumps localcnt once
#      and keeps the extents written meanwhile dirty (more than keepdirty);
#      the secondary is restarted, the primary reconnects by itself and
#      catches up only those extents (the disks are then identical), after
#      which writes are replicated again (the bytes land on the secondary).
#  (b) SIGSTOP of the secondary under load: the primary notices within the
#      timeout (plus slack) and fio completes; SIGCONT: the secondary drops the
#      dead connection, accepts a new one and replication works again.
# Every client request completes: fio runs under a deadline.
source "$(dirname "$0")/lib.sh"
require_root
require_cmd fio qemu-io ss cmp

KEEPDIRTY=8
TIMEOUT=3
MIB=1048576
BYTES=$((48 * MIB))    # per fio job; rate-limited so the run spans the failure
RATE=12m               # per job: ~4 s of writing

dir="$T/pair"
mkdir -p "$dir"
conf="$dir/hastnbd.yaml"
read -r pa pb <<<"$(free_ports 2)"
PAIR_KEEPDIRTY=$KEEPDIRTY PAIR_TIMEOUT=$TIMEOUT write_pair_config "$conf" "127.0.0.1:$pa" "127.0.0.1:$pb"
start_pair "$conf"
pid_a=$PAIR_PID_A
pid_b=$PAIR_PID_B
sock="$(nbd_socket "$conf" a data)"
uri="$(nbd_uri "$sock" data)"

now_ms() { date +%s%3N; }

# check_replicates OFFSET TAG: a 1 MiB pattern written and flushed through
# the primary must be replicated (no degraded write) and be on the
# secondary's disk, byte for byte.
check_replicates() {
  local off="$1" tag="$2" deg0 deg1
  deg0="$(status_field "$conf" a '["writes"]["degraded"]')"
  head -c $MIB /dev/urandom >"$T/pat-$tag.bin"
  with_timeout 60 qemu-io -f raw -c "write -s $T/pat-$tag.bin $off $MIB" -c flush "$uri" >"$T/qio-$tag.out" 2>&1 \
    || { cat "$T/qio-$tag.out" >&2; die "$tag: write through the primary failed"; }
  grep -q "^wrote $MIB/$MIB bytes" "$T/qio-$tag.out" || { cat "$T/qio-$tag.out" >&2; die "$tag: qemu-io did not write"; }
  deg1="$(status_field "$conf" a '["writes"]["degraded"]')"
  [ "$deg1" = "$deg0" ] || die "$tag: the write after reconnecting was degraded ($deg0 -> $deg1)"
  cmp -n $MIB -i "0:$off" "$T/pat-$tag.bin" "$dir/disk-b.img" \
    || die "$tag: the write after reconnecting is not on the secondary's disk"
  cmp -n $MIB -i "0:$off" "$T/pat-$tag.bin" "$dir/disk-a.img" \
    || die "$tag: the write is not on the primary's disk"
  log "$tag: a write after reconnecting reached the secondary's disk"
}

# --- (a) kill -9 ----------------------------------------------------------------
[ "$(status_field "$conf" a '["metadata"]["localcnt"]')" = 0 ] || die "fresh primary has localcnt != 0"
fio_verify_start "$sock" "$BYTES" 0 60 kill9 --rate="$RATE"
sleep 1.5
kill -0 "$FIO_PID" 2>/dev/null || die "fio finished before the secondary was killed (too fast to test)"
_peer_state_is "$conf" a connected || die "(a) link not connected before the kill: $(status_field "$conf" a '["peer"]')"
t0=$(now_ms)
kill -KILL "$pid_b"
{ wait "$pid_b"; } 2>/dev/null || true
if ! wait_peer_state_not "$conf" a connected $((TIMEOUT + 2)); then
  show_log "$(daemon_log a)"
  die "(a) the primary still shows the peer connected $((TIMEOUT + 2)) s after kill -9 of the secondary"
fi
log "(a) primary noticed the dead secondary after $(($(now_ms) - t0)) ms"
kill -0 "$FIO_PID" 2>/dev/null || log "(a) warning: fio was already done when the peer loss was noticed"
fio_verify_check kill9
log "(a) fio completed $(($(now_ms) - t0)) ms after the kill"

st="$(hastnbd_ctl "$conf" a status --json data)"
get() { "$HASTNBD_PYTHON" -c "import json,sys; s=json.load(sys.stdin); print(s$1)" <<<"$st"; }
[ "$(get '["peer"]["state"]')" != connected ] || die "(a) peer connected with the secondary dead"
degraded="$(get '["writes"]["degraded"]')"
[ "$degraded" -gt 0 ] || die "(a) writes.degraded is 0 after writing without the secondary"
[ "$(get '["metadata"]["localcnt"]')" = 1 ] || die "(a) localcnt $(get '["metadata"]["localcnt"]'), want 1 (one degraded period)"
dirty="$(get '["dirty"]["extents"]')"
[ "$dirty" -gt "$KEEPDIRTY" ] || die "(a) only $dirty extents dirty after degraded writes over 48 extents (keepdirty $KEEPDIRTY)"
[ "$(dump_field "$conf" a '["dirty_extents"]')" = "$dirty" ] || die "(a) dump and status disagree on dirty extents"
[ "$(dump_field "$conf" a '["localcnt"]')" = 1 ] || die "(a) localcnt 1 in status but not in the metadata file"
log "(a) degraded: $degraded writes, localcnt 1, $dirty extents dirty"

# Restart the secondary; the primary reconnects by itself (backoff <= 10 s).
t0=$(now_ms)
start_daemon "$conf" b data
pid_b=$DAEMON_PID
hastnbd_ctl "$conf" b role secondary data >/dev/null || die "(a) role secondary after restart failed"
if ! wait_peer_state "$conf" a connected 15; then
  show_log "$(daemon_log a)"
  die "(a) the primary did not reconnect within 15 s of the secondary's restart"
fi
log "(a) reconnected $(($(now_ms) - t0)) ms after the restart"
# The reconnect catches up exactly what was written while degraded (the
# union with the secondary's own keepdirty extents), and then the disks agree.
wait_catch_up "$conf" a "$dirty" "$KEEPDIRTY" "(a)"
cmp "$dir/disk-a.img" "$dir/disk-b.img" || die "(a) the disks differ after the catch-up"
log "(a) caught up $CAUGHT_UP bytes; disks identical"
check_replicates $((200 * MIB)) after-kill9

# --- (b) SIGSTOP ----------------------------------------------------------------
connects_b="$(status_field "$conf" b '["peer"]["connects"]')"
connects_a="$(status_field "$conf" a '["peer"]["connects"]')"
deg0="$(status_field "$conf" a '["writes"]["degraded"]')"
fio_verify_start "$sock" "$BYTES" $((100 * MIB)) 60 sigstop --rate="$RATE"
sleep 1
kill -0 "$FIO_PID" 2>/dev/null || die "fio finished before the secondary was stopped"
t0=$(now_ms)
kill -STOP "$pid_b"
on_exit "kill -CONT $pid_b 2>/dev/null"
if ! wait_peer_state_not "$conf" a connected $((TIMEOUT + 3)); then
  kill -CONT "$pid_b"
  show_log "$(daemon_log a)"
  die "(b) the primary still shows the stopped secondary connected after $((TIMEOUT + 3)) s"
fi
log "(b) primary dropped the stopped secondary after $(($(now_ms) - t0)) ms"
fio_verify_check sigstop
log "(b) fio completed $(($(now_ms) - t0)) ms after SIGSTOP"
[ "$(status_field "$conf" a '["writes"]["degraded"]')" -gt "$deg0" ] || die "(b) no degraded write while the secondary was stopped"
[ "$(status_field "$conf" a '["nbd"]["requests_in_flight"]')" = 0 ] || die "(b) NBD requests still in flight"

# Stay stopped until a reconnect attempt has hit the frozen secondary (the
# kernel completes the TCP handshake, nobody answers the Hello): such dead
# connections wait in its accept queue and must not spoil the reconnect.
_handshake_timed_out() {
  status_field "$conf" a '["peer"]["last_error"]' | grep -q "^handshake: "
}
wait_for 12 "a reconnect attempt to time out in the handshake" _handshake_timed_out \
  || die "(b) no reconnect attempt while the secondary was stopped: $(status_field "$conf" a '["peer"]')"
t0=$(now_ms)
kill -CONT "$pid_b"
if ! wait_peer_state "$conf" a connected 15; then
  show_log "$(daemon_log a)"
  show_log "$(daemon_log b)"
  die "(b) the primary did not reconnect within 15 s of SIGCONT"
fi
log "(b) reconnected $(($(now_ms) - t0)) ms after SIGCONT"
kill -0 "$pid_b" || die "(b) the secondary died after SIGCONT"
# The link must be stable again: still connected a timeout later, and the
# secondary serves a new connection (not the one that died).
sleep $((TIMEOUT + 1))
_peer_state_is "$conf" a connected || die "(b) link dropped again after reconnecting: $(status_field "$conf" a '["peer"]')"
_peer_state_is "$conf" b connected || die "(b) secondary not connected after reconnect: $(status_field "$conf" b '["peer"]')"
[ "$(status_field "$conf" b '["peer"]["connects"]')" -gt "$connects_b" ] || die "(b) the secondary accepted no new connection"
[ "$(status_field "$conf" a '["peer"]["connects"]')" -gt "$connects_a" ] || die "(b) the primary made no new connection"
check_replicates $((210 * MIB)) after-sigstop

# Both still stop cleanly.
stop_daemon "$pid_a"
stop_daemon "$pid_b"
log "t_peer_failures: kill -9 and SIGSTOP of the secondary survived, reconnects by itself"
