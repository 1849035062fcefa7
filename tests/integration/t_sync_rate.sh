#!/usr/bin/env bash
# The synchronisation rate limit: a (primary, alone) gets 96 MiB of random
# data through its export, a 96 MiB device; b then connects fresh and a full
# sync of the whole device runs under `sync_rate: 8MiB`, ~12 s. The achieved
# rate, total_bytes / elapsed_seconds from a's status once the sync is done,
# must be within 10 % of 8 MiB/s, and so must the rate measured by the wall
# clock between the syncstart and syncdone hooks (each hook line carries its
# own time stamp). Midway, status must show a running sync with a current
# rate near the limit and an ETA. Afterwards both disks are identical.
source "$(dirname "$0")/lib.sh"
require_root
require_cmd nbdcopy cmp

MIB=1048576
SIZE=$((96 * MIB))
RATE_MIB=8
RATE=$((RATE_MIB * MIB))

dir="$T/pair"
mkdir -p "$dir"
conf="$dir/hastnbd.yaml"
read -r pa pb <<<"$(free_ports 2)"
# The hook stamps every event with the wall clock.
cat >"$T/hook.sh" <<EOF
#!/bin/sh
printf '%s %s\n' "\$(date +%s.%N)" "\$*" >>"$T/hook.out"
EOF
chmod +x "$T/hook.sh"
: >"$T/hook.out"
PAIR_DISK_SIZE=$SIZE write_pair_config "$conf" "127.0.0.1:$pa" "127.0.0.1:$pb" \
  "sync_rate: ${RATE_MIB}MiB"
# Only a's events matter: the hook goes into a's node section.
sed -i "s|^      a: {|      a: {exec: $T/hook.sh, |" "$conf"
grep -q "exec: $T/hook.sh" "$conf" || die "exec key not in $conf"
create_resource "$conf" a data >/dev/null
create_resource "$conf" b data >/dev/null

show_logs() {
  show_log "$(daemon_log a)"
  show_log "$(daemon_log b)"
  echo "---- hooks of a ----" >&2; cat "$T/hook.out" >&2
}
field() {  # NODE SUBSCRIPT
  status_field "$conf" "$1" "$2"
}

head -c "$SIZE" /dev/urandom >"$T/fill.bin"
# b stays in init (not listening) until a holds its data.
start_daemon "$conf" b data
pid_b=$DAEMON_PID
start_daemon "$conf" a data
pid_a=$DAEMON_PID
make_primary "$conf" a data
sock="$(nbd_socket "$conf" a data)"
with_timeout 120 nbdcopy --flush "$T/fill.bin" "$(nbd_uri "$sock" data)" || die "filling a through nbdcopy failed"
rm -f "$T/fill.bin"
[ "$(field a '["dirty"]["extents"]')" = $((SIZE / (2 * MIB))) ] \
  || die "a: $(field a '["dirty"]["extents"]') dirty extents after writing the whole device alone"
log "a holds $((SIZE / MIB)) MiB of random data, every extent dirty"

hastnbd_ctl "$conf" b role secondary data >/dev/null || die "role secondary on b failed"
wait_peer_state "$conf" a connected 15 || { show_logs; die "a did not connect to b within 15 s"; }

# Midway: a running sync, its current rate near the limit, an ETA.
_elapsed_past() {  # SECS: the sync runs and has run for SECS
  local st
  st="$(hastnbd_ctl "$conf" a status --json data)" || return 1
  "$HASTNBD_PYTHON" -c "import json,sys; y=json.load(sys.stdin)['sync']
sys.exit(0 if y['state'] == 'running' and y['elapsed_seconds'] >= $1 else 1)" <<<"$st" || return 1
  echo "$st" >"$T/mid.json"
}
wait_for 20 "the sync to run for 6 s" _elapsed_past 6 || { show_logs; die "no sync running for 6 s on a"; }
"$HASTNBD_PYTHON" - "$T/mid.json" "$RATE" <<'EOF' || die "the running sync's status is off"
import json, sys
y = json.load(open(sys.argv[1]))["sync"]
limit = int(sys.argv[2])
print(f"midway: {y['done_bytes']} of {y['total_bytes']} bytes after {y['elapsed_seconds']:.1f} s, "
      f"current rate {y['rate'] / 1048576:.2f} MiB/s, ETA {y['eta_seconds']} s", file=sys.stderr)
