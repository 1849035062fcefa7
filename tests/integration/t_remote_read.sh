#!/usr/bin/env bash
# A local read error on the primary is answered from the secondary. The
# primary's disk is a real block device whose reads can be made to fail on
# demand: a loop device (direct I/O) over an nbdfuse file backed by nbdkit's
# memory plugin with the error filter, armed by a trigger file.
source "$(dirname "$0")/lib.sh"
require_root
require_cmd nbdkit nbdfuse losetup qemu-io

nbdkit -U "$T/faulty.sock" -P "$T/nbdkit.pid" --filter=error memory 256M \
  error-pread-rate=100% error-pread=EIO "error-pread-file=$T/trigger" || die "nbdkit failed"
wait_for 10 "nbdkit pid file" test -s "$T/nbdkit.pid"
on_exit "kill \$(cat $T/nbdkit.pid)"
mkdir -p "$T/fuse"
nbdfuse "$T/fuse/disk" "nbd+unix:///?socket=$T/faulty.sock" &
track_pid $!
wait_for 10 "nbdfuse" test -e "$T/fuse/disk"
on_exit "umount $T/fuse"
dev="$(losetup -f --show --direct-io=on "$T/fuse/disk")" || die "losetup failed"
on_exit "losetup -d $dev"

read -r pa pb <<<"$(free_ports 2)"
conf="$T/hastnbd.yaml"
write_pair_config "$conf" "127.0.0.1:$pa" "127.0.0.1:$pb"
sed -i "s|local: $T/disk-a.img|local: $dev|" "$conf"
for n in a b; do create_resource "$conf" "$n" data >/dev/null; done
start_daemon "$conf" b data
hastnbd_ctl "$conf" b role secondary data >/dev/null
start_daemon "$conf" a data
make_primary "$conf" a data
wait_peer_state "$conf" a connected 15
uri="$(nbd_uri "$(nbd_socket "$conf" a data)" data)"

with_timeout 60 qemu-io -f raw "$uri" -c "write -P 0x7e 1048576 131072" -c flush >/dev/null || die "write failed"
touch "$T/trigger"  # every local read of the primary fails from now on
out="$(with_timeout 60 qemu-io -f raw "$uri" -c "read -P 0x7e 1048576 131072")" || die "read failed: $out"
grep -q "read 131072/131072" <<<"$out" && ! grep -q "Pattern verification failed" <<<"$out" \
  || die "the read through the primary did not return the data: $out"
[ "$(status_field "$conf" a '["writes"]["remote_reads"]')" -ge 1 ] || die "no remote read counted"
grep -q "served from the secondary" "$(daemon_log a)" || die "no log line for the remote read"

# Without a secondary the same read fails, as it must: nobody has good data.
kill_pid "${DAEMON_PIDS[b]}"
wait_peer_state_not "$conf" a connected 15
rc=0
out="$(with_timeout 60 qemu-io -f raw "$uri" -c "read -P 0x7e 1048576 4096" 2>&1)" || rc=$?
grep -qi "error" <<<"$out" || die "a failing local read with no secondary reported success: $out"
rm -f "$T/trigger"
log "t_remote_read: a local read error was served from the secondary"
