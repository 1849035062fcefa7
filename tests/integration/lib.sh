# shellcheck shell=bash
# Integration-test library: `source "$(dirname "$0")/lib.sh"` at the top of
# every tests/integration/t_*.sh (and of tools/bench).
#
# Contract:
#   - strict mode (set -euo pipefail) for the caller;
#   - $T, a fresh temp dir under /tmp, removed on exit;
#   - on_exit "CMD": a cleanup stack run in reverse order on EXIT, on success
#     and on failure alike; every entry is bounded in time and its failure is
#     ignored, so one stuck undo step cannot keep the next from running;
#   - die MSG: "FAIL: MSG" on stderr, exit 1. Tests never skip: a missing tool
#     or binary is a failure, not a silent pass;
#   - helpers for hastnbd (config, create, start/stop, primary) and for the
#     real NBD clients, each check asserting on data read back.
#
# Environment: HASTNBD_BIN (binaries, default $HASTNBD_SRC/build/bin, which is
# /work/main/build/bin in the main work tree), HASTNBD_SRC (the repo, default
# derived from this file's location), HASTNBD_PYTHON (stdlib python3, default
# /usr/bin/python3 so a pyenv shim on PATH does not change the interpreter).

set -euo pipefail

LIB_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
HASTNBD_SRC="${HASTNBD_SRC:-$(cd "$LIB_DIR/../.." && pwd)}"
HASTNBD_BIN="${HASTNBD_BIN:-$HASTNBD_SRC/build/bin}"
HASTNBD_PYTHON="${HASTNBD_PYTHON:-/usr/bin/python3}"
[ -x "$HASTNBD_PYTHON" ] || HASTNBD_PYTHON="$(command -v python3)"
NBD_RAW="$LIB_DIR/nbd_raw.py"
export HASTNBD_SRC HASTNBD_BIN HASTNBD_PYTHON

# --- failure, logging -----------------------------------------------------------

die() {
  echo "FAIL: $*" >&2
  exit 1
}

log() {
  echo "[$(date +%H:%M:%S)] $*" >&2
}

require_root() {
  [ "$(id -u)" -eq 0 ] || die "this test needs root (loop devices, mounts)"
}

# require_cmd CMD...: a missing client is a broken machine, not a skip.
require_cmd() {
  local c
  for c in "$@"; do
    command -v "$c" >/dev/null 2>&1 || die "required command '$c' not found (run tools/setup)"
  done
}

# with_timeout SECS CMD...: a hung client fails the test instead of blocking
# CI; SIGKILL follows 5 s after the SIGTERM for commands that ignore it.
with_timeout() {
  local secs="$1"
  shift
  timeout --kill-after=5 "$secs" "$@"
}

# --- cleanup stack --------------------------------------------------------------

_CLEANUP=()
_CLEANUP_STEP_TIMEOUT=60

on_exit() {
  _CLEANUP+=("$1")
}

