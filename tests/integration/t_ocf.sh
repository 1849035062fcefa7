#!/usr/bin/env bash
# The Pacemaker OCF resource agent tools/ocf/hastnbd, driven action by action
# as Pacemaker would (OCF_ROOT, OCF_RESKEY_*, OCF_RESKEY_CRM_meta_*), against
# two real daemons (nodes a and b on 127.0.0.1). The daemons are started,
# promoted, demoted and stopped only through the agent.
#  1. meta-data: exit 0, valid against ra-api-1.dtd and metadata.rng, every
#     action (promote, demote, notify, monitor per role) and parameter.
#  2. validate-all: 0 with a good configuration; 5 without metadata, binary
#     or configuration file; 6 for an unknown resource or node, a broken
#     file, an empty resource.
#  3. monitor before start: 7 (probe and recurring).
#  4. start of a daemon that cannot open its disk: 1 with its reason. start a
#     and b: monitor 0; promotion scores (through a stand-in crm_attribute):
#     none while fresh.
#  5. promote a: monitor 8; data written through a's NBD socket is on b's
#     disk; scores 10000 (a) and 1000 (b, in sync).
#  6. switchover: demote of a refused while an NBD client is attached, done
#     with force_demote (the client's write kept); promote b (8), the data
#     read back through b.
#  7. split-brain: each node writes alone, then they meet: b's monitor fails
#     (1), promote b is refused, a stays primary (8).
#  8. inconsistent: b discards its data and takes a slow full sync: monitor
#     0 without a score, promote refused; in sync again: score 1000.
#  9. kill -9 of b's daemon: monitor 7, stop 0 (idempotent); a stays 8. A
#     frozen (SIGSTOP) daemon: monitor 1, stop 0 through SIGKILL.
# 10. stop both (a while primary): 7; stop again: 0.
# 11. nbd.device configured but the nbd module missing (as on these
#     machines): promote fails (1) and leaves the node secondary; a primary
#     without its device is a failed primary (9).
# 12. ocf-tester against a real resource (one node of another pair): passes
#     all tests.
# T_OCF_VERBOSE=1 shows what the agent printed for every action.
source "$(dirname "$0")/lib.sh"
require_root
require_cmd xmllint qemu-io cmp ocf-tester timeout setsid

AGENT="$HASTNBD_SRC/tools/ocf/hastnbd"
export OCF_ROOT="${OCF_ROOT:-/usr/lib/ocf}"
[ -x "$AGENT" ] || die "$AGENT missing or not executable"
[ -r "$OCF_ROOT/lib/heartbeat/ocf-shellfuncs" ] || die "no ocf-shellfuncs under $OCF_ROOT (install resource-agents)"
RA_DATADIR=/usr/share/resource-agents
[ -r "$RA_DATADIR/ra-api-1.dtd" ] || die "$RA_DATADIR/ra-api-1.dtd missing (resource-agents)"
require_hastnbd

MIB=1048576
t_start=$(date +%s)

dir="$T/pair"
mkdir -p "$dir"
conf="$dir/hastnbd.yaml"
read -r pa pb <<<"$(free_ports 2)"
PAIR_DISK_SIZE=64M PAIR_TIMEOUT=3 write_pair_config "$conf" "127.0.0.1:$pa" "127.0.0.1:$pb"
sock_a="$(nbd_socket "$conf" a data)"
sock_b="$(nbd_socket "$conf" b data)"
field() { status_field "$conf" "$@"; }

# Daemons are started by the agent, in their own session: on every exit path
# kill whatever the agent's pid files name, if it is a hastnbd of this test.
kill_pidfile() {
  local pf="$1" pid
  [ -r "$pf" ] || return 0
  pid="$(head -n 1 "$pf")"
  [ -n "$pid" ] && tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -q "hastnbd .*$T/" || return 0
  kill_pid "$pid" 20
}
on_exit "kill_pidfile $T/ra-a.pid"
on_exit "kill_pidfile $T/ra-b.pid"
on_exit "kill_pidfile $T/ra-single.pid"

# A stand-in crm_attribute: records each promotion score call per node.
mkdir -p "$T/sbin"
cat >"$T/sbin/crm_attribute" <<EOF
#!/bin/sh
echo "\$*" >>"$T/scores-\$OCF_RESKEY_node"
EOF
chmod +x "$T/sbin/crm_attribute"

