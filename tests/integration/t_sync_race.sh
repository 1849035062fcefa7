#!/usr/bin/env bash
# Application writes racing a running synchronisation: the primary a holds
# 128 MiB of random data, written through its export while it was alone;
# then the secondary b connects fresh and a rate-limited full sync (8 MiB/s,
# ~16 s) starts. While it runs, a verified fio run goes through a: random
# 4k/64k writes over the whole device on two connections (the sync's copy
# of an extent and application writes to it contend in the range lock).
# fio must verify every block, the sync must finish, and after a flush and
# a clean stop the two disk files must be identical: no copy of an extent
# may overwrite newer application data on b, no application write may be
# lost. The device is sized so that fio (~5-8 s here) fits inside the sync.
source "$(dirname "$0")/lib.sh"
require_root
require_cmd fio qemu-io nbdcopy cmp

MIB=1048576
SIZE=$((128 * MIB))
RATE=8MiB
FIO_BYTES=$((SIZE / 2))    # per job: job 0 the first half, job 1 the second

dir="$T/pair"
mkdir -p "$dir"
conf="$dir/hastnbd.yaml"
read -r pa pb <<<"$(free_ports 2)"
PAIR_DISK_SIZE=$SIZE write_pair_config "$conf" "127.0.0.1:$pa" "127.0.0.1:$pb" "sync_rate: $RATE"
create_resource "$conf" a data >/dev/null
create_resource "$conf" b data >/dev/null

show_logs() {
  show_log "$(daemon_log a)"
  show_log "$(daemon_log b)"
}
field() {  # NODE SUBSCRIPT
  status_field "$conf" "$1" "$2"
}

head -c "$SIZE" /dev/urandom >"$T/fill.bin"

# b runs from the start but stays in init, so nothing listens for a yet.
start_daemon "$conf" b data
pid_b=$DAEMON_PID
start_daemon "$conf" a data
pid_a=$DAEMON_PID
make_primary "$conf" a data
sock="$(nbd_socket "$conf" a data)"
uri="$(nbd_uri "$sock" data)"

# The whole device full of random data, written through a's export.
with_timeout 120 nbdcopy --flush "$T/fill.bin" "$uri" || die "filling a through nbdcopy failed"
cmp "$T/fill.bin" "$dir/disk-a.img" || die "a's disk does not hold what was written through its export"
rm -f "$T/fill.bin"
[ "$(field a '["peer"]["state"]')" != connected ] || die "a connected to b before b was secondary"
log "a filled with $((SIZE / MIB)) MiB of random data while alone"

# b becomes secondary: a connects at its next retry (at most 10 s) and a
# full sync begins.
hastnbd_ctl "$conf" b role secondary data >/dev/null || die "role secondary on b failed"
wait_peer_state "$conf" a connected 15 || { show_logs; die "a did not connect to b within 15 s"; }
_sync_running() { [ "$(field a '["sync"]["state"]')" = running ]; }
wait_for 10 "the sync to run on a" _sync_running || { show_logs; die "no sync running on a after connecting"; }
st="$(hastnbd_ctl "$conf" a status --json data)"
get() { "$HASTNBD_PYTHON" -c "import json,sys; s=json.load(sys.stdin); print(s$1)" <<<"$st"; }
[ "$(get '["sync"]["full"]')" = True ] || die "the sync to a fresh secondary is not full"
[ "$(get '["sync"]["direction"]')" = to-peer ] || die "the sync does not go to the peer"
[ "$(get '["sync"]["total_bytes"]')" = "$SIZE" ] || die "sync.total_bytes $(get '["sync"]["total_bytes"]'), want $SIZE"

# fio while the sync runs.
fio_verify_start "$sock" "$FIO_BYTES" 0 60 race
st="$(hastnbd_ctl "$conf" a status --json data)"
done0="$(get '["sync"]["done_bytes"]')"
state0="$(get '["sync"]["state"]')"
log "fio started with the sync $state0 at $((done0 / MIB)) of $((SIZE / MIB)) MiB"
[ "$state0" = running ] && [ "$done0" -lt "$SIZE" ] || die "the sync was not running when fio started ($state0, $done0 bytes)"
fio_verify_check race
st="$(hastnbd_ctl "$conf" a status --json data)"
done1="$(get '["sync"]["done_bytes"]')"
state1="$(get '["sync"]["state"]')"
log "fio finished with the sync $state1 at $((done1 / MIB)) of $((SIZE / MIB)) MiB"
# The sync went on while fio ran (ideally it is still running now; on a
# loaded machine fio may outlast it, which still leaves an overlap).
[ "$done1" -gt "$done0" ] || die "the sync made no progress while fio ran ($done0 -> $done1 bytes)"
[ "$state1" = running ] || log "note: the sync was already $state1 when fio finished (slow fio)"

t0=$(date +%s)
wait_in_sync "$conf" a 90 || { show_logs; die "a not in sync within 90 s"; }
log "in sync $(($(date +%s) - t0)) s after fio; sync $(field a '["sync"]["state"]') in $(field a '["sync"]["elapsed_seconds"]') s"
[ "$(field a '["sync"]["state"]')" = "done" ] || die "sync.state is not done"
nbd_flush "$sock"
wait_in_sync "$conf" b 10 || { show_logs; die "b does not say in sync"; }
stop_daemon "$pid_a"
stop_daemon "$pid_b"
cmp "$dir/disk-a.img" "$dir/disk-b.img" || die "the disks differ after a sync raced by application writes"
log "t_sync_race: fio raced a full sync, every block verified, disks identical"
