"""Where the gateway's first-chunk time goes, stage by stage, inside one process.

``bench/first_chunk.py`` measures the whole overhead through gunicorn; this script explains it.
It starts the fake upstream in its own process (scenario ``fast``), builds the app with
``create_app`` and calls it as a WSGI application directly (no gunicorn, no client socket), with
timers wrapped around the stages of a streamed ``/v1/chat/completions`` call:

    to open           Flask dispatch, auth, JSON parse, decode, normalize
    open              the CLI envelope and headers built
    to post           hand-over to the upstream reader thread
    post              the upstream POST until its headers (includes the fake's own time)
    post->first ev    reading until the first text event (includes the fake's own time)
    ev->consumer      hand-over of that event back to the request thread
    consumer->encode  Response built, generator entered, first chunk encoded
    TOTAL first       WSGI call until the first chunk is in hand
    rest              the rest of the stream, usage recorded included

Run from the repository root:  python bench/hot_path.py [--requests N]
Medians in milliseconds are printed; "post" and "post->first ev" are mostly the fake's time.
"""
from __future__ import annotations

import argparse
import io
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway import chat, create_app, transport  # noqa: E402
from gateway.upstream import cli  # noqa: E402
from tests.conftest import free_port, gateway_config  # noqa: E402

T = time.perf_counter
marks: dict[str, float] = {}


def wrap(owner, name, before=None, after=None, once=False):
    """Record the time before and/or after ``owner.name`` runs (the first call only if ``once``)."""
    original = getattr(owner, name)

    def timed(*a, **k):
        if before and not (once and before in marks):
            marks[before] = T()
        result = original(*a, **k)
        if after and not (once and after in marks) and (result or result is None or not once):
            marks[after] = T()
        return result
    setattr(owner, name, timed)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=400)
    args = ap.parse_args()

    port = free_port()
    fake = subprocess.Popen([sys.executable, str(ROOT / "tests" / "fake_upstream.py"), "--port",
                             str(port), "--quiet", "--no-strict", "--default-scenario", "fast"])
    try:
        time.sleep(1.0)
        wrap(cli.CliRoute, "open", "open0", "open1")
        wrap(transport.Transport, "post_stream", "post0", "post1")
        wrap(cli.Decoder, "feed", after="ev", once=True)
        wrap(chat, "open_events", after="got")
        app = create_app(gateway_config(f"http://127.0.0.1:{port}", pathlib.Path(tempfile.mkdtemp())))
        body = (b'{"model": "deepseek/deepseek-v4-flash", "stream": true, '
                b'"messages": [{"role": "user", "content": "hi"}]}')
        environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/v1/chat/completions",
                   "SERVER_NAME": "bench", "SERVER_PORT": "80", "wsgi.url_scheme": "http",
                   "CONTENT_TYPE": "application/json", "CONTENT_LENGTH": str(len(body)),
                   "HTTP_AUTHORIZATION": "Bearer test-local-key", "wsgi.errors": sys.stderr}
        rows = []
        for i in range(args.requests + 50):
            marks.clear()
            env = dict(environ, **{"wsgi.input": io.BytesIO(body)})
            t0 = T()
            it = app(env, lambda status, headers: None)
            next(iter(it))
            t1 = T()
            for _ in it:
                pass
            t2 = T()
            it.close()
            if i >= 50:         # warm-up
                rows.append((marks["open0"] - t0, marks["open1"] - marks["open0"],
                             marks["post0"] - marks["open1"], marks["post1"] - marks["post0"],
                             marks["ev"] - marks["post1"], marks["got"] - marks["ev"],
                             t1 - marks["got"], t1 - t0, t2 - t1))
    finally:
        fake.terminate()
        fake.wait(5)
    names = ["to open", "open", "to post", "post", "post->first ev", "ev->consumer",
             "consumer->encode", "TOTAL first", "rest"]
    print(f"{args.requests} streamed requests, in-process WSGI calls (pid {os.getpid()})")
    for name, column in zip(names, zip(*rows)):
        print(f"  {name:18s} {statistics.median(column) * 1000:7.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