errors = []
if not (y["full"] and y["direction"] == "to-peer"):
    errors.append(f"not a full sync to the peer: full {y['full']}, direction {y['direction']}")
if not 0.75 * limit <= y["rate"] <= 1.25 * limit:
    errors.append(f"current rate {y['rate']} bytes/s is not within 25 % of {limit}")
if not 0 < y["eta_seconds"] < 30:
    errors.append(f"eta_seconds {y['eta_seconds']}")
if not 0 < y["done_bytes"] < y["total_bytes"]:
    errors.append(f"done_bytes {y['done_bytes']} of {y['total_bytes']}")
if errors:
    sys.exit("; ".join(errors))
EOF

wait_in_sync "$conf" a 60 || { show_logs; die "a not in sync within 60 s"; }
hastnbd_ctl "$conf" a status --json data >"$T/end.json"
# A full sync copies everything and compares nothing: syncdone COPIED COMPARED.
wait_for 10 "syncdone hook" grep -q " syncdone data $SIZE 0$" "$T/hook.out" || { show_logs; die "no syncdone hook on a"; }
"$HASTNBD_PYTHON" - "$T/end.json" "$T/hook.out" "$RATE" "$SIZE" <<'EOF' || { show_logs; die "the sync rate is off the limit"; }
import json, sys
y = json.load(open(sys.argv[1]))["sync"]
limit, size = int(sys.argv[3]), int(sys.argv[4])
stamps = {}
for line in open(sys.argv[2]):
    t, event = line.split()[:2]
    stamps.setdefault(event, float(t))
mib = 1048576
errors = []
if y["state"] != "done" or y["done_bytes"] != y["total_bytes"] or y["total_bytes"] != size:
    errors.append(f"sync state {y['state']}, {y['done_bytes']} of {y['total_bytes']} bytes, want {size}")
rate = y["total_bytes"] / y["elapsed_seconds"]
wall = stamps["syncdone"] - stamps["syncstart"]
wall_rate = y["total_bytes"] / wall
print(f"status: {y['total_bytes']} bytes in {y['elapsed_seconds']:.2f} s = {rate / mib:.2f} MiB/s; "
      f"hooks syncstart -> syncdone: {wall:.2f} s = {wall_rate / mib:.2f} MiB/s; "
      f"limit {limit / mib:.2f} MiB/s", file=sys.stderr)
for name, r in (("status (total_bytes / elapsed_seconds)", rate), ("wall clock between the hooks", wall_rate)):
    if r > 1.10 * limit:
        errors.append(f"{name}: {r / mib:.2f} MiB/s is more than 10 % above the limit {limit / mib:.2f} MiB/s")
    elif r < 0.90 * limit:
        errors.append(f"{name}: {r / mib:.2f} MiB/s is more than 10 % below the limit {limit / mib:.2f} MiB/s "
                      "(a machine too slow to reach the rate?)")
if errors:
    sys.exit("; ".join(errors))
EOF
grep -q "syncstart data to-peer $SIZE$" "$T/hook.out" || die "no 'syncstart data to-peer $SIZE' hook"
grep "sync: done" "$(daemon_log a)" >&2 || true

wait_in_sync "$conf" b 10 || { show_logs; die "b does not say in sync"; }
stop_daemon "$pid_a"
stop_daemon "$pid_b"
cmp "$dir/disk-a.img" "$dir/disk-b.img" || die "the disks differ after the rate-limited sync"
log "t_sync_rate: full sync held to ${RATE_MIB} MiB/s within 10 %, disks identical"
