#!/usr/bin/env bash
# Prometheus metrics over HTTP (`metrics: {listen: ADDR}`), from the real
# daemon: after writes, reads and a flush through qemu-io, GET /metrics shows
# them per operation (requests, bytes, a latency histogram whose count is the
# request count), the role and the peer state; the text is well-formed
# exposition format. Wrong path, wrong method and garbage get 404, 405 and
# 400, an oversized or silent client is dropped, and the daemon keeps serving.
source "$(dirname "$0")/lib.sh"
require_root
require_cmd qemu-io

read -r mport <<<"$(free_ports 1)"
conf="$T/hastnbd.yaml"
write_config "$conf" "metrics: {listen: \"127.0.0.1:$mport\"}"
create_resource "$conf" a data >/dev/null
start_daemon "$conf" a data
pid=$DAEMON_PID
make_primary "$conf" a data
sock="$(nbd_socket "$conf" a data)"

with_timeout 60 qemu-io -f raw -c "write -P 0x5a 0 1M" -c "write -P 0x5b 4M 64k" -c "read -P 0x5a 0 1M" -c flush \
  "$(nbd_uri "$sock" data)" >"$T/io.out" 2>&1 || { cat "$T/io.out" >&2; die "qemu-io failed"; }

cat >"$T/scrape.py" <<'EOF'
import re, socket, sys
port = int(sys.argv[1])
mode = sys.argv[2]

def raw(req):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    data = b""
    try:
        s.sendall(req)
        while True:
            b = s.recv(65536)
            if not b:
                break
            data += b
    except (ConnectionResetError, BrokenPipeError):
        pass  # dropped by the server (what an oversized head gets)
    s.close()
    return data.decode()

def status_of(resp):
    return int(resp.split(" ", 2)[1])

if mode == "errors":
    assert status_of(raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")) == 404
    assert status_of(raw(b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")) == 405
    assert status_of(raw(b"garbage\r\n\r\n")) == 400
    # An oversized head is dropped without an answer.
    assert raw(b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n") == ""
    print("errors ok")
    sys.exit(0)

resp = raw(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
head, _, body = resp.partition("\r\n\r\n")
assert head.startswith("HTTP/1.1 200"), head
assert "Content-Type: text/plain; version=0.0.4" in head, head
length = int(re.search(r"Content-Length: (\d+)", head).group(1))
assert length == len(body.encode()), (length, len(body))
values, typed = {}, set()
for line in body.splitlines():
    if line.startswith("# TYPE "):
        name = line.split()[2]
        assert name not in typed, "family twice: " + name
        typed.add(name)
        continue
    if line.startswith("# HELP "):
        continue
    m = re.fullmatch(r'([a-z_]+)\{([^}]*)\} (\S+)', line)
    assert m, "bad line: " + line
    name, labels, v = m.groups()
    base = re.sub(r"_(bucket|sum|count)$", "", name) if name not in typed else name
    assert base in typed, "sample before its TYPE: " + line
    values[(name, labels)] = float(v)

def get(name, extra=""):
    labels = 'resource="data",node="a"' + ("," + extra if extra else "")
    return values[(name, labels)]

assert get("hastnbd_role", 'role="primary"') == 1
assert get("hastnbd_peer_state", 'state="standalone"') == 1
writes = get("hastnbd_nbd_requests_total", 'op="write"')
assert writes >= 2, writes
assert get("hastnbd_nbd_bytes_total", 'op="write"') >= 1048576 + 65536
assert get("hastnbd_nbd_bytes_total", 'op="read"') >= 1048576
assert get("hastnbd_nbd_requests_total", 'op="flush"') >= 1
assert get("hastnbd_nbd_request_duration_seconds_count", 'op="write"') == writes
assert get("hastnbd_nbd_request_duration_seconds_bucket", 'op="write",le="+Inf"') == writes
assert get("hastnbd_nbd_request_duration_seconds_sum", 'op="write"') > 0
assert get("hastnbd_dirty_extents") >= 0
print("scrape ok: %d samples, %d writes" % (len(values), writes))
EOF
"$HASTNBD_PYTHON" "$T/scrape.py" "$mport" scrape || die "the metrics scrape failed"
"$HASTNBD_PYTHON" "$T/scrape.py" "$mport" errors || die "bad HTTP requests were not answered as expected"
# A client that connects and says nothing is dropped after 5 s; meanwhile
# others are served.
exec 7<>"/dev/tcp/127.0.0.1/$mport"
"$HASTNBD_PYTHON" "$T/scrape.py" "$mport" scrape >/dev/null || die "a silent client blocked the metrics"
exec 7>&-
hastnbd_ctl "$conf" a status data >/dev/null || die "the daemon stopped answering status"
hastnbd_ctl "$conf" a role init data >/dev/null || die "role init failed"
stop_daemon "$pid"
log "t_metrics: per-operation counts and latency histograms, role and peer state, bad requests refused"
