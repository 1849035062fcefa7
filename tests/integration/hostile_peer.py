#!/usr/bin/python3
"""A hostile (or merely wrong) hastnbd peer, for tests of the peer link.

Usage:
  hostile_peer.py primary HOST PORT SCENARIO [options]
      play a PRIMARY that connects to a real secondary at HOST:PORT
  hostile_peer.py secondary HOST PORT SCENARIO [options]
      play a SECONDARY listening on HOST:PORT for a real primary
  hostile_peer.py --list-scenarios

Options: --bind ADDR (source address of the connection), --resource NAME,
--node NAME (the name this fake peer claims), --peer-node NAME (the real
daemon's node name), --key-file PATH (the resource's psk_file: the fake
peer authenticates with it; without it, it has no key), --size BYTES,
--extent BYTES, --offset BYTES (where WRITE scenarios write),
--connections N, --deadline SECS and --variant NAME (secondary mode).

Exits 0 when the daemon behaved as expected, 1 with "FAIL: ..." otherwise,
2 for usage errors. Prints one JSON line describing what happened (e.g. the
text of an ERROR record the daemon sent), which the shell test may inspect.

Every byte follows docs/protocol.md and include/hastnbd/peer/protocol.h: a
48-byte big-endian header (magic "HNBD", version 1, type, flags, seq,
offset, length, payload_length, payload_checksum, header_checksum =
XXH3-64 of bytes 0..39), then the payload. Python's stdlib has no XXH3, so
it comes from the system libxxhash through ctypes. Stdlib only otherwise;
every socket operation has a timeout.

Every link opens with the authentication exchange (docs/protocol.md,
"Authentication"; include/hastnbd/peer/auth.h): AUTH_HELLO, AUTH_CHALLENGE,
AUTH_PROOF, MACs = HMAC-SHA256 over the transcript (hmac/hashlib).
"""

import ctypes
import ctypes.util
import hashlib
import hmac
import json
import os
import select
import socket
import struct
import sys
import time

# --- XXH3-64 from libxxhash ------------------------------------------------------


def _load_xxh3():
    for name in ("libxxhash.so.0", ctypes.util.find_library("xxhash")):
        if not name:
            continue
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        f = lib.XXH3_64bits
        f.restype = ctypes.c_uint64
        f.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
        return f
    sys.exit("FAIL: libxxhash (XXH3_64bits) not found; install libxxhash0")


_XXH3 = _load_xxh3()


def xxh3(data):
    data = bytes(data)
    return int(_XXH3(data, len(data)))


# --- protocol constants (docs/protocol.md) ----------------------------------------
MAGIC = 0x484E4244
VERSION = 1
HEADER_SIZE = 48
MAX_PAYLOAD = 64 << 20

MAX_AUTH_PAYLOAD = 512  # what the daemon reads per record before authentication

(HELLO, WRITE, TRIM, WRITE_ZEROES, FLUSH, RECEIVED, WRITTEN, ERROR, KEEPALIVE, READ, READ_REPLY,
 SYNC_DONE, AUTH_HELLO, AUTH_CHALLENGE, AUTH_PROOF) = range(1, 16)
TYPE_NAMES = {1: "HELLO", 2: "WRITE", 3: "TRIM", 4: "WRITE_ZEROES", 5: "FLUSH", 6: "RECEIVED",
              7: "WRITTEN", 8: "ERROR", 9: "KEEPALIVE", 10: "READ", 11: "READ_REPLY", 12: "SYNC_DONE",
              13: "AUTH_HELLO", 14: "AUTH_CHALLENGE", 15: "AUTH_PROOF"}

PROTOCOL_MIN = PROTOCOL_MAX = 2
MODE_NONE, MODE_PSK = 0, 1
SIDE_RESPONDER, SIDE_INITIATOR = 1, 2
AUTH_LABEL = b"hastnbd peer authentication v2"
NONCE = MAC = 32

F_LZ4 = 0x01
F_HOLE = 0x02
F_FUA = 0x04
F_WANT_RECEIVED = 0x08
F_CHECKSUMMED = 0x10
F_NO_HOLE = 0x20

ROLE_INIT, ROLE_SECONDARY, ROLE_PRIMARY = 0, 1, 2
META_FRESH = 0x1

IO_TIMEOUT = 10.0


class Fail(Exception):
    pass


def header(rtype, flags=0, seq=0, offset=0, length=0, payload_length=0, payload_checksum=0,
           magic=MAGIC, version=VERSION, bad_header_checksum=False):
    first = struct.pack(">IBBHQQIIQ", magic, version, rtype, flags, seq, offset, length,
                        payload_length, payload_checksum)
    assert len(first) == 40
    cs = xxh3(first)
    if bad_header_checksum:
        cs ^= 0x5A5A5A5A5A5A5A5A
    return first + struct.pack(">Q", cs)


def frame(rtype, payload=b"", flags=0, seq=0, offset=0, length=0, checksummed=True, **kw):
    """A whole record; the payload is checksummed (CHECKSUMMED) unless told not to."""
    pc = 0
    if checksummed and payload:
        flags |= F_CHECKSUMMED
        pc = xxh3(payload)
    return header(rtype, flags, seq, offset, length, len(payload), pc, **kw) + payload