# ra NODE ACTION [VAR=VALUE...]: the agent for node NODE of the pair, with
# the environment Pacemaker gives a promotable clone instance (overridable);
# its output in $T/ra.out. Returns the agent's exit code.
ra() {
  local node="$1" action="$2" interval=0
  shift 2
  [ "$action" != monitor ] || interval=10000
  env OCF_RESOURCE_INSTANCE=hastnbd_data \
    OCF_RESKEY_resource=data OCF_RESKEY_config="$conf" OCF_RESKEY_node="$node" \
    OCF_RESKEY_daemon="$HASTNBD_BIN/hastnbd" OCF_RESKEY_ctl="$HASTNBD_BIN/hastnbd-ctl" \
    OCF_RESKEY_pidfile="$T/ra-$node.pid" OCF_RESKEY_log_file="$(daemon_log "$node")" \
    OCF_RESKEY_CRM_meta_timeout=60000 OCF_RESKEY_CRM_meta_interval="$interval" \
    OCF_RESKEY_CRM_meta_promotable=true OCF_RESKEY_CRM_meta_clone_max=2 \
    OCF_RESKEY_CRM_meta_promoted_max=1 OCF_RESKEY_crm_feature_set=3.16.0 \
    HA_SBIN_DIR="$T/sbin" \
    "$@" timeout --kill-after=5 120 "$AGENT" "$action" >"$T/ra.out" 2>&1
}

# expect NODE ACTION WANT [VAR=VALUE...]: the agent's exit code is WANT.
expect() {
  local node="$1" action="$2" want="$3" rc=0
  shift 3
  ra "$node" "$action" "$@" || rc=$?
  if [ "$rc" != "$want" ]; then
    cat "$T/ra.out" >&2
    show_log "$(daemon_log a)"
    show_log "$(daemon_log b)"
    die "agent $action on node $node${*:+ ($*)}: exit $rc, want $want"
  fi
  log "agent $action on node $node${*:+ ($*)}: $rc"
  [ -z "${T_OCF_VERBOSE:-}" ] || [ "$action" = meta-data ] || sed 's/^/    | /' "$T/ra.out" >&2
}

# ra_says TEXT: the last agent run printed TEXT.
ra_says() {
  grep -q -- "$1" "$T/ra.out" || { cat "$T/ra.out" >&2; die "the agent did not say '$1'"; }
}

# score NODE: the last promotion score call for NODE ("-p -v N" or "-p -D").
score() {
  tail -n 1 "$T/scores-$1" 2>/dev/null
}

expect_score() {  # NODE WANT
  local got
  got="$(score "$1")"
  [ "$got" = "$2" ] || die "node $1: last promotion score call '$got', want '$2'"
}

track_daemon() {  # NODE|single: the agent's daemon is killed on exit too
  track_pid "$(head -n 1 "$T/ra-$1.pid")"
}

# 1. meta-data ----------------------------------------------------------------
expect a meta-data 0
cp "$T/ra.out" "$T/meta.xml"
(cd "$RA_DATADIR" && xmllint --noout --valid - <"$T/meta.xml") || die "meta-data is not valid against ra-api-1.dtd"
if [ -r "$RA_DATADIR/metadata.rng" ]; then
  xmllint --noout --relaxng "$RA_DATADIR/metadata.rng" "$T/meta.xml" 2>"$T/rng.err" \
    || { cat "$T/rng.err" >&2; die "meta-data is not valid against metadata.rng"; }
fi
"$HASTNBD_PYTHON" - "$T/meta.xml" <<'EOF' || die "meta-data content check failed"
import sys
import xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
errors = []
if root.tag != "resource-agent" or root.get("name") != "hastnbd":
    errors.append(f"root {root.tag} name {root.get('name')}")
if root.findtext("version") != "1.1":
    errors.append(f"OCF version {root.findtext('version')!r}, want 1.1")
params = {p.get("name"): p for p in root.iter("parameter")}
for name in ("resource", "config", "node", "daemon", "ctl", "use_systemd", "pidfile",
             "log_file", "stop_timeout", "force_demote"):
    if name not in params:
        errors.append(f"no parameter {name}")
