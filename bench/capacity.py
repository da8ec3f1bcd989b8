"""Benchmark: how many open streams the gateway holds, and what a fresh request waits meanwhile.

It starts the fake upstream (``tests/fake_upstream.py`` in its own process) and ``gunicorn
wsgi:app`` with the defaults (``WEB_CONCURRENCY`` workers, ``stream_slots`` per worker), then,
for each level (default 0, 64, 128, 256), opens that many streams that stay open (scenario
``silence``: nothing from upstream for two minutes, keep-alives to the client) on raw sockets and, while they are open, times the first
text chunk of ``--requests`` fresh streamed requests on one keep-alive session.  It prints, per
level: the streams held (200s, and 503s, which must be 0 up to the workers' total slots), the
fresh requests' first-chunk median / p90, and the workers' RSS growth per open stream.

    python bench/capacity.py                      # levels 0 64 128 256, 50 fresh requests each
    python bench/capacity.py --levels 0 256 300   # past the limit: the extra ones get 503

A benchmark, not a test: pytest does not collect it; all traffic stays on loopback and every
loop is bounded.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import pathlib
import socket
import statistics
import sys
import tempfile
import time

import requests
import yaml

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
from bench.first_chunk import FakeProcess, worker_rss  # noqa: E402
from tests.conftest import LOCAL_KEY, Gunicorn, free_port, gateway_config  # noqa: E402

MODEL = "deepseek/deepseek-v4-flash"
HOLD = json.dumps({"model": MODEL, "stream": True,
                   "messages": [{"role": "user", "content": "[[silence:120]]"}]}).encode()
FRESH = {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "[[fast]] hi"}]}


def hold(port: int) -> tuple[socket.socket, bytes]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                 f"{LOCAL_KEY}\r\nContent-Type: application/json\r\nContent-Length: {len(HOLD)}"
                 f"\r\n\r\n".encode() + HOLD)
    return sock, sock.recv(16)


def fresh(session: requests.Session, url: str) -> float:
    started = time.perf_counter()
    with session.post(url + "/v1/chat/completions", json=FRESH, stream=True, timeout=30,
                      headers={"Authorization": f"Bearer {LOCAL_KEY}"}) as r:
        body = b""
        for line in r.iter_lines():
            if b'"content"' in line:
                return (time.perf_counter() - started) * 1000
            body += line + b"\n"
    raise RuntimeError(f"no text in the fresh stream ({r.status_code}): {body[:300]!r}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--levels", type=int, nargs="+", default=[0, 64, 128, 256])
    ap.add_argument("--requests", type=int, default=50)
    args = ap.parse_args(argv)
    folder = pathlib.Path(tempfile.mkdtemp(prefix="bench-capacity-"))
    fake = FakeProcess(folder)
    fake.wait_ready()
    (folder / "config.yaml").write_text(yaml.safe_dump(gateway_config(fake.url, folder)))
    server = Gunicorn(str(folder / "config.yaml"), free_port(),
                      workers=int(os.environ.get("WEB_CONCURRENCY", "2"))).wait_ready()
    results = []
    try:
        time.sleep(2)
        session = requests.Session()
        session.trust_env = False
        for _ in range(10):
            fresh(session, server.url)
        for level in args.levels:
            before = sum(worker_rss(server.proc.pid).values())
            with concurrent.futures.ThreadPoolExecutor(32) as pool:
                held = list(pool.map(lambda _: hold(server.port), range(level)))
            ok = sum(h.startswith(b"HTTP/1.1 200") for _, h in held)
            time.sleep(1)
            after = sum(worker_rss(server.proc.pid).values())
            times = sorted(fresh(session, server.url) for _ in range(args.requests))
            row = {"open": level, "held": ok, "refused_503": sum(h.startswith(b"HTTP/1.1 503")
                                                                 for _, h in held),
                   "fresh_first_chunk_ms": {"median": round(statistics.median(times), 3),
                                            "p90": round(times[int(len(times) * 0.9) - 1], 3)},
                   "rss_kib_per_stream": round((after - before) * 1024 / level, 1) if level else None}
            results.append(row)
            print(json.dumps(row), flush=True)
            for sock, _ in held:
                sock.close()
            time.sleep(1.5)
    finally:
        server.stop()
        fake.stop()
    print(json.dumps({"bench": "capacity", "levels": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
