"""Benchmark: the first streamed event through nginx (deploy/nginx/command-code-gateway.conf, TLS)
against the same request straight to gunicorn.

It starts the fake Command Code upstream (``tests/fake_upstream.py``, in a thread), a real
``gunicorn wsgi:app`` (the ``Gunicorn`` helper of ``tests/conftest.py``, ``--workers`` gthread
workers) and Debian's nginx with the shipped site file (``tests/nginx_server.py``: only ports,
paths and a self-signed certificate substituted).  After a warm-up it alternates, request after
request, between

* **direct**: ``POST /v1/chat/completions`` (``"stream": true``, scenario ``fast``) on gunicorn,
  plain HTTP/1.1 keep-alive, as a client on the same host would;
* **nginx**: the same request on nginx over HTTPS, HTTP/2 (``--http1`` for HTTP/1.1), one
  kept-alive TLS connection as an SDK keeps.

The *first event* time runs from just before the request is sent until the first SSE ``data:``
line holding ``"content"`` has been read; *total* to the end of the stream.  Both clients are
``httpx`` (the openai and anthropic SDKs' library).  Printed: median, p90 and mean per side in
milliseconds and the difference of the medians (nginx - direct); the last line is the same as
JSON.

    .venv/bin/python bench/nginx_first_event.py                  # 200 requests per side
    .venv/bin/python bench/nginx_first_event.py --requests 500 --http1

Needs nginx (``apt-get install -y nginx``); nothing leaves loopback.  Not collected by pytest.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import httpx  # noqa: E402
import yaml  # noqa: E402

from tests.conftest import LOCAL_KEY, Gunicorn, free_port, gateway_config  # noqa: E402
from tests.fake_upstream import FakeUpstream  # noqa: E402
from tests.nginx_server import Nginx, nginx_binary  # noqa: E402

BODY = {"model": "deepseek/deepseek-v4-flash", "stream": True,
        "messages": [{"role": "user", "content": "[[fast]]"}]}


def one(client: httpx.Client, url: str) -> tuple[float, float]:
    start = time.perf_counter()
    first = None
    with client.stream("POST", url + "/v1/chat/completions", json=BODY,
                       headers={"Authorization": f"Bearer {LOCAL_KEY}"}) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if first is None and line.startswith("data: ") and '"content"' in line:
                first = time.perf_counter() - start
    if first is None:
        raise RuntimeError("no content event")
    return first, time.perf_counter() - start


def summary(values: list[float]) -> dict:
    ms = sorted(v * 1000 for v in values)
    return {"median": round(statistics.median(ms), 2),
            "p90": round(ms[int(0.9 * (len(ms) - 1))], 2), "mean": round(statistics.fmean(ms), 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=200, help="measured requests per side")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--http1", action="store_true", help="HTTP/1.1 to nginx instead of HTTP/2")
    ap.add_argument("--json", action="store_true", help="print only the JSON line")
    args = ap.parse_args()
    if nginx_binary() is None:
        print("nginx is not installed (apt-get install -y nginx)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp, FakeUpstream() as fake:
        folder = os.path.join(tmp, "gateway")
        os.makedirs(folder)
        path = os.path.join(folder, "config.yaml")
        with open(path, "w") as f:
            yaml.safe_dump(gateway_config(fake.url, pathlib.Path(folder)), f)
        gunicorn = Gunicorn(path, free_port(), workers=args.workers).wait_ready()
        proxy = None
        try:
            proxy = Nginx(os.path.join(tmp, "nginx"), gunicorn.port).wait_ready()
            with httpx.Client(timeout=30) as direct, \
                    httpx.Client(verify=proxy.ssl_context(), http2=not args.http1,
                                 timeout=30) as via:
                sides = {"direct": (direct, gunicorn.url), "nginx": (via, proxy.url)}
                for _ in range(args.warmup):
                    for client, url in sides.values():
                        one(client, url)
                first = {name: [] for name in sides}
                total = {name: [] for name in sides}
                for _ in range(args.requests):
                    for name, (client, url) in sides.items():
                        f, t = one(client, url)
                        first[name].append(f)
                        total[name].append(t)
            result = {"requests": args.requests, "workers": args.workers,
                      "nginx_protocol": "HTTP/1.1" if args.http1 else "HTTP/2",
                      "first_event_ms": {n: summary(v) for n, v in first.items()},
                      "total_ms": {n: summary(v) for n, v in total.items()},
                      "violations": len(fake.violations)}
            result["first_event_overhead_ms"] = round(
                result["first_event_ms"]["nginx"]["median"]
                - result["first_event_ms"]["direct"]["median"], 2)
        finally:
            if proxy is not None:
                proxy.stop()
            gunicorn.stop()
    if not args.json:
        for kind in ("first_event_ms", "total_ms"):
            for name, s in result[kind].items():
                print(f"{kind[:-3]:<12} {name:<7} median {s['median']:7.2f}  p90 {s['p90']:7.2f}"
                      f"  mean {s['mean']:7.2f} ms")
        print(f"first event through nginx ({result['nginx_protocol']}, TLS): "
              f"{result['first_event_overhead_ms']:+.2f} ms vs direct (medians)")
    print(json.dumps(result))
    return 1 if result["violations"] else 0


if __name__ == "__main__":
    sys.exit(main())