def parse_header(b):
    magic, version, rtype, flags, seq, offset, length, plen, pcs, hcs = struct.unpack(">IBBHQQIIQQ", b)
    if magic != MAGIC:
        raise Fail(f"daemon sent bad magic {magic:#x}")
    if version != VERSION:
        raise Fail(f"daemon sent version {version}")
    if xxh3(b[:40]) != hcs:
        raise Fail("daemon sent a header with a bad header checksum")
    if plen > MAX_PAYLOAD:
        raise Fail(f"daemon announced payload_length {plen}")
    return {"type": rtype, "flags": flags, "seq": seq, "offset": offset, "length": length,
            "payload_length": plen, "payload_checksum": pcs}


def name_field(s):
    b = s.encode()
    return struct.pack(">H", len(b)) + b


def map_bytes(data_size, extent_size):
    extents = -(-data_size // extent_size)
    return -(-extents // 8)


def hello_payload(resource, node, role, data_size, extent_size, uuid=b"\x11" * 16,
                  localcnt=0, remotecnt=0, meta_flags=None, dirty=None, version=PROTOCOL_MAX):
    # A fresh secondary (the daemon full-syncs to it); a primary with data,
    # as a real one is (a fresh primary facing a secondary that adopted its
    # UUID would be refused by the sync decision).
    if meta_flags is None:
        meta_flags = META_FRESH if role == ROLE_SECONDARY else 0
    if dirty is None:
        dirty = bytes(map_bytes(data_size, extent_size))
    return (struct.pack(">I", version) + name_field(resource) + name_field(node) + bytes([role]) +
            struct.pack(">QQ", data_size, extent_size) + uuid +
            struct.pack(">QQI", localcnt, remotecnt, meta_flags) +
            struct.pack(">I", len(dirty)) + dirty)


def parse_hello(p):
    pos = 0

    def take(n, what):
        nonlocal pos
        if pos + n > len(p):
            raise Fail(f"daemon's HELLO truncated at {what}")
        v = p[pos:pos + n]
        pos += n
        return v

    h = {}
    h["protocol_version"] = struct.unpack(">I", take(4, "protocol_version"))[0]
    for f in ("resource", "node"):
        n = struct.unpack(">H", take(2, f))[0]
        h[f] = take(n, f).decode()
    h["role"] = take(1, "role")[0]
    h["data_size"], h["extent_size"] = struct.unpack(">QQ", take(16, "sizes"))
    h["uuid"] = take(16, "uuid").hex()
    h["localcnt"], h["remotecnt"], h["meta_flags"] = struct.unpack(">QQI", take(20, "counters"))
    m = struct.unpack(">I", take(4, "dirty_map length"))[0]
    take(m, "dirty_map")
    if pos != len(p):
        raise Fail(f"daemon's HELLO has {len(p) - pos} trailing bytes")
    if m != map_bytes(h["data_size"], h["extent_size"]):
        raise Fail(f"daemon's HELLO has a dirty map of {m} bytes for {h['data_size']}/{h['extent_size']}")
    return h


# --- authentication (docs/protocol.md, "Authentication") ---------------------------


def auth_hello_payload(resource, node, mode, nonce, vmin=PROTOCOL_MIN, vmax=PROTOCOL_MAX, features=0):
    return (struct.pack(">IIQ", vmin, vmax, features) + name_field(resource) + name_field(node) +
            bytes([mode]) + nonce)


def challenge_payload(version, features, node, mode, nonce, mac):
    return struct.pack(">IQ", version, features) + name_field(node) + bytes([mode]) + nonce + mac


def _names(p, pos, count):
    out = []
    for _ in range(count):
        n = struct.unpack(">H", p[pos:pos + 2])[0]
        out.append(p[pos + 2:pos + 2 + n].decode())
        pos += 2 + n
    return out, pos


def parse_auth_hello(p):
    vmin, vmax, features = struct.unpack(">IIQ", p[:16])
    (resource, node), pos = _names(p, 16, 2)
    mode = p[pos]
    nonce = p[pos + 1:pos + 1 + NONCE]
    if len(nonce) != NONCE or pos + 1 + NONCE != len(p):
        raise Fail(f"AUTH_HELLO of {len(p)} bytes does not parse")
    return {"version_min": vmin, "version_max": vmax, "features": features, "resource": resource,
            "node": node, "mode": mode, "nonce": nonce}


def parse_challenge(p):
    version, features = struct.unpack(">IQ", p[:12])
    (node,), pos = _names(p, 12, 1)
    mode = p[pos]
    nonce = p[pos + 1:pos + 1 + NONCE]
    mac = p[pos + 1 + NONCE:pos + 1 + NONCE + MAC]
    if len(mac) != MAC or pos + 1 + NONCE + MAC != len(p):
        raise Fail(f"AUTH_CHALLENGE of {len(p)} bytes does not parse")
    return {"version": version, "features": features, "node": node, "mode": mode, "nonce": nonce, "mac": mac}


def auth_mac(key, side, version, features, resource, initiator, responder, ni, nr):
    msg = (AUTH_LABEL + bytes([side]) + struct.pack(">IQ", version, features) + name_field(resource) +
           name_field(initiator) + name_field(responder) + ni + nr)
    return hmac.new(key, msg, hashlib.sha256).digest()


def read_key(path):
    if not path:
        return None
    with open(path, "rb") as f:
        return f.read().rstrip(b"\n")


def parse_error(p):
    if len(p) < 4:
        raise Fail(f"daemon's ERROR payload is {len(p)} bytes")
    return struct.unpack(">I", p[:4])[0], p[4:].decode(errors="replace")


class Link:
    def __init__(self, sock):
        self.s = sock
        self.s.settimeout(IO_TIMEOUT)

    @classmethod
    def connect(cls, host, port, bind=None):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(IO_TIMEOUT)
        if bind:
            s.bind((bind, 0))
        s.connect((host, port))
        return cls(s)

    def send(self, data):
        try:
            self.s.sendall(data)
        except (BrokenPipeError, ConnectionResetError) as e:
            raise Fail(f"send failed: {e}")

    def recv_exact(self, n):
        """n bytes, or None at a clean EOF before the first byte."""
        buf = b""
        while len(buf) < n:
            try:
                chunk = self.s.recv(n - len(buf))
            except ConnectionResetError:
                chunk = b""
            except socket.timeout:
                raise Fail(f"no data from the daemon for {IO_TIMEOUT:.0f} s")
            if not chunk:
                if buf:
                    raise Fail(f"daemon closed the connection mid-record ({len(buf)} of {n} bytes)")
                return None
            buf += chunk
        return buf

    def read_frame(self):
        """(header dict, payload) or None at EOF; checks the daemon's own checksums."""
        b = self.recv_exact(HEADER_SIZE)
        if b is None:
            return None
        h = parse_header(b)
        payload = b""
        if h["payload_length"]:
            payload = self.recv_exact(h["payload_length"])
            if payload is None:
                raise Fail("daemon closed the connection mid-record")
        if h["flags"] & F_CHECKSUMMED and xxh3(payload) != h["payload_checksum"]:
            raise Fail(f"daemon sent a {TYPE_NAMES.get(h['type'])} with a bad payload checksum")
        return h, payload

    def frames_until_eof(self, timeout=8.0):
        """Every frame the daemon sends until it closes; KEEPALIVEs dropped."""
        out = []
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Fail(f"daemon kept the connection open for {timeout:.0f} s")
            self.s.settimeout(left)
            try:
                f = self.read_frame()
            except Fail as e:
                if "no data" in str(e):
                    raise Fail(f"daemon kept the connection open for {timeout:.0f} s")
                raise
            if f is None:
                return out
            if f[0]["type"] != KEEPALIVE:
                out.append(f)

    def next_frame(self, what):
        """The next non-KEEPALIVE frame; fails at EOF."""
        while True:
            f = self.read_frame()
            if f is None:
                raise Fail(f"daemon closed the connection while {what}")
            if f[0]["type"] != KEEPALIVE:
                return f

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass


def describe(frames):
    return [TYPE_NAMES.get(h["type"], str(h["type"])) for h, _ in frames]


def expect_dropped_silently(link, what):
    """The daemon must close without answering HELLO (a malformed record)."""
    frames = link.frames_until_eof()
    if any(h["type"] == HELLO for h, _ in frames):
        raise Fail(f"{what}: the daemon answered HELLO instead of dropping the connection")
    return {"dropped": True, "frames": describe(frames)}


def timed_drop(link, what):
    """expect_dropped_silently, with the seconds the daemon took to drop."""
    t = time.monotonic()
    r = expect_dropped_silently(link, what)
    r["seconds"] = round(time.monotonic() - t, 3)
    return r


def expect_refused(link, what, must_contain):
    """The daemon must answer with an ERROR (seq 0) naming the problem, then close."""
    frames = link.frames_until_eof()
    kinds = describe(frames)
    if any(h["type"] == HELLO for h, _ in frames):
        raise Fail(f"{what}: the daemon accepted the handshake ({kinds})")
    errors = [parse_error(p) for h, p in frames if h["type"] == ERROR]
    if not errors:
        raise Fail(f"{what}: connection closed without an ERROR record ({kinds})")
    code, msg = errors[0]
    for s in must_contain:
        if s not in msg:
            raise Fail(f"{what}: ERROR message {msg!r} does not mention {s!r}")
    return {"dropped": True, "frames": kinds, "errno": code, "message": msg}


# --- fake primary ------------------------------------------------------------------


class Primary:
    def __init__(self, args):
        self.a = args

    def link(self):
        return Link.connect(self.a.host, self.a.port, self.a.bind)

    def auth_hello(self, nonce=None, key=True, **over):
        kw = dict(resource=self.a.resource, node=self.a.node,
                  mode=MODE_PSK if (key and self.a.key) else MODE_NONE, nonce=nonce or os.urandom(NONCE))
        kw.update(over)
        return frame(AUTH_HELLO, auth_hello_payload(**kw)), kw

    def challenge(self, link):
        h, p = link.next_frame("waiting for AUTH_CHALLENGE")
        if h["type"] == ERROR:
            raise Fail(f"AUTH_HELLO refused: {parse_error(p)}")
        if h["type"] != AUTH_CHALLENGE:
            raise Fail(f"expected AUTH_CHALLENGE, got {TYPE_NAMES.get(h['type'])}")
        return parse_challenge(p)

    def authenticate(self, link, key=None, **over):
        """The exchange as a real primary runs it (with `key`, another key:
        the node's MAC is not checked); returns what it saw and sent."""
        check = key is None
        key = self.a.key if key is None else key
        f, sent = self.auth_hello(**over)
        link.send(f)
        c = self.challenge(link)
        t = (c["version"], c["features"], self.a.resource, self.a.node, c["node"], sent["nonce"], c["nonce"])
        if check and key and c["mode"] == MODE_PSK and c["mac"] != auth_mac(key, SIDE_RESPONDER, *t):
            raise Fail("the daemon's AUTH_CHALLENGE MAC does not verify with the key")
        proof = frame(AUTH_PROOF, auth_mac(key, SIDE_INITIATOR, *t) if key else bytes(MAC))
        link.send(proof)
        return {"hello": f, "proof": proof, "challenge": c}

    def hello(self, **over):
        kw = dict(resource=self.a.resource, node=self.a.node, role=ROLE_PRIMARY,
                  data_size=self.a.size, extent_size=self.a.extent)
        kw.update(over)
        return frame(HELLO, hello_payload(**kw))

    def handshake(self, link):
        """Authentication, a valid HELLO; the daemon's HELLO back, checked field by field."""
        self.authenticate(link)
        link.send(self.hello())
        h, p = link.next_frame("waiting for its HELLO")
        if h["type"] == ERROR:
            raise Fail(f"valid HELLO refused: {parse_error(p)}")
        if h["type"] != HELLO:
            raise Fail(f"expected HELLO back, got {TYPE_NAMES.get(h['type'])}")
        if h["seq"] != 0 or h["offset"] or h["length"]:
            raise Fail(f"daemon's HELLO header {h}")
        hello = parse_hello(p)
        want = {"protocol_version": PROTOCOL_MAX, "resource": self.a.resource, "node": self.a.peer_node,
                "role": ROLE_SECONDARY, "data_size": self.a.size, "extent_size": self.a.extent}
        for k, v in want.items():
            if hello[k] != v:
                raise Fail(f"daemon's HELLO: {k} is {hello[k]!r}, want {v!r}")
        return hello

    def write_frame(self, seq, offset, data, corrupt_checksum=False, flags=0):
        pc = xxh3(data)
        if corrupt_checksum:
            pc ^= 1
        return header(WRITE, flags | F_CHECKSUMMED, seq, offset, len(data), len(data), pc) + data

    # Each scenario returns a dict for the JSON line, or raises Fail.
    def sc_bad_magic(self):
        link = self.link()
        link.send(frame(HELLO, hello_payload(self.a.resource, self.a.node, ROLE_PRIMARY, self.a.size,
                                             self.a.extent), magic=0xDEADBEEF))
        return expect_dropped_silently(link, "bad magic")

    def sc_bad_header_checksum(self):
        link = self.link()
        link.send(frame(HELLO, hello_payload(self.a.resource, self.a.node, ROLE_PRIMARY, self.a.size,
                                             self.a.extent), bad_header_checksum=True))
        return expect_dropped_silently(link, "bad header checksum")

    def sc_oversized_payload(self):
        # Only the header: a receiver that believed it would wait for 70 MB.
        link = self.link()
        link.send(header(AUTH_HELLO, F_CHECKSUMMED, 0, 0, 0, 70_000_000, 0x1234))
        return timed_drop(link, "payload_length 70000000")

    def sc_unknown_type(self):
        link = self.link()
        link.send(header(42))
        return expect_dropped_silently(link, "unknown type 42")

    def sc_unknown_flag(self):
        link = self.link()
        p = hello_payload(self.a.resource, self.a.node, ROLE_PRIMARY, self.a.size, self.a.extent)
        link.send(header(HELLO, 0x0100, 0, 0, 0, len(p)) + p)
        return expect_dropped_silently(link, "reserved flag 0x100")

    def sc_truncated_header(self):
        link = self.link()
        link.send(self.auth_hello()[0][:24])
        link.s.shutdown(socket.SHUT_WR)
        return expect_dropped_silently(link, "half a header")

    def sc_truncated_payload(self):
        link = self.link()
        f = self.auth_hello()[0]
        link.send(f[:HEADER_SIZE + (len(f) - HEADER_SIZE) // 2])
        link.s.shutdown(socket.SHUT_WR)
        return expect_dropped_silently(link, "half a HELLO payload")

    def sc_garbage_hello(self):
        # A HELLO whose payload is not a Hello (checksummed correctly).
        link = self.link()
        self.authenticate(link)
        link.send(frame(HELLO, b"\x00\x00\x00\x01\xff\xff" + b"x" * 10))
        return expect_refused(link, "garbage HELLO", ["resource"])

    def sc_write_before_hello(self):
        link = self.link()
        self.authenticate(link)
        link.send(self.write_frame(1, 0, b"\x01" * 4096))
        return expect_refused(link, "WRITE before HELLO", ["HELLO"])

    def sc_wrong_resource(self):
        link = self.link()
        self.authenticate(link)
        link.send(self.hello(resource="other"))
        return expect_refused(link, "wrong resource", ["resource", f"'{self.a.resource}'", "'other'"])

    def sc_wrong_size(self):
        link = self.link()
        self.authenticate(link)
        bad = self.a.size * 2
        link.send(self.hello(data_size=bad))
        return expect_refused(link, "wrong size", ["size", str(self.a.size), str(bad)])

    def sc_wrong_extent(self):
        link = self.link()
        self.authenticate(link)
        bad = self.a.extent // 2
        link.send(self.hello(extent_size=bad))
        return expect_refused(link, "wrong extent size", ["extent size", str(self.a.extent), str(bad)])

    def sc_wrong_node(self):
        link = self.link()
        self.authenticate(link)
        link.send(self.hello(node="c"))
        return expect_refused(link, "wrong node", ["'c'", f"'{self.a.node}'"])

    def sc_wrong_role(self):
        link = self.link()
        self.authenticate(link)
        link.send(self.hello(role=ROLE_SECONDARY))
        return expect_refused(link, "HELLO from a secondary", ["primary"])

    # --- before authentication: none of these may get past AUTH_* ---------------

    def sc_auth_no_key(self):
        """AUTH_HELLO without a key (mode none) against a node that has one."""
        link = self.link()
        link.send(self.auth_hello(key=False)[0])
        return expect_refused(link, "no key", ["does not authenticate"])

    def sc_auth_wrong_key(self):
        """A key of the right form, not the resource's: the proof fails."""
        link = self.link()
        self.authenticate(link, key=os.urandom(32).hex().encode())
        return expect_refused(link, "wrong key", ["authentication failed"])

    def sc_auth_replay(self):
        """A valid exchange captured byte by byte (this peer holds the key for
        it), then replayed on a new connection: the node's fresh nonce makes
        the old proof worthless."""
        first = self.link()
        captured = self.authenticate(first)
        first.close()
        link = self.link()
        link.send(captured["hello"])
        c = self.challenge(link)
        if c["nonce"] == captured["challenge"]["nonce"]:
            raise Fail("the daemon sent the same challenge nonce twice")
        link.send(captured["proof"])
        r = expect_refused(link, "replayed proof", ["authentication failed"])
        r["nonces_differ"] = True
        return r

    def sc_auth_reflect(self):
        """The node's own MAC from its AUTH_CHALLENGE sent back as the proof."""
        link = self.link()
        link.send(self.auth_hello(key=False, mode=MODE_PSK)[0])
        c = self.challenge(link)
        link.send(frame(AUTH_PROOF, c["mac"]))
        return expect_refused(link, "reflected MAC", ["authentication failed"])

    def sc_auth_skip(self):
        """A WRITE where AUTH_HELLO belongs (and a HELLO after it)."""
        link = self.link()
        link.send(self.write_frame(1, self.a.offset, b"\x01" * 256) + self.hello())
        return expect_refused(link, "WRITE before authentication", ["expected AUTH_HELLO, got WRITE"])

    def sc_auth_skip_proof(self):
        """AUTH_HELLO, then a HELLO and a WRITE instead of the proof."""
        link = self.link()
        link.send(self.auth_hello()[0])
        self.challenge(link)
        link.send(self.hello() + self.write_frame(1, self.a.offset, b"\x01" * 256))
        frames = link.frames_until_eof()
        if any(h["type"] in (HELLO, WRITTEN) for h, _ in frames):
            raise Fail(f"the daemon answered a peer that skipped AUTH_PROOF: {describe(frames)}")
        return {"dropped": True, "frames": describe(frames)}

    def sc_auth_oversized(self):
        """A WRITE header announcing 100000 bytes (a legal size for a data
        record): more than a link reads before authentication."""
        link = self.link()
        link.send(header(WRITE, F_CHECKSUMMED, 1, 0, 100_000, 100_000, 0x1234))
        return timed_drop(link, "payload_length 100000 before authentication")

    def sc_hello_first(self):
        """A protocol-version-1 peer: HELLO first, no authentication."""
        link = self.link()
        link.send(self.hello())
        return expect_refused(link, "a version-1 HELLO", ["protocol version 1"])

    def sc_version_overlap(self):
        """A newer peer announcing 1..5 shares version 2 with the node: the
        node picks 2 and the pair works (a full handshake and a WRITE)."""
        link = self.link()
        seen = self.authenticate(link, vmin=1, vmax=5)
        if seen["challenge"]["version"] != PROTOCOL_MAX:
            raise Fail(f"the node chose version {seen['challenge']['version']} from 1..5")
        link.send(self.hello())
        h, p = link.next_frame("waiting for its HELLO")
        if h["type"] != HELLO:
            raise Fail(f"after a 1..5 exchange: {TYPE_NAMES.get(h['type'])} {parse_error(p) if h['type'] == ERROR else ''}")
        link.close()
        return {"version": seen["challenge"]["version"]}

    def sc_version_too_new(self):
        """A peer that speaks only 3..4: refused, naming both ranges."""
        link = self.link()
        link.send(self.auth_hello(vmin=3, vmax=4)[0])
        return expect_refused(link, "versions 3..4", ["no common protocol version", "2..2", "3..4"])

    def sc_idle(self):
        """Connect and send nothing: the node must close within its
        handshake timeout (10 s), not hold the connection."""
        link = self.link()
        t = time.monotonic()
        frames = link.frames_until_eof(timeout=15)
        return {"dropped": True, "frames": describe(frames), "seconds": round(time.monotonic() - t, 3)}

    def sc_trickle(self):
        """A valid AUTH_HELLO sent one byte a second: never silent long
        enough for an idle timeout, so only an absolute handshake deadline
        (10 s) closes it. Stops by itself after 30 s."""
        link = self.link()
        f, _ = self.auth_hello()
        t = time.monotonic()
        sent = 0
        while sent < len(f) and time.monotonic() - t < 30:
            r, _, _ = select.select([link.s], [], [], 1.0)
            if r:  # a KEEPALIVE, or the node closed (EOF or RST)
                try:
                    if not link.s.recv(4096):
                        break
                except OSError:
                    break
                continue
            try:
                link.s.sendall(f[sent:sent + 1])
            except OSError:
                break
            sent += 1
        secs = round(time.monotonic() - t, 3)
        if sent >= len(f):
            raise Fail(f"the node read all {sent} trickled bytes over {secs} s without closing")
        return {"dropped": True, "bytes_sent": sent, "seconds": secs}

    def sc_idle_flood(self):
        """--connections idle connections at once: those over the node's
        limit of 4 authenticating at a time are closed at once, the rest
        within the handshake timeout; none is kept."""
        links = [self.link() for _ in range(self.a.connections)]
        t = time.monotonic()
        closed = {}
        deadline = t + 15
        while len(closed) < len(links) and time.monotonic() < deadline:
            open_ = [l for i, l in enumerate(links) if i not in closed]
            readable, _, _ = select.select([l.s for l in open_], [], [], 0.2)
            for i, l in enumerate(links):
                if i in closed or l.s not in readable:
                    continue
                try:
                    data = l.s.recv(4096)
                except (ConnectionResetError, OSError):
                    data = b""
                if not data:
                    closed[i] = round(time.monotonic() - t, 3)
        for l in links:
            l.close()
        if len(closed) < len(links):
            raise Fail(f"{len(links) - len(closed)} idle connection(s) still open after 15 s")
        times = sorted(closed.values())
        return {"closed_after": times, "at_once": sum(1 for x in times if x < 2),
                "held": sum(1 for x in times if x >= 2)}

    # --- after authentication --------------------------------------------------

    def sc_valid_write(self):
        """Positive control: handshake, WRITE (checksummed) + FLUSH, both WRITTEN."""
        link = self.link()
        hello = self.handshake(link)
        data = pattern(self.a.offset, 65536)
        link.send(self.write_frame(1, self.a.offset, data) + header(FLUSH, 0, 2))
        acks = {}
        while len(acks) < 2:
            h, p = link.next_frame("waiting for WRITTEN")
            if h["type"] == ERROR:
                raise Fail(f"record {h['seq']} failed: {parse_error(p)}")
            if h["type"] != WRITTEN:
                raise Fail(f"expected WRITTEN, got {TYPE_NAMES.get(h['type'])}")
            acks[h["seq"]] = True
        if sorted(acks) != [1, 2]:
            raise Fail(f"WRITTEN for seqs {sorted(acks)}, want [1, 2]")
        link.close()
        return {"written": True, "peer_hello": hello}

    def sc_bad_payload_checksum(self):
        link = self.link()
        self.handshake(link)
        link.send(self.write_frame(1, self.a.offset, pattern(self.a.offset, 65536), corrupt_checksum=True))
        frames = link.frames_until_eof()
        if any(h["type"] == WRITTEN for h, _ in frames):
            raise Fail("a WRITE with a bad payload checksum was acknowledged WRITTEN")
        return {"dropped": True, "frames": describe(frames)}

    def sc_oversized_after_hello(self):
        link = self.link()
        self.handshake(link)
        link.send(header(WRITE, F_CHECKSUMMED, 1, 0, 4096, 70_000_000, 0x1234))
        frames = link.frames_until_eof()
        if any(h["type"] == WRITTEN for h, _ in frames):
            raise Fail("an oversized WRITE was acknowledged")
        return {"dropped": True, "frames": describe(frames)}

    def sc_bad_lz4(self):
        link = self.link()
        self.handshake(link)
        junk = bytes((i * 37 + 11) & 0xFF for i in range(200))
        link.send(header(WRITE, F_LZ4 | F_CHECKSUMMED, 1, self.a.offset, 65536, len(junk), xxh3(junk)) + junk)
        frames = link.frames_until_eof()
        if any(h["type"] == WRITTEN for h, _ in frames):
            raise Fail("a corrupt LZ4 WRITE was acknowledged")
        return {"dropped": True, "frames": describe(frames)}

    def sc_write_beyond_end(self):
        """A WRITE past the device end is refused with ERROR; the link stays."""
        link = self.link()
        self.handshake(link)
        link.send(self.write_frame(1, self.a.size - 4096, b"\x07" * 8192))
        h, p = link.next_frame("waiting for the answer to a WRITE beyond the end")
        if h["type"] != ERROR or h["seq"] != 1:
            raise Fail(f"WRITE beyond the end answered with {TYPE_NAMES.get(h['type'])} seq {h['seq']}")
        code, msg = parse_error(p)
        link.send(header(FLUSH, 0, 2))
        h2, _ = link.next_frame("waiting for WRITTEN of a FLUSH after the refused WRITE")
        if h2["type"] != WRITTEN or h2["seq"] != 2:
            raise Fail(f"FLUSH after a refused WRITE answered with {TYPE_NAMES.get(h2['type'])}")
        link.close()
        return {"errno": code, "message": msg}

    def sc_not_configured_peer(self):
        """From an address that is not the secondary's `remote`: closed unheard."""
        link = self.link()
        try:
            link.send(self.auth_hello()[0])
        except Fail:
            return {"dropped": True, "frames": []}
        return expect_dropped_silently(link, "connection from a foreign address")

    def sc_handshake_only(self):
        link = self.link()
        hello = self.handshake(link)
        link.close()
        return {"peer_hello": hello}


def pattern(offset, length):
    """Deterministic bytes for a range, also computable by the shell test."""
    seed = b"hostile-peer-%d" % offset
    out = bytearray()
    i = 0
    while len(out) < length:
        out += xxh3(seed + struct.pack(">Q", i)).to_bytes(8, "big")
        i += 1
    return bytes(out[:length])


# --- fake secondary ------------------------------------------------------------------


def respond_auth(link, args, variant="good"):
    """The responder's side of the exchange, as a real secondary runs it
    (`good`), or wrongly: `no_key` (mode none), `wrong_key` (a MAC made with
    another key), `version_too_new` (chooses version 3). Returns the
    primary's AUTH_HELLO and whether a valid AUTH_PROOF followed."""
    h, p = link.next_frame("waiting for the primary's AUTH_HELLO")
    if h["type"] != AUTH_HELLO:
        raise Fail(f"primary opened with {TYPE_NAMES.get(h['type'])}, not AUTH_HELLO")
    theirs = parse_auth_hello(p)
    if theirs["resource"] != args.resource or theirs["node"] != args.peer_node:
        raise Fail(f"primary's AUTH_HELLO: {theirs}")
    key = args.key
    if variant == "wrong_key":
        key = os.urandom(32).hex().encode()
    version = 3 if variant == "version_too_new" else PROTOCOL_MAX
    mode = MODE_NONE if variant == "no_key" or not key else MODE_PSK
    nonce = os.urandom(NONCE)
    t = (version, 0, args.resource, theirs["node"], args.node, theirs["nonce"], nonce)
    mac = auth_mac(key, SIDE_RESPONDER, *t) if mode == MODE_PSK else bytes(MAC)
    link.send(frame(AUTH_CHALLENGE, challenge_payload(version, 0, args.node, mode, nonce, mac)))
    if variant != "good":
        return theirs, False
    h, p = link.next_frame("waiting for the primary's AUTH_PROOF")
    if h["type"] != AUTH_PROOF:
        raise Fail(f"expected AUTH_PROOF, got {TYPE_NAMES.get(h['type'])}")
    if mode == MODE_PSK and p != auth_mac(key, SIDE_INITIATOR, *t):
        raise Fail("the primary's AUTH_PROOF does not verify")
    return theirs, True


def listen(args):
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((args.host, args.port))
    srv.listen(8)
    ready = os.environ.get("HOSTILE_READY")
    if ready:
        open(ready, "w").close()
    return srv


def primaries(args, seen):
    """Links from the real primary's connection attempts, until SEEN (which
    the caller appends to) holds --connections of them; fails after
    --deadline seconds."""
    srv = listen(args)
    deadline = time.monotonic() + args.deadline
    try:
        while len(seen) < args.connections:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Fail(f"only {len(seen)} connection(s) from the primary in {args.deadline} s, "
                           f"want {args.connections} (does it retry?)")
            srv.settimeout(left)
            try:
                s, addr = srv.accept()
            except socket.timeout:
                continue
            yield Link(s), addr
    finally:
        srv.close()


def secondary_auth(args):
    """Refuse to authenticate properly (--variant no_key, wrong_key or
    version_too_new) to --connections attempts of the real primary: it must
    refuse each with a reason, send no AUTH_PROOF (a listener without the
    key learns nothing from it) and nothing after it, and retry."""
    seen = []
    for link, addr in primaries(args, seen):
        respond_auth(link, args, args.variant)
        frames = link.frames_until_eof()
        if any(h["type"] != ERROR for h, _ in frames):
            raise Fail(f"the primary sent {describe(frames)} to a listener that failed authentication")
        errors = [parse_error(p)[1] for h, p in frames if h["type"] == ERROR]
        seen.append({"from": addr[0], "frames": describe(frames), "error": errors[0] if errors else None})
        link.close()
    return {"connections": seen}


def secondary_wrong_size(args):
    """Answer every real primary's HELLO with a HELLO for twice its size."""
    seen = []
    for link, addr in primaries(args, seen):
        respond_auth(link, args)
        h, p = link.next_frame("waiting for the primary's HELLO")
        if h["type"] != HELLO or h["seq"] != 0:
            raise Fail(f"primary opened with {TYPE_NAMES.get(h['type'])} seq {h['seq']}")
        theirs = parse_hello(p)
        want = {"protocol_version": PROTOCOL_MAX, "resource": args.resource, "node": args.peer_node,
                "role": ROLE_PRIMARY}
        for k, v in want.items():
            if theirs[k] != v:
                raise Fail(f"primary's HELLO: {k} is {theirs[k]!r}, want {v!r}")
        bad = theirs["data_size"] * 2
        link.send(frame(HELLO, hello_payload(args.resource, args.node, ROLE_SECONDARY, bad,
                                             theirs["extent_size"])))
        frames = link.frames_until_eof()
        errors = [parse_error(p) for h, p in frames if h["type"] == ERROR]
        if any(h["type"] in (WRITE, TRIM, WRITE_ZEROES, FLUSH, READ) for h, _ in frames):
            raise Fail(f"the primary sent records after a mismatched HELLO: {describe(frames)}")
        seen.append({"from": addr[0], "time": round(time.monotonic(), 3), "frames": describe(frames),
                     "error": errors[0][1] if errors else None, "their_size": theirs["data_size"],
                     "our_size": bad})
        link.close()
    return {"connections": seen}


def secondary_no_acks(args):
    """Accept the real primary's handshake with a matching HELLO, then read
    its records and never acknowledge one, while sending KEEPALIVEs (a live
    secondary whose disk hangs). Runs until --deadline, or until the primary
    drops the link; reports what it received."""
    srv = listen(args)
    deadline = time.monotonic() + args.deadline
    srv.settimeout(args.deadline)
    s, addr = srv.accept()
    link = Link(s)
    respond_auth(link, args)
    h, p = link.next_frame("waiting for the primary's HELLO")
    theirs = parse_hello(p)
    link.send(frame(HELLO, hello_payload(args.resource, args.node, ROLE_SECONDARY, theirs["data_size"],
                                         theirs["extent_size"])))
    records = 0
    last_ka = time.monotonic()
    dropped_after = None
    start = time.monotonic()
    while time.monotonic() < deadline:
        if time.monotonic() - last_ka >= 0.5:
            link.send(header(KEEPALIVE))
            last_ka = time.monotonic()
        readable, _, _ = select.select([link.s], [], [], 0.2)
        if not readable:
            continue
        link.s.settimeout(IO_TIMEOUT)
        f = link.read_frame()
        if f is None:
            dropped_after = round(time.monotonic() - start, 3)
            break
        if f[0]["type"] in (WRITE, TRIM, WRITE_ZEROES, FLUSH):
            records += 1
    link.close()
    srv.close()
    return {"records": records, "dropped_after": dropped_after}


def secondary_bad_read_reply(args):
    """Accept the real primary's handshake and acknowledge its writes
    properly, but answer every READ wrongly (--variant): `correct` (the
    control: a proper READ_REPLY of 0xc3 bytes), `written` (a WRITTEN
    instead of a READ_REPLY: no data at all), `short` (a READ_REPLY of half
    the length asked for), `other_range` (a READ_REPLY for another offset).
    Reports the READs it saw and whether the primary dropped the link."""
    srv = listen(args)
    deadline = time.monotonic() + args.deadline
    srv.settimeout(args.deadline)
    s, addr = srv.accept()
    link = Link(s)
    respond_auth(link, args)
    h, p = link.next_frame("waiting for the primary's HELLO")
    theirs = parse_hello(p)
    link.send(frame(HELLO, hello_payload(args.resource, args.node, ROLE_SECONDARY, theirs["data_size"],
                                         theirs["extent_size"])))
    reads = []
    dropped = False
    last_ka = time.monotonic()
    while time.monotonic() < deadline:
        if time.monotonic() - last_ka >= 0.5:
            link.send(header(KEEPALIVE))
            last_ka = time.monotonic()
        readable, _, _ = select.select([link.s], [], [], 0.2)
        if not readable:
            continue
        link.s.settimeout(IO_TIMEOUT)
        try:
            f = link.read_frame()
        except Fail:
            f = None
        if f is None:
            dropped = True
            break
        h, p = f
        if h["flags"] & F_WANT_RECEIVED:
            link.send(header(RECEIVED, 0, h["seq"]))
        # Writes and the end of the daemon's full sync to this fresh fake
        # are acknowledged, so the sync completes and reads may go remote.
        if h["type"] in (WRITE, TRIM, WRITE_ZEROES, FLUSH, SYNC_DONE):
            link.send(header(WRITTEN, 0, h["seq"]))
        elif h["type"] == READ:
            reads.append({"seq": h["seq"], "offset": h["offset"], "length": h["length"]})
            if args.variant == "correct":
                link.send(frame(READ_REPLY, b"\xc3" * h["length"], seq=h["seq"], offset=h["offset"],
                                length=h["length"]))
            elif args.variant == "written":
                link.send(header(WRITTEN, 0, h["seq"]))
            elif args.variant == "short":
                n = max(h["length"] // 2, 1)
                link.send(frame(READ_REPLY, b"\xee" * n, seq=h["seq"], offset=h["offset"], length=n))
            elif args.variant == "other_range":
                link.send(frame(READ_REPLY, b"\xee" * h["length"], seq=h["seq"],
                                offset=h["offset"] + h["length"], length=h["length"]))
            else:
                raise Fail(f"unknown --variant {args.variant}")
    link.close()
    srv.close()
    return {"reads": reads, "dropped": dropped}


# --- main ----------------------------------------------------------------------------


def parse_args(argv):
    import argparse
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("mode", choices=["primary", "secondary"])
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("scenario")
    ap.add_argument("--bind")
    ap.add_argument("--resource", default="data")
    ap.add_argument("--node")
    ap.add_argument("--peer-node")
    ap.add_argument("--size", type=int, default=256 << 20)
    ap.add_argument("--extent", type=int, default=2 << 20)
    ap.add_argument("--offset", type=int, default=0)
    ap.add_argument("--connections", type=int, default=3)
    ap.add_argument("--deadline", type=float, default=20.0)
    ap.add_argument("--variant", default="written")
    ap.add_argument("--key-file")
    a = ap.parse_args(argv)
    a.key = read_key(a.key_file)
    if a.mode == "primary":
        a.node = a.node or "a"
        a.peer_node = a.peer_node or "b"
    else:
        a.node = a.node or "b"
        a.peer_node = a.peer_node or "a"
    return a


def scenarios():
    return sorted(n[3:] for n in dir(Primary) if n.startswith("sc_"))


def main(argv):
    if argv == ["--list-scenarios"]:
        print("\n".join(["primary: " + s for s in scenarios()] +
                        ["secondary: " + s for s in ("wrong_size", "no_acks", "bad_read_reply", "auth")]))
        return 0
    if len(argv) >= 2 and argv[0] == "--pattern":
        # --pattern OFFSET LENGTH: the bytes WRITE scenarios write there.
        sys.stdout.buffer.write(pattern(int(argv[1]), int(argv[2])))
        return 0
    a = parse_args(argv)
    try:
        if a.mode == "primary":
            fn = getattr(Primary(a), "sc_" + a.scenario, None)
            if fn is None:
                print(f"unknown scenario {a.scenario}", file=sys.stderr)
                return 2
            result = fn()
        else:
            fn = {"wrong_size": secondary_wrong_size, "no_acks": secondary_no_acks,
                  "bad_read_reply": secondary_bad_read_reply, "auth": secondary_auth}.get(a.scenario)
            if fn is None:
                print(f"unknown scenario {a.scenario}", file=sys.stderr)
                return 2
            result = fn(a)
    except Fail as e:
        print(f"FAIL: {a.mode} {a.scenario}: {e}", file=sys.stderr)
        return 1
    except (ConnectionRefusedError, socket.timeout, OSError) as e:
        print(f"FAIL: {a.mode} {a.scenario}: {e}", file=sys.stderr)
        return 1
    result["scenario"] = a.scenario
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