r = params.get("resource")
if r is not None and (r.get("required") != "1" or r.get("unique") != "1"):
    errors.append("parameter resource must be required and unique")
defaults = {n: p.find("content").get("default") for n, p in params.items()}
if defaults.get("config") != "/etc/hastnbd/hastnbd.yaml":
    errors.append(f"config default {defaults.get('config')}")
if defaults.get("daemon") != "/usr/local/sbin/hastnbd" or defaults.get("ctl") != "/usr/local/sbin/hastnbd-ctl":
    errors.append(f"binary defaults {defaults.get('daemon')} {defaults.get('ctl')}")
actions = root.find("actions").findall("action")
names = {a.get("name") for a in actions}
for a in ("start", "stop", "promote", "demote", "notify", "monitor", "meta-data", "validate-all"):
    if a not in names:
        errors.append(f"no action {a}")
mon = {a.get("role"): a for a in actions if a.get("name") == "monitor"}
for role in ("Promoted", "Unpromoted"):
    if role not in mon or not mon[role].get("interval"):
        errors.append(f"no monitor with role {role} and an interval")
if "Promoted" in mon and "Unpromoted" in mon and mon["Promoted"].get("interval") == mon["Unpromoted"].get("interval"):
    errors.append("the two monitors need different intervals")
if errors:
    sys.exit("meta-data: " + "; ".join(errors))
EOF
log "meta-data: valid (DTD and RelaxNG), all actions and parameters"

# 2. validate-all -----------------------------------------------------------------
expect a validate-all 5                       # no metadata yet
ra_says "hastnbd-ctl create"
create_resource "$conf" a data >/dev/null
create_resource "$conf" b data >/dev/null
expect a validate-all 0
expect b validate-all 0
expect a validate-all 6 OCF_RESKEY_resource=nosuch
ra_says "nosuch"
expect a validate-all 6 OCF_RESKEY_node=zz
expect a validate-all 6 OCF_RESKEY_resource=
printf 'resources:\n  data: {nodes: {a: {local: %s}}\n' "$dir/disk-a.img" >"$T/broken.yaml"
expect a validate-all 6 OCF_RESKEY_config="$T/broken.yaml"
printf 'defaults: {colour: blue}\n' >"$T/unknown-key.yaml"
expect a validate-all 6 OCF_RESKEY_config="$T/unknown-key.yaml"
expect a validate-all 5 OCF_RESKEY_config="$T/no-such.yaml"
expect a validate-all 5 OCF_RESKEY_ctl="$T/no-such-ctl"
expect a validate-all 5 OCF_RESKEY_daemon="$T/no-such-daemon"
expect a validate-all 6 OCF_RESKEY_stop_timeout=soon

# 3. monitor before start -----------------------------------------------------------
expect a monitor 7 OCF_RESKEY_CRM_meta_interval=0
expect a monitor 7
expect b monitor 7 OCF_RESKEY_CRM_meta_interval=0
# A probe without binaries or configuration is "not running", not an error.
expect a monitor 7 OCF_RESKEY_CRM_meta_interval=0 OCF_RESKEY_ctl="$T/no-such-ctl"
expect a monitor 7 OCF_RESKEY_CRM_meta_interval=0 OCF_RESKEY_config="$T/no-such.yaml"
expect a monitor 5 OCF_RESKEY_ctl="$T/no-such-ctl"

# 4. start ---------------------------------------------------------------------------
# A daemon that cannot start (its disk is missing): start fails with its reason.
sed "s|local: $dir/disk-a.img|local: $dir/missing.img|" "$conf" >"$dir/missing-disk.yaml"
grep -q "missing.img" "$dir/missing-disk.yaml" || die "could not write $dir/missing-disk.yaml"
expect a start 1 OCF_RESKEY_config="$dir/missing-disk.yaml"
ra_says "exited during start: .*missing.img"
[ ! -e "$T/ra-a.pid" ] || die "a failed start left a pid file"
expect a monitor 7
expect b start 0
track_daemon b
expect a start 0
track_daemon a
[ "$(field a '["role"]')" = secondary ] || die "a is not secondary after start"
[ "$(field b '["role"]')" = secondary ] || die "b is not secondary after start"
expect a monitor 0
expect_score a "-p -D"                         # fresh: never promoted by scores
expect b monitor 0
expect_score b "-p -D"
expect a start 0                               # starting a started instance
ra_says "already running as secondary"
expect a notify 0 OCF_RESKEY_CRM_meta_notify_type=post OCF_RESKEY_CRM_meta_notify_operation=start
ra_says "notify post-start"

