#!/usr/bin/env bash
# The ASan+UBSan build of the daemon (build-san/) under real clients and
# hostile input: any memory error, undefined behaviour or leak at exit makes
# the daemon die or exit non-zero, which fails this test.
source "$(dirname "$0")/lib.sh"
require_root
[ -n "${HASTNBD_ASAN_BIN:-}" ] && [ -x "$HASTNBD_ASAN_BIN/hastnbd" ] \
  || die "no sanitizer build at HASTNBD_ASAN_BIN='${HASTNBD_ASAN_BIN:-}' (tools/build --san)"
HASTNBD_BIN="$HASTNBD_ASAN_BIN"
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:exitcode=23"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:exitcode=24"

conf="$T/hastnbd.yaml"
HASTNBD_DISK_SIZE=256M write_config "$conf"
create_resource "$conf" a data
start_daemon "$conf" a data
pid=$DAEMON_PID
make_primary "$conf" a data
sock="$(nbd_socket "$conf" a data)"

for sc in $(raw_scenarios); do
  raw_scenario "$sock" "$sc"
done
check_nbdcopy "$sock" data 32
check_fio_verify "$sock" data 16M
hastnbd_ctl "$conf" a status --json data >/dev/null || die "status failed"
hastnbd_ctl "$conf" a role --force init data >/dev/null || die "role init failed"
make_primary "$conf" a data
stop_daemon "$pid"
! grep -E "ERROR: (Address|Leak)Sanitizer|runtime error:" "$(daemon_log a)" || die "sanitizer report in the daemon log"
log "t_asan: sanitizer build clean under clients and hostile input"
