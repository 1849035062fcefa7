#!/usr/bin/env bash
# `cmake --install` puts the binaries, the example config and the systemd unit
# where an admin expects them, and the unit passes systemd-analyze verify.
source "$(dirname "$0")/lib.sh"
require_cmd cmake systemd-analyze
build="$(dirname "$HASTNBD_BIN")"
DESTDIR="$T/root" cmake --install "$build" >"$T/install.log" 2>&1 || { cat "$T/install.log" >&2; die "cmake --install failed"; }
for f in usr/local/sbin/hastnbd usr/local/sbin/hastnbd-ctl etc/hastnbd/hastnbd.yaml lib/systemd/system/hastnbd@.service \
  usr/local/share/doc/hastnbd/hastnbd.yaml.example usr/local/share/man/man8/hastnbd.8 \
  usr/local/share/man/man8/hastnbd-ctl.8 usr/local/share/man/man5/hastnbd.yaml.5 \
  usr/lib/ocf/resource.d/hastnbd/hastnbd; do
  [ -e "$T/root/$f" ] || die "install did not create /$f"
done
[ -x "$T/root/usr/lib/ocf/resource.d/hastnbd/hastnbd" ] || die "the OCF agent is not executable"
# A second install keeps the admin's configuration.
echo "# edited by the admin" >>"$T/root/etc/hastnbd/hastnbd.yaml"
touch -d '2000-01-01' "$T/root/etc/hastnbd/hastnbd.yaml"
DESTDIR="$T/root" cmake --install "$build" >"$T/install2.log" 2>&1 || { cat "$T/install2.log" >&2; die "second cmake --install failed"; }
grep -q "edited by the admin" "$T/root/etc/hastnbd/hastnbd.yaml" || die "a reinstall replaced /etc/hastnbd/hastnbd.yaml"
# Another prefix: the unit follows the binaries.
prefix_build="$T/prefix-build"
cmake -S "$HASTNBD_SRC" -B "$prefix_build" -G Ninja -DCMAKE_INSTALL_PREFIX=/opt/hastnbd >"$T/prefix.log" 2>&1 \
  || { cat "$T/prefix.log" >&2; die "configuring with another prefix failed"; }
grep -q "^ExecStart=/opt/hastnbd/sbin/hastnbd %i" "$prefix_build/hastnbd@.service" \
  || die "with prefix /opt/hastnbd the unit does not start /opt/hastnbd/sbin/hastnbd: $(grep ExecStart "$prefix_build/hastnbd@.service")"
"$T/root/usr/local/sbin/hastnbd" --version | grep -q "^hastnbd " || die "installed hastnbd does not run"
# The shipped example is a valid configuration for both of its nodes.
for node in hosta hostb; do
  "$T/root/usr/local/sbin/hastnbd-ctl" -c "$T/root/etc/hastnbd/hastnbd.yaml" --node "$node" list >"$T/list.out" \
    || die "the installed example config does not load for $node"
  grep -q "^data " "$T/list.out" || die "example config lists no resource 'data'"
done
# Verify the unit as an instance, with ExecStart pointing at the installed binary.
sed "s|/usr/local/sbin/hastnbd|$T/root/usr/local/sbin/hastnbd|" "$T/root/lib/systemd/system/hastnbd@.service" \
  >"$T/hastnbd@.service"
ln -s "$T/hastnbd@.service" "$T/hastnbd@data.service"
systemd-analyze verify "$T/hastnbd@data.service" >"$T/verify.log" 2>&1 || { cat "$T/verify.log" >&2; die "systemd-analyze verify failed"; }
[ ! -s "$T/verify.log" ] || { cat "$T/verify.log" >&2; die "systemd-analyze verify complained"; }
log "t_install: binaries, example config and unit installed and valid"