# 5. promote a, data through a reaches b --------------------------------------------------
expect a promote 0
expect a monitor 8
expect_score a "-p -v 10000"
expect a promote 0                             # promoting a promoted instance
wait_peer_state "$conf" a connected 15 || die "a did not connect to b"
wait_in_sync "$conf" a 60 || die "the initial full sync did not finish"
wait_in_sync "$conf" b 15 || die "b does not say in sync"
expect b monitor 0
expect_score b "-p -v 1000"
uri_a="$(nbd_uri "$sock_a" data)"
uri_b="$(nbd_uri "$sock_b" data)"
_qemu_io "$uri_a" "write -P 0x5a 0 $((4 * MIB))" "flush" >/dev/null
_qemu_io "$uri_a" "read -P 0x5a 0 $((4 * MIB))" >/dev/null
cmp_region "$dir/disk-a.img" "$dir/disk-b.img" 0 $((4 * MIB)) || die "a's write is not on b's disk"
_qemu_io "$dir/disk-b.img" "read -P 0x5a 0 $((4 * MIB))" >/dev/null
log "4 MiB written through a's NBD socket are on b's disk"

# 6. switchover ------------------------------------------------------------------------
# An NBD client still attached: demote is refused unless force_demote; with
# it, the client's write stays acknowledged and the server closes on it.
"$HASTNBD_PYTHON" - "$LIB_DIR" "$sock_a" "$T/holder.state" <<'PY' >"$T/holder.out" 2>&1 &
import sys
sys.path.insert(0, sys.argv[1])
from nbd_raw import connect, pattern
c = connect(sys.argv[2], "data")
c.write(20 << 20, pattern("holder", 4096))
open(sys.argv[3], "w").write("attached\n")
c.expect_eof("demote with a client attached", timeout=90)
print("closed by the server")
PY
holder=$!
track_pid "$holder"
wait_for 20 "the NBD client to attach" test -s "$T/holder.state" \
  || die "the NBD client did not attach: $(cat "$T/holder.out")"
expect a demote 1
ra_says "attached"
[ "$(field a '["role"]')" = primary ] || die "a left primary on a refused demote"
expect a monitor 8
expect a demote 0 OCF_RESKEY_force_demote=true
wait "$holder" || die "the attached client failed: $(cat "$T/holder.out")"
grep -q "closed by the server" "$T/holder.out" || die "the attached client was not disconnected"
expect a monitor 0
[ ! -S "$sock_a" ] || [ "$(field a '["nbd"]["socket"]')" = "" ] || die "a still serves NBD after demote"
expect a demote 0                              # demoting a demoted instance
expect b promote 0
expect b monitor 8
wait_peer_state "$conf" b connected 15 || die "b did not connect to a after the switchover"
wait_in_sync "$conf" b 30 || die "b not in sync with a after the switchover"
_qemu_io "$uri_b" "read -P 0x5a 0 $((4 * MIB))" >/dev/null
"$HASTNBD_PYTHON" - "$LIB_DIR" "$sock_b" <<'PY' || die "the attached client's write is not on b"
import sys
sys.path.insert(0, sys.argv[1])
from nbd_raw import connect, pattern
c = connect(sys.argv[2], "data")
if c.read(20 << 20, 4096) != pattern("holder", 4096):
    sys.exit("the block the attached client wrote at 20 MiB differs on b")
c.disconnect()
PY
_qemu_io "$uri_b" "write -P 0x6b $((4 * MIB)) $((4 * MIB))" "flush" >/dev/null
cmp_region "$dir/disk-a.img" "$dir/disk-b.img" 0 $((8 * MIB)) || die "b's write is not on a's disk"
expect a monitor 0
expect_score a "-p -v 1000"
log "switchover: a's data read back through b, b's write on a"

