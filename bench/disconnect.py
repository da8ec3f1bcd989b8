"""Benchmark: how long the gateway keeps calling upstream after its client left.

A client that goes away (Ctrl-C in Claude Code, a closed tab, an agent that timed out) should
stop the upstream call at once: it costs the user's plan for tokens nobody reads.  This starts a
real ``gunicorn wsgi:app`` in front of a minimal upstream of its own that answers
``POST /alpha/generate`` with the NDJSON start of an answer and then either a token every 20 ms
(``talking``) or nothing at all (``silent``), and watches its end of the connection with
``select``: the moment the gateway closes it is seen to the millisecond, whatever the upstream
is doing (the tests' fake notices a client only at its next write).

For each case (streamed or not × talking or silent) it sends ``--trials`` requests on raw
sockets, waits until upstream is answering plus a random moment, closes the client socket, and prints
the median and worst time from that close to the upstream connection's close.

    python bench/disconnect.py                    # 10 trials per case
    python bench/disconnect.py --trials 30 --json

A benchmark, not a test: pytest does not collect it; all traffic stays on loopback and every
loop is bounded.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import random
import select
import socket
import statistics
import sys
import tempfile
import threading
import time

import yaml

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
from tests.conftest import LOCAL_KEY, Gunicorn, free_port, gateway_config  # noqa: E402

MODEL = "deepseek/deepseek-v4-flash"
TICK = 0.02


class Upstream:
    """``/alpha/generate`` that starts an answer and then talks or stays silent until the
    gateway hangs up; ``closed`` gets the ``time.monotonic()`` of each hang-up."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.mode = "talking"
        self.started = threading.Event()
        self.closed: list[float] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            conn, _ = self.sock.accept()
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket):
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                data = conn.recv(65536)
                if not data:
                    return
                head += data
            length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            body = head.split(b"\r\n\r\n", 1)[1]
            while len(body) < length:
                body += conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\n")
            self._chunk(conn, b'{"type":"start"}\n{"type":"text-start","id":"0"}\n')
            self.started.set()
            i = 0
            while True:
                readable, _, _ = select.select([conn], [], [], TICK)
                if readable:
                    try:
                        gone = not conn.recv(65536)
                    except OSError:
                        gone = True
                    if gone:
                        self.closed.append(time.monotonic())
                        return
                elif self.mode == "talking":
                    try:
                        self._chunk(conn, b'{"type":"text-delta","id":"0","text":"t%d "}\n' % i)
                    except OSError:
                        self.closed.append(time.monotonic())
                        return
                    i += 1

    @staticmethod
    def _chunk(conn, data: bytes):
        conn.sendall(b"%x\r\n%s\r\n" % (len(data), data))


def trial(gateway_port: int, upstream: Upstream, stream: bool) -> float:
    """Seconds from the client's close to the upstream connection's close."""
    body = json.dumps({"model": MODEL, "stream": stream,
                       "messages": [{"role": "user", "content": "hi"}]}).encode()
    upstream.started.clear()
    before = len(upstream.closed)
    sock = socket.create_connection(("127.0.0.1", gateway_port), timeout=10)
    sock.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                 f"{LOCAL_KEY}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}"
                 f"\r\n\r\n".encode() + body)
    if not upstream.started.wait(10):
        raise RuntimeError("upstream was never called")
    time.sleep(random.uniform(0.3, 1.5))    # upstream is answering (or silent) now; a random
    # moment, so the gateway's periodic checks are met at every phase
    sock.close()
    left = time.monotonic()
    deadline = left + 30
    while len(upstream.closed) == before and time.monotonic() < deadline:
        time.sleep(0.001)
    if len(upstream.closed) == before:
        raise RuntimeError("the gateway kept the upstream call for 30 s after the client left")
    return upstream.closed[before] - left


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--json", action="store_true", help="print only the JSON line")
    args = ap.parse_args(argv)
    upstream = Upstream()
    folder = pathlib.Path(tempfile.mkdtemp(prefix="bench-disconnect-"))
    config = folder / "config.yaml"
    config.write_text(yaml.safe_dump(gateway_config(upstream.url, folder)))
    server = Gunicorn(str(config), free_port()).wait_ready()
    results = {}
    try:
        for stream in (True, False):
            for mode in ("talking", "silent"):
                upstream.mode = mode
                times = [trial(server.port, upstream, stream) for _ in range(args.trials)]
                results[f"{'streamed' if stream else 'whole'}_{mode}"] = {
                    "n": len(times), "median_ms": round(statistics.median(times) * 1000, 1),
                    "max_ms": round(max(times) * 1000, 1)}
    finally:
        server.stop()
    line = json.dumps({"bench": "disconnect", "route": "cli", **results})
    if not args.json:
        for name, r in results.items():
            print(f"{name:18} client close -> upstream close: median {r['median_ms']} ms, "
                  f"worst {r['max_ms']} ms ({r['n']} trials)")
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