# Each undo step runs in a subshell (it sees our functions and variables) with
# a deadline: an umount stuck on a dead FUSE server must not stall the rest.
_cleanup_step() {
  local cmd="$1" pid i
  ( eval "$cmd" ) </dev/null >&2 &
  pid=$!
  for ((i = 0; i < _CLEANUP_STEP_TIMEOUT * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "cleanup: '$cmd' still running after ${_CLEANUP_STEP_TIMEOUT}s, killed" >&2
    kill -9 "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

_run_cleanup() {
  local rc=$? i
  set +e
  trap - EXIT INT TERM
  for ((i = ${#_CLEANUP[@]} - 1; i >= 0; i--)); do
    _cleanup_step "${_CLEANUP[$i]}"
  done
  _CLEANUP=()
  if [ "$rc" -ne 0 ] && [ -n "${HASTNBD_KEEP_TMP:-}" ] && [ -d "${T:-}" ]; then
    echo "HASTNBD_KEEP_TMP: kept $T" >&2
  elif [ -n "${T:-}" ] && [ -d "$T" ]; then
    # Never rm -rf through a mount that survived its undo step: that would
    # delete the contents of whatever is mounted there.
    if findmnt -rn -o TARGET | grep -q "^$T/"; then
      echo "cleanup: mounts left under $T, lazily unmounting:" >&2
      findmnt -rn -o TARGET | grep "^$T/" | sort -r | while read -r m; do
        echo "  $m" >&2
        umount -l "$m" 2>/dev/null || true
      done
    fi
    rm -rf --one-file-system "$T"
  fi
  exit "$rc"
}

T="$(mktemp -d /tmp/hastnbd-test.XXXXXX)"
export T
trap _run_cleanup EXIT
# Turn signals into a normal exit so the EXIT trap runs the cleanup stack.
trap 'exit 130' INT
trap 'exit 143' TERM

# --- processes ------------------------------------------------------------------

declare -A _PID_LOG=()
declare -A _PID_START=()

# The start time (clock ticks since boot) identifies a process beyond its pid,
# so a cleanup long after the process died cannot kill a stranger that reused
# the pid.
_proc_starttime() {
  local stat
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  stat="${stat##*) }"              # drop "pid (comm) ", comm may hold spaces
  # shellcheck disable=SC2086
  set -- $stat
  echo "${20}"                     # field 22 of the whole line
}

# track_pid PID [LOG]: remember a background process we started and push its
# kill onto the cleanup stack.
track_pid() {
  local pid="$1" logf="${2:-}"
  _PID_START[$pid]="$(_proc_starttime "$pid" || echo gone)"
  _PID_LOG[$pid]="$logf"
  on_exit "kill_pid $pid"
}

_same_process() {
  local pid="$1"
  [ -n "${_PID_START[$pid]:-}" ] || return 0
  [ "$(_proc_starttime "$pid" 2>/dev/null || echo gone)" = "${_PID_START[$pid]}" ]
}

# kill_pid PID [GRACE]: SIGTERM, wait up to GRACE s (default 10), then SIGKILL.
kill_pid() {
  local pid="$1" grace="${2:-10}" i
  kill -0 "$pid" 2>/dev/null || return 0
  _same_process "$pid" || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < grace * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  echo "cleanup: pid $pid ignored SIGTERM for ${grace}s, sending SIGKILL" >&2
  kill -KILL "$pid" 2>/dev/null || true
}

# wait_for SECS DESC CMD...: poll CMD every 0.1 s until it succeeds; die after
# SECS. Returns early (failing) if $WAIT_PID is set and that process died.
wait_for() {
  local secs="$1" desc="$2" i
  shift 2
  for ((i = 0; i < secs * 10; i++)); do
    if "$@" >/dev/null 2>&1; then
      return 0
    fi
    if [ -n "${WAIT_PID:-}" ] && ! kill -0 "$WAIT_PID" 2>/dev/null; then
      echo "process $WAIT_PID exited while waiting for $desc" >&2
      return 1
    fi
    sleep 0.1
  done
  echo "timed out after ${secs}s waiting for $desc" >&2
  return 1
}

show_log() {
  local f="$1"
  [ -n "$f" ] && [ -f "$f" ] || return 0
  echo "---- last 40 lines of $f ----" >&2
  tail -n 40 "$f" >&2
  echo "----" >&2
}

# --- hastnbd --------------------------------------------------------------------

# make_disk PATH SIZE: a sparse backing file.
make_disk() {
  truncate -s "$2" "$1"
}

# write_config FILE [YAML-LINE...]: a single-node config (resource "data", node
# "a") beside FILE. Extra lines go into the resource section, e.g.
#   write_config "$T/hastnbd.yaml" "replication: async"
# The backing file is $HASTNBD_DISK (default DIR/disk-a.img), created sparse
# with $HASTNBD_DISK_SIZE (default 256M) unless it already exists.
write_config() {
  local file="$1" dir disk line
  shift
  dir="$(cd "$(dirname "$file")" && pwd)"
  disk="${HASTNBD_DISK:-$dir/disk-a.img}"
  [ -e "$disk" ] || make_disk "$disk" "${HASTNBD_DISK_SIZE:-256M}"
  mkdir -p "$dir/run" "$dir/state" "$dir/run-a" "$dir/state-a"
  {
    echo "defaults: {run_dir: $dir/run, state_dir: $dir/state, timeout: 5}"
    echo "resources:"
    echo "  data:"
    echo "    extent_size: 2MiB"
    echo "    keepdirty: 64"
    for line in "$@"; do
      echo "    $line"
    done
    echo "    nodes:"
    echo "      a: {local: $disk, run_dir: $dir/run-a, state_dir: $dir/state-a}"
  } >"$file"
}

# run_dir_of CONF NODE: the node's run_dir, else the defaults' one. Understands
# the flow-mapping layout that write_config produces (no YAML parser in the
# stdlib); tests with other layouts pass socket paths explicitly.
run_dir_of() {
  local conf="$1" node="$2" d
  d="$(sed -n "s/^ *$node: *{.*run_dir: *\([^,}]*\).*/\1/p" "$conf" | head -n 1)"
  [ -n "$d" ] || d="$(sed -n 's/^defaults:.*run_dir: *\([^,}]*\).*/\1/p' "$conf" | head -n 1)"
  [ -n "$d" ] || die "no run_dir for node $node in $conf"
  echo "${d%"${d##*[![:space:]]}"}"
}

nbd_socket() {  # CONF NODE RES
  echo "$(run_dir_of "$1" "$2")/$3.sock"
}

ctl_socket() {  # CONF NODE RES
  echo "$(run_dir_of "$1" "$2")/$3.ctl"
}

daemon_log() {  # NODE
  echo "$T/hastnbd-$1.log"
}

# hastnbd_ctl CONF NODE ARGS...: the control client, bounded in time.
hastnbd_ctl() {
  local conf="$1" node="$2"
  shift 2
  with_timeout 30 "$HASTNBD_BIN/hastnbd-ctl" -c "$conf" --node "$node" "$@"
}

require_hastnbd() {
  local b
  for b in hastnbd hastnbd-ctl; do
    [ -x "$HASTNBD_BIN/$b" ] || die "$HASTNBD_BIN/$b not built (cmake --build build)"
  done
}

# create_resource CONF NODE RES [--force]: write the metadata.
create_resource() {
  local conf="$1" node="$2" res="$3"
  shift 3
  hastnbd_ctl "$conf" "$node" create "$res" "$@" \
    || die "hastnbd-ctl create $res on node $node failed"
}

# start_daemon CONF NODE RES: run hastnbd in the background (its stderr and
# stdout in $T/hastnbd-NODE.log), kill it on exit, wait until it answers
# `status`. Sets DAEMON_PID (and DAEMON_PIDS[NODE]).
declare -A DAEMON_PIDS=()
export DAEMON_PID=""             # read by the tests
start_daemon() {
  _start_daemon_in "" "$@"
}

# _start_daemon_in NETNS CONF NODE RES: start_daemon, in NETNS when not empty
# (`ip netns exec` execs, so the pid is the daemon's own).
_start_daemon_in() {
  local ns="$1" conf="$2" node="$3" res="$4" logf pid where="" prefix=()
  require_hastnbd
  [ -z "$ns" ] || { where=" in netns $ns"; prefix=(ip netns exec "$ns"); }
  logf="$(daemon_log "$node")"
  mkdir -p "$(run_dir_of "$conf" "$node")"
  "${prefix[@]}" "$HASTNBD_BIN/hastnbd" -c "$conf" --node "$node" "$res" </dev/null >>"$logf" 2>&1 &
  pid=$!
  track_pid "$pid" "$logf"
  DAEMON_PID="$pid"
  DAEMON_PIDS[$node]="$pid"
  if ! WAIT_PID="$pid" wait_for 20 "hastnbd $res (node $node$where) to answer status" \
       hastnbd_ctl "$conf" "$node" status "$res"; then
    show_log "$logf"
    die "hastnbd $res on node $node$where did not come up"
  fi
  log "hastnbd $res node $node running$where, pid $pid"
}

# make_primary CONF NODE RES: role primary, then wait for the NBD socket.
make_primary() {
  local conf="$1" node="$2" res="$3" sock pid
  sock="$(nbd_socket "$conf" "$node" "$res")"
  pid="${DAEMON_PIDS[$node]:-}"
  if ! hastnbd_ctl "$conf" "$node" role primary "$res"; then
    show_log "$(daemon_log "$node")"
    die "hastnbd-ctl role primary $res on node $node failed"
  fi
  if ! WAIT_PID="$pid" wait_for 20 "NBD socket $sock" test -S "$sock"; then
    show_log "$(daemon_log "$node")"
    die "no NBD socket $sock after role primary"
  fi
}

# stop_daemon PID: SIGTERM must drain and exit 0 within 30 s.
stop_daemon() {
  local pid="$1" i rc=0 logf="${_PID_LOG[$1]:-}"
  kill -TERM "$pid" 2>/dev/null || die "daemon pid $pid was already gone before SIGTERM"
  for ((i = 0; i < 300; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    show_log "$logf"
    kill -KILL "$pid" 2>/dev/null || true
    die "daemon pid $pid still running 30 s after SIGTERM"
  fi
  wait "$pid" || rc=$?
  if [ "$rc" -ne 0 ]; then
    show_log "$logf"
    die "daemon pid $pid exited with status $rc after SIGTERM (want 0)"
  fi
}

# --- NBD clients ----------------------------------------------------------------

# nbd_uri SOCKET EXPORT
nbd_uri() {
  echo "nbd+unix:///$2?socket=$1"
}

# wait_nbd_socket SOCKET EXPORT [SECS]: the socket exists and the export
# answers a full handshake.
wait_nbd_socket() {
  wait_for "${3:-20}" "NBD export $2 on $1" \
    with_timeout 10 nbdinfo --size "$(nbd_uri "$1" "$2")"
}

export_size() {  # SOCK EXPORT
  with_timeout 30 nbdinfo --size "$(nbd_uri "$1" "$2")"
}

# check_nbdinfo SOCK EXPORT EXPECTED_SIZE: size and the write-side features a
# kernel client or file system relies on.
check_nbdinfo() {
  local sock="$1" exp="$2" want="$3" out="$T/nbdinfo.json"
  with_timeout 30 nbdinfo --json "$(nbd_uri "$sock" "$exp")" >"$out" \
    || die "nbdinfo failed on $(nbd_uri "$sock" "$exp")"
  "$HASTNBD_PYTHON" - "$out" "$want" "$exp" <<'EOF' || die "nbdinfo check failed"
import json, sys
info = json.load(open(sys.argv[1]))
want, name = int(sys.argv[2]), sys.argv[3]
exports = info.get("exports") or []
if len(exports) != 1:
    sys.exit(f"nbdinfo: {len(exports)} exports in the answer, expected 1")
e = exports[0]
errors = []
if e.get("export-name") != name:
    errors.append(f"export-name {e.get('export-name')!r} != {name!r}")
if e.get("export-size") != want:
    errors.append(f"export-size {e.get('export-size')} != {want}")
for k in ("can_flush", "can_fua", "can_trim", "can_zero"):
    if e.get(k) is not True:
        errors.append(f"{k} is {e.get(k)!r}, want true")
if e.get("is_read_only") is not False:
    errors.append(f"is_read_only is {e.get('is_read_only')!r}")
if errors:
    sys.exit("nbdinfo: " + "; ".join(errors))
EOF
  log "check_nbdinfo ok: $want bytes, flush/fua/trim/zero"
}

# check_nbdcopy SOCK EXPORT MIB: random data in through nbdcopy, back out
# through nbdcopy on another connection, compared byte for byte.
check_nbdcopy() {
  local sock="$1" exp="$2" mib="$3" uri size
  uri="$(nbd_uri "$sock" "$exp")"
  size="$(export_size "$sock" "$exp")"
  [ "$size" -ge $((mib * 1048576)) ] || die "export ($size bytes) smaller than $mib MiB"
  head -c $((mib * 1048576)) /dev/urandom >"$T/nbdcopy-in.bin"
  with_timeout 120 nbdcopy --flush "$T/nbdcopy-in.bin" "$uri" \
    || die "nbdcopy to $uri failed"
  # nbdcopy always copies the whole source; compare the prefix we wrote.
  with_timeout 300 nbdcopy "$uri" "$T/nbdcopy-out.bin" || die "nbdcopy from $uri failed"
  [ "$(stat -c %s "$T/nbdcopy-out.bin")" -eq "$size" ] \
    || die "nbdcopy read $(stat -c %s "$T/nbdcopy-out.bin") bytes, export has $size"
  cmp -n $((mib * 1048576)) "$T/nbdcopy-in.bin" "$T/nbdcopy-out.bin" \
    || die "nbdcopy: data read back differs from data written"
  rm -f "$T/nbdcopy-in.bin" "$T/nbdcopy-out.bin"
  log "check_nbdcopy ok: $mib MiB round trip"
}

# _qemu_io URI CMD...: one qemu-io session; its output must show no failure.
# qemu-io 7.2 exits 0 after "Pattern verification failed", hence the grep.
_qemu_io() {
  local uri="$1" out="$T/qemu-io.out" c
  shift
  local args=()
  for c in "$@"; do args+=(-c "$c"); done
  with_timeout 60 qemu-io -f raw "${args[@]}" "$uri" >"$out" 2>&1 || {
    cat "$out" >&2
    die "qemu-io exited non-zero"
  }
  if grep -qiE 'Pattern verification failed|failed|error' "$out"; then
    cat "$out" >&2
    die "qemu-io reported a failure"
  fi
  cat "$out"
}

# check_qemu_io SOCK EXPORT: several patterns written asynchronously and
# flushed, then verified from a second connection; plus a 512-byte write at
# an odd sector inside a 4 KiB block whose neighbours must stay intact.
check_qemu_io() {
  local sock="$1" exp="$2" uri size out n
  uri="$(nbd_uri "$sock" "$exp")"
  size="$(export_size "$sock" "$exp")"
  [ "$size" -ge $((16 * 1048576)) ] || die "export too small for check_qemu_io"
  # offset length pattern: first block, unaligned-to-extent large write,
  # a write across a 2 MiB extent boundary, the very last 64 KiB.
  local spec=(
    "0 65536 0x11"
    "1048576 4096 0x22"
    "4198400 131072 0x33"
    "$((2097152 - 8192)) 16384 0x44"
    "$((size - 65536)) 65536 0x55"
  )
  local writes=() reads=() s off len pat
  for s in "${spec[@]}"; do
    read -r off len pat <<<"$s"
    writes+=("aio_write -P $pat $off $len")
    reads+=("read -P $pat $off $len")
  done
  _qemu_io "$uri" "${writes[@]}" "aio_flush" >/dev/null
  out="$(_qemu_io "$uri" "${reads[@]}")"
  n="$(grep -c '^read [0-9]*/[0-9]* bytes at offset' <<<"$out" || true)"
  [ "$n" -eq "${#spec[@]}" ] || { echo "$out" >&2; die "qemu-io: $n of ${#spec[@]} reads completed"; }

  # 512-byte write at sector 3 of the 4 KiB block at 8 MiB.
  local blk=8388608 odd=$((8388608 + 3 * 512))
  _qemu_io "$uri" "write -P 0x66 $blk 4096" "write -P 0x5a $odd 512" "flush" >/dev/null
  out="$(_qemu_io "$uri" "read -P 0x66 $blk 1536" "read -P 0x5a $odd 512" \
    "read -P 0x66 $((odd + 512)) 2048")"
  n="$(grep -c '^read [0-9]*/[0-9]* bytes at offset' <<<"$out" || true)"
  [ "$n" -eq 3 ] || { echo "$out" >&2; die "qemu-io: unaligned check read $n of 3"; }
  log "check_qemu_io ok: ${#spec[@]} aio patterns, 512-byte write at odd sector"
}

# fio_amounts_ok JSON BYTES MODE: fio's JSON reports two error-free jobs that
# each wrote and verified (MODE write) or only verified (verify_only) BYTES.
fio_amounts_ok() {
  "$HASTNBD_PYTHON" - "$1" "$2" "$3" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
want, mode = int(sys.argv[2]), sys.argv[3]
jobs = d["jobs"]
if len(jobs) != 2:
    sys.exit(f"{len(jobs)} fio jobs reported, want 2")
for j in jobs:
    if j["error"]:
        sys.exit(f"job {j['jobname']}: error {j['error']}")
    w, r = j["write"]["io_bytes"], j["read"]["io_bytes"]
    # A verified write pass reads back exactly what it wrote; verify_only
    # only reads.
    if (mode == "write" and (w != want or r != want)) or \
       (mode != "write" and r != want):
        sys.exit(f"job: wrote {w}, verified {r} bytes; want {want}")
EOF
}

# check_fio_verify SOCK EXPORT SIZE: two jobs (two connections), QD32 random
# writes with crc32c headers in disjoint regions of SIZE each, verified by the
# jobs themselves, then verified again by a separate read-only pass.
check_fio_verify() {
  local sock="$1" exp="$2" size="$3" uri bytes pass
  uri="$(nbd_uri "$sock" "$exp")"
  bytes="$(numfmt --from=iec "${size%B}")"
  [ "$(export_size "$sock" "$exp")" -ge $((2 * bytes)) ] \
    || die "export too small for 2 x $size fio regions"
  local common=(
    --name=verify --ioengine=nbd "--uri=$uri" --rw=randwrite --bs=4k
    --iodepth=32 --numjobs=2 "--size=$bytes" "--offset_increment=$bytes"
    --verify=crc32c --verify_fatal=1 --do_verify=1 --randrepeat=1
    --verify_state_save=0 --output-format=json
  )
  for pass in write verify_only; do
    local extra=() json="$T/fio-$pass.json" err="$T/fio-$pass.err" rc=0
    [ "$pass" = verify_only ] && extra=(--verify_only=1)
    # From $T: fio drops state files into its working directory.
    (cd "$T" && with_timeout 300 fio "${common[@]}" "${extra[@]}" "--output=$json") 2>"$err" || rc=$?
    if [ "$rc" -ne 0 ] || grep -q 'verify:' "$err"; then
      cat "$err" >&2
      die "fio $pass pass failed (exit $rc)"
    fi
    fio_amounts_ok "$json" "$bytes" "$pass" || die "fio $pass pass: wrong amounts"
  done
  rm -f "$T"/fio-*.json "$T"/fio-*.err
  log "check_fio_verify ok: 2 x $size written and verified twice"
}

# _umount_if_mounted DIR
_umount_if_mounted() {
  if mountpoint -q "$1"; then
    umount "$1" || umount -l "$1"
  fi
}

# _loop_detach DEV FILE: only if DEV still belongs to FILE (the kernel may
# hand a freed loop number to someone else).
_loop_detach() {
  local back
  back="$(losetup -n -O BACK-FILE "$1" 2>/dev/null | sed 's/[[:space:]]*$//')" || return 0
  [ "$back" = "$2" ] && losetup -d "$1"
}

# check_ext4_nbdfuse SOCK EXPORT: a real file system on the export without the
# kernel nbd client: nbdfuse -> loop -> ext4, fsck-clean, checksums survive a
# remount.
check_ext4_nbdfuse() {
  local sock="$1" exp="$2" uri pid dev fuse="$T/fuse" mnt="$T/mnt" i
  require_root
  require_cmd nbdfuse losetup mkfs.ext4 e2fsck sha256sum
  uri="$(nbd_uri "$sock" "$exp")"
  mkdir -p "$fuse" "$mnt" "$T/ext4-src"

  # nbdfuse's --unix mode has no export name; the URI form carries it.
  nbdfuse -P "$T/nbdfuse.pid" "$fuse/disk" "$uri" </dev/null >"$T/nbdfuse.log" 2>&1 &
  pid=$!
  track_pid "$pid" "$T/nbdfuse.log"
  on_exit "_umount_if_mounted '$fuse'"
  if ! WAIT_PID="$pid" wait_for 20 "nbdfuse on $fuse" test -s "$T/nbdfuse.pid"; then
    show_log "$T/nbdfuse.log"
    die "nbdfuse did not start"
  fi
  wait_for 10 "$fuse/disk" test -f "$fuse/disk" || die "nbdfuse: $fuse/disk missing"

  dev="$(with_timeout 30 losetup -f --show "$fuse/disk")" || die "losetup failed"
  on_exit "_loop_detach '$dev' '$fuse/disk'"
  with_timeout 120 mkfs.ext4 -q -F "$dev" || die "mkfs.ext4 on $dev failed"
  with_timeout 30 mount "$dev" "$mnt" || die "mount $dev failed"
  on_exit "_umount_if_mounted '$mnt'"

  # 20 files from 4 KiB to ~2.5 MiB, sizes off the block grid.
  for ((i = 0; i < 20; i++)); do
    head -c $((4096 + i * 131072 + i * 777)) /dev/urandom >"$T/ext4-src/f$i"
  done
  mkdir -p "$mnt/d"
  cp "$T"/ext4-src/f* "$mnt/d/"
  (cd "$T/ext4-src" && sha256sum f*) >"$T/ext4.sha256"
  sync
  with_timeout 60 umount "$mnt" || die "umount $mnt failed"
  # Drop the loop device's cached blocks so fsck and the remount read through
  # FUSE from the NBD server, not from the page cache.
  blockdev --flushbufs "$dev" || true
  with_timeout 120 e2fsck -fn "$dev" >"$T/e2fsck.out" 2>&1 || {
    cat "$T/e2fsck.out" >&2
    die "e2fsck -fn $dev is not clean"
  }
  with_timeout 30 mount "$dev" "$mnt" || die "remount $dev failed"
  (cd "$mnt/d" && with_timeout 60 sha256sum --quiet -c "$T/ext4.sha256") \
    || die "sha256sums differ after remount"
  [ "$(find "$mnt/d" -type f | wc -l)" -eq 20 ] || die "file count differs after remount"
  with_timeout 60 umount "$mnt" || die "final umount $mnt failed"
  with_timeout 30 losetup -d "$dev" || die "losetup -d $dev failed"
  with_timeout 30 umount "$fuse" || die "umount $fuse failed"
  # nbdfuse exits by itself once unmounted.
  WAIT_PID="" wait_for 20 "nbdfuse to exit" bash -c "! kill -0 $pid" \
    || die "nbdfuse still running after umount"
  rm -rf "$T/ext4-src"
  log "check_ext4_nbdfuse ok: ext4 over nbdfuse+loop, fsck clean, 20 files verified"
}

# raw_scenario SOCK SCENARIO [EXPORT]: one nbd_raw.py scenario, bounded.
raw_scenario() {
  with_timeout 120 "$HASTNBD_PYTHON" "$NBD_RAW" "$1" "$2" "${3:-data}" \
    || die "nbd_raw.py scenario $2 failed"
}

raw_scenarios() {
  "$HASTNBD_PYTHON" "$NBD_RAW" --list-scenarios
}

# run_all_client_checks SOCK EXPORT SIZE: every real-client check in one call,
# for the t_*.sh tests of a primary.
run_all_client_checks() {
  local sock="$1" exp="$2" size="$3"
  check_nbdinfo "$sock" "$exp" "$size"
  check_nbdcopy "$sock" "$exp" 16
  check_qemu_io "$sock" "$exp"
  check_fio_verify "$sock" "$exp" 32M
  check_ext4_nbdfuse "$sock" "$exp"
}

# --- two nodes on one machine ---------------------------------------------------

# free_ports N: N distinct random TCP ports in 20000..59999 that nothing on
# this host (this network namespace) uses right now. One call for all the
# ports a test needs, since a command substitution cannot remember what an
# earlier call handed out.
free_ports() {
  local want="$1" p i
  local -A given=()
  local out=()
  for ((i = 0; i < 1000 && ${#out[@]} < want; i++)); do
    p=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
    [ -z "${given[$p]:-}" ] || continue
    [ -z "$(ss -Htan "( sport = :$p or dport = :$p )" 2>/dev/null)" ] || continue
    given[$p]=1
    out+=("$p")
  done
  [ "${#out[@]}" -eq "$want" ] || die "found only ${#out[@]} of $want free TCP ports"
  echo "${out[*]}"
}

# write_pair_config FILE ADDR_A ADDR_B [YAML-LINE...]: a two-node config beside
# FILE: resource "data", node a listening on ADDR_A with remote ADDR_B, node b
# the other way round, each with its own DIR/disk-N.img (sparse,
# $PAIR_DISK_SIZE, default 256M, created unless present), DIR/run-N and
# DIR/state-N. Settings from the environment: PAIR_TIMEOUT (3),
# PAIR_REPLICATION (fullsync), PAIR_COMPRESSION (lz4), PAIR_CHECKSUM (xxh3),
# PAIR_KEEPDIRTY (8); PAIR_REMOTE_A / PAIR_REMOTE_B override a node's remote
# (e.g. a peer that is not where the other node listens). The link is
# authenticated as a real pair's is: both nodes' psk_file is DIR/peer.key
# (made with hastnbd-ctl genkey unless present); PAIR_AUTH=none writes
# `auth: none` instead, PAIR_AUTH=nokey neither (for a TLS-only link).
# PAIR_TLS=DIR gives each node `tls:` with DIR/N.crt, DIR/N.key and
# DIR/ca.crt (make_test_pki writes them). Extra lines go into the resource
# section.
write_pair_config() {
  local file="$1" addr_a="$2" addr_b="$3" dir line n auth
  shift 3
  dir="$(cd "$(dirname "$file")" && pwd)"
  for n in a b; do
    [ -e "$dir/disk-$n.img" ] || make_disk "$dir/disk-$n.img" "${PAIR_DISK_SIZE:-256M}"
    mkdir -p "$dir/run-$n" "$dir/state-$n"
  done
  local tls_a="" tls_b=""
  if [ -n "${PAIR_TLS:-}" ]; then
    tls_a=", tls: {cert: $PAIR_TLS/a.crt, key: $PAIR_TLS/a.key, ca: $PAIR_TLS/ca.crt}"
    tls_b=", tls: {cert: $PAIR_TLS/b.crt, key: $PAIR_TLS/b.key, ca: $PAIR_TLS/ca.crt}"
  fi
  if [ "${PAIR_AUTH:-psk}" = none ]; then
    auth="auth: none"
  elif [ "${PAIR_AUTH:-psk}" = nokey ]; then
    auth="# no psk"
  else
    [ -e "$dir/peer.key" ] || "$HASTNBD_BIN/hastnbd-ctl" genkey "$dir/peer.key" >/dev/null \
      || die "hastnbd-ctl genkey $dir/peer.key failed"
    auth="psk_file: $dir/peer.key"
  fi
  {
    echo "defaults: {timeout: ${PAIR_TIMEOUT:-3}}"
    echo "resources:"
    echo "  data:"
    echo "    replication: ${PAIR_REPLICATION:-fullsync}"
    echo "    compression: ${PAIR_COMPRESSION:-lz4}"
    echo "    checksum: ${PAIR_CHECKSUM:-xxh3}"
    echo "    extent_size: 2MiB"
    echo "    keepdirty: ${PAIR_KEEPDIRTY:-8}"
    echo "    $auth"
    for line in "$@"; do
      echo "    $line"
    done
    echo "    nodes:"
    echo "      a: {local: $dir/disk-a.img, run_dir: $dir/run-a, state_dir: $dir/state-a," \
      "listen: \"$addr_a\", remote: \"${PAIR_REMOTE_A:-$addr_b}\"$tls_a}"
    echo "      b: {local: $dir/disk-b.img, run_dir: $dir/run-b, state_dir: $dir/state-b," \
      "listen: \"$addr_b\", remote: \"${PAIR_REMOTE_B:-$addr_a}\"$tls_b}"
  } >"$file"
}

# show_logs: both daemons' logs of a pair (nodes a and b), for a failure
# message; a test may define its own.
show_logs() {
  show_log "$(daemon_log a)"
  show_log "$(daemon_log b)"
}

# hook_recorder SCRIPT OUT: SCRIPT, a hook program (config `exec`) that
# appends each event's arguments ("EVENT RESOURCE ARGS...") to OUT, a line each.
hook_recorder() {
  printf '#!/bin/sh\necho "$*" >>"%s"\n' "$2" >"$1"
  chmod +x "$1"
  : >"$2"
}

# cpu_ticks PID: user + system CPU time of a process so far, in clock ticks.
cpu_ticks() {
  local stat
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || { echo 0; return 0; }
  stat="${stat##*) }"
  # shellcheck disable=SC2086
  set -- $stat
  echo $((${12} + ${13}))          # fields 14 and 15 of the whole line
}

# make_test_pki DIR: a test CA (DIR/ca.crt) and certificates for nodes a and
# b (DIR/N.crt, DIR/N.key, mode 0600), EC P-256, valid for a day, SAN DNS:N,
# usable as TLS server and client. Besides, for the attacks: rogue-a (a
# certificate for "a" from another CA), c (from the real CA, for "c") and
# expired-a (for "a", from the real CA, expired in 2020).
make_test_pki() {
  local d="$1" n
  require_cmd openssl
  mkdir -p "$d"
  (
    set -e
    cd "$d"
    umask 077
    for ca in ca rogue-ca; do
      openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$ca.key" -out "$ca.crt" \
        -days 2 -subj "/CN=hastnbd test $ca" -addext basicConstraints=critical,CA:TRUE \
        -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
    done
    leaf() {  # NAME CN CA [openssl ca dates]
      printf 'subjectAltName=DNS:%s\nextendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=CA:FALSE\n' "$2" >"$1.ext"
      openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$1.key" -out "$1.csr" \
        -subj "/CN=$2" 2>/dev/null
      openssl x509 -req -in "$1.csr" -CA "$3.crt" -CAkey "$3.key" -CAcreateserial -days 1 -sha256 \
        -extfile "$1.ext" -out "$1.crt" 2>/dev/null
    }
    leaf a a ca
    leaf b b ca
    leaf c c ca
    leaf rogue-a a rogue-ca
    # Expired: openssl ca takes explicit dates (openssl x509 -req cannot backdate).
    mkdir -p ca-db
    : >ca-db/index.txt
    echo 1000 >ca-db/serial
    printf '[ca]\ndefault_ca=x\n[x]\ndatabase=ca-db/index.txt\nnew_certs_dir=ca-db\nserial=ca-db/serial\ndefault_md=sha256\npolicy=p\ncopy_extensions=copy\n[p]\ncommonName=supplied\n' >ca.cnf
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout expired-a.key -out expired-a.csr \
      -subj "/CN=a" 2>/dev/null
    openssl ca -batch -config ca.cnf -cert ca.crt -keyfile ca.key -in expired-a.csr -out expired-a.crt \
      -startdate 20200101000000Z -enddate 20200102000000Z -extfile a.ext -notext 2>/dev/null
    chmod 644 ./*.crt
  ) || die "make_test_pki: openssl failed"
  for n in a b c rogue-a expired-a; do [ -s "$d/$n.crt" ] || die "make_test_pki: no $d/$n.crt"; done
}

# status_field CONF NODE SUBSCRIPT: one field of `status --json data`, e.g.
#   status_field "$conf" a '["peer"]["state"]'
status_field() {
  local out
  out="$(hastnbd_ctl "$1" "$2" status --json data)" || return 1
  "$HASTNBD_PYTHON" -c "import json,sys; s=json.load(sys.stdin); print(s$3)" <<<"$out"
}

# dump_field CONF NODE SUBSCRIPT: one field of `dump --json data`.
dump_field() {
  local out
  out="$(hastnbd_ctl "$1" "$2" dump --json data)" || return 1
  "$HASTNBD_PYTHON" -c "import json,sys; s=json.load(sys.stdin); print(s$3)" <<<"$out"
}

_peer_state_is() {  # CONF NODE STATE
  [ "$(status_field "$1" "$2" '["peer"]["state"]' 2>/dev/null)" = "$3" ]
}

_peer_state_is_not() {  # CONF NODE STATE
  local s
  s="$(status_field "$1" "$2" '["peer"]["state"]' 2>/dev/null)" || return 1
  [ -n "$s" ] && [ "$s" != "$3" ]
}

# wait_peer_state CONF NODE STATE SECS: until the node's peer state is STATE.
wait_peer_state() {
  wait_for "$4" "node $2 peer state $3" _peer_state_is "$1" "$2" "$3"
}

# wait_peer_state_not CONF NODE STATE SECS: until the node's peer state is
# anything but STATE.
wait_peer_state_not() {
  wait_for "$4" "node $2 peer state to leave $3" _peer_state_is_not "$1" "$2" "$3"
}

_in_sync() {  # CONF NODE
  [ "$(status_field "$1" "$2" '["in_sync"]')" = True ]
}

_sync_state_is() {  # CONF NODE STATE
  [ "$(status_field "$1" "$2" '["sync"]["state"]')" = "$3" ]
}

# acked_writer_start SOCK LEDGER BYTES MIN: in the background, acked_writes.py
# writes 4 KiB blocks over [0, BYTES) through SOCK, 16 in flight, logging every
# acknowledged write to LEDGER (output in $T/writer.out); returns once MIN
# writes are acknowledged. Sets ACKED_WRITER to its pid.
acked_writer_start() {
  local sock="$1" ledger="$2" bytes="$3" min="$4"
  "$HASTNBD_PYTHON" "$LIB_DIR/acked_writes.py" write "$sock" "$ledger" 0 "$bytes" \
    --depth 16 --seconds 60 >"$T/writer.out" 2>&1 &
  ACKED_WRITER=$!
  _acked_at_least() { [ "$(wc -l <"$1" 2>/dev/null || echo 0)" -gt "$2" ]; }
  wait_for 30 "$min acknowledged writes" _acked_at_least "$ledger" "$min" \
    || die "the writer got no acknowledgements: $(cat "$T/writer.out")"
}

# wait_in_sync CONF NODE SECS: until the node says it is connected and no
# synchronisation is left (on the primary: every copy confirmed).
wait_in_sync() {
  wait_for "$3" "node $2 in sync" _in_sync "$1" "$2"
}

# wait_catch_up CONF NODE DIRTY KEEPDIRTY TAG: after a reconnect, the
# primary NODE synchronises what was written while the peer was away: waits
# for in_sync (60 s), then checks the plan was not empty and at most the
# union of both maps (NODE's DIRTY extents and the peer's KEEPDIRTY ones).
# Sets CAUGHT_UP to the bytes planned.
wait_catch_up() {
  local conf="$1" node="$2" dirty="$3" keep="$4" tag="$5" ext
  if ! wait_in_sync "$conf" "$node" 60; then
    show_log "$(daemon_log "$node")"
    die "$tag: the catch-up sync did not finish within 60 s of the reconnect"
  fi
  ext="$(status_field "$conf" "$node" '["extent_size"]')"
  CAUGHT_UP="$(status_field "$conf" "$node" '["sync"]["total_bytes"]')"
  [ "$CAUGHT_UP" -gt 0 ] || die "$tag: the reconnect planned no synchronisation after degraded writes"
  [ "$CAUGHT_UP" -le $(((dirty + keep) * ext)) ] \
    || die "$tag: catch-up planned $CAUGHT_UP bytes for $dirty dirty extents (+ $keep) of $ext bytes"
}

# netns_pair TAG NET: two network namespaces joined by a veth pair, as two
# machines would be: NS_A/NS_B ("hnbd-TAGa-$$"), VETH_A/VETH_B, addresses
# IP_A/IP_B in 10.NET.x.0/24, both links up. Removed on exit (daemons started
# later are killed first: the cleanup stack runs in reverse).
netns_pair() {
  local tag="$1" net="$2" x=$(($$ % 250 + 1))
  NS_A="hnbd-${tag}a-$$"
  NS_B="hnbd-${tag}b-$$"
  VETH_A="hnbd${tag}a$$"
  VETH_B="hnbd${tag}b$$"
  IP_A="10.$net.$x.1"
  IP_B="10.$net.$x.2"
  [ "${#VETH_A}" -le 15 ] || die "veth name $VETH_A too long"
  on_exit "ip netns del $NS_A 2>/dev/null; ip netns del $NS_B 2>/dev/null; ip link del $VETH_A 2>/dev/null; true"
  ip netns add "$NS_A" || die "ip netns add $NS_A failed"
  ip netns add "$NS_B" || die "ip netns add $NS_B failed"
  ip link add "$VETH_A" netns "$NS_A" type veth peer name "$VETH_B" netns "$NS_B" \
    || die "creating veth pair $VETH_A/$VETH_B failed"
  ip -n "$NS_A" addr add "$IP_A/24" dev "$VETH_A"
  ip -n "$NS_B" addr add "$IP_B/24" dev "$VETH_B"
  ip -n "$NS_A" link set lo up
  ip -n "$NS_B" link set lo up
  ip -n "$NS_A" link set "$VETH_A" up
  ip -n "$NS_B" link set "$VETH_B" up
  wait_for 10 "veth link up" _veth_pair_up || die "veth pair $VETH_A/$VETH_B did not come up"
}

_veth_pair_up() {
  ip -n "$NS_A" link show "$VETH_A" | grep -q "LOWER_UP" && ip -n "$NS_B" link show "$VETH_B" | grep -q "LOWER_UP"
}

# start_both CONF [NETNS_A NETNS_B]: metadata for nodes a and b of resource
# data and both daemons (b first), in role init; each inside its network
# namespace when given. Sets PAIR_PID_A and PAIR_PID_B.
start_both() {
  local conf="$1" ns_a="${2:-}" ns_b="${3:-}"
  create_resource "$conf" a data >/dev/null
  create_resource "$conf" b data >/dev/null
  _start_daemon_in "$ns_b" "$conf" b data
  # shellcheck disable=SC2034  # read by the tests
  PAIR_PID_B=$DAEMON_PID
  _start_daemon_in "$ns_a" "$conf" a data
  # shellcheck disable=SC2034  # read by the tests
  PAIR_PID_A=$DAEMON_PID
}

# start_pair CONF: start_both, then b secondary, a primary, the link up
# within 10 s and the initial full sync done. Sets PAIR_PID_A and PAIR_PID_B.
start_pair() {
  local conf="$1"
  start_both "$conf"
  hastnbd_ctl "$conf" b role secondary data >/dev/null || die "role secondary on node b failed"
  make_primary "$conf" a data
  if ! wait_peer_state "$conf" a connected 10; then
    show_log "$(daemon_log a)"
    show_log "$(daemon_log b)"
    die "the primary did not connect to the secondary within 10 s"
  fi
  # A fresh pair starts with a full synchronisation.
  if ! wait_in_sync "$conf" a 60; then
    show_log "$(daemon_log a)"
    show_log "$(daemon_log b)"
    die "the initial full synchronisation did not finish within 60 s"
  fi
}

# nbd_flush SOCK: one NBD FLUSH through qemu-io.
nbd_flush() {
  with_timeout 60 qemu-io -f raw -c flush "$(nbd_uri "$1" data)" >"$T/flush.out" 2>&1 || {
    cat "$T/flush.out" >&2
    die "NBD FLUSH through qemu-io failed"
  }
}

# fio_verify_start SOCK BYTES OFFSET SECS TAG [FIO-ARG...]: in the background,
# 2 fio jobs (2 NBD connections) at QD32, random writes of 4 KiB with one in
# five of 64 KiB, job i in [OFFSET + i*BYTES, OFFSET + (i+1)*BYTES), every
# block crc32c-verified by reading it back; fio is killed after SECS. Sets
# FIO_PID; fio_verify_check TAG waits and judges.
fio_verify_start() {
  local sock="$1" bytes="$2" offset="$3" secs="$4" tag="$5"
  shift 5
  (cd "$T" && exec timeout --kill-after=5 "$secs" fio --name="$tag" --ioengine=nbd \
    "--uri=$(nbd_uri "$sock" data)" --rw=randwrite --bssplit=4k/80:64k/20 --iodepth=32 \
    --numjobs=2 "--size=$bytes" "--offset=$offset" "--offset_increment=$bytes" \
    --verify=crc32c --verify_fatal=1 --do_verify=1 --randrepeat=0 --verify_state_save=0 \
    --output-format=json "--output=$T/fio-$tag.json" "$@") 2>"$T/fio-$tag.err" &
  FIO_PID=$!
  track_pid "$FIO_PID"
  echo "$bytes" >"$T/fio-$tag.bytes"
}

fio_verify_check() {
  local tag="$1" rc=0 bytes
  bytes="$(cat "$T/fio-$tag.bytes")"
  wait "$FIO_PID" || rc=$?
  if [ "$rc" -ne 0 ] || grep -q 'verify:' "$T/fio-$tag.err"; then
    cat "$T/fio-$tag.err" >&2
    [ "$rc" -ne 124 ] || die "fio $tag did not finish in time (a client request hung?)"
    die "fio $tag failed (exit $rc)"
  fi
  fio_amounts_ok "$T/fio-$tag.json" "$bytes" write || die "fio $tag: wrong amounts"
  log "fio $tag ok: 2 x $bytes bytes written and verified"
}

# fio_verify SOCK BYTES OFFSET SECS TAG [FIO-ARG...]: both of the above.
fio_verify() {
  fio_verify_start "$@"
  fio_verify_check "$5"
}

# log_since FILE LINE: the lines of FILE after line LINE (a count taken with
# `wc -l <FILE` before the event), so a check sees only what the event logged.
log_since() {
  tail -n +"$(($2 + 1))" "$1"
}

# cmp_region FILE1 FILE2 OFFSET LENGTH: the two files hold the same bytes there.
cmp_region() {
  cmp -n "$4" -i "$3:$3" "$1" "$2"
}