# 7. split-brain -------------------------------------------------------------------------
expect a stop 0                                # b writes alone
expect a monitor 7
expect_score a "-p -D"
_qemu_io "$uri_b" "write -P 0x77 $((8 * MIB)) $MIB" "flush" >/dev/null
expect b demote 0
expect b stop 0
expect a start 0                               # a alone, consistent: may be promoted
track_daemon a
expect a monitor 0
expect_score a "-p -v 100"                     # consistent, no primary: degraded score
expect a promote 0
_qemu_io "$uri_a" "write -P 0x88 $((12 * MIB)) $MIB" "flush" >/dev/null
[ "$(field a '["metadata"]["localcnt"]')" = 1 ] || die "a did not write alone"
expect b start 0                               # a connects to b: both wrote alone
track_daemon b
wait_peer_state "$conf" b split-brain 20 || die "no split-brain on b"
wait_peer_state "$conf" a split-brain 20 || die "no split-brain on a"
expect b monitor 1
ra_says "SPLIT-BRAIN"
ra_says "discard-my-data"
expect_score b "-p -D"
expect b promote 1
ra_says "refusing to promote data: SPLIT-BRAIN"
[ "$(field b '["role"]')" = secondary ] || die "b changed role on a refused promotion"
expect a monitor 8                             # the primary keeps serving its data
ra_says "SPLIT-BRAIN"
_qemu_io "$uri_a" "read -P 0x88 $((12 * MIB)) $MIB" >/dev/null

# 8. inconsistent: b is the victim, resynchronised slowly from a ---------------------------------
sed -i 's/^    keepdirty: .*/&\n    sync_rate: 1MiB/' "$conf"
grep -q "sync_rate: 1MiB" "$conf" || die "could not set sync_rate in $conf"
hastnbd_ctl "$conf" a reload data >/dev/null || die "reload on a failed"
hastnbd_ctl "$conf" b discard-my-data data >/dev/null || die "discard-my-data on b failed"
_inconsistent() { [ "$(field b '["metadata"]["inconsistent"]')" = True ]; }
wait_for 20 "b inconsistent (full sync from a running)" _inconsistent || die "b never became the target of a sync"
expect b monitor 0
expect_score b "-p -D"
expect b promote 1
ra_says "refusing to promote data: local data inconsistent"
[ "$(field b '["role"]')" = secondary ] || die "b changed role on a refused promotion"
sed -i '/^    sync_rate: 1MiB$/d' "$conf"
hastnbd_ctl "$conf" a reload data >/dev/null || die "reload on a failed"
wait_in_sync "$conf" a 60 || die "the full sync to b did not finish"
wait_in_sync "$conf" b 15 || die "b does not say in sync"
expect b monitor 0
expect_score b "-p -v 1000"
cmp_region "$dir/disk-a.img" "$dir/disk-b.img" 0 $((16 * MIB)) || die "b differs from a after the resync"
log "split-brain and inconsistent promotions refused; b resynchronised from a"

# 9. kill -9 -------------------------------------------------------------------------------
pid_b="$(head -n 1 "$T/ra-b.pid")"
kill -KILL "$pid_b"
wait_for 10 "b's daemon to die" bash -c "! kill -0 $pid_b" || die "pid $pid_b survived SIGKILL"
expect b monitor 7
expect b monitor 7 OCF_RESKEY_CRM_meta_interval=0
expect b stop 0
expect b stop 0
[ ! -e "$T/ra-b.pid" ] || die "stop left b's pid file"
expect a monitor 8                             # degraded primary
expect_score a "-p -v 10000"
# A frozen daemon: its status times out (monitor 1); stop ends it with
# SIGKILL after stop_timeout.
expect b start 0
track_daemon b
pid_b="$(head -n 1 "$T/ra-b.pid")"
wait_in_sync "$conf" a 30 || die "b did not get back in sync"
kill -STOP "$pid_b"
on_exit "kill -CONT $pid_b 2>/dev/null"
expect b monitor 1 OCF_RESKEY_CRM_meta_timeout=10000
ra_says "timed out"
expect b stop 0 OCF_RESKEY_stop_timeout=2 OCF_RESKEY_CRM_meta_timeout=30000
ra_says "SIGKILL"
wait_for 10 "pid $pid_b to be reaped" bash -c "! kill -0 $pid_b" || die "pid $pid_b survived the stop"
expect b monitor 7

