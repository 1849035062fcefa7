#!/usr/bin/env bash
# Replication between two daemons on 127.0.0.1, in each mode (fullsync,
# memsync, async), each on a fresh pair: fio writes through the primary
# (2 connections, QD32, 4 KiB and 64 KiB random writes, every block
# crc32c-verified by reading it back), an NBD FLUSH, the link drained; then
# the counters say every byte written went over the link and was applied
# with no write degraded, both daemons stop cleanly on SIGTERM, the two
# backing files are identical, and the metadata keeps at most keepdirty
# extents dirty on the primary and none on the secondary.
source "$(dirname "$0")/lib.sh"
require_root
require_cmd fio qemu-io ss cmp

KEEPDIRTY=8
TIMEOUT=3
BYTES=$((32 * 1048576))   # per fio job

# py EXPR JSON: evaluate EXPR over the parsed JSON `s`.
py() {
  "$HASTNBD_PYTHON" -c "import json,sys; s=json.loads(sys.argv[1]); print($1)" "$2"
}

_inflight_zero() {  # CONF
  [ "$(status_field "$1" a '["peer"]["inflight_bytes"]')" = 0 ]
}

run_mode() {
  local mode="$1"
  local dir="$T/$mode" conf pa pb sock sa sb
  mkdir -p "$dir"
  conf="$dir/hastnbd.yaml"
  read -r pa pb <<<"$(free_ports 2)"
  PAIR_REPLICATION=$mode PAIR_KEEPDIRTY=$KEEPDIRTY PAIR_TIMEOUT=$TIMEOUT \
    write_pair_config "$conf" "127.0.0.1:$pa" "127.0.0.1:$pb"
  start_pair "$conf"
  local pid_a=$PAIR_PID_A pid_b=$PAIR_PID_B
  sock="$(nbd_socket "$conf" a data)"
  [ "$(status_field "$conf" a '["replication"]')" = "$mode" ] || die "$mode: status shows another mode"

  fio_verify "$sock" "$BYTES" 0 90 "$mode"
  nbd_flush "$sock"
  wait_for 20 "$mode: primary inflight_bytes 0" _inflight_zero "$conf" \
    || die "$mode: the primary still has records in flight 20 s after the flush"

  sa="$(hastnbd_ctl "$conf" a status --json data)" || die "$mode: status on the primary failed"
  sb="$(hastnbd_ctl "$conf" b status --json data)" || die "$mode: status on the secondary failed"
  log "$mode: primary peer $(py 's["peer"]' "$sa")"
  log "$mode: secondary peer $(py 's["peer"]' "$sb")"
  [ "$(py 's["peer"]["state"]' "$sa")" = connected ] || die "$mode: primary not connected after the run"
  [ "$(py 's["writes"]["degraded"]' "$sa")" = 0 ] \
    || die "$mode: $(py 's["writes"]["degraded"]' "$sa") writes degraded with the secondary up"
  [ "$(py 's["metadata"]["localcnt"]' "$sa")" = 0 ] \
    || die "$mode: localcnt $(py 's["metadata"]["localcnt"]' "$sa") on the primary: it thinks it wrote alone"
  local written sent recv records applied
  written="$(py 's["nbd"]["bytes_written"]' "$sa")"
  sent="$(py 's["peer"]["data_bytes_sent"]' "$sa")"
  recv="$(py 's["peer"]["data_bytes_received"]' "$sb")"
  records="$(py 's["peer"]["records_sent"]' "$sa")"
  applied="$(py 's["peer"]["records_applied"]' "$sb")"
  [ "$written" -eq $((2 * BYTES)) ] || die "$mode: NBD bytes_written $written, fio wrote $((2 * BYTES))"
  [ "$records" -gt 0 ] || die "$mode: records_sent is 0"
  [ "$sent" -eq "$written" ] || die "$mode: data_bytes_sent $sent != bytes written by clients $written"
  [ "$recv" -eq "$sent" ] || die "$mode: secondary data_bytes_received $recv != primary data_bytes_sent $sent"
  [ "$applied" -gt 0 ] || die "$mode: secondary applied no record"
  [ "$(py 's["peer"]["apply_errors"]' "$sb")" = 0 ] || die "$mode: apply errors on the secondary"
  [ "$(py 's["peer"]["bytes_sent"]' "$sa")" -gt 0 ] || die "$mode: bytes_sent is 0"

  # Primary first: it drains and tells the secondary; both exit 0.
  stop_daemon "$pid_a"
  stop_daemon "$pid_b"
  cmp "$dir/disk-a.img" "$dir/disk-b.img" || die "$mode: backing files differ after flush and clean stop"

  local da db
  da="$(dump_field "$conf" a '["dirty_extents"]')" || die "$mode: dump on node a failed"
  db="$(dump_field "$conf" b '["dirty_extents"]')" || die "$mode: dump on node b failed"
  [ "$da" -le "$KEEPDIRTY" ] || die "$mode: $da extents dirty on the primary after a clean replicated run (keepdirty $KEEPDIRTY): $(dump_field "$conf" a '["dirty"]')"
  [ "$db" -eq 0 ] || die "$mode: $db extents dirty on the secondary"
  [ "$(dump_field "$conf" a '["localcnt"]')" = 0 ] || die "$mode: primary localcnt bumped on disk"
  log "$mode ok: ${written} bytes replicated in $records records, files identical, $da extents dirty"
}

for mode in fullsync memsync async; do
  run_mode "$mode"
done

log "t_replication: fullsync, memsync, async replicate byte-identical"
