#!/usr/bin/env bash
# systemd's readiness protocol, as the Type=notify unit relies on it: the
# daemon runs with NOTIFY_SOCKET pointing at a datagram socket this test
# listens on (what systemd does). READY=1 must come only once the control
# socket answers; a role change updates STATUS=; SIGHUP sends RELOADING=1
# (with MONOTONIC_USEC) and then READY=1 again; SIGTERM sends STOPPING=1
# before the daemon exits.
source "$(dirname "$0")/lib.sh"
require_root
require_hastnbd

conf="$T/hastnbd.yaml"
write_config "$conf"
create_resource "$conf" a data >/dev/null

# The listener prints each datagram as one line (newlines shown as |), and
# for READY=1 whether the control socket already answered at that moment.
ctl_sock="$(ctl_socket "$conf" a data)"
cat >"$T/listen.py" <<'EOF'
import os, socket, subprocess, sys, time
path, ctl, conf, out = sys.argv[1:5]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
s.settimeout(60)
open(out + ".ready", "w").close()
with open(out, "a", buffering=1) as f:
    while True:
        try:
            msg = s.recv(4096).decode()
        except socket.timeout:
            break
        line = msg.replace("\n", "|")
        if "READY=1" in msg:
            rc = subprocess.run([os.environ["HASTNBD_BIN"] + "/hastnbd-ctl", "-c", conf, "--node", "a",
                                 "status", "data"], capture_output=True).returncode
            line += " control=%s" % ("up" if rc == 0 else "down")
        f.write(line + "\n")
        if "STOPPING=1" in msg:
            break
EOF
: >"$T/notify.out"
HASTNBD_BIN="$HASTNBD_BIN" "$HASTNBD_PYTHON" "$T/listen.py" "$T/notify.sock" "$ctl_sock" "$conf" "$T/notify.out" &
track_pid $!
wait_for 10 "the notify listener" test -e "$T/notify.out.ready" || die "listener did not start"

# JOURNAL_STREAM: what systemd sets when stderr goes to the journal; lines
# then carry their syslog priority as "<N>" for journald.
JOURNAL_STREAM=8:4242 NOTIFY_SOCKET="$T/notify.sock" start_daemon "$conf" a data
pid=$DAEMON_PID
_got() { grep -q "$1" "$T/notify.out"; }
wait_for 10 "READY=1" _got "READY=1" || die "no READY=1: $(cat "$T/notify.out")"
grep -m1 "READY=1" "$T/notify.out" | grep -q "control=up" || die "READY=1 before the control socket answered: $(cat "$T/notify.out")"
grep -m1 "READY=1" "$T/notify.out" | grep -q "STATUS=role init" || die "READY=1 without STATUS=role init"

make_primary "$conf" a data
wait_for 10 "STATUS=role primary" _got "^STATUS=role primary" || die "no STATUS after role primary: $(cat "$T/notify.out")"

kill -HUP "$pid"
_reloaded() { grep -A1 "RELOADING=1" "$T/notify.out" | grep -q "READY=1"; }
wait_for 10 "RELOADING=1 then READY=1" _reloaded || die "no RELOADING=1/READY=1 pair: $(cat "$T/notify.out")"
grep "RELOADING=1" "$T/notify.out" | grep -q "MONOTONIC_USEC=[0-9]" || die "RELOADING=1 without MONOTONIC_USEC"
grep -A1 "RELOADING=1" "$T/notify.out" | tail -n 1 | grep -q "STATUS=role primary" || die "READY after reload lost the role"

hastnbd_ctl "$conf" a role init data >/dev/null || die "role init failed"
stop_daemon "$pid"
wait_for 10 "STOPPING=1" _got "STOPPING=1" || die "no STOPPING=1: $(cat "$T/notify.out")"
log "notifications: $(tr '\n' ' ' <"$T/notify.out")"
logf="$(daemon_log a)"
grep -q "^<6>info: resource data: role init" "$logf" || { show_log "$logf"; die "journal lines lack the <6> priority prefix"; }
if grep -v "^<[2-7]>[a-z]*: " "$logf" | grep -q .; then
  show_log "$logf"
  die "a journal line without its priority prefix"
fi
log "t_sd_notify: READY after the control socket, STATUS, RELOADING/READY, STOPPING"
