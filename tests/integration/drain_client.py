"""SIGTERM drain check, used by t_lifecycle.sh.

  drain_client.py send SOCKET PID COUNT STATE   pipeline COUNT 64 KiB writes,
      SIGTERM the daemon while they are in flight, collect every reply until
      the server closes; record which writes were acknowledged in STATE.
  drain_client.py verify SOCKET STATE          every acknowledged write must
      read back (after a restart).
Exit 0 when the server behaved, 1 otherwise."""
import json
import os
import signal
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nbd_raw import CMD_WRITE, REQUEST_MAGIC, Fail, connect, pattern  # noqa: E402

BASE = 64 << 20
SIZE = 64 << 10


def send(path, pid, count, state):
    c = connect(path, "data")
    wire = bytearray()
    offsets = {}
    for i in range(count):
        h = c.next_handle
        c.next_handle += 1
        c.inflight[h] = (CMD_WRITE, SIZE)
        offsets[h] = BASE + i * SIZE
        wire += struct.pack(">IHHQQI", REQUEST_MAGIC, 0, CMD_WRITE, h, offsets[h], SIZE) + pattern(f"drain-{i}", SIZE)
    # Half of the burst, then the signal, then the rest: some requests are in
    # flight when the daemon starts draining, some arrive after it stopped reading.
    half = len(wire) // 2
    c.sock.sendall(wire[:half])
    os.kill(pid, signal.SIGTERM)
    try:
        c.sock.sendall(wire[half:])
    except OSError:
        pass
    acked, failed = [], 0
    while c.inflight:
        try:
            h, err, _ = c.reply()
        except (Fail, OSError):
            break  # the server closed: what was not answered was not acknowledged
        if err:
            failed += 1
        else:
            acked.append((offsets[h] - BASE) // SIZE)
    json.dump({"acked": acked}, open(state, "w"))
    print(f"drain: {len(acked)} of {count} writes acknowledged, {failed} errors, "
          f"{len(c.inflight)} unanswered after SIGTERM")
    if failed:
        raise Fail(f"{failed} writes answered with an error during the drain")
    if not acked:
        raise Fail("no write was acknowledged before the daemon stopped")


def verify(path, state):
    acked = json.load(open(state))["acked"]
    c = connect(path, "data")
    for i in acked:
        if c.read(BASE + i * SIZE, SIZE) != pattern(f"drain-{i}", SIZE):
            raise Fail(f"acknowledged write {i} did not survive the SIGTERM restart")
    c.disconnect()
    print(f"drain: all {len(acked)} acknowledged writes read back after restart")


if __name__ == "__main__":
    try:
        if sys.argv[1] == "send":
            send(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
        else:
            verify(sys.argv[2], sys.argv[3])
    except Fail as e:
        print(f"FAIL: {e}", file=sys.stderr)
        sys.exit(1)
