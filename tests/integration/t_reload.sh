#!/usr/bin/env bash
# Configuration reload (SIGHUP and `hastnbd-ctl reload`), `source:` and
# `pidfile:`, with two real daemons on loopback.
# a listens on 127.0.0.2 and b expects its primary to come from there, but a
# connects to b's 127.0.0.1 without a source address, so the kernel picks
# 127.0.0.1 and b refuses it ("not the configured peer"). A reload that adds
# `source: 127.0.0.2` (with timeout, sync_rate, exec, and an extent_size
# change that needs a restart) makes a reconnect from 127.0.0.2 at once; the
# refused key is reported and left as it runs. SIGHUP does the same as the
# command and runs the reload hook; a broken file changes nothing and the
# daemon keeps serving. The pid file holds the daemon's pid, keeps a second
# daemon for the resource out, and goes away with a clean stop.
source "$(dirname "$0")/lib.sh"
require_root
require_cmd cmp

dir="$T/pair"
mkdir -p "$dir"
conf="$dir/hastnbd.yaml"
read -r pa pb <<<"$(free_ports 2)"
PAIR_DISK_SIZE=16M write_pair_config "$conf" "127.0.0.2:$pa" "127.0.0.1:$pb"
grep -q "remote: \"127.0.0.2:$pa\"" "$conf" || die "b does not expect a at 127.0.0.2 in $conf"
sed -i "s|^      a: {|      a: {pidfile: $dir/a.pid, |" "$conf"
cat >"$T/hook.sh" <<EOF
#!/bin/sh
printf '%s\n' "\$*" >>"$T/hook.out"
EOF
chmod +x "$T/hook.sh"
: >"$T/hook.out"
create_resource "$conf" a data >/dev/null
create_resource "$conf" b data >/dev/null
log_a="$(daemon_log a)"
log_b="$(daemon_log b)"
show_logs() {
  show_log "$log_a"
  show_log "$log_b"
}
field() {  # NODE SUBSCRIPT
  status_field "$conf" "$1" "$2"
}

start_daemon "$conf" b data
pid_b=$DAEMON_PID
hastnbd_ctl "$conf" b role secondary data >/dev/null || die "role secondary failed"
start_daemon "$conf" a data
pid_a=$DAEMON_PID

# The pid file: our daemon's pid, locked.
[ "$(cat "$dir/a.pid")" = "$pid_a" ] || die "pid file holds '$(cat "$dir/a.pid")', not $pid_a"
rc=0
out="$(with_timeout 20 "$HASTNBD_BIN/hastnbd" -c "$conf" --node a data 2>&1)" || rc=$?
[ "$rc" -eq 1 ] || die "a second daemon for a exited with $rc (want 1): $out"
grep -q "pidfile $dir/a.pid is locked by pid $pid_a" <<<"$out" || die "second daemon's error: $out"
[ "$(cat "$dir/a.pid")" = "$pid_a" ] || die "the refused second daemon changed the pid file"
log "pidfile: holds $pid_a; a second daemon was refused: $(grep -o 'pidfile .*' <<<"$out")"

# Without a source address, b refuses a.
make_primary "$conf" a data
_b_refused() { grep -q "refused connection from 127.0.0.1:.*not the configured peer" "$log_b"; }
wait_for 15 "b to refuse a's connection from 127.0.0.1" _b_refused || { show_logs; die "b did not refuse a"; }
_peer_state_is "$conf" a connected && die "a connected although b refuses 127.0.0.1"
log "without source: b refuses a connecting from 127.0.0.1"

# Reload by command: source, timeout, sync_rate and exec change; extent_size needs a restart.
sed -i "s|^      a: {|      a: {source: 127.0.0.2, exec: $T/hook.sh, |" "$conf"
sed -i "s|^defaults: {timeout: 3}|defaults: {timeout: 5}|" "$conf"
sed -i "s|^    extent_size: 2MiB|    extent_size: 1MiB\n    sync_rate: 16MiB|" "$conf"
hastnbd_ctl "$conf" a reload data >"$T/reload.out" 2>&1 || { cat "$T/reload.out" >&2; die "hastnbd-ctl reload failed"; }
cat "$T/reload.out"
for want in "changed timeout: 3 -> 5" "changed exec: (none) -> $T/hook.sh" "changed sync_rate: 0 -> 16777216" \
  "changed source: (none) -> 127.0.0.2:0" "NOT changed (needs a restart) extent_size: 2097152 -> 1048576"; do
  grep -qF "data: $want" "$T/reload.out" || die "reload output lacks '$want'"
