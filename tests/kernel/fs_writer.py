#!/usr/bin/env python3
"""A writer on a mounted file system that remembers what it saw acknowledged.

  fs_writer.py write FILE LEDGER --slots N --seconds S [--stop PATH] [--stalls PATH]
  fs_writer.py check FILE LEDGER --slots N

write: FILE is N slots of 4 KiB. Record k goes to slot k mod N: the slot
holds k, a hash of (k, slot) and filler derived from k, written with pwrite
then fdatasync; once fdatasync returned, "k" is appended to LEDGER (flushed,
on another file system). Any error (EIO from a dead device, EROFS from a file
system that went read-only) ends the run with status 1 and says so. It stops
after S seconds or when PATH exists, printing the records written and the
longest time one write + fdatasync took (the stall); --stalls logs every
one of 0.25 s or more.

check: for every slot, the newest record LEDGER says was acknowledged there
must be in FILE, or a newer one (written, perhaps not acknowledged): an
acknowledged write that is missing, or a slot that holds no valid record, is
an error. Exits 0 when every acknowledged write is there.
"""
import argparse
import hashlib
import os
import struct
import sys
import time

BLOCK = 4096
HEAD = struct.Struct("<QQ32s")  # record number, slot, sha256 of the rest


def record(k: int, slot: int) -> bytes:
    filler = hashlib.sha256(b"%d" % k).digest() * ((BLOCK - HEAD.size) // 32 + 1)
    body = filler[: BLOCK - HEAD.size]
    digest = hashlib.sha256(struct.pack("<QQ", k, slot) + body).digest()
    return HEAD.pack(k, slot, digest) + body


def parse(block: bytes, slot: int):
    k, s, digest = HEAD.unpack_from(block)
    body = block[HEAD.size:]
    if s != slot or hashlib.sha256(struct.pack("<QQ", k, s) + body).digest() != digest:
        return None
    return k


def write(args) -> int:
    fd = os.open(args.file, os.O_RDWR | os.O_CREAT, 0o600)
    ledger = open(args.ledger, "a", buffering=1)
    stalls = open(args.stalls, "a", buffering=1) if args.stalls else None
    deadline = time.monotonic() + args.seconds
    k = 0
    worst = 0.0
    try:
        # Every slot holds a valid record first, acknowledged like the rest.
        while time.monotonic() < deadline and not (args.stop and os.path.exists(args.stop)):
            slot = k % args.slots
            t0 = time.monotonic()
            os.pwrite(fd, record(k, slot), slot * BLOCK)
            os.fdatasync(fd)
            took = time.monotonic() - t0
            worst = max(worst, took)
            if stalls and took >= 0.25:
                stalls.write(f"{k} {took:.3f}\n")
            ledger.write(f"{k}\n")
            k += 1
    except OSError as e:
        print(f"fs_writer: record {k}: {e} (after {k} acknowledged writes)", flush=True)
        return 1
    print(f"fs_writer: {k} records acknowledged; longest write+fdatasync {worst:.3f} s", flush=True)
    return 0


def check(args) -> int:
    newest = {}
    with open(args.ledger) as f:
        for line in f:
            line = line.strip()
            if line:
                k = int(line)
                newest[k % args.slots] = max(newest.get(k % args.slots, -1), k)
    bad = 0
    with open(args.file, "rb") as f:
        for slot in range(args.slots):
            f.seek(slot * BLOCK)
            block = f.read(BLOCK)
            want = newest.get(slot)
            if want is None:
                continue
            got = parse(block, slot) if len(block) == BLOCK else None
            if got is None or got < want:
                bad += 1
                if bad <= 10:
                    print(f"fs_writer check: slot {slot}: acknowledged record {want}, found "
                          f"{'no valid record' if got is None else 'record %d' % got}")
    print(f"fs_writer check: {len(newest)} slots with acknowledged writes, {bad} missing")
    return 1 if bad else 0


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["write", "check"])
    p.add_argument("file")
    p.add_argument("ledger")
    p.add_argument("--slots", type=int, default=2048)
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--stop")
    p.add_argument("--stalls", help="append 'RECORD SECONDS' for every write + fdatasync of 0.25 s or more")
    args = p.parse_args()
    return write(args) if args.mode == "write" else check(args)


if __name__ == "__main__":
    sys.exit(main())
