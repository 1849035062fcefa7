#!/usr/bin/env bash
# After start-up the daemon keeps only the capabilities its configuration
# needs (privileges.h), in every thread and in the bounding set, and hooks run
# with that reduced set; a daemon so reduced still replicates, reloads, runs
# hooks and changes roles. With `nbd.device` on a kernel without the nbd
# module (this machine), promotion still succeeds, hastnbd-ctl exits 4 and
# says why, status shows the device unattached with the reason, and the Unix
# socket serves a real client. (The attach itself is tested against the real
# kernel client in t_kernel.)
source "$(dirname "$0")/lib.sh"
require_root
require_hastnbd
require_cmd nbdinfo capsh

# cap_mask NAME...: the hex mask /proc/PID/status prints for these capabilities.
cap_mask() {
  local m=0 c n
  for c in "$@"; do
    n="$(capsh --explain="$c" 2>/dev/null | sed -n '1s/^[a-z_]* (\([0-9]*\)).*/\1/p')"
    [ -n "$n" ] || die "capsh does not know $c"
    m=$((m | (1 << n)))
  done
  printf '%016x' "$m"
}

# caps_of PID FIELD: CapEff/CapPrm/CapBnd of every thread, one line each.
caps_of() {
  local t
  for t in /proc/"$1"/task/*; do
    sed -n "s/^$2:\t//p" "$t/status"
  done | sort -u
}

check_caps() {  # PID WHAT MASK
  local f got
  for f in CapEff CapPrm CapBnd CapInh CapAmb; do
    got="$(caps_of "$1" "$f")"
    if [ "$f" = CapInh ] || [ "$f" = CapAmb ]; then
      [ "$got" = 0000000000000000 ] || die "$2: $f is $got, want none"
    else
      [ "$got" = "$3" ] || die "$2: $f is '$got' in some thread, want $3 ($(capsh --decode="$got" 2>/dev/null))"
    fi
  done
  log "$2: every thread holds exactly $3"
}

# --- a pair with nbd.device on a, and a hook that records its capabilities ---
cat >"$T/hook" <<EOF2
#!/bin/sh
printf '%s %s\n' "\$1" "\$(sed -n 's/^CapEff:\t//p' /proc/self/status)" >>"$T/hook.out"
EOF2
chmod +x "$T/hook"
read -r pa pb < <(free_ports 2)
conf="$T/hastnbd.yaml"
write_pair_config "$conf" "127.0.0.1:$pa" "127.0.0.1:$pb" "exec: $T/hook" "nbd: {device: /dev/nbd7}"
# b keeps no device: a node section overrides the resource's.
sed -i "s|^\(      b: {local: [^,]*\),|\1, nbd: {device: \"\"},|" "$conf"
start_both "$conf"
pid_a=$PAIR_PID_A
pid_b=$PAIR_PID_B

device_mask="$(cap_mask cap_sys_admin cap_sys_ptrace)"
check_caps "$pid_a" "node a (nbd.device)" "$device_mask"
check_caps "$pid_b" "node b (no device, ports above 1024)" 0000000000000000
grep -q "privileges: keeping cap_sys_ptrace,cap_sys_admin\|privileges: keeping sys_ptrace,sys_admin" "$(daemon_log a)" \
  || { show_log "$(daemon_log a)"; die "node a did not log the capabilities it keeps"; }

hastnbd_ctl "$conf" b role secondary data >/dev/null || die "role secondary on b failed"
set +e
out="$(hastnbd_ctl "$conf" a role primary data 2>&1)"
rc=$?
set -e
if [ -d /sys/module/nbd ]; then
  # A machine with the module: the attach must work (and is undone below).
  [ "$rc" -eq 0 ] || die "role primary with nbd.device failed (rc $rc) although the nbd module is loaded: $out"
  [[ "$out" == *"/dev/nbd7 attached"* ]] || die "role primary did not report the attached device: $out"
  [ "$(status_field "$conf" a '["nbd"]["device"]["attached"]')" = True ] || die "status: device not attached"
else
  [ "$rc" -eq 4 ] || die "role primary without the nbd module: exit $rc, want 4: $out"
  [[ "$out" == *"role primary"* ]] || die "role primary did not say the role changed: $out"
  [[ "$out" == *"/dev/nbd7 is NOT attached"*"modprobe nbd"*"nbd-client -unix"* ]] \
    || die "the message does not say what is missing and what still works: $out"
  [ "$(status_field "$conf" a '["role"]')" = primary ] || die "not primary after the failed attach"
  [ "$(status_field "$conf" a '["nbd"]["device"]["attached"]')" = False ] || die "status: device attached?"
  err="$(status_field "$conf" a '["nbd"]["device"]["error"]')"
  [[ "$err" == *"netlink interface is not available"* ]] || die "status: device error is '$err'"
  hastnbd_ctl "$conf" a status data | grep -q "device: *\/dev\/nbd7 not attached" \
    || die "human status does not show the unattached device"
  log "no nbd module: promotion done, exit 4, the reason in status"
fi
sock_a="$(nbd_socket "$conf" a data)"
wait_for 20 "NBD socket" test -S "$sock_a" || die "no NBD socket on a"
wait_peer_state "$conf" a connected 30 || die "a never connected to b"
wait_in_sync "$conf" a 60 || die "a and b never in sync"

# The reduced daemon still does its work: replication through a real client,
# a reload, a role change; the hooks saw the same reduced set.
check_nbdcopy "$sock_a" data 8
kill -HUP "$pid_a"
wait_for 10 "reload hook" grep -q "^reload " "$T/hook.out" || die "no reload hook after SIGHUP"
while read -r event mask; do
  case "$event" in
    start | role | reload | connect | syncstart | syncdone) ;;
    *) continue ;;
  esac
  [ "$mask" = "$device_mask" ] || [ "$mask" = 0000000000000000 ] \
    || die "hook '$event' ran with capabilities $mask, more than the daemon keeps"
done <"$T/hook.out"
grep -q "^role $device_mask" "$T/hook.out" || die "no role hook from node a with a's capability set: $(cat "$T/hook.out")"
hastnbd_ctl "$conf" a role secondary data >/dev/null || die "demoting a failed"
stop_daemon "$pid_a"
stop_daemon "$pid_b"
log "t_privileges: capabilities dropped to what each node needs; replication, reload, hooks and roles work"
