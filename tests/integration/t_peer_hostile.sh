#!/usr/bin/env bash
# Hostile and wrong peers on the replication link (hostile_peer.py speaks
# docs/protocol.md byte by byte, authentication included).
#  (ii)  The secondary refuses a connection from an address that is not its
#        configured `remote` (logged, counted), and accepts one that is.
#  (i)   A fake PRIMARY against a real secondary. Before authentication: no
#        key, a wrong key, a captured handshake replayed, the node's own MAC
#        reflected, records that skip the exchange, a version-1 peer, a peer
#        of versions 3..4 only, bad magic, bad header checksum, a
#        payload_length over the 512 bytes allowed before authentication,
#        unknown type, reserved flag, half a header, half a payload,
#        connections that send nothing (alone and 8 at once). Each is
#        refused with its reason in status (peer.last_refused; the log line
#        is rate limited), the secondary's disk is byte-identical before and
#        after, and it keeps serving. A peer announcing 1..5 gets version 2
#        and a working link. After a valid authentication: a HELLO that is
#        not a Hello, WRITE before HELLO, HELLOs with the wrong resource,
#        size, extent size, node name or role, a WRITE with a bad payload
#        checksum, an oversized WRITE and a corrupt LZ4 block: each dropped
#        with a log line naming the problem (and both values, for a
#        mismatch), nothing of a refused record reaches the disk; a valid
#        WRITE from the fake primary does land. Then the real primary
#        connects and replicates: files identical.
#  (iii) A fake SECONDARY answering the real primary's HELLO with the wrong
#        size: the primary logs both sizes, keeps retrying, and serves NBD
#        clients degraded meanwhile.
#  (iv)  A fake SECONDARY that completes the handshake and sends keepalives
#        but never acknowledges a record: a client write still completes
#        (degraded) within a few timeouts instead of hanging.
#  (v)   A fake SECONDARY without the key, with a wrong key, or choosing
#        version 3: the real primary refuses each attempt with the reason
#        (logged, sent to the fake), never sends its own proof or anything
#        after it, retries, and serves NBD degraded.
source "$(dirname "$0")/lib.sh"
require_root
require_cmd fio qemu-io nbdinfo ss cmp

HOSTILE="$LIB_DIR/hostile_peer.py"
MIB=1048576
SIZE=$((256 * MIB))
EXTENT=$((2 * MIB))
read -r pa pb pc pf <<<"$(free_ports 4)"

dir="$T/pair"
mkdir -p "$dir"
conf="$dir/hastnbd.yaml"
conf_foreign="$dir/hastnbd-foreign.yaml"
write_pair_config "$conf" "127.0.0.1:$pa" "127.0.0.1:$pb"
# The same pair, but node b expects its primary at 127.0.0.2.
PAIR_REMOTE_B="127.0.0.2:$pa" write_pair_config "$conf_foreign" "127.0.0.1:$pa" "127.0.0.1:$pb"
create_resource "$conf" a data >/dev/null
create_resource "$conf" b data >/dev/null
log_b="$(daemon_log b)"
log_a="$(daemon_log a)"

# hostile MODE SCENARIO [ARGS...]: run hostile_peer.py, bounded; its JSON
# line in $T/hostile.json. Dies if it reports a failure.
hostile() {
  local mode="$1" sc="$2" host port
  shift 2
  if [ "$mode" = primary ]; then host=127.0.0.1 port=$pb; else host=127.0.0.1 port=$pf; fi
  with_timeout 60 "$HASTNBD_PYTHON" "$HOSTILE" "$mode" "$host" "$port" "$sc" \
    --size "$SIZE" --extent "$EXTENT" --key-file "$dir/peer.key" "$@" >"$T/hostile.json" 2>"$T/hostile.err" || {
    cat "$T/hostile.err" >&2
    show_log "$log_b"
    die "hostile peer ($mode $sc) failed"
  }
  cat "$T/hostile.json" >&2
}

json_of() {  # SUBSCRIPT: a field of the last hostile run's JSON
  "$HASTNBD_PYTHON" -c "import json,sys; print(json.load(open(sys.argv[1]))$1)" "$T/hostile.json"
}

