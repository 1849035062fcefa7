#!/usr/bin/env bash
# The daemon's life as an admin sees it: roles, status and list, the TCP
# listener, role changes refused while clients are attached (and forced),
# SIGHUP survived, SIGTERM draining in-flight writes with every acknowledged
# write durable across a restart, localcnt bumped once per degraded period.
source "$(dirname "$0")/lib.sh"
require_root
require_cmd nbdinfo qemu-io

port=$((20000 + RANDOM % 20000))
conf="$T/hastnbd.yaml"
HASTNBD_DISK_SIZE=256M write_config "$conf" "nbd: {listen: \"127.0.0.1:$port\"}"
create_resource "$conf" a data
field() {  # JSON-PATH: a field of `status --json`
  hastnbd_ctl "$conf" a status --json data | "$HASTNBD_PYTHON" -c "import json,sys; s=json.load(sys.stdin); print(s$1)"
}

# Fresh metadata before any start.
hastnbd_ctl "$conf" a dump data | grep -q "flags:         fresh" || die "new metadata is not marked fresh"

start_daemon "$conf" a data
pid=$DAEMON_PID
[ "$(field '["role"]')" = init ] || die "daemon did not start in role init"
[ ! -e "$(nbd_socket "$conf" a data)" ] || die "NBD socket exists in role init"
hastnbd_ctl "$conf" a list | grep -E "^data +init +standalone" >/dev/null || die "list does not show data in role init"

make_primary "$conf" a data
sock="$(nbd_socket "$conf" a data)"
[ "$(field '["role"]')" = primary ] || die "role is not primary"
hastnbd_ctl "$conf" a status data | grep -q "role:        primary" || die "human status lacks the role"

# TCP listener from nbd.listen.
size="$(with_timeout 20 nbdinfo --size "nbd://127.0.0.1:$port/data")" || die "nbdinfo over TCP failed"
[ "$size" = 268435456 ] || die "TCP export size $size"
with_timeout 30 qemu-io -f raw "nbd://127.0.0.1:$port/data" -c "write -P 0x3c 0 65536" >/dev/null || die "write over TCP"
with_timeout 30 qemu-io -f raw "$(nbd_uri "$sock" data)" -c "read -P 0x3c 0 65536" | grep -q "read 65536" \
  || die "TCP write not visible over the Unix socket"

# A role change with a client attached is refused, then forced.
"$HASTNBD_PYTHON" -c "
import sys, time; sys.path.insert(0, '$LIB_DIR')
from nbd_raw import connect
c = connect('$sock', 'data'); time.sleep(60)" &
holder=$!
track_pid "$holder"
wait_for 10 "client attached" sh -c "[ \"\$($HASTNBD_BIN/hastnbd-ctl -c $conf --node a status --json data | grep -o '\"clients\": [0-9]*')\" = '\"clients\": 1' ]"
rc=0
hastnbd_ctl "$conf" a role init data 2>"$T/role.err" || rc=$?
[ "$rc" -eq 1 ] && grep -q "1 NBD client(s) attached" "$T/role.err" || die "role init with a client attached: rc $rc $(cat "$T/role.err")"
[ "$(field '["role"]')" = primary ] || die "a refused role change changed the role"
hastnbd_ctl "$conf" a role --force init data >/dev/null || die "role init --force failed"
[ "$(field '["role"]')" = init ] || die "role not init after --force"
[ ! -e "$sock" ] || die "NBD socket left behind in role init"
[ "$(field '["nbd"]["clients"]')" = 0 ] || die "client still attached after a forced role change"
kill_pid "$holder"

# SIGHUP is logged and survived.
kill -HUP "$pid"
sleep 0.3
kill -0 "$pid" || die "SIGHUP killed the daemon"

# SIGTERM with writes in flight: drain, reply, exit 0; acknowledged = durable.
make_primary "$conf" a data
with_timeout 60 "$HASTNBD_PYTHON" "$LIB_DIR/drain_client.py" send "$sock" "$pid" 256 "$T/drain.json" \
  || die "drain client failed"
stop_status=0
for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
kill -0 "$pid" 2>/dev/null && die "daemon still running 30 s after SIGTERM"
wait "$pid" || stop_status=$?
[ "$stop_status" -eq 0 ] || die "daemon exited $stop_status after SIGTERM"
grep -q "stopped cleanly" "$(daemon_log a)" || die "no clean-stop log line"
localcnt1="$(hastnbd_ctl "$conf" a dump --json data | "$HASTNBD_PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["localcnt"])')"
[ "$localcnt1" = 1 ] || die "localcnt $localcnt1 after the first degraded period, want 1"

start_daemon "$conf" a data
pid=$DAEMON_PID
make_primary "$conf" a data
with_timeout 60 "$HASTNBD_PYTHON" "$LIB_DIR/drain_client.py" verify "$sock" "$T/drain.json" \
  || die "acknowledged writes lost across SIGTERM"
# A new period of degraded writes starts a new generation, once.
with_timeout 30 qemu-io -f raw "$(nbd_uri "$sock" data)" -c "write -P 1 0 4096" -c "write -P 2 8192 4096" >/dev/null
[ "$(field '["metadata"]["localcnt"]')" = 2 ] || die "localcnt not 2 after writes in the second degraded period"
stop_daemon "$pid"
hastnbd_ctl "$conf" a list | grep -E "^data +stopped" >/dev/null || die "list does not show data stopped"
log "t_lifecycle: roles, status, TCP, forced role change, SIGHUP, SIGTERM drain, generations ok"
