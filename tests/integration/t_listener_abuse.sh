#!/usr/bin/env bash
# Every local listener as an attacker would use it (docs/operations.md §14):
#   (i)  idle connections to the control socket, the NBD socket and the
#        metrics endpoint, held without sending, are closed by the daemon
#        within each listener's deadline (control 10 s, metrics 5 s, NBD
#        handshake 30 s), and while they are held the daemon keeps answering
#        hastnbd-ctl, NBD clients and scrapes;
#  (ii)  descriptor exhaustion: with the daemon's RLIMIT_NOFILE lowered to
#        just above what it holds, a flood of control connections makes its
#        accepts fail with EMFILE; the accept loops back off (they used to
#        spin on the control socket) — the daemon uses little CPU meanwhile
#        and logs the failure — and once descriptors are free again every
#        listener serves as before;
# (iii)  an NBD client that asks for 2 GiB of READ data and never reads a
#        reply costs the daemon at most its connection's in-flight limit,
#        and another client is served meanwhile.
source "$(dirname "$0")/lib.sh"
require_cmd nbdinfo prlimit
HOLD="$LIB_DIR/hold_conns.py"

read -r mport <<<"$(free_ports 1)"
conf="$T/hastnbd.yaml"
write_config "$conf" "metrics: {listen: \"127.0.0.1:$mport\"}"
create_resource "$conf" a data
start_daemon "$conf" a data
pid=$DAEMON_PID
make_primary "$conf" a data
ctl="$(ctl_socket "$conf" a data)" sock="$(nbd_socket "$conf" a data)"
uri="$(nbd_uri "$sock" data)"
serving() {  # WHAT: control, NBD and metrics all answer
  hastnbd_ctl "$conf" a status data >/dev/null || die "$1: hastnbd-ctl status failed"
  with_timeout 20 nbdinfo --size "$uri" >/dev/null || die "$1: nbdinfo failed"
  with_timeout 20 "$HASTNBD_PYTHON" - "$mport" <<'PY' || die "$1: the metrics scrape failed"
import sys, urllib.request
body = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=10).read()
assert b"hastnbd_" in body
PY
}
serving "before"

# --- (i) idle connections on every listener ------------------------------------------
with_timeout 60 "$HASTNBD_PYTHON" "$HOLD" unix "$ctl" 6 16 >"$T/idle-ctl.json" &
h1=$!
with_timeout 60 "$HASTNBD_PYTHON" "$HOLD" tcp "127.0.0.1:$mport" 6 11 >"$T/idle-metrics.json" &
h2=$!
with_timeout 60 "$HASTNBD_PYTHON" "$HOLD" unix "$sock" 6 36 >"$T/idle-nbd.json" &
h3=$!
sleep 1
serving "(i) with 18 idle connections held"
wait "$h1" "$h2" "$h3" || die "(i) hold_conns.py failed"
for l in ctl metrics nbd; do
  "$HASTNBD_PYTHON" - "$T/idle-$l.json" "$l" <<'PY' || die "(i) idle $l connections were not all closed by the daemon"
import json, sys
r = json.load(open(sys.argv[1]))
print(sys.argv[2], r, file=sys.stderr)
assert r["opened"] == 6 and r["closed_by_daemon"] == 6, r
PY
done
log "(i) idle connections closed by the daemon: control $(cat "$T/idle-ctl.json"), metrics $(cat "$T/idle-metrics.json"), nbd $(cat "$T/idle-nbd.json")"

# --- (ii) descriptor exhaustion ------------------------------------------------------
fds="$(find "/proc/$pid/fd" -mindepth 1 -maxdepth 1 | wc -l)"
old="$(prlimit --pid "$pid" --nofile --output SOFT,HARD --noheadings | awk '{print $1":"$2}')"
prlimit --pid "$pid" --nofile="$((fds + 4)):${old#*:}" || die "(ii) prlimit failed"
log_a="$(daemon_log a)"
with_timeout 60 "$HASTNBD_PYTHON" "$HOLD" unix "$ctl" 40 9 >"$T/flood.json" &
h=$!
sleep 2
t0="$(cpu_ticks "$pid")"
sleep 4
t1="$(cpu_ticks "$pid")"
hz="$(getconf CLK_TCK)"
# A loop that retries accept at once burns a whole core: 4 s of CPU in 4 s.
[ $((t1 - t0)) -lt "$hz" ] || die "(ii) the daemon used $(((t1 - t0) * 100 / hz))/100 s of CPU in 4 s while out of descriptors: an accept loop spins"
grep -q "accept: Too many open files.*retrying in" "$log_a" || { show_log "$log_a"; die "(ii) no accept back-off logged"; }
wait "$h" || die "(ii) hold_conns.py failed"
prlimit --pid "$pid" --nofile="$old" || die "(ii) restoring the limit failed"
wait_for 10 "control to answer again" hastnbd_ctl "$conf" a status data
serving "(ii) after the flood"
kill -0 "$pid" || die "(ii) the daemon died"
log "(ii) out of descriptors: $(((t1 - t0) * 1000 / hz)) ms CPU in 4 s, back-off logged ($(grep -c 'accept: Too many open files' "$log_a") lines), every listener serves again"
# --- (iii) an NBD client that never reads its replies ---------------------------------
rss_kib() { sed -n "s/^$1:[[:space:]]*\([0-9]*\) kB/\1/p" "/proc/$pid/status"; }
rss0="$(rss_kib VmRSS)"
with_timeout 60 "$HASTNBD_PYTHON" "$LIB_DIR/nbd_raw.py" "$sock" no-reader data || die "(iii) no-reader scenario failed"
hwm="$(rss_kib VmHWM)"
# It asked for 2 GiB of READ data; the connection may hold 256 MiB in flight.
[ $((hwm - rss0)) -lt $((512 * 1024)) ] || die "(iii) the daemon grew from $rss0 KiB to a peak of $hwm KiB for one client that never reads"
serving "(iii) after the client that never read"
log "(iii) a client asking for 2 GiB it never reads: daemon RSS $rss0 KiB, peak $hwm KiB; others served"
log "t_listener_abuse: passed"
