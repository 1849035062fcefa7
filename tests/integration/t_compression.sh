#!/usr/bin/env bash
# What replication costs on the wire. With `compression: lz4`: 64 MiB of
# zeros written with NBD WRITE (not WRITE_ZEROES) travel as holes (< 5 % of
# the data in wire bytes, headers included), 64 MiB of highly compressible
# data as LZ4 blocks (< 60 %). With `compression: none` the wire carries at
# least every data byte. In both, the secondary's file ends up identical to
# the primary's (the zeros overwrite random data, so holes must really be
# written as zeros there).
source "$(dirname "$0")/lib.sh"
require_root
require_cmd fio qemu-io ss cmp

MIB=1048576

# peer_bytes CONF: "BYTES_SENT DATA_BYTES_SENT" of the primary.
peer_bytes() {
  local s
  s="$(hastnbd_ctl "$1" a status --json data)" || die "status on the primary failed"
  "$HASTNBD_PYTHON" -c 'import json,sys; p=json.load(sys.stdin)["peer"]; print(p["bytes_sent"], p["data_bytes_sent"])' <<<"$s"
}

_inflight_zero() {  # CONF
  [ "$(status_field "$1" a '["peer"]["inflight_bytes"]')" = 0 ] \
    && [ "$(status_field "$1" a '["peer"]["queued_bytes"]')" = 0 ]
}

# fio_write CONF TAG OFFSET MIB FIO-ARG...: one job of sequential 256 KiB
# WRITEs, then a FLUSH and the link drained.
fio_write() {
  local conf="$1" tag="$2" off="$3" mib="$4" sock rc=0
  shift 4
  sock="$(nbd_socket "$conf" a data)"
  (cd "$T" && with_timeout 120 fio --name="$tag" --ioengine=nbd "--uri=$(nbd_uri "$sock" data)" \
    --rw=write --bs=256k --iodepth=16 --numjobs=1 "--offset=$off" "--size=$((mib * MIB))" \
    --output-format=json "--output=$T/fio-$tag.json" "$@") 2>"$T/fio-$tag.err" || rc=$?
  [ "$rc" -eq 0 ] || { cat "$T/fio-$tag.err" >&2; die "fio $tag failed (exit $rc)"; }
  local w
  w="$("$HASTNBD_PYTHON" -c 'import json,sys; print(json.load(open(sys.argv[1]))["jobs"][0]["write"]["io_bytes"])' "$T/fio-$tag.json")"
  [ "$w" -eq $((mib * MIB)) ] || die "fio $tag wrote $w bytes, want $((mib * MIB))"
  nbd_flush "$sock"
  wait_for 20 "link drained after $tag" _inflight_zero "$conf" || die "records still in flight after $tag"
}

# measure CONF TAG OFFSET MIB FIO-ARG...: fio_write, printing "WIRE DATA"
# (the growth of bytes_sent and data_bytes_sent over it).
measure() {
  local conf="$1" tag="$2" b0 d0 b1 d1
  read -r b0 d0 <<<"$(peer_bytes "$conf")"
  fio_write "$@"
  read -r b1 d1 <<<"$(peer_bytes "$conf")"
  echo "$((b1 - b0)) $((d1 - d0))"
}

# ratio WIRE DATA: wire bytes per data byte, in percent with two decimals.
ratio() {
  "$HASTNBD_PYTHON" -c 'import sys; print(f"{100 * int(sys.argv[1]) / int(sys.argv[2]):.2f}")' "$1" "$2"
}

pct_below() {  # PERCENT LIMIT
  "$HASTNBD_PYTHON" -c 'import sys; sys.exit(0 if float(sys.argv[1]) < float(sys.argv[2]) else 1)' "$1" "$2"
}

finish_pair() {  # CONF DIR: stop both (primary first), compare the files
  stop_daemon "$PAIR_PID_A"
  stop_daemon "$PAIR_PID_B"
  cmp "$2/disk-a.img" "$2/disk-b.img" || die "backing files differ after flush and clean stop ($2)"
}

# --- lz4 ------------------------------------------------------------------------
dir="$T/lz4"
mkdir -p "$dir"
conf="$dir/hastnbd.yaml"
read -r pa pb <<<"$(free_ports 2)"
PAIR_COMPRESSION=lz4 write_pair_config "$conf" "127.0.0.1:$pa" "127.0.0.1:$pb"
start_pair "$conf"

# Random data first, so the zeros below overwrite something.
fio_write "$conf" random 0 64 --refill_buffers
read -r wire data <<<"$(measure "$conf" zeros 0 64 --zero_buffers)"
[ "$data" -eq $((64 * MIB)) ] || die "lz4: data_bytes_sent grew by $data for 64 MiB of zero WRITEs"
r="$(ratio "$wire" "$data")"
log "lz4 zeros: $wire wire bytes for $data data bytes ($r %)"
pct_below "$r" 5 || die "lz4: 64 MiB of zeros cost $wire wire bytes ($r % of the data), want < 5 % (holes)"

read -r wire data <<<"$(measure "$conf" compressible $((64 * MIB)) 64 \
  --buffer_compress_percentage=75 --buffer_compress_chunk=4k --refill_buffers)"
[ "$data" -eq $((64 * MIB)) ] || die "lz4: data_bytes_sent grew by $data for 64 MiB"
r="$(ratio "$wire" "$data")"
log "lz4 compressible: $wire wire bytes for $data data bytes ($r %)"
pct_below "$r" 60 || die "lz4: 75 %-compressible data cost $wire wire bytes ($r %), want < 60 %"

# Incompressible data is sent raw: never more than the data plus headers.
read -r wire data <<<"$(measure "$conf" incompressible $((128 * MIB)) 16 --refill_buffers)"
r="$(ratio "$wire" "$data")"
log "lz4 random: $wire wire bytes for $data data bytes ($r %)"
pct_below "$r" 101 || die "lz4: random data cost $wire wire bytes ($r %), want raw (<= data + headers)"
[ "$(status_field "$conf" a '["writes"]["degraded"]')" = 0 ] || die "lz4: writes degraded"
finish_pair "$conf" "$dir"
log "lz4 pair: files identical"

# --- none -----------------------------------------------------------------------
dir="$T/none"
mkdir -p "$dir"
conf="$dir/hastnbd.yaml"
read -r pa pb <<<"$(free_ports 2)"
PAIR_COMPRESSION=none write_pair_config "$conf" "127.0.0.1:$pa" "127.0.0.1:$pb"
start_pair "$conf"
fio_write "$conf" random-none 0 32 --refill_buffers
read -r wire data <<<"$(measure "$conf" zeros-none 0 32 --zero_buffers)"
log "none zeros: $wire wire bytes for $data data bytes"
[ "$data" -eq $((32 * MIB)) ] || die "none: data_bytes_sent grew by $data for 32 MiB"
[ "$wire" -ge "$data" ] || die "none: 32 MiB of zeros cost only $wire wire bytes with compression none"
read -r wire data <<<"$(measure "$conf" compressible-none $((32 * MIB)) 32 \
  --buffer_compress_percentage=75 --buffer_compress_chunk=4k --refill_buffers)"
log "none compressible: $wire wire bytes for $data data bytes"
[ "$wire" -ge "$data" ] || die "none: compressible data cost only $wire wire bytes with compression none"
[ "$(status_field "$conf" a '["writes"]["degraded"]')" = 0 ] || die "none: writes degraded"
finish_pair "$conf" "$dir"
log "t_compression: holes < 5 %, lz4 < 60 %, none >= data; files identical"