# expect_log FILE LINES_BEFORE WHAT SUBSTRING...: within 5 s, one line
# logged after LINES_BEFORE holds every SUBSTRING.
_log_has() {
  local f="$1" from="$2" line
  shift 2
  while IFS= read -r line; do
    local s ok=1
    for s in "$@"; do [[ "$line" == *"$s"* ]] || { ok=0; break; }; done
    [ "$ok" = 1 ] && return 0
  done < <(log_since "$f" "$from")
  return 1
}
expect_log() {
  local f="$1" from="$2" what="$3"
  shift 3
  if ! wait_for 5 "log line for $what" _log_has "$f" "$from" "$@"; then
    echo "---- lines logged since the event ----" >&2
    log_since "$f" "$from" >&2
    die "$what: no log line containing all of: $(printf "'%s' " "$@")"
  fi
}

secondary_alive() {  # WHAT
  kill -0 "$pid_b" 2>/dev/null || { show_log "$log_b"; die "the secondary died after: $1"; }
  hastnbd_ctl "$conf" b status data >/dev/null || die "the secondary does not answer status after: $1"
  [ "$(status_field "$conf" b '["role"]')" = secondary ] || die "the secondary left its role after: $1"
}

# --- (ii) a connection from an address that is not the configured peer -----------
start_daemon "$conf_foreign" b data
pid_b=$DAEMON_PID
hastnbd_ctl "$conf_foreign" b role secondary data >/dev/null || die "role secondary failed"
n=$(wc -l <"$log_b")
hostile primary not_configured_peer --bind 127.0.0.1
expect_log "$log_b" "$n" "connection from 127.0.0.1" "refused connection from 127.0.0.1:" \
  "not the configured peer" "127.0.0.2:$pa"
refused="$(status_field "$conf_foreign" b '["peer"]["refused"]')"
[ "$refused" -gt 0 ] || die "refused counter is $refused after a connection from a foreign address"
! log_since "$log_b" "$n" | grep -q "primary a connected" || die "a foreign address got a session"
# The configured address is accepted (the same Hello, from 127.0.0.2).
hostile primary handshake_only --bind 127.0.0.2
expect_log "$log_b" "$n" "connection from 127.0.0.2" "primary a connected from 127.0.0.2:"
kill -0 "$pid_b" || die "secondary died in (ii)"
stop_daemon "$pid_b"
log "(ii) foreign address refused ($refused), configured address accepted"

# --- (i) a fake primary against the real secondary -----------------------------
start_daemon "$conf" b data
pid_b=$DAEMON_PID
hastnbd_ctl "$conf" b role secondary data >/dev/null || die "role secondary failed"
hwm0="$(awk '/^VmHWM/ {print $2}' "/proc/$pid_b/status")"

# scenario SCENARIO SUBSTRING...: run it (writing at $SC_OFFSET, default 0),
# then the log line and a live secondary.
scenario() {
  local sc="$1" n
  shift
  n=$(wc -l <"$log_b")
  hostile primary "$sc" --offset "${SC_OFFSET:-0}"
  expect_log "$log_b" "$n" "$sc" "$@"
  secondary_alive "$sc"
  log "(i) $sc: dropped, logged, secondary alive"
}
# refusal SCENARIO SUBSTRING...: a connection refused before or during
# authentication: within 5 s peer.last_refused holds every SUBSTRING, the
# refused counter grew, and the secondary lives.
_last_refused_has() {
  local r s
  r="$(status_field "$conf" b '["peer"]["last_refused"]')"
  for s in "$@"; do [[ "$r" == *"$s"* ]] || return 1; done
}
refusal() {
  local sc="$1" before after
  shift
  before="$(status_field "$conf" b '["peer"]["refused"]')"
  hostile primary "$sc" --offset "${SC_OFFSET:-0}"
  if ! wait_for 5 "$sc in last_refused" _last_refused_has "$@"; then
    die "$sc: peer.last_refused is '$(status_field "$conf" b '["peer"]["last_refused"]')', want: $(printf "'%s' " "$@")"
  fi
  after="$(status_field "$conf" b '["peer"]["refused"]')"
  [ "$after" -gt "$before" ] || die "$sc: refused counter stayed at $before"
  secondary_alive "$sc"
  log "(i) $sc: refused before authentication ($(status_field "$conf" b '["peer"]["last_refused"]' | cut -c1-150))"
}
n_auth=$(wc -l <"$log_b")
sum_before="$(sha256sum <"$dir/disk-b.img")"
refusal auth_no_key "127.0.0.1:" "does not authenticate (it has no psk)"
[[ "$(json_of '["message"]')" == *"requires the resource's key"* ]] || die "no-key: the ERROR does not say a key is needed"
refusal auth_wrong_key "authentication failed: the connecting side does not hold this resource's key"
[ "$(json_of '["message"]')" = "authentication failed" ] || die "wrong key: the ERROR says more than that it failed: $(json_of '["message"]')"
refusal auth_replay "authentication failed"
refusal auth_reflect "authentication failed"
refusal auth_skip "expected AUTH_HELLO, got WRITE"
refusal auth_skip_proof "expected AUTH_PROOF, got HELLO"
refusal hello_first "protocol version 1"
refusal version_too_new "no common protocol version: this node speaks 2..2, peer 'a' speaks 3..4"
[[ "$(json_of '["message"]')" == *"2..2"*"3..4"* ]] || die "version 3..4: the ERROR does not name both ranges"
refusal bad_magic "malformed frame" "bad magic 0xdeadbeef" "0x484e4244"
refusal bad_header_checksum "header checksum mismatch"
refusal oversized_payload "AUTH_HELLO: payload_length 70000000 exceeds the limit 67108864"
secs="$(json_of '["seconds"]')"
"$HASTNBD_PYTHON" -c "import sys; sys.exit(float(sys.argv[1]) >= 3)" "$secs" \
  || die "oversized payload_length: the secondary took $secs s to drop the link (waited for the payload?)"