done
t0=$(date +%s)
if ! wait_peer_state "$conf" a connected 10; then
  show_logs
  die "a did not connect within 10 s of the reload that gave it source 127.0.0.2"
fi
grep -q "primary a connected from 127.0.0.2:" "$log_b" || { show_logs; die "b did not see a from 127.0.0.2"; }
log "reload: a reconnected from 127.0.0.2 within $(($(date +%s) - t0)) s"
[ "$(field a '["timeout"]')" = 5 ] || die "status timeout is $(field a '["timeout"]'), not 5"
[ "$(field a '["sync_rate"]')" = 16777216 ] || die "status sync_rate is not 16 MiB"
[ "$(field a '["extent_size"]')" = 2097152 ] || die "extent_size changed while running"
[ "$(field a '["peer"]["source"]')" = 127.0.0.2 ] || die "status peer.source is not 127.0.0.2"
[ "$(field a '["hooks"]["program"]')" = "$T/hook.sh" ] || die "hook program not reloaded"
wait_for 10 "the reload hook" grep -q "^reload data" "$T/hook.out" || die "no reload hook: $(cat "$T/hook.out")"
wait_in_sync "$conf" a 60 || { show_logs; die "the initial sync did not finish"; }

# SIGHUP does the same.
n=$(wc -l <"$log_a")
: >"$T/hook.out"
sed -i "s|^defaults: {timeout: 5}|defaults: {timeout: 9}|" "$conf"
kill -HUP "$pid_a"
_hup_done() { log_since "$log_a" "$n" | grep -q "reload: timeout: 5 -> 9"; }
wait_for 10 "SIGHUP reload" _hup_done || { show_log "$log_a"; die "SIGHUP did not reload the timeout"; }
log_since "$log_a" "$n" | grep -q "reload: not changed, needs a restart: extent_size: 2097152 -> 1048576" \
  || die "SIGHUP reload did not log the refused extent_size"
[ "$(field a '["timeout"]')" = 9 ] || die "timeout not 9 after SIGHUP"
wait_for 10 "the reload hook after SIGHUP" grep -q "^reload data" "$T/hook.out" || die "no reload hook after SIGHUP"
_peer_state_is "$conf" a connected || die "the link dropped on a reload that did not change the address"
log "SIGHUP: timeout 5 -> 9 applied, extent_size refused, link kept"

# A broken file changes nothing; the daemon keeps serving.
cp "$conf" "$T/good.yaml"
printf 'resources:\n  data: [\n' >"$conf"
n=$(wc -l <"$log_a")
kill -HUP "$pid_a"
_hup_refused() { log_since "$log_a" "$n" | grep -q "reload: .*nothing changed"; }
wait_for 10 "the broken reload" _hup_refused || { show_log "$log_a"; die "no error logged for a broken file"; }
rc=0
hastnbd_ctl "$conf" a reload data >"$T/bad.out" 2>&1 || rc=$?
[ "$rc" -eq 2 ] || die "hastnbd-ctl reload of a broken file exited $rc (want 2): $(cat "$T/bad.out")"
cp "$T/good.yaml" "$conf"
kill -0 "$pid_a" || die "a died on a broken configuration"
_peer_state_is "$conf" a connected || die "a lost its peer on a broken configuration"
[ "$(field a '["timeout"]')" = 9 ] || die "a broken reload changed the timeout"
log "broken file: refused ($(head -n 1 "$T/bad.out")), a keeps serving"

stop_daemon "$pid_a"
[ ! -e "$dir/a.pid" ] || die "the pid file outlived a clean stop"
stop_daemon "$pid_b"
log "t_reload: reload by command and SIGHUP, source address, pid file"
