#!/usr/bin/env bash
# The guest half of tests/integration/t_kernel.sh: runs INSIDE the VM that
# tests/kernel/run-vm boots (Debian's kernel, nbd.ko loaded), with hastnbd's
# two disks as virtio-blk devices /dev/vda (node a) and /dev/vdb (node b).
#
#   guest_t_kernel.sh [client] [device] [restart] [takeover]
#   (default: $HASTNBD_KERNEL_PARTS, else all four, in that order)
#
# Both parts run the same failover with an ext4 file system on a real kernel
# /dev/nbdN, two daemons on 127.0.0.1:
#   1. a fresh pair: b secondary, a primary; the initial full sync;
#   2. a /dev/nbdN is attached to a, with the device's size;
#   3. mkfs.ext4, mount, files written (sha256 recorded), sync; the pair
#      reaches in_sync with the file system still mounted;
#   4. kill -9 of daemon a; the dead mount is lazily unmounted;
#   5. b promoted, another /dev/nbdN attached to b: fsck.ext4 -fn is clean,
#      the files' sha256 are intact;
#   6. that device detached again.
# "client": nbd-client 3.24 attaches /dev/nbd2 (a) and /dev/nbd3 (b) through
# hastnbd's NBD Unix socket (netlink, -b 4096), the route every release
# supports.
# "device": `nbd: {device: /dev/nbd0, connections: 2}` in the resource and
# `nbd: {device: /dev/nbd1}` in node b's section, so `hastnbd-ctl role
# primary` attaches the device itself (kernel nbd netlink, socketpairs) and
# `role secondary` detaches it; the demotion must be refused while the file
# system is mounted and while a process holds the device open. status --json
# shows .nbd.device = {path, attached, ...}.
# "restart": `nbd: {device: /dev/nbd0}`, ext4 mounted on it and a writer
# (tests/kernel/fs_writer.py) writing and fdatasync-ing 4 KiB records; daemon
# a is killed (SIGKILL) and started again, then stopped (SIGTERM) and started
# again $HASTNBD_RESTARTS times (default 20): each time it resumes as primary
# by itself and re-takes /dev/nbd0 (NBD_CMD_RECONFIGURE); the writer sees no
# error, the kernel logs no I/O or ext4 error, every acknowledged record is
# there, e2fsck -fn is clean, and after the resync the disks are identical.
# "takeover": (a) a restart later than nbd.reconnect_timeout: the kernel
# failed the device's I/O meanwhile, the new daemon re-takes it and status
# says it came too late; (b) b promoted while a's daemon was down: a started
# again sees b primary and does not resume; (c) /dev/nbd0 attached by
# nbd-client: a restarted daemon stays init and leaves it alone.
# shellcheck source=tests/integration/lib.sh
source "$(dirname "$0")/../integration/lib.sh"
require_root
[ "${HASTNBD_VM:-}" = 1 ] || die "guest_t_kernel.sh runs inside the VM (tests/kernel/run-vm)"
require_cmd nbd-client mkfs.ext4 e2fsck blockdev sha256sum
require_hastnbd

