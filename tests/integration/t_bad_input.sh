#!/usr/bin/env bash
# Bad input is a test case. Hostile NBD clients (out-of-range and oversized
# requests, bad magic, truncated handshake, unknown export, unknown option,
# abrupt close) while a real client keeps writing and verifying through the
# same daemon; then broken configuration and foreign or corrupt metadata,
# each refused with the message an admin needs and nothing half-started.
source "$(dirname "$0")/lib.sh"
require_root
require_cmd fio

conf="$T/hastnbd.yaml"
HASTNBD_DISK_SIZE=256M write_config "$conf"
create_resource "$conf" a data
start_daemon "$conf" a data
pid=$DAEMON_PID
make_primary "$conf" a data
sock="$(nbd_socket "$conf" a data)"
uri="$(nbd_uri "$sock" data)"

# --- hostile clients beside a well-behaved one ------------------------------
# fio writes and verifies at a bounded rate for the whole hostile phase.
(cd "$T" && with_timeout 120 fio --name=bystander --ioengine=nbd "--uri=$uri" --rw=randwrite --bs=4k \
  --iodepth=8 --size=24M --offset=128M --rate_iops=1500 --verify=crc32c --verify_fatal=1 \
  --output="$T/bystander.out") 2>"$T/bystander.err" &
fio_pid=$!
track_pid "$fio_pid"
for sc in out-of-range oversized bad-magic truncated-handshake unknown-export list unknown-option abrupt-close; do
  raw_scenario "$sock" "$sc"
done
rc=0
wait "$fio_pid" || rc=$?
if [ "$rc" -ne 0 ] || grep -q 'verify:' "$T/bystander.err"; then
  cat "$T/bystander.err" "$T/bystander.out" >&2
  die "the well-behaved client failed while hostile clients came and went (exit $rc)"
fi
grep -q "err= 0" "$T/bystander.out" || die "fio bystander reported errors"
kill -0 "$pid" || die "daemon died under hostile clients"
grep -q "protocol violation: bad request magic" "$(daemon_log a)" || die "no log line for the bad magic"
grep -q "truncated handshake" "$(daemon_log a)" || die "no log line for the truncated handshake"
grep -q "refused READ offset" "$(daemon_log a)" || die "no log line for the refused request"
log "hostile clients: each refused or dropped, the bystander verified its data"
stop_daemon "$pid"

# --- configuration mistakes: exit 2, file:line:key, no daemon ---------------
expect_start_failure() {  # WANT_RC PATTERN CONF NODE [RES]
  local want="$1" pattern="$2" c="$3" node="$4" res="${5:-data}" rc=0 out="$T/start.err"
  with_timeout 30 "$HASTNBD_BIN/hastnbd" -c "$c" --node "$node" "$res" >"$out" 2>&1 || rc=$?
  [ "$rc" -eq "$want" ] || { cat "$out" >&2; die "hastnbd exited $rc, want $want, for: $pattern"; }
  grep -qE -- "$pattern" "$out" || { cat "$out" >&2; die "hastnbd's error does not say: $pattern"; }
  if hastnbd_ctl "$c" "$node" status "$res" >/dev/null 2>&1; then die "a daemon answers after a failed start"; fi
  log "refused as expected: $(tail -n1 "$out")"
}

sed 's/keepdirty: 64/keepdirty: [64/' "$conf" >"$T/broken.yaml"
expect_start_failure 2 "broken.yaml:[0-9]+: .*YAML syntax error" "$T/broken.yaml" a
sed 's/keepdirty: 64/keepdirty: 64\n    replicaton: async/' "$conf" >"$T/typo.yaml"
expect_start_failure 2 "typo.yaml:6: resources.data.replicaton: unknown key" "$T/typo.yaml" a
sed 's/extent_size: 2MiB/extent_size: 2XB/' "$conf" >"$T/size.yaml"
expect_start_failure 2 "size.yaml:4: resources.data.extent_size: '2XB' is not a size" "$T/size.yaml" a
expect_start_failure 2 "no section for node 'zz'" "$conf" zz
expect_start_failure 2 "no resource 'nope'" "$conf" a nope
expect_start_failure 2 "cannot|No such file" "$T/missing.yaml" a

# --- metadata that is not ours: exit 1 and the exact reason ------------------
sed 's/extent_size: 2MiB/extent_size: 1MiB/' "$conf" >"$T/extent.yaml"
expect_start_failure 1 "uses extent size 2097152, the configuration says 1048576" "$T/extent.yaml" a

meta="$T/state-a/data.meta"
cp "$meta" "$T/data.meta.good"
sed 's/  data:/  other:/' "$conf" >"$T/other.yaml"
hastnbd_ctl "$T/other.yaml" a create other >/dev/null || die "create other failed"
cp "$T/state-a/other.meta" "$meta"
expect_start_failure 1 "belongs to resource 'other', not 'data'" "$conf" a
cp "$T/data.meta.good" "$meta"

truncate -s 300M "$T/disk-a.img"
expect_start_failure 1 "was created for 268435456 bytes of data, but the local device now provides 314572800" "$conf" a
truncate -s 256M "$T/disk-a.img"

sed 's/keepdirty: 64/keepdirty: 64\n    size: 1GiB/' "$conf" >"$T/big.yaml"
expect_start_failure 1 "holds 268435456 bytes, less than the configured size 1073741824" "$T/big.yaml" a

printf 'garbage!' | dd of="$meta" bs=1 seek=100 conv=notrunc status=none
printf 'garbage!' | dd of="$meta" bs=1 seek=$((4096 + 100)) conv=notrunc status=none
expect_start_failure 1 "is corrupt: no valid header" "$conf" a
# One torn slot is survivable: the other slot still holds a valid header.
cp "$T/data.meta.good" "$meta"
printf 'garbage!' | dd of="$meta" bs=1 seek=100 conv=notrunc status=none
start_daemon "$conf" a data
pid=$DAEMON_PID

# --- create refuses to destroy metadata ---------------------------------------
rc=0
hastnbd_ctl "$conf" a create --force data >"$T/create.err" 2>&1 || rc=$?
[ "$rc" -eq 1 ] && grep -q "in use by a running hastnbd" "$T/create.err" || die "create --force while running: rc $rc: $(cat "$T/create.err")"
stop_daemon "$pid"
rc=0
hastnbd_ctl "$conf" a create data >"$T/create.err" 2>&1 || rc=$?
[ "$rc" -eq 1 ] && grep -q "already exists; use --force" "$T/create.err" || die "create over existing metadata: rc $rc"
hastnbd_ctl "$conf" a create --force data >/dev/null || die "create --force on a stopped resource failed"

# --- hastnbd-ctl against a stopped daemon: exit 3 ------------------------------
rc=0
hastnbd_ctl "$conf" a status data >/dev/null 2>"$T/status.err" || rc=$?
[ "$rc" -eq 3 ] && grep -q "not running" "$T/status.err" || die "status of a stopped resource: rc $rc"
log "t_bad_input: every bad input refused with a clear message"
