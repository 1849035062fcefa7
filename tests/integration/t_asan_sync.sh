#!/usr/bin/env bash
# The synchronisation paths under the ASan+UBSan build (build-san/): the
# failover test (full sync, kill -9, promotion, resync to the returning
# node), the sync from the secondary (reads through it, interrupted and
# resumed), compared and fine-record resyncs (t_sync_compare), online verify
# (t_verify) and the split-brain policies. A memory error or undefined behaviour kills a daemon
# (halt_on_error), a leak makes it exit non-zero at SIGTERM: either fails the
# test it happens in.
source "$(dirname "$0")/lib.sh"
[ -n "${HASTNBD_ASAN_BIN:-}" ] && [ -x "$HASTNBD_ASAN_BIN/hastnbd" ] \
  || die "no sanitizer build at HASTNBD_ASAN_BIN='${HASTNBD_ASAN_BIN:-}' (tools/build --san)"
export HASTNBD_BIN="$HASTNBD_ASAN_BIN"
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:exitcode=23"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:exitcode=24"
for t in t_failover t_sync_from_secondary t_sync_compare t_verify t_split_brain_policy; do
  log "$t under ASan+UBSan"
  bash "$LIB_DIR/$t.sh" || die "$t failed under ASan+UBSan"
done
log "t_asan_sync: failover, syncs, verify and split-brain policies clean under ASan+UBSan"
