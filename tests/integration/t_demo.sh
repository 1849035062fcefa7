#!/usr/bin/env bash
# tools/demo, the README's first command, with the binaries under test (no
# rebuild): two nodes in network namespaces, replication, a hard kill,
# failover, resync and a byte-for-byte comparison. It must exit 0 and end
# with its own verdicts; any change that breaks the demo (a new required key,
# a renamed status field) fails here rather than for a new user.
source "$(dirname "$0")/lib.sh"
[ -x "$HASTNBD_BIN/hastnbd" ] && [ -x "$HASTNBD_BIN/hastnbd-ctl" ] || die "no binaries in $HASTNBD_BIN"
out="$T/demo.out"
rc=0
DEMO_BIN="$HASTNBD_BIN" DEMO_SYNC_TIMEOUT=60 with_timeout 400 "$HASTNBD_SRC/tools/demo" >"$out" 2>&1 || rc=$?
if [ "$rc" -ne 0 ]; then
  tail -40 "$out" >&2
  die "tools/demo exited $rc"
fi
for want in "every file on b checks out" "identical: the resync was complete" "Demo finished"; do
  grep -q "$want" "$out" || { tail -40 "$out" >&2; die "tools/demo did not print '$want'"; }
done
! grep -q '^FAILED' "$out" || { grep '^FAILED' "$out" >&2; die "tools/demo reported a failure"; }
log "t_demo: tools/demo ran to the end: replication, failover, resync, identical disks"
