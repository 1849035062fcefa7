#!/usr/bin/python3
"""Acknowledged-write ledger for failover tests.

  acked_writes.py write SOCKET LEDGER OFFSET LENGTH [--bs N] [--depth N] [--seconds S] [--seed S]
  acked_writes.py verify SOCKET LEDGER

`write` writes every block of [OFFSET, OFFSET+LENGTH) once, in a random
order, DEPTH requests in flight, each block's content derived from (seed,
offset) so it can be recomputed; each block whose reply says success is
appended to LEDGER (flushed at once) - the writes the client saw
acknowledged. It stops when every block is written, after SECONDS, or when the
server goes away (the point of the test: the primary is killed under it),
and exits 0 in all three cases, printing how many writes were acknowledged.

`verify` reads every block in LEDGER through SOCKET (the survivor's export)
and exits 1 naming the first blocks whose content is not what was
acknowledged. A block written but never acknowledged may hold anything.

fio's own verify state cannot do this here: with its nbd engine, a server
killed under it either makes fio count the failed in-flight writes as
written, or hangs it.
"""

import argparse
import hashlib
import random
import sys
import time

sys.path.insert(0, __import__("os").path.dirname(__file__))
import nbd_raw  # noqa: E402


def content(seed, offset, bs):
    head = f"acked-writes seed={seed} offset={offset:#x} ".encode()
    body = hashlib.sha256(head).digest()
    return (head + body * (bs // len(body) + 1))[:bs]


def cmd_write(a):
    blocks = list(range(a.offset, a.offset + a.length, a.bs))
    random.Random(a.seed).shuffle(blocks)
    c = nbd_raw.connect(a.socket, "data")
    deadline = time.monotonic() + a.seconds
    acked = failed = 0
    pending = {}
    it = iter(blocks)
    with open(a.ledger, "w") as ledger:
        ledger.write(f"seed {a.seed} bs {a.bs}\n")
        ledger.flush()
        try:
            while True:
                while len(pending) < a.depth and time.monotonic() < deadline:
                    off = next(it, None)
                    if off is None:
                        break
                    h = c.request(nbd_raw.CMD_WRITE, off, a.bs, content(a.seed, off, a.bs))
                    pending[h] = off
                if not pending:
                    break
                h, err, _ = c.reply()
                off = pending.pop(h)
                if err == 0:
                    ledger.write(f"{off}\n")
                    ledger.flush()
                    acked += 1
                else:
                    failed += 1
        except (nbd_raw.Fail, OSError) as e:
            print(f"acked_writes: connection ended: {e}")
    print(f"acked_writes: {acked} writes acknowledged, {failed} failed, {len(pending)} unanswered")
    return 0


def cmd_verify(a):
    with open(a.ledger) as f:
        first = f.readline().split()
        seed, bs = int(first[1]), int(first[3])
        offsets = [int(line) for line in f if line.strip()]
    if not offsets:
        print("FAIL: the ledger holds no acknowledged write")
        return 1
    c = nbd_raw.connect(a.socket, "data")
    bad = []
    for off in offsets:
        if c.read(off, bs) != content(seed, off, bs):
            bad.append(off)
    c.disconnect()
    if bad:
        print(f"FAIL: {len(bad)} of {len(offsets)} acknowledged writes lost, first at offsets "
              + ", ".join(str(o) for o in bad[:8]))
        return 1
    print(f"acked_writes: all {len(offsets)} acknowledged writes read back intact")
    return 0


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write")
    w.add_argument("socket")
    w.add_argument("ledger")
    w.add_argument("offset", type=int)
    w.add_argument("length", type=int)
    w.add_argument("--bs", type=int, default=4096)
    w.add_argument("--depth", type=int, default=16)
    w.add_argument("--seconds", type=float, default=30)
    w.add_argument("--seed", type=int, default=1)
    v = sub.add_parser("verify")
    v.add_argument("socket")
    v.add_argument("ledger")
    a = p.parse_args()
    return cmd_write(a) if a.cmd == "write" else cmd_verify(a)


if __name__ == "__main__":
    sys.exit(main())