refusal auth_oversized "WRITE payload 100000 bytes, at most 512 before authentication"
secs="$(json_of '["seconds"]')"
"$HASTNBD_PYTHON" -c "import sys; sys.exit(float(sys.argv[1]) >= 3)" "$secs" \
  || die "payload_length 100000 before authentication: the secondary took $secs s to drop the link"
refusal unknown_type "unknown record type 42"
refusal unknown_flag "unknown flags 0x100"
refusal truncated_header "closed the connection"
refusal truncated_payload "closed the connection mid-frame"
refusal idle "sent nothing within the handshake time"
secs="$(json_of '["seconds"]')"
"$HASTNBD_PYTHON" -c "import sys; sys.exit(not 9 <= float(sys.argv[1]) <= 13)" "$secs" \
  || die "an idle connection was closed after $secs s (want the 10 s handshake timeout)"
refusal trickle "not authenticated within the handshake time"
secs="$(json_of '["seconds"]')"
"$HASTNBD_PYTHON" -c "import sys; sys.exit(not 9 <= float(sys.argv[1]) <= 14)" "$secs" \
  || die "a connection trickling a byte every 2 s was closed after $secs s (want the 10 s deadline)"
before="$(status_field "$conf" b '["peer"]["refused"]')"
hostile primary idle_flood --connections 8
[ "$(json_of '["at_once"]')" -ge 4 ] && [ "$(json_of '["held"]')" -le 4 ] \
  || die "8 idle connections: $(json_of '["closed_after"]') s (want at most 4 held, the rest closed at once)"
_eight_more() { [ "$(status_field "$conf" b '["peer"]["refused"]')" -ge $((before + 8)) ]; }
wait_for 5 "8 refusals counted" _eight_more || die "8 idle connections: refused counter $before -> $(status_field "$conf" b '["peer"]["refused"]')"
secondary_alive idle_flood
log "(i) 8 idle connections: $(json_of '["held"]') held until the timeout, $(json_of '["at_once"]') closed at once"
[ "$(sha256sum <"$dir/disk-b.img")" = "$sum_before" ] || die "a connection refused before authentication changed the secondary's disk"
[ "$(status_field "$conf" b '["peer"]["connects"]')" = 0 ] || die "an unauthenticated connection counted as a link"
[ "$(status_field "$conf" b '["peer"]["records_applied"]')" = 0 ] || die "records applied from an unauthenticated peer"
# The log has the refusals, rate limited (one line per 10 s, with the count of the others).
grep -q "refused connection from 127.0.0.1:.*does not authenticate" <(log_since "$log_b" "$n_auth") \
  || { show_log "$log_b"; die "the first refusal was not logged"; }
