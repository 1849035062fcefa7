#!/usr/bin/env python3
"""hold_conns.py: open COUNT connections to one listener and hold them without
sending, for at most SECONDS; print JSON: how many connected, and how many
the daemon closed by itself (EOF or reset) and after how long.

  hold_conns.py unix PATH COUNT SECONDS
  hold_conns.py tcp HOST:PORT COUNT SECONDS

Connects never outlast SECONDS (each socket has a timeout), so the loop is
bounded in count and time."""
import json
import select
import socket
import sys
import time

kind, where, count, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
t0 = time.monotonic()
socks = []
for _ in range(count):
    if kind == "unix":
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        addr = where
    else:
        host, port = where.rsplit(":", 1)
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        addr = (host, int(port))
    s.settimeout(2)
    try:
        s.connect(addr)
    except OSError:
        s.close()
        break
    s.setblocking(False)
    socks.append(s)
opened = len(socks)
closed_after = []
live = list(socks)
while live and time.monotonic() - t0 < seconds:
    r, _, _ = select.select(live, [], [], 0.2)
    for s in r:
        try:
            data = s.recv(65536)
        except BlockingIOError:
            continue
        except OSError:
            data = b""
        if not data:
            closed_after.append(round(time.monotonic() - t0, 2))
            live.remove(s)
for s in socks:
    s.close()
print(json.dumps({"opened": opened, "closed_by_daemon": len(closed_after),
                  "closed_after": closed_after}))
