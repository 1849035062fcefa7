#!/usr/bin/env python3
"""A rogue primary against a hastnbd node that runs the peer link over TLS.

    tls_client.py HOST PORT --key-file PSK [--cert C --tls-key K] [--plain]

It connects, runs TLS 1.3 with the given client certificate (or none; the
node's own certificate is not checked: an attacker does not care), then,
holding the resource's real psk, the whole AUTH exchange and a WRITE, as a
real primary would. A node that checks certificates properly never lets it
get that far. With --plain it speaks the plain protocol (AUTH_HELLO in
clear) to the TLS node. Prints one JSON object: how far it got, what the
node sent, and the TLS error if any. Exit 0 when the node refused before
any record of ours was accepted; 1 when something got through.
"""
import argparse
import json
import os
import socket
import ssl
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hostile_peer as hp  # noqa: E402


def main(argv):
    ap = argparse.ArgumentParser()
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("--key-file", required=True)
    ap.add_argument("--cert")
    ap.add_argument("--tls-key")
    ap.add_argument("--plain", action="store_true")
    ap.add_argument("--resource", default="data")
    ap.add_argument("--node", default="a")
    a = ap.parse_args(argv)
    key = open(a.key_file, "rb").read().strip()
    out = {"tls": None, "frames": [], "error": None, "got_through": False}
    raw = socket.create_connection((a.host, a.port), timeout=hp.IO_TIMEOUT)
    s = raw
    try:
        if not a.plain:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_3
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            if a.cert:
                ctx.load_cert_chain(a.cert, a.tls_key)
            s = ctx.wrap_socket(raw, server_hostname="b")
            out["tls"] = s.version()
        link = hp.Link(s)
        nonce = os.urandom(hp.NONCE)
        link.send(hp.frame(hp.AUTH_HELLO, hp.auth_hello_payload(a.resource, a.node, hp.MODE_PSK, nonce)))
        frames = []
        while True:
            f = link.read_frame()
            if f is None:
                break
            h, p = f
            frames.append(hp.TYPE_NAMES.get(h["type"], str(h["type"])))
            if h["type"] == hp.ERROR:
                out["error"] = hp.parse_error(p)[1]
                break
            if h["type"] == hp.AUTH_CHALLENGE:
                c = hp.parse_challenge(p)
                t = (c["version"], c["features"], a.resource, a.node, c["node"], nonce, c["nonce"])
                link.send(hp.frame(hp.AUTH_PROOF, hp.auth_mac(key, hp.SIDE_INITIATOR, *t)))
                out["got_through"] = True  # the node talked AUTH with a peer it should have refused
                break
        out["frames"] = frames
    except (ssl.SSLError, OSError, hp.Fail) as e:
        out["error"] = out["error"] or f"{type(e).__name__}: {e}"
    finally:
        s.close()
    print(json.dumps(out))
    return 1 if out["got_through"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