lines=$(log_since "$log_b" "$n_auth" | grep -c "refused connection from" || true)
[ "$lines" -le 6 ] || die "$lines log lines for ~25 refusals in ~20 s: not rate limited"
log "(i) before authentication: 25 connections refused, $lines log lines, the secondary's disk unchanged"
SC_OFFSET=0 hostile primary version_overlap
[ "$(json_of '["version"]')" = 2 ] || die "a peer of versions 1..5 was not given version 2"
expect_log "$log_b" "$n_auth" "version 1..5" "primary a connected"
log "(i) a peer of versions 1..5 works at version 2"

scenario garbage_hello "refused the primary's connection" "resource length 65535"
scenario write_before_hello "refused the primary's connection" "expected HELLO, got WRITE"
scenario wrong_resource "refused the primary's connection" "resource name differs" "'data'" "'other'"
[[ "$(json_of '["message"]')" == *"'other'"* ]] || die "ERROR record for a wrong resource does not name it"
scenario wrong_size "refused the primary's connection" "resource size differs" "$SIZE" "$((2 * SIZE))"
scenario wrong_extent "refused the primary's connection" "extent size differs" "$EXTENT" "$((EXTENT / 2))"
scenario wrong_node "refused the primary's connection" "peer identifies as node 'c'" "expected 'a'"
scenario wrong_role "refused the primary's connection" "is not primary"
refused="$(status_field "$conf" b '["peer"]["refused"]')"
[ "$refused" -ge 32 ] || die "refused counter $refused after 32 refused connections"

# Positive control: the fake primary's valid WRITE lands (so the refusals
# above are about what was wrong, not about our encoding).
off_ok=$((10 * MIB))
SC_OFFSET=$off_ok scenario valid_write "primary a connected"
"$HASTNBD_PYTHON" "$HOSTILE" --pattern "$off_ok" 65536 >"$T/pattern.bin"
cmp -n 65536 -i "0:$off_ok" "$T/pattern.bin" "$dir/disk-b.img" \
  || die "valid WRITE from the fake primary not on the secondary's disk"
[ "$(json_of '["peer_hello"]["node"]')" = b ] || die "the secondary's HELLO does not name node b"

off_bad=$((20 * MIB))
SC_OFFSET=$off_bad scenario bad_payload_checksum "primary disconnected" "payload checksum mismatch at seq 1"
cmp -n 65536 -i "0:$off_bad" /dev/zero "$dir/disk-b.img" \
  || die "a WRITE with a bad payload checksum was (partly) applied on the secondary"
scenario oversized_after_hello "primary disconnected" "WRITE: payload_length 70000000 exceeds the limit 67108864"
off_lz4=$((30 * MIB))
SC_OFFSET=$off_lz4 scenario bad_lz4 "primary disconnected" "LZ4"
cmp -n 65536 -i "0:$off_lz4" /dev/zero "$dir/disk-b.img" || die "a corrupt LZ4 WRITE was applied on the secondary"
n=$(wc -l <"$log_b")
hostile primary write_beyond_end
[[ "$(json_of '["message"]')" == *"beyond the end"* ]] || die "ERROR for a WRITE beyond the end: $(json_of '["message"]')"
secondary_alive write_beyond_end
cmp -n 4096 -i "0:$((SIZE - 4096))" /dev/zero "$dir/disk-b.img" || die "a WRITE beyond the end changed the last block"

# No refused record made the secondary allocate what a header announced.
hwm1="$(awk '/^VmHWM/ {print $2}' "/proc/$pid_b/status")"
log "(i) secondary peak RSS: ${hwm0} KiB before, ${hwm1} KiB after the hostile peer"
[ "$hwm1" -lt $((hwm0 + 48 * 1024)) ] \
  || die "the secondary's peak RSS grew from $hwm0 to $hwm1 KiB under a hostile peer"

