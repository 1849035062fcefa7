#!/usr/bin/env bash
# Roles across a restart of the daemon (docs/design.md, "Roles across a
# restart"), on a real pair over loopback:
#   (i)   the secondary's daemon killed (SIGKILL) and started again comes
#         back secondary by itself; the primary reconnects and the pair is in
#         sync again, with a write made while b was down on b's disk;
#   (ii)  the same after a clean stop (SIGTERM), with a `role secondary`
#         sent at once (as a cluster manager would): no error;
#   (iii) a reboot (RUN_DIR emptied: it is a tmpfs) brings b back in init;
#   (iv)  a primary without a kernel device restarted stays init, and says
#         why; `role init` recorded before a stop is kept too.
# The primary with an attached kernel device (resumed as primary) is
# t_kernel's part restart, in the VM.
source "$(dirname "$0")/lib.sh"
require_cmd qemu-io

read -r pa pb <<<"$(free_ports 2)"
conf="$T/hastnbd.yaml"
write_pair_config "$conf" "127.0.0.1:$pa" "127.0.0.1:$pb"
start_pair "$conf"
sock="$(nbd_socket "$conf" a data)"
run_b="$(run_dir_of "$conf" b)"
[ "$(cat "$run_b/data.role")" = secondary ] || die "b's role file does not say secondary: $(cat "$run_b/data.role")"
[ "$(stat -c %a "$run_b/data.role")" = 600 ] || die "b's role file has mode $(stat -c %a "$run_b/data.role"), want 600"

role_of() { status_field "$conf" "$1" '["role"]'; }
_role_is() { [ "$(role_of "$1")" = "$2" ]; }

# (i) kill -9 of the secondary
kill -KILL "${DAEMON_PIDS[b]}"
wait "${DAEMON_PIDS[b]}" 2>/dev/null || true
wait_peer_state_not "$conf" a connected 30 || die "(i) a still connected to the dead b"
_qemu_io "$(nbd_uri "$sock" data)" "write -P 0x5a 8388608 65536" "flush" >/dev/null
start_daemon "$conf" b data
wait_for 20 "b to resume as secondary" _role_is b secondary \
  || die "(i) b did not come back secondary: $(role_of b)"
grep -q "resuming as secondary" "$(daemon_log b)" || die "(i) b's log does not say it resumed as secondary"
wait_in_sync "$conf" a 60 || die "(i) the pair is not in sync after b came back"
"$HASTNBD_PYTHON" - "$T/disk-b.img" <<'PY' || die "(i) b's disk does not hold the write made while it was down"
import sys
with open(sys.argv[1], "rb") as f:
    f.seek(8388608)
    sys.exit(0 if f.read(65536) == b"\x5a" * 65536 else 1)
PY
log "(i) b killed and started again: secondary by itself, in sync, the degraded write copied"

# (ii) clean stop, then a cluster manager's `role secondary` at once
stop_daemon "${DAEMON_PIDS[b]}"
start_daemon "$conf" b data
hastnbd_ctl "$conf" b role secondary data >"$T/role.out" 2>&1 || die "(ii) role secondary right after the start failed: $(cat "$T/role.out")"
[ "$(role_of b)" = secondary ] || die "(ii) b is $(role_of b) after the restart"
wait_in_sync "$conf" a 60 || die "(ii) not in sync after the clean restart of b"
log "(ii) b stopped cleanly and started: secondary, 'role secondary' at once answered ok"

# (iii) a reboot empties RUN_DIR (a tmpfs): init, as before
stop_daemon "${DAEMON_PIDS[b]}"
rm -f "$run_b/data.role"
start_daemon "$conf" b data
sleep 1
[ "$(role_of b)" = init ] || die "(iii) b is $(role_of b) with no role recorded (after a reboot it must be init)"
hastnbd_ctl "$conf" b role secondary data >/dev/null || die "(iii) role secondary on b failed"
log "(iii) no role recorded (a reboot): b starts in init"

# (iv) a primary without a kernel device restarted: init, and the log says why
stop_daemon "${DAEMON_PIDS[a]}"
[ "$(cat "$(run_dir_of "$conf" a)/data.role")" = primary ] || die "(iv) a's role file does not say primary"
start_daemon "$conf" a data
sleep 1
[ "$(role_of a)" = init ] || die "(iv) a restarted without a kernel device is $(role_of a), want init"
grep -q "no kernel device of this resource is attached" "$(daemon_log a)" \
  || die "(iv) a's log does not say why it stays init"
make_primary "$conf" a data
hastnbd_ctl "$conf" b role init data >/dev/null || die "(iv) role init on b failed"
stop_daemon "${DAEMON_PIDS[b]}"
start_daemon "$conf" b data
sleep 1
[ "$(role_of b)" = init ] || die "(iv) b after 'role init' and a restart is $(role_of b), want init"
log "t_restart_roles: secondary resumed after kill -9 and SIGTERM; init after a reboot; a primary without device stays init"