# Undo steps must not eat the VM's time: a stuck umount on a dead device
# would otherwise hold each step for a minute.
_CLEANUP_STEP_TIMEOUT=15
# Under TCG everything is 10-30x slower: the peer timeout and every wait
# are scaled (a 3 s keepalive timeout could fire on a merely slow VM).
PEER_TIMEOUT=15
parts=("$@")
# HASTNBD_KERNEL_PARTS (passed into the VM by run-vm) picks parts by hand.
# shellcheck disable=SC2206
[ ${#parts[@]} -gt 0 ] || parts=(${HASTNBD_KERNEL_PARTS:-client device restart takeover})

# lib.sh's wait_for counts polls, not seconds: fine on the host, but here a
# poll (a fork and exec over 9p, a Python start for a status field) takes up
# to a second or more, so "60 s" became ten minutes. The same contract on a
# real deadline.
wait_for() {
  local secs="$1" desc="$2" deadline=$((SECONDS + $1))
  shift 2
  while :; do
    if "$@" >/dev/null 2>&1; then
      return 0
    fi
    if [ -n "${WAIT_PID:-}" ] && ! kill -0 "$WAIT_PID" 2>/dev/null; then
      echo "process $WAIT_PID exited while waiting for $desc" >&2
      return 1
    fi
    [ "$SECONDS" -lt "$deadline" ] || break
    sleep 0.2
  done
  echo "timed out after ${secs}s waiting for $desc" >&2
  return 1
}

# On failure: the kernel's view and both daemons' logs, on the console.
# shellcheck disable=SC2016  # expanded when the step runs
on_exit '[ -e "$T/passed" ] || { echo "---- dmesg (last 60 lines) ----"; dmesg | tail -n 60; show_log "$(daemon_log a)"; show_log "$(daemon_log b)"; }'

SIZE="$(blockdev --getsize64 /dev/vda)"
[ "$SIZE" = "$(blockdev --getsize64 /dev/vdb)" ] || die "/dev/vda and /dev/vdb differ in size"

# status_of CONF NODE EXPR: a Python expression over the status document s.
status_of() {
  local out
  out="$(hastnbd_ctl "$1" "$2" status --json data)" || return 1
  "$HASTNBD_PYTHON" -c "import json,sys; s=json.load(sys.stdin); print($3)" <<<"$out"
}

# nbd_connected DEV: the kernel has a server for /dev/nbdN (the pid file
# exists only while connected).
nbd_connected() {
  [ -e "/sys/block/${1#/dev/}/pid" ]
}

nbd_disconnected() {
  ! nbd_connected "$1"
}

pid_gone() {
  ! kill -0 "$1" 2>/dev/null
}

# nbd_size_is DEV BYTES: from sysfs (512-byte sectors) without a fork, as it
# is polled.
nbd_size_is() {
  local sectors
  read -r sectors <"/sys/block/${1#/dev/}/size" || return 1
  [ $((sectors * 512)) = "$2" ]
}

# nbd_detach_quietly DEV: for the cleanup stack; nbd-client -d speaks netlink
# to any /dev/nbdN, whoever attached it.
nbd_detach_quietly() {
  nbd_connected "$1" || return 0
  timeout 10 nbd-client -d "$1" >/dev/null 2>&1 || true
}

# pair_up DIR PORT_A PORT_B [YAML-LINE...]: configuration (extra lines go into
# the resource section, NODE_B_EXTRA into node b's), metadata, both daemons,
# b secondary. Sets CONF. Each part has its own ports: the previous part's
# daemon a died by SIGKILL.
pair_up() {
  local dir="$1" pa="$2" pb="$3" conf
  shift 3
  mkdir -p "$dir"
  # write_pair_config uses DIR/disk-N.img unless present: the virtio disks.
  ln -sf /dev/vda "$dir/disk-a.img"
  ln -sf /dev/vdb "$dir/disk-b.img"
  conf="$dir/hastnbd.yaml"
  PAIR_TIMEOUT=$PEER_TIMEOUT PAIR_KEEPDIRTY=8 write_pair_config "$conf" "127.0.0.1:$pa" "127.0.0.1:$pb" "$@"
  if [ -n "${NODE_B_EXTRA:-}" ]; then
    sed -i "s|^\(      b: {.*\)}\$|\1, $NODE_B_EXTRA}|" "$conf"
    grep -q "$NODE_B_EXTRA" "$conf" || die "could not add '$NODE_B_EXTRA' to node b in $conf"
  fi
  echo "---- $conf ----" >&2
  cat "$conf" >&2
  create_resource "$conf" a data --force >/dev/null
  create_resource "$conf" b data --force >/dev/null
  start_daemon "$conf" b data
  start_daemon "$conf" a data
  hastnbd_ctl "$conf" b role secondary data >/dev/null || die "role secondary on b failed"
  CONF="$conf"
}

# wait_pair_synced CONF: a connected to b and in sync (the initial full sync).
wait_pair_synced() {
  local conf="$1" t0=$SECONDS
  wait_peer_state "$conf" a connected 60 || die "a did not connect to b within 60 s"
  wait_in_sync "$conf" a 240 || die "a not in sync with b within 240 s"
  log "pair connected and in sync after $((SECONDS - t0)) s"
}

# fill_fs DEV MNT: ext4 on DEV, files written, their sums in $T/files.sha256;
# the file system stays mounted.
fill_fs() {
  local dev="$1" mnt="$2" i
  mkdir -p "$mnt" "$T/src"
  with_timeout 120 mkfs.ext4 -q -F "$dev" || die "mkfs.ext4 $dev failed"
  with_timeout 60 mount "$dev" "$mnt" || die "mount $dev failed"
  # Sizes off the 4 KiB grid, 12 files, about 10 MiB.
  for ((i = 0; i < 12; i++)); do
    head -c $((4096 + i * 262144 + i * 1234)) /dev/urandom >"$T/src/f$i"
  done
  mkdir -p "$mnt/d"
  cp "$T"/src/f* "$mnt/d/"
  (cd "$T/src" && sha256sum f*) >"$T/files.sha256"
  with_timeout 120 sync || die "sync on $mnt failed"
  log "ext4 on $dev: $(du -sh "$mnt/d" | cut -f1) written and synced"
}

# check_fs DEV MNT: the journal replayed (a mount and umount, as after any
# crash: the copy is of a file system that was mounted, and whether ext4 had
# checkpointed its last commits before the kill is timing), then fsck -fn
# clean, mount, every sum intact, umount.
check_fs() {
  local dev="$1" mnt="$2"
  mkdir -p "$mnt"
  with_timeout 60 mount "$dev" "$mnt" || die "mount $dev (journal replay) failed after the failover"
  with_timeout 60 umount "$mnt" || die "umount $mnt failed"
  with_timeout 120 e2fsck -fn "$dev" >"$T/e2fsck.out" 2>&1 || {
    cat "$T/e2fsck.out" >&2
    die "e2fsck -fn $dev is not clean after the failover (and a journal replay)"
  }
  with_timeout 60 mount "$dev" "$mnt" || die "mount $dev failed after the failover"
  (cd "$mnt/d" && with_timeout 60 sha256sum --quiet -c "$T/files.sha256") \
    || die "files differ after the failover"
  [ "$(find "$mnt/d" -type f | wc -l)" -eq 12 ] || die "file count differs after the failover"
  with_timeout 60 umount "$mnt" || die "umount $mnt failed"
  log "fsck clean on $dev, 12 files intact"
}

# kill_a CONF DEV MNT: daemon a dies (SIGKILL) under a mounted
# file system; the dead mount goes (umount -l: its I/O can only fail now);
# b sees the link drop.
kill_a() {
  local conf="$1" dev="$2" mnt="$3" t0=$SECONDS
  kill -KILL "${DAEMON_PIDS[a]}"
  wait "${DAEMON_PIDS[a]}" 2>/dev/null || true
  # In the background: with nothing open on it, even a lazy umount unmounts
  # at once, and ext4's last journal writes then wait for the kernel to give
  # up on the dead connection (at once for nbd-client's device, after the
  # dead-connection timeout for a device the daemon attached).
  ( umount -l "$mnt" ) &
  UMOUNT_PID=$!
  track_pid "$UMOUNT_PID"
  wait_peer_state_not "$conf" b connected 60 || die "b still sees a connected 60 s after a died"
  [ "$(status_field "$conf" b '["metadata"]["inconsistent"]')" = False ] || die "b thinks it is inconsistent"
  log "a killed; b saw the link drop after $((SECONDS - t0)) s;" \
    "$dev: $(nbd_connected "$dev" && echo still connected || echo disconnected)"
}

# wait_dead_umount MNT: the background umount -l of kill_a is done (the I/O
# of a dead /dev/nbdN fails in bounded time).
wait_dead_umount() {
  local t0=$SECONDS rc=0
  WAIT_PID="" wait_for 60 "umount -l $1" pid_gone "$UMOUNT_PID" \
    || die "umount -l $1 of the dead device still running after 60 s"
  wait "$UMOUNT_PID" || rc=$?
  [ "$rc" = 0 ] || die "umount -l $1 of the dead device failed ($rc)"
  ! mountpoint -q "$1" || die "$1 still mounted after umount -l"
  log "umount -l $1 of the dead device finished (waited $((SECONDS - t0)) s more)"
}

# --- part 1: nbd-client against the NBD Unix socket -------------------------------

part_client() {
  local dir="$T/client" sock_a sock_b t0=$SECONDS
  log "== part client: nbd-client -unix against hastnbd's NBD socket"
  on_exit "nbd_detach_quietly /dev/nbd2"
  on_exit "nbd_detach_quietly /dev/nbd3"
  pair_up "$dir" 7401 7402
  make_primary "$CONF" a data
  sock_a="$(status_of "$CONF" a 's["nbd"]["socket"]')"
  [ "$sock_a" = "$(nbd_socket "$CONF" a data)" ] || die "status .nbd.socket is '$sock_a'"
  wait_pair_synced "$CONF"

  # netlink (nbd-client's default), 4 KiB blocks like a file system wants.
  with_timeout 60 nbd-client -unix "$sock_a" /dev/nbd2 -N data -b 4096 \
    || die "nbd-client -unix $sock_a /dev/nbd2 failed"
  nbd_connected /dev/nbd2 || die "/dev/nbd2 not connected after nbd-client"
  # Over netlink nbd-client hands the socket to the kernel and exits; over
  # the ioctls it would stay, blocked in NBD_DO_IT.
  ! pgrep -x nbd-client >/dev/null || die "nbd-client still running: it did not use netlink"
  wait_for 30 "/dev/nbd2 to have $SIZE bytes" nbd_size_is /dev/nbd2 "$SIZE" \
    || die "/dev/nbd2 has $(blockdev --getsize64 /dev/nbd2) bytes, want $SIZE"
  log "nbd2: $SIZE bytes, logical block $(cat /sys/block/nbd2/queue/logical_block_size)," \
    "write_zeroes_max_bytes $(cat /sys/block/nbd2/queue/write_zeroes_max_bytes)," \
    "discard_max_bytes $(cat /sys/block/nbd2/queue/discard_max_bytes)," \
    "backend '$(cat /sys/block/nbd2/backend 2>/dev/null || echo none)'"
  fill_fs /dev/nbd2 "$T/mnt-a"
  wait_in_sync "$CONF" a 120 || die "a not in sync after the writes"
  kill_a "$CONF" /dev/nbd2 "$T/mnt-a"
  # The server is gone: the kernel fails its I/O; detach the dead device.
  with_timeout 60 nbd-client -d /dev/nbd2 || die "nbd-client -d /dev/nbd2 failed after a died"

  make_primary "$CONF" b data
  sock_b="$(nbd_socket "$CONF" b data)"
  with_timeout 60 nbd-client -unix "$sock_b" /dev/nbd3 -N data -b 4096 \
    || die "nbd-client -unix $sock_b /dev/nbd3 failed"
  wait_for 30 "/dev/nbd3 to have $SIZE bytes" nbd_size_is /dev/nbd3 "$SIZE" || die "/dev/nbd3 has the wrong size"
  check_fs /dev/nbd3 "$T/mnt-b"
  wait_dead_umount "$T/mnt-a"
  with_timeout 60 nbd-client -d /dev/nbd3 || die "nbd-client -d /dev/nbd3 failed"
  wait_for 30 "/dev/nbd3 to disconnect" nbd_disconnected /dev/nbd3 \
    || die "/dev/nbd3 still connected after nbd-client -d"
  stop_daemon "${DAEMON_PIDS[b]}"
  log "== part client passed in $((SECONDS - t0)) s"
}

# --- part 2: the daemon attaches /dev/nbdN itself ---------------------------------

device_attached() {  # CONF NODE
  [ "$(status_of "$1" "$2" 's["nbd"]["device"]["attached"]' 2>/dev/null)" = True ]
}

part_device() {
  local dir="$T/device" t0=$SECONDS info holder
  log "== part device: nbd.device, attached by the daemon itself"
  on_exit "nbd_detach_quietly /dev/nbd0"
  on_exit "nbd_detach_quietly /dev/nbd1"
  NODE_B_EXTRA="nbd: {device: /dev/nbd1}" pair_up "$dir" 7411 7412 "nbd: {device: /dev/nbd0, connections: 2, reconnect_timeout: $PEER_TIMEOUT}"

  hastnbd_ctl "$CONF" a role primary data || die "role primary on a (with nbd.device /dev/nbd0) failed"
  # A daemon without the feature accepts nbd.device and ignores it: say so
  # at once rather than after the wait for the device below.
  [ "$(status_of "$CONF" a '"device" in s["nbd"]')" = True ] \
    || die "this hastnbd has no .nbd.device in status --json: it does not attach nbd.device (feature missing from $HASTNBD_BIN)"
  wait_for 60 "/dev/nbd0 to have $SIZE bytes" nbd_size_is /dev/nbd0 "$SIZE" \
    || die "role primary did not attach /dev/nbd0 with $SIZE bytes (it has $(blockdev --getsize64 /dev/nbd0 2>&1))"
  [ "$(blockdev --getsize64 /dev/nbd0)" = "$SIZE" ] || die "blockdev --getsize64 /dev/nbd0 is not $SIZE"
  nbd_connected /dev/nbd0 || die "/dev/nbd0 has no server pid"
  info="$(status_of "$CONF" a 'json.dumps(s["nbd"].get("device"))')" || die "status --json on a failed"
  log "a: .nbd.device = $info; /sys/block/nbd0/backend: $(cat /sys/block/nbd0/backend 2>/dev/null || echo none)"
  [ "$(status_of "$CONF" a 's["nbd"]["device"]["path"]')" = /dev/nbd0 ] || die ".nbd.device.path on a is not /dev/nbd0: $info"
  device_attached "$CONF" a || die ".nbd.device.attached on a is not true: $info"
  wait_pair_synced "$CONF"

  fill_fs /dev/nbd0 "$T/mnt-a"
  wait_in_sync "$CONF" a 120 || die "a not in sync after the writes"
  # The daemon is the server: its death leaves the kernel with dead sockets.
  kill_a "$CONF" /dev/nbd0 "$T/mnt-a"

  hastnbd_ctl "$CONF" b role primary data || die "role primary on b (with nbd.device /dev/nbd1) failed"
  wait_for 60 "/dev/nbd1 to have $SIZE bytes" nbd_size_is /dev/nbd1 "$SIZE" \
    || die "role primary on b did not attach /dev/nbd1"
  device_attached "$CONF" b || die ".nbd.device.attached on b is not true"
  [ "$(status_of "$CONF" b 's["nbd"]["device"]["path"]')" = /dev/nbd1 ] || die ".nbd.device.path on b is not /dev/nbd1"
  check_fs /dev/nbd1 "$T/mnt-b"
  wait_dead_umount "$T/mnt-a"

  # Demotion while the file system is mounted: refused, device untouched.
  with_timeout 60 mount /dev/nbd1 "$T/mnt-b" || die "remount /dev/nbd1 failed"
  if hastnbd_ctl "$CONF" b role secondary data >"$T/demote.out" 2>&1; then
    cat "$T/demote.out" >&2
    die "role secondary on b succeeded while /dev/nbd1 was mounted"
  fi
  log "role secondary refused while mounted: $(tr '\n' ' ' <"$T/demote.out")"
  nbd_connected /dev/nbd1 || die "/dev/nbd1 was detached by a refused demotion"
  [ "$(status_of "$CONF" b 's["role"]')" = primary ] || die "b is no longer primary after a refused demotion"
  (cd "$T/mnt-b/d" && with_timeout 60 sha256sum --quiet -c "$T/files.sha256") \
    || die "files unreadable after the refused demotion"
  with_timeout 60 umount "$T/mnt-b" || die "umount /dev/nbd1 failed"

  # Open by a process (not mounted): refused too.
  # shellcheck disable=SC2217  # the open file descriptor is the point
  sleep 300 </dev/nbd1 &
  holder=$!
  track_pid "$holder"
  if hastnbd_ctl "$CONF" b role secondary data >"$T/demote.out" 2>&1; then
    cat "$T/demote.out" >&2
    die "role secondary on b succeeded while pid $holder held /dev/nbd1 open"
  fi
  log "role secondary refused while open: $(tr '\n' ' ' <"$T/demote.out")"
  nbd_connected /dev/nbd1 || die "/dev/nbd1 was detached by a refused demotion"
  kill "$holder"
  wait "$holder" 2>/dev/null || true

  # Unused: the demotion detaches the device cleanly.
  hastnbd_ctl "$CONF" b role secondary data || die "role secondary on b failed with /dev/nbd1 unmounted"
  wait_for 30 "/dev/nbd1 to disconnect" nbd_disconnected /dev/nbd1 \
    || die "/dev/nbd1 still connected after role secondary"
  wait_for 30 "/dev/nbd1 size 0" nbd_size_is /dev/nbd1 0 || die "/dev/nbd1 still has a size after role secondary"
  [ "$(status_of "$CONF" b 's["role"]')" = secondary ] || die "b is not secondary"
  ! device_attached "$CONF" b || die ".nbd.device.attached on b still true after role secondary"
  nbd_detach_quietly /dev/nbd0
  stop_daemon "${DAEMON_PIDS[b]}"
  log "== part device passed in $((SECONDS - t0)) s"
}

# --- part 3: the daemon restarted under a mounted file system ----------------------

# restart_a SIGNAL: daemon a stopped with SIGNAL (KILL: a crash; TERM: a
# clean stop) and started again while the writer goes on; it must resume as
# primary by itself, re-take /dev/nbd0, and the writer's next records must be
# acknowledged with no error. Prints the stall the writer saw so far.
restart_a() {
  local sig="$1" t0=$SECONDS before
  before=$(wc -l <"$T/ledger")
  kill -"$sig" "${DAEMON_PIDS[a]}"
  wait "${DAEMON_PIDS[a]}" 2>/dev/null || true
  kill -0 "$WRITER" 2>/dev/null || die "the writer stopped when daemon a did ($sig): $(cat "$T/fs_writer.out")"
  start_daemon "$CONF" a data
  WAIT_PID="" wait_for 60 "a to resume as primary with /dev/nbd0 re-taken" device_attached "$CONF" a     || die "a did not resume as primary with /dev/nbd0 after SIG$sig: $(status_of "$CONF" a 'json.dumps(s["nbd"])')"
  _ledger_past() { [ "$(wc -l <"$T/ledger")" -gt "$1" ]; }
  WAIT_PID="$WRITER" wait_for 90 "the writer to go on after SIG$sig" _ledger_past $((before + 5))     || die "the writer made no progress after SIG$sig and a restart: $(cat "$T/fs_writer.out")"
  # The longest write + fdatasync since the stop (the writer logs those of
  # 0.25 s or more).
  local stall
  stall="$(tail -n +$((STALL_LINES + 1)) "$T/stalls" | awk 'BEGIN {m = 0} $2 > m {m = $2} END {print m}')"
  STALL_LINES=$(wc -l <"$T/stalls")
  echo "$sig $stall" >>"$T/restart-stalls"
  log "SIG$sig + start: a primary again, writer at $(wc -l <"$T/ledger") records, longest write stall ${stall} s," \
    "$((SECONDS - t0)) s in all"
}

part_restart() {
  local dir="$T/restart" t0=$SECONDS mnt="$T/mnt-r" i n="${HASTNBD_RESTARTS:-20}" rc=0
  log "== part restart: daemon a killed and restarted under a mounted, busy ext4"
  on_exit "nbd_detach_quietly /dev/nbd0"
  pair_up "$dir" 7431 7432 "nbd: {device: /dev/nbd0, reconnect_timeout: 120}"
  hastnbd_ctl "$CONF" a role primary data || die "role primary on a failed"
  wait_for 60 "/dev/nbd0 to have $SIZE bytes" nbd_size_is /dev/nbd0 "$SIZE" || die "/dev/nbd0 not attached"
  wait_pair_synced "$CONF"
  mkdir -p "$mnt"
  with_timeout 120 mkfs.ext4 -q -F /dev/nbd0 || die "mkfs.ext4 /dev/nbd0 failed"
  with_timeout 60 mount /dev/nbd0 "$mnt" || die "mount /dev/nbd0 failed"
  dmesg -c >/dev/null
  : >"$T/ledger"
  : >"$T/stalls"
  : >"$T/restart-stalls"
  STALL_LINES=0
  "$HASTNBD_PYTHON" "$HASTNBD_SRC/tests/kernel/fs_writer.py" write "$mnt/records" "$T/ledger" --slots 1024 \
    --seconds 1800 --stop "$T/stop-writer" --stalls "$T/stalls" >"$T/fs_writer.out" 2>&1 &
  WRITER=$!
  track_pid "$WRITER"
  _ledger_past() { [ "$(wc -l <"$T/ledger")" -gt "$1" ]; }
  WAIT_PID="$WRITER" wait_for 120 "the writer's first records" _ledger_past 50 \
    || die "the writer got nothing acknowledged: $(cat "$T/fs_writer.out")"

  restart_a KILL
  for ((i = 1; i <= n; i++)); do
    restart_a TERM
  done

  touch "$T/stop-writer"
  wait "$WRITER" || rc=$?
  cat "$T/fs_writer.out" >&2
  [ "$rc" = 0 ] || die "the writer failed across the restarts"
  ! grep -q " $mnt .*\bro\b" /proc/mounts || die "the file system went read-only"
  if dmesg | grep -E "EXT4-fs error|EXT4-fs warning|I/O error|Buffer I/O" >"$T/dmesg.bad"; then
    cat "$T/dmesg.bad" >&2
    die "the kernel logged I/O or ext4 errors across the restarts"
  fi
  log "kernel messages about nbd0 across the restarts: $(dmesg | grep -c nbd0) lines, e.g. $(dmesg | grep nbd0 | tail -n 2 | tr '\n' ' ')"
  "$HASTNBD_PYTHON" "$HASTNBD_SRC/tests/kernel/fs_writer.py" check "$mnt/records" "$T/ledger" --slots 1024 \
    || die "acknowledged writes are missing after the restarts"
  with_timeout 60 umount "$mnt" || die "umount $mnt failed"
  with_timeout 120 e2fsck -fn /dev/nbd0 >"$T/e2fsck.out" 2>&1 || {
    cat "$T/e2fsck.out" >&2
    die "e2fsck -fn /dev/nbd0 is not clean after the restarts"
  }
  wait_in_sync "$CONF" a 240 || die "a not in sync with b after the restarts"
  hastnbd_ctl "$CONF" a role init data || die "role init on a failed"
  wait_for 30 "/dev/nbd0 to disconnect" nbd_disconnected /dev/nbd0 || die "/dev/nbd0 still attached after role init"
  stop_daemon "${DAEMON_PIDS[a]}"
  stop_daemon "${DAEMON_PIDS[b]}"
  cmp /dev/vda /dev/vdb || die "the two disks differ after the restarts and the resync"
  log "restart stalls (longest write + fdatasync): kill -9 $(awk '$1 == "KILL" {print $2}' "$T/restart-stalls") s;" \
    "clean: median $(awk '$1 == "TERM" {print $2}' "$T/restart-stalls" | sort -n | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)] + 0}') s," \
    "max $(awk '$1 == "TERM" && $2 > m {m = $2} END {print m + 0}' "$T/restart-stalls") s over $n"
  log "== part restart passed in $((SECONDS - t0)) s: 1 kill -9 and $n clean restarts, no I/O error, fsck clean," \
    "every acknowledged record there, disks identical; writer: $(tail -n 1 "$T/fs_writer.out")"
}

# --- part 4: restarts that must not re-take the device -------------------------------

# log_has CONF NODE TEXT: the node's daemon log says TEXT.
log_has() {
  grep -qF -- "$3" "$(daemon_log "$2")"
}

part_takeover() {
  local dir="$T/takeover" t0=$SECONDS rc=0
  log "== part takeover: a restart too late, after a failover, and a device that is not ours"
  on_exit "nbd_detach_quietly /dev/nbd0"
  on_exit "nbd_detach_quietly /dev/nbd1"
  NODE_B_EXTRA="nbd: {device: /dev/nbd1}" pair_up "$dir" 7441 7442 \
    "nbd: {device: /dev/nbd0, io_timeout: 5, reconnect_timeout: 8}"
  hastnbd_ctl "$CONF" a role primary data || die "role primary on a failed"
  wait_for 60 "/dev/nbd0 attached" nbd_size_is /dev/nbd0 "$SIZE" || die "/dev/nbd0 not attached"
  wait_pair_synced "$CONF"

  # (a) Too late: the kernel fails the device's I/O after reconnect_timeout;
  # the daemon started after that re-takes it and says I/O failed meanwhile.
  kill -KILL "${DAEMON_PIDS[a]}"
  wait "${DAEMON_PIDS[a]}" 2>/dev/null || true
  if with_timeout 60 dd if=/dev/nbd0 of=/dev/null bs=4096 count=1 skip=77 iflag=direct 2>"$T/dd.err"; then
    die "a read of /dev/nbd0 with no daemon succeeded"
  fi
  log "(a) no daemon for $((SECONDS - t0)) s: a read of /dev/nbd0 failed: $(tr '\n' ' ' <"$T/dd.err")"
  start_daemon "$CONF" a data
  WAIT_PID="" wait_for 60 "a primary with /dev/nbd0 re-taken" device_attached "$CONF" a \
    || die "(a) a did not re-take /dev/nbd0"
  status_of "$CONF" a 's["nbd"]["device"]["error"]' | grep -q "later than nbd.reconnect_timeout" \
    || die "(a) status does not say the re-take came too late: $(status_of "$CONF" a 'json.dumps(s["nbd"]["device"])')"
  log "(a) $(status_of "$CONF" a 's["nbd"]["device"]["error"]')"

  # (b) b was promoted while a's daemon was down: a must not resume.
  wait_in_sync "$CONF" a 120 || die "(b) a not in sync before the failover"
  kill -KILL "${DAEMON_PIDS[a]}"
  wait "${DAEMON_PIDS[a]}" 2>/dev/null || true
  wait_peer_state_not "$CONF" b connected 60 || die "(b) b still connected to the dead a"
  hastnbd_ctl "$CONF" b role primary data || die "(b) role primary on b failed"
  start_daemon "$CONF" a data
  WAIT_PID="" wait_for 60 "a to decide" log_has "$CONF" a "not resuming as primary" \
    || die "(b) a did not refuse to resume: $(tail -n 20 "$(daemon_log a)")"
  [ "$(status_of "$CONF" a 's["role"]')" = init ] || die "(b) a is not in role init"
  ! device_attached "$CONF" a || die "(b) a re-took /dev/nbd0 while b is primary"
  log "(b) $(grep -F "not resuming as primary" "$(daemon_log a)" | tail -n 1)"

  # (c) A device attached by something else is never taken: nbd-client on
  # /dev/nbd0 against b's NBD socket; a restarted stays init, leaves it be.
  nbd_detach_quietly /dev/nbd0
  wait_for 30 "/dev/nbd0 free" nbd_disconnected /dev/nbd0 || die "(c) /dev/nbd0 still connected"
  with_timeout 60 nbd-client -unix "$(nbd_socket "$CONF" b data)" /dev/nbd0 -N data -b 4096 >/dev/null 2>&1 \
    || die "(c) nbd-client could not attach /dev/nbd0 to b"
  stop_daemon "${DAEMON_PIDS[a]}"
  local from
  from=$(($(wc -l <"$(daemon_log a)") + 1))
  start_daemon "$CONF" a data
  sleep 3
  [ "$(status_of "$CONF" a 's["role"]')" = init ] || die "(c) a resumed with a device that is not its own"
  ! tail -n +"$from" "$(daemon_log a)" | grep -q "resuming as primary" || die "(c) a tried to resume as primary"
  nbd_connected /dev/nbd0 || die "(c) /dev/nbd0 (nbd-client) was disconnected"
  with_timeout 60 dd if=/dev/nbd0 of=/dev/null bs=4096 count=1 iflag=direct 2>/dev/null \
    || die "(c) /dev/nbd0 through nbd-client no longer reads"
  log "(c) /dev/nbd0 attached by nbd-client: a restarted stays init and leaves it alone"
  nbd_detach_quietly /dev/nbd0
  hastnbd_ctl "$CONF" b role secondary data >/dev/null || die "role secondary on b failed"
  stop_daemon "${DAEMON_PIDS[a]}"
  stop_daemon "${DAEMON_PIDS[b]}"
  log "== part takeover passed in $((SECONDS - t0)) s"
}

for p in "${parts[@]}"; do
  case "$p" in
  takeover) part_takeover ;;
  client) part_client ;;
  device) part_device ;;
  restart) part_restart ;;
  *) die "unknown part $p" ;;
  esac
done
touch "$T/passed"
log "guest_t_kernel: ${parts[*]} passed"