# 10. stop ---------------------------------------------------------------------------------
expect a stop 0                                # while primary
expect a monitor 7
expect a monitor 7 OCF_RESKEY_CRM_meta_interval=0
expect a stop 0
expect b monitor 7
expect a demote 7
expect a promote 7
log "pair scenario done in $(($(date +%s) - t_start)) s"

# 11. nbd.device that cannot be attached -------------------------------------------------
# Node a of a pair of its own, whose b never runs: a secondary needs a
# `listen`, and a primary alone serves degraded.
single="$T/single"
mkdir -p "$single"
read -r pc pd <<<"$(free_ports 2)"
PAIR_DISK_SIZE=32M write_pair_config "$single/hastnbd.yaml" "127.0.0.1:$pc" "127.0.0.1:$pd"
create_resource "$single/hastnbd.yaml" a data >/dev/null
sed 's/^    keepdirty: .*/&\n    nbd: {device: \/dev\/nbd0}/' "$single/hastnbd.yaml" >"$single/device.yaml"
grep -q "nbd: {device: /dev/nbd0}" "$single/device.yaml" || die "no nbd.device in $single/device.yaml"
dev=(OCF_RESKEY_config="$single/device.yaml" OCF_RESKEY_pidfile="$T/ra-single.pid"
     OCF_RESKEY_log_file="$T/hastnbd-single.log")
# Without the nbd module (these test machines) the attachment fails: promote
# must fail and leave the node secondary, and a primary without its device
# is a failed primary. A host with the module would attach a real /dev/nbd0:
# not here.
expect a start 0 "${dev[@]}"
track_daemon single
if [ "$(status_field "$single/device.yaml" a '["nbd"].get("device", {}).get("path", "")')" != /dev/nbd0 ]; then
  log "this hastnbd does not attach nbd.device (no nbd.device in its status): failed attachment not exercised"
  expect a stop 0 "${dev[@]}"
elif [ ! -d /sys/module/nbd ] && ! modprobe -n -q nbd 2>/dev/null; then
  expect a promote 1 "${dev[@]}"
  ra_says "NOT attached"
  ra_says "back to secondary"
  [ "$(status_field "$single/device.yaml" a '["role"]')" = secondary ] || die "the failed promotion left the node primary"
  expect a monitor 0 "${dev[@]}"
  rc=0
  hastnbd_ctl "$single/device.yaml" a role primary data >/dev/null 2>&1 || rc=$?
  [ "$rc" = 4 ] || die "hastnbd-ctl role primary without the nbd module: exit $rc, want 4"
  expect a monitor 9 "${dev[@]}"
  ra_says "NOT attached"
  expect a demote 0 "${dev[@]}"
  expect a stop 0 "${dev[@]}"
else
  log "the nbd module is available on this host: failed attachment not exercised"
  expect a stop 0 "${dev[@]}"
fi

# 12. ocf-tester ---------------------------------------------------------------------------
t0=$(date +%s)
rc=0
timeout --kill-after=10 300 ocf-tester -n hastnbd_single \
  -o resource=data -o config="$single/hastnbd.yaml" -o node=a \
  -o daemon="$HASTNBD_BIN/hastnbd" -o ctl="$HASTNBD_BIN/hastnbd-ctl" \
  -o pidfile="$T/ra-single.pid" -o log_file="$T/hastnbd-single.log" \
  "$AGENT" >"$T/ocf-tester.out" 2>&1 &
tester=$!
track_pid "$tester"
wait "$tester" || rc=$?
if [ "$rc" -ne 0 ] || ! grep -q "passed all tests" "$T/ocf-tester.out"; then
  cat "$T/ocf-tester.out" >&2
  show_log "$T/hastnbd-single.log"
  die "ocf-tester failed (exit $rc)"
fi
grep -q "does not support the promot\|partially supports" "$T/ocf-tester.out" && die "ocf-tester: promotion not exercised"
[ ! -e "$T/ra-single.pid" ] || die "ocf-tester left a pid file"
sed 's/^/  ocf-tester| /' "$T/ocf-tester.out" >&2
log "ocf-tester: $(tail -n 1 "$T/ocf-tester.out") ($(($(date +%s) - t0)) s)"
log "t_ocf: every agent action checked against two real nodes in $(($(date +%s) - t_start)) s"