# The real primary now connects and replicates. The fake primary's valid
# handshakes made b adopt its resource UUID (b was fresh): to the real,
# fresh primary b now holds another resource's data and is refused - as it
# should be - until the operator discards b's data.
hastnbd_ctl "$conf" b discard-my-data data >/dev/null || die "discard-my-data on b failed"
start_daemon "$conf" a data
pid_a=$DAEMON_PID
make_primary "$conf" a data
wait_peer_state "$conf" a connected 10 || { show_log "$log_a"; die "the real primary could not connect after the hostile peer"; }
sock="$(nbd_socket "$conf" a data)"
# The fake primary wrote at off_ok; write that range through the real one too
# so the two disks can be compared whole.
fio_verify "$sock" $((16 * MIB)) 0 60 real
nbd_flush "$sock"
_inflight_zero() { [ "$(status_field "$conf" a '["peer"]["inflight_bytes"]')" = 0 ]; }
wait_for 20 "inflight 0" _inflight_zero || die "records in flight after the flush"
[ "$(status_field "$conf" a '["writes"]["degraded"]')" = 0 ] || die "real primary: writes degraded"
stop_daemon "$pid_a"
stop_daemon "$pid_b"
# The fake primary's valid write (at 10 MiB, inside fio's 32 MiB) was
# overwritten by fio; the refused ones never reached either disk.
cmp "$dir/disk-a.img" "$dir/disk-b.img" || die "files differ after the real primary's replicated run"
log "(i) real primary replicated after the hostile peer; files identical"

# A fake secondary (hostile_peer.py secondary) on 127.0.0.1:PORT, started in
# the background and waited for; its JSON goes to OUT.json, stderr to OUT.err.
fake_secondary() {  # PORT SCENARIO OUT KEY_FILE [ARGS...]
  local port=$1 scen=$2 out=$3 key=$4
  shift 4
  rm -f "$T/hostile.ready"
  HOSTILE_READY="$T/hostile.ready" with_timeout 60 "$HASTNBD_PYTHON" "$HOSTILE" secondary 127.0.0.1 "$port" "$scen" \
    --key-file "$key" "$@" >"$out.json" 2>"$out.err" &
  fake=$!
  track_pid "$fake"
  wait_for 10 "fake secondary listening" test -e "$T/hostile.ready" || die "fake secondary did not start"
}

# Node a of CONF started and made primary; its pid in pid_a.
start_primary() {  # CONF
  start_daemon "$1" a data
  pid_a=$DAEMON_PID
  make_primary "$1" a data
}

# --- (iii) a fake secondary with the wrong size -----------------------------------
dir3="$T/iii"
mkdir -p "$dir3"
conf3="$dir3/hastnbd.yaml"
write_pair_config "$conf3" "127.0.0.1:$pc" "127.0.0.1:$pf"
create_resource "$conf3" a data >/dev/null
fake_secondary "$pf" wrong_size "$T/fake-secondary" "$dir3/peer.key" --connections 3 --deadline 30
n=$(wc -l <"$log_a")
start_primary "$conf3"
sock3="$(nbd_socket "$conf3" a data)"
expect_log "$log_a" "$n" "size mismatch with the fake secondary" "cannot connect to b" \
  "resource size differs" "here $SIZE bytes" "$((2 * SIZE))"
# Degraded but serving.
[ "$(with_timeout 20 nbdinfo --size "$(nbd_uri "$sock3" data)")" = "$SIZE" ] || die "nbdinfo on the degraded primary failed"
_qemu_io "$(nbd_uri "$sock3" data)" "write -P 0x5c 1048576 65536" "flush" >/dev/null
out="$(_qemu_io "$(nbd_uri "$sock3" data)" "read -P 0x5c 1048576 65536")"
grep -q "^read 65536/65536" <<<"$out" || die "read back on the degraded primary failed"
[ "$(status_field "$conf3" a '["peer"]["state"]')" != connected ] || die "primary connected to a secondary of the wrong size"
[ "$(status_field "$conf3" a '["writes"]["degraded"]')" -gt 0 ] || die "writes not counted degraded"
# And it kept retrying: the fake secondary saw 3 connections.
rc=0
wait "$fake" || rc=$?
[ "$rc" -eq 0 ] || { cat "$T/fake-secondary.err" >&2; die "fake secondary: the primary did not retry (exit $rc)"; }
"$HASTNBD_PYTHON" - "$T/fake-secondary.json" "$SIZE" <<'EOF' || die "the primary's answer to a wrong-size HELLO"
import json, sys
r = json.load(open(sys.argv[1]))
size = sys.argv[2]
for c in r["connections"]:
    e = c["error"]
    if not e or size not in e or str(2 * int(size)) not in e:
        sys.exit(f"connection {c}: the primary's ERROR does not name both sizes")
print(f"{len(r['connections'])} attempts, each refused: {r['connections'][0]['error']}", file=sys.stderr)
EOF
kill -0 "$pid_a" || die "primary died"
stop_daemon "$pid_a"
log "(iii) wrong-size secondary refused, both sizes logged, retried; NBD served degraded"

