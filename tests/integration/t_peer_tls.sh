#!/usr/bin/env bash
# The peer link over mutual TLS 1.3 (tls: {cert, key, ca}), with the psk
# checked inside it (docs/protocol.md, "TLS"):
#   (i)   a real pair with tls + psk connects over TLS 1.3 and replicates:
#         the secondary's disk holds what a client wrote on the primary;
#   (ii)  rogue primaries that hold the right psk but not a right certificate
#         (signed by another CA, for another name, expired, none at all), and
#         one speaking the plain protocol, are refused before any AUTH record
#         is answered; the secondary's disk is byte-identical afterwards, the
#         pair stays connected, each refusal is counted with its reason; a
#         client with a's real certificate (the control) does get an
#         AUTH_CHALLENGE, so the refusals are the certificates' doing;
#   (iii) a real primary whose tls.ca is another CA refuses the secondary's
#         certificate and says so; one without tls is told by the TLS node;
#   (iv)  failover over TLS: b promoted, a back as its secondary (b is now
#         the TLS client), the resync copies what b wrote.
source "$(dirname "$0")/lib.sh"
require_cmd qemu-io openssl
TLSC="$LIB_DIR/tls_client.py"

pki="$T/pki"
make_test_pki "$pki"
read -r pa pb <<<"$(free_ports 2)"
conf="$T/hastnbd.yaml"
PAIR_TLS="$pki" write_pair_config "$conf" "127.0.0.1:$pa" "127.0.0.1:$pb"
grep -q "tls: {cert: $pki/a.crt" "$conf" || die "config has no tls"
log_a="$(daemon_log a)"

# --- (i) a real pair over TLS -------------------------------------------------------
start_pair "$conf"
pid_a=$PAIR_PID_A pid_b=$PAIR_PID_B
for n in a b; do
  [ "$(status_field "$conf" $n '["peer"]["auth"]')" = "tls+psk" ] || die "(i) node $n: peer.auth is not tls+psk"
  tls="$(status_field "$conf" $n '["peer"]["tls"]')"
  [[ "$tls" == TLSv1.3\ TLS_* ]] || die "(i) node $n: peer.tls is '$tls', want TLSv1.3 and a cipher"
done
sock="$(nbd_socket "$conf" a data)"
_qemu_io "$(nbd_uri "$sock" data)" "write -P 0x6d 4194304 1048576" "flush" >/dev/null
wait_in_sync "$conf" a 30 || die "(i) not in sync after the write"
"$HASTNBD_PYTHON" - "$T/disk-b.img" <<'PY' || die "(i) the secondary's disk does not hold the write"
import sys
with open(sys.argv[1], "rb") as f:
    f.seek(4194304)
    if f.read(1048576) != b"\x6d" * 1048576:
        sys.exit("1 MiB at 4 MiB on b is not 0x6d")
PY
log "(i) tls+psk pair: connected over $tls, a write on a is on b's disk"

# --- (ii) rogue primaries against the secondary --------------------------------------
disk_sum() { sha256sum "$T/disk-b.img" | cut -d' ' -f1; }
before_sum="$(disk_sum)"
applied="$(status_field "$conf" b '["peer"]["records_applied"]')"
rogue() {  # NAME WANT-IN-LAST-REFUSED [tls_client args...]
  local name="$1" want="$2" before rc=0
  shift 2
  before="$(status_field "$conf" b '["peer"]["refused"]')"
  with_timeout 30 "$HASTNBD_PYTHON" "$TLSC" 127.0.0.1 "$pb" --key-file "$T/peer.key" "$@" >"$T/rogue-$name.json" 2>&1 || rc=$?
  [ "$rc" -eq 0 ] || { cat "$T/rogue-$name.json" >&2; die "(ii) $name: the rogue got an AUTH_CHALLENGE (exit $rc)"; }
  wait_for 10 "b to count the refusal of $name" \
    test "$(status_field "$conf" b '["peer"]["refused"]')" -gt "$before" || die "(ii) $name: not counted as refused"
  last="$(status_field "$conf" b '["peer"]["last_refused"]')"
  [[ "$last" == *"$want"* ]] || die "(ii) $name: last_refused is '$last', want it to say '$want'"
  log "(ii) $name refused: $last"
}
rogue other-ca "unable to get local issuer certificate" --cert "$pki/rogue-a.crt" --tls-key "$pki/rogue-a.key"
rogue wrong-name "hostname mismatch (it must be for 'a')" --cert "$pki/c.crt" --tls-key "$pki/c.key"
rogue expired "certificate has expired" --cert "$pki/expired-a.crt" --tls-key "$pki/expired-a.key"
rogue no-cert "certificate" 
rogue plain "without TLS" --plain
"$HASTNBD_PYTHON" -c "import json,sys; e=json.load(open(sys.argv[1]))['error'] or ''; sys.exit(0 if 'over TLS only' in e else 'plain rogue was not told: ' + e)" \
  "$T/rogue-plain.json" || die "(ii) the plain client did not get the reason"
