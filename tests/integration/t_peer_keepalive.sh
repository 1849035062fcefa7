#!/usr/bin/env bash
# An idle link stays up. Each side sends KEEPALIVE after timeout/3 without
# traffic (docs/protocol.md), so a healthy pair with no writes at all must
# never hit the `timeout` watchdog -- for every timeout, the short ones
# included (timeout 1..3 once dropped an idle link every few seconds because
# the secondary's first keepalive came after the handshake timeout's third).
# Then the other way round: the secondary frozen (SIGSTOP) while idle is
# noticed within the timeout, and the link comes back on SIGCONT.
source "$(dirname "$0")/lib.sh"
require_root
require_cmd ss

for to in 1 2 3; do
  dir="$T/idle-$to"
  mkdir -p "$dir"
  conf="$dir/hastnbd.yaml"
  read -r pa pb <<<"$(free_ports 2)"
  PAIR_TIMEOUT=$to write_pair_config "$conf" "127.0.0.1:$pa" "127.0.0.1:$pb"
  start_pair "$conf"
  sleep $((3 * to + 1))
  for n in a b; do
    st="$(status_field "$conf" $n '["peer"]["state"]')"
    co="$(status_field "$conf" $n '["peer"]["connects"]')"
    err="$(status_field "$conf" $n '["peer"]["last_error"]')"
    [ "$st" = connected ] && [ "$co" = 1 ] \
      || die "timeout $to: idle link did not stay up on node $n: state $st, $co connects, last error '$err'"
  done
  ! grep -q "silent for" "$(daemon_log a)" "$(daemon_log b)" \
    || die "timeout $to: an idle link timed out: $(grep -h 'silent for' "$(daemon_log a)" "$(daemon_log b)" | head -n 2)"
  log "timeout $to: idle link up for $((3 * to + 1)) s, 1 connect"
  if [ "$to" = 3 ]; then
    # Idle, then frozen: the keepalives stop, the primary must notice.
    t0=$(date +%s%3N)
    kill -STOP "$PAIR_PID_B"
    on_exit "kill -CONT $PAIR_PID_B 2>/dev/null"
    wait_peer_state_not "$conf" a connected $((to + 2)) \
      || { kill -CONT "$PAIR_PID_B"; die "a frozen idle secondary still counts as connected after $((to + 2)) s"; }
    log "frozen idle secondary noticed after $(($(date +%s%3N) - t0)) ms"
    kill -CONT "$PAIR_PID_B"
    wait_peer_state "$conf" a connected 15 || die "no reconnect within 15 s of SIGCONT"
  fi
  stop_daemon "$PAIR_PID_A"
  stop_daemon "$PAIR_PID_B"
  # Fresh logs for the next timeout's grep.
  : >"$(daemon_log a)"
  : >"$(daemon_log b)"
done
log "t_peer_keepalive: idle links stay up with timeout 1, 2 and 3 s; a frozen peer is noticed"