# --- (iv) a secondary that keeps the link alive but acknowledges nothing ---------
# (as a secondary whose disk hangs would: its keepalives still flow). A
# client write must not wait for it for ever: the primary has to give up on
# the record within a few timeouts, drop the link and complete the write
# locally (degraded).
dir4="$T/iv"
mkdir -p "$dir4"
conf4="$dir4/hastnbd.yaml"
read -r pd pe <<<"$(free_ports 2)"
write_pair_config "$conf4" "127.0.0.1:$pd" "127.0.0.1:$pe"
create_resource "$conf4" a data >/dev/null
fake_secondary "$pe" no_acks "$T/no-acks" "$dir4/peer.key" --deadline 25
start_primary "$conf4"
wait_peer_state "$conf4" a connected 10 || { show_log "$log_a"; die "the primary did not connect to the fake secondary"; }
sock4="$(nbd_socket "$conf4" a data)"
t0=$(date +%s%3N)
rc=0
with_timeout 20 qemu-io -f raw -c "write -P 0x3a 0 65536" "$(nbd_uri "$sock4" data)" >"$T/qio4.out" 2>&1 || rc=$?
elapsed=$(($(date +%s%3N) - t0))
[ "$rc" -ne 124 ] || die "(iv) a write hung for 20 s: the primary waits for ever on a secondary that keeps the link alive but never acknowledges ($(status_field "$conf4" a '["peer"]'))"
[ "$rc" -eq 0 ] || { cat "$T/qio4.out" >&2; die "(iv) the write failed (exit $rc)"; }
log "(iv) the write completed after $elapsed ms"
[ "$elapsed" -le 12000 ] || die "(iv) the write took $elapsed ms against a non-acknowledging secondary (timeout 3 s)"
[ "$(status_field "$conf4" a '["peer"]["state"]')" != connected ] || die "(iv) still connected to a secondary that acknowledges nothing"
[ "$(status_field "$conf4" a '["writes"]["degraded"]')" -gt 0 ] || die "(iv) the write was not counted degraded"
out="$(_qemu_io "$(nbd_uri "$sock4" data)" "read -P 0x3a 0 65536")"
grep -q "^read 65536/65536" <<<"$out" || die "(iv) read back failed"
stop_daemon "$pid_a"
kill_pid "$fake" 2

# --- (v) a fake secondary that fails authentication ------------------------------
for variant in no_key wrong_key version_too_new; do
  case $variant in
    no_key) want="does not authenticate (it has no psk)" ;;
    wrong_key) want="authentication failed: peer 'b' does not hold this resource's key" ;;
    version_too_new) want="peer 'b' chose protocol version 3, outside this node's 2..2" ;;
  esac
  fake_secondary "$pe" auth "$T/auth-$variant" "$dir4/peer.key" --variant "$variant" --connections 2 --deadline 25
  n=$(wc -l <"$log_a")
  start_primary "$conf4"
  rc=0
  wait "$fake" || rc=$?
  [ "$rc" -eq 0 ] || { cat "$T/auth-$variant.err" >&2; show_log "$log_a"; die "(v) $variant: fake secondary failed (exit $rc)"; }
  "$HASTNBD_PYTHON" - "$T/auth-$variant.json" "$want" <<'EOF' || die "(v) $variant: the primary's answer"
import json, sys
r = json.load(open(sys.argv[1]))
for c in r["connections"]:
    if not c["error"] or sys.argv[2] not in c["error"]:
        sys.exit(f"connection {c}: the primary's ERROR does not say {sys.argv[2]!r}")
EOF
  expect_log "$log_a" "$n" "(v) $variant" "cannot connect to b" "$want"
  [ "$(status_field "$conf4" a '["peer"]["state"]')" != connected ] || die "(v) $variant: connected"
  out="$(_qemu_io "$(nbd_uri "$sock4" data)" "write -P 0x4b 0 4096" "read -P 0x4b 0 4096")"
  grep -q "^read 4096/4096" <<<"$out" || die "(v) $variant: the primary does not serve NBD"
  stop_daemon "$pid_a"
  log "(v) fake secondary $variant: refused twice ($want), no proof sent, NBD served degraded"
done
log "t_peer_hostile: unauthenticated, malformed and mismatched peers refused and logged; real pair replicates; no hang on a mute secondary"
