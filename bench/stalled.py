"""Benchmark: how many stalled connections the gateway survives.

A stalled client sends part of a request (nothing, half a request line, half the headers, or
the headers and half a body, in turn) and stops.  For each level this opens that many on raw
sockets to a real ``gunicorn wsgi:app`` (the defaults: ``WEB_CONCURRENCY`` workers) in front of
the fake upstream, then, while they are all open, times ``/health`` and a streamed model call's
first chunk, and finally waits for the gateway to drop them (gateway/arrival.py).  It prints per
level: connections opened, the health and model-call medians and worst times, how many calls
failed, and how long the drop took.

    python bench/stalled.py                          # levels 500 1000 1500
    python bench/stalled.py --levels 100 2000 --json

A benchmark, not a test: pytest does not collect it; all traffic stays on loopback and every
loop is bounded.  It raises this process's open-files limit as far as the hard limit allows.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import resource
import socket
import statistics
import sys
import tempfile
import time

import requests
import yaml

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
from bench.capacity import fresh  # noqa: E402
from bench.first_chunk import FakeProcess  # noqa: E402
from tests.conftest import LOCAL_KEY, Gunicorn, free_port, gateway_config  # noqa: E402

POST = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + LOCAL_KEY.encode() + b"\r\n")
STALLS = [b"", b"POST /v1/chat/completions HTT", POST + b"Content-Type: application/js",
          POST + b"Content-Length: 100\r\n\r\n{\"model\": "]


def level(server: Gunicorn, n: int, probes: int) -> dict:
    socks, failed = [], 0
    for i in range(n):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        sock.sendall(STALLS[i % len(STALLS)])
        socks.append(sock)
    opened = time.monotonic()
    time.sleep(0.5)
    health, calls = [], []
    session = requests.Session()
    for _ in range(probes):
        started = time.perf_counter()
        try:
            session.get(server.url + "/health", timeout=10).raise_for_status()
            health.append((time.perf_counter() - started) * 1000)
            calls.append(fresh(session, server.url))
        except (requests.RequestException, RuntimeError):
            failed += 1
    for sock in socks:          # every one is dropped by the gateway: read to its end
        sock.settimeout(30)
        try:
            while sock.recv(65536):
                pass
        except OSError:
            pass
    dropped_after = time.monotonic() - opened
    for sock in socks:
        sock.close()
    summary = lambda xs: {"median": round(statistics.median(xs), 2),      # noqa: E731
                          "max": round(max(xs), 2)} if xs else None
    return {"stalled": n, "health_ms": summary(health), "model_call_first_chunk_ms": summary(calls),
            "failed": failed, "all_dropped_after_s": round(dropped_after, 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--levels", type=int, nargs="+", default=[500, 1000, 1500])
    ap.add_argument("--probes", type=int, default=20, help="health checks and model calls per level")
    ap.add_argument("--json", action="store_true", help="print only the JSON line")
    args = ap.parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(args.levels) + 256
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    folder = pathlib.Path(tempfile.mkdtemp(prefix="bench-stalled-"))
    fake = FakeProcess(folder).wait_ready()
    config = folder / "config.yaml"
    config.write_text(yaml.safe_dump(gateway_config(fake.url, folder)))
    server = Gunicorn(str(config), free_port()).wait_ready()
    results = []
    try:
        for n in args.levels:
            results.append(level(server, n, args.probes))
            if not args.json:
                print(json.dumps(results[-1]))
    finally:
        server.stop()
        fake.stop()
    print(json.dumps({"bench": "stalled", "levels": results}))
    return 1 if any(r["failed"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