# The control: a's own certificate gets as far as AUTH (and then, with a
# second primary already connected, the refusal the pair's rules give).
rc=0
with_timeout 30 "$HASTNBD_PYTHON" "$TLSC" 127.0.0.1 "$pb" --key-file "$T/peer.key" \
  --cert "$pki/a.crt" --tls-key "$pki/a.key" >"$T/control.json" 2>&1 || rc=$?
[ "$rc" -eq 1 ] || { cat "$T/control.json" >&2; die "(ii) control: a client with a's certificate did not get an AUTH_CHALLENGE"; }
[ "$(disk_sum)" = "$before_sum" ] || die "(ii) the secondary's disk changed during the rogue attempts"
[ "$(status_field "$conf" b '["peer"]["records_applied"]')" = "$applied" ] || die "(ii) records were applied from a rogue"
[ "$(status_field "$conf" a '["peer"]["state"]')" = connected ] || die "(ii) the real pair lost its link"
_qemu_io "$(nbd_uri "$sock" data)" "write -P 0x6e 8388608 65536" "flush" >/dev/null
wait_in_sync "$conf" a 30 || die "(ii) the pair does not replicate after the rogues"
log "(ii) secondary disk unchanged by 5 rogues, the control got through, the pair still replicates"

# --- (iii) real daemons with the wrong trust or no TLS --------------------------------
stop_daemon "$pid_a"
conf_a="$T/a-wrong-ca.yaml"
sed "s|ca: $pki/ca.crt}|ca: $pki/rogue-ca.crt}|" "$conf" >"$conf_a"
grep -q "rogue-ca.crt" "$conf_a" || die "no rogue ca in $conf_a"
start_daemon "$conf_a" a data
pid_a=$DAEMON_PID
make_primary "$conf_a" a data
wait_for 20 "a to refuse b's certificate" sh -c "grep -q 'not signed by this node' '$log_a'" \
  || { show_log "$log_a"; die "(iii) a primary trusting another CA did not refuse b's certificate"; }
[ "$(status_field "$conf_a" a '["peer"]["state"]')" != connected ] || die "(iii) connected with the wrong CA"
log "(iii) primary with another CA: $(grep -o 'TLS handshake: [^;]*' "$log_a" | head -1)"
stop_daemon "$pid_a"
conf_p="$T/a-plain.yaml"
write_pair_config "$conf_p" "127.0.0.1:$pa" "127.0.0.1:$pb"
start_daemon "$conf_p" a data
pid_a=$DAEMON_PID
make_primary "$conf_p" a data
wait_for 20 "a to be told b needs TLS" sh -c "grep -q 'over TLS only' '$log_a'" \
  || { show_log "$log_a"; die "(iii) a plain primary was not told that b runs TLS"; }
stop_daemon "$pid_a"

# --- (iv) failover over TLS: b becomes primary, a returns as its secondary ----------
hastnbd_ctl "$conf" b role primary data >/dev/null || die "(iv) role primary on b failed"
sock_b="$(nbd_socket "$conf" b data)"
wait_for 20 "NBD socket on b" test -S "$sock_b" || die "(iv) no NBD socket on b"
_qemu_io "$(nbd_uri "$sock_b" data)" "write -P 0x71 12582912 1048576" "flush" >/dev/null
start_daemon "$conf" a data
pid_a=$DAEMON_PID
hastnbd_ctl "$conf" a role secondary data >/dev/null || die "(iv) role secondary on a failed"
wait_peer_state "$conf" b connected 15 || { show_log "$log_a"; die "(iv) b did not connect to a over TLS"; }
wait_in_sync "$conf" b 60 || die "(iv) the resync b -> a did not finish"
[ "$(status_field "$conf" b '["peer"]["auth"]')" = "tls+psk" ] || die "(iv) b's link is not tls+psk"
[[ "$(status_field "$conf" b '["peer"]["tls"]')" == TLSv1.3* ]] || die "(iv) b's link is not TLS 1.3"
"$HASTNBD_PYTHON" - "$T/disk-a.img" <<'PY' || die "(iv) a does not hold what b wrote after the failover"
import sys
with open(sys.argv[1], "rb") as f:
    f.seek(12582912)
    if f.read(1048576) != b"\x71" * 1048576:
        sys.exit("1 MiB at 12 MiB on a is not 0x71")
PY
log "(iv) failover: b primary, a back as secondary over TLS, resynced"
stop_daemon "$pid_a"
stop_daemon "$pid_b"
log "t_peer_tls: TLS pair replicates; other CA, wrong name, expired, no certificate and plain refused with reasons; disk untouched"
