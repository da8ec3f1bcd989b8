"""Benchmark: how much the gateway adds to a streamed answer's first chunk (and to the whole stream).

What it measures
----------------
It starts the fake Command Code upstream (``tests/fake_upstream.py``, scenario ``fast``: every
NDJSON line is one HTTP chunk, sent with no delay) and a real ``gunicorn wsgi:app`` (the
``Gunicorn`` helper of ``tests/conftest.py``, gthread workers, ``WEB_CONCURRENCY`` workers)
pointed at it.  After a warm-up it alternates, request after request, between

* **direct**: ``POST /alpha/generate`` on the fake, with the envelope the gateway would send
  (built by ``gateway.upstream.cli.encode``) and the CLI's headers; the *first chunk* is the
  first NDJSON line holding a ``text-delta``;
* **gateway**: ``POST /v1/chat/completions`` with ``"stream": true`` on gunicorn; the *first
  chunk* is the first SSE ``data:`` line holding ``"content"``.

Both times run from just before the request is sent until that line has been read; the *total*
time runs to the end of the stream (EOF of the chunked body).  Each side uses one persistent
``requests.Session`` per client thread (keep-alive, as an SDK does; the number of TCP
connections each side opened is printed to prove it), and lines are cut from whatever one
socket read returned (``raw.read1``), so nothing waits for a buffer to fill.  ``--reader lines``
uses ``Response.iter_lines(chunk_size=...)`` instead: on a chunked body urllib3 yields every
HTTP chunk as it arrives whatever ``chunk_size`` is, so both readers give the same numbers.

The fake runs in its own process by default (``python tests/fake_upstream.py``), so that it
does not compete with the measuring threads for this process's GIL -- a real upstream is on
another machine.  ``--fake thread`` runs ``FakeUpstream`` in a thread of this process instead.
Either way the fake checks every request strictly; the violation count is printed (must be 0).

How to run
----------
From the repository root, with the project's virtualenv::

    python bench/first_chunk.py                       # 300 requests per side, 1 client, 2 workers
    python bench/first_chunk.py --requests 1000 --concurrency 4 --workers 2
    python bench/first_chunk.py --json                # only the JSON line
    python bench/first_chunk.py --state redis         # the state in a redis-server started for the run
    WEB_CONCURRENCY=4 GATEWAY_THREADS=16 python bench/first_chunk.py

It takes a few seconds with the defaults, cleans up gunicorn and the fake even on Ctrl-C, and
exits 0 (1 if a request failed or the fake saw a protocol violation, 130 on Ctrl-C).  It is a
benchmark, not a test: pytest does not collect it.

How to read the result
----------------------
``--state redis`` starts a ``redis-server`` on a free loopback port for the run (the test
helper ``tests/redis_server.py``) and points the gateway's ``state`` at it, so the first chunk
with every piece of state in Redis can be set against the file store (the default); the JSON
line says which was used (``"state"``).

``first chunk`` rows give the median, p90, p99 and mean time to the first token for each side,
in milliseconds.  ``overhead`` is gateway median - direct median: what a client of the gateway
waits for its first token on top of what calling Command Code directly would cost (on loopback,
so network time is ~0 and the number is the gateway's own processing: HTTP parsing, Flask,
decoding, re-encoding, thread hand-offs).  ``total`` is the same for the whole stream; it also
includes what the gateway does at the end of a stream (counting usage).  ``RSS`` is the resident
memory of each gunicorn worker (children of the master) before and after the measured run; a
growth that does not level off over longer runs would be a leak.  The last line of the output
is the same result as one JSON object, for notes and scripts.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import requests  # noqa: E402
import yaml  # noqa: E402

from gateway import config as config_mod  # noqa: E402
from gateway.catalog import Catalog  # noqa: E402
from gateway.codecs import openai_chat  # noqa: E402
from gateway.normalize import normalize  # noqa: E402
from gateway.upstream import cli, openai_wire  # noqa: E402
from tests.conftest import LOCAL_KEY, UPSTREAM_KEY, Gunicorn, free_port, gateway_config  # noqa: E402
from tests.fake_upstream import CHAT_PATH, PRO_KEY, FakeUpstream  # noqa: E402

MODEL = "deepseek/deepseek-v4-flash"
SCENARIO = "fast"
CHAT_BODY = {"model": MODEL, "stream": True,
             "messages": [{"role": "system", "content": "Be brief."},
                          {"role": "user", "content": f"[[{SCENARIO}]] Say hello."}]}
DIRECT_MARK = b"text-delta"         # first NDJSON line of the answer's text
GATEWAY_MARK = b'"content"'         # first chat.completion.chunk carrying text
#: --surface: the gateway endpoint, its body, the mark of its first text and of its end
SURFACES = {
    "chat": ("/v1/chat/completions", CHAT_BODY, GATEWAY_MARK, b"[DONE]"),
    "responses": ("/v1/responses", {"model": MODEL, "stream": True, "store": False,
                                    "input": CHAT_BODY["messages"][0]["content"]},
                  b"response.output_text.delta", b"response.completed"),
}
MAX_ERRORS = 20                     # per client thread; more and the run stops early


# ---- the two requests ---------------------------------------------------------------------------

def direct_request(cfg: dict) -> tuple[bytes, dict]:
    """The body and headers the gateway sends upstream for ``CHAT_BODY`` (see CliRoute.open
    and ProviderRoute.open)."""
    catalog = Catalog.load(cfg["exclude_models"])
    req = normalize(openai_chat.decode(json.loads(json.dumps(CHAT_BODY)), catalog, None))
    if cfg["commandcode"]["mode"] == "provider":
        body = json.dumps(openai_wire.encode(req), ensure_ascii=False,
                          separators=(",", ":")).encode()
        return body, {"Content-Type": "application/json", "Accept": "text/event-stream",
                      "User-Agent": "command-code-gateway",
                      "Authorization": f"Bearer {cfg['commandcode']['api_key']}"}
    names = cli.tool_wire_names(req)
    key = cfg["commandcode"]["api_key"]
    thread = cli.thread_id(req, key)
    body = json.dumps(cli.encode(req, thread, names), ensure_ascii=False,
                      separators=(",", ":")).encode()
    headers = {"Content-Type": "application/json", "User-Agent": "cli",
               "x-command-code-version": cfg["commandcode"]["cli_version"],
               "x-cli-environment": "production", "x-project-slug": "root",
               "x-taste-learning": "false", "Authorization": f"Bearer {key}",
               "x-session-id": thread}
    return body, headers


def read1_lines(resp, chunk_size: int):
    """Lines of a streamed body, cut from whatever each socket read returned."""
    raw, buf = resp.raw, b""
    while True:
        chunk = raw.read1(chunk_size)
        if not chunk:
            break
        buf += chunk
        if b"\n" in chunk:
            *lines, buf = buf.split(b"\n")
            yield from lines
    if buf:
        yield buf


def iter_lines(resp, chunk_size: int):
    return resp.iter_lines(chunk_size=chunk_size)


class Side:
    """One side (direct or gateway) of one client thread: a keep-alive session and its results."""

    def __init__(self, name: str, url: str, body: bytes, headers: dict, mark: bytes,
                 end: bytes, reader, chunk_size: int):
        self.name, self.url, self.body, self.headers = name, url, body, headers
        self.mark, self.end, self.reader, self.chunk_size = mark, end, reader, chunk_size
        self.session = requests.Session()
        self.session.trust_env = False      # no proxy / netrc lookups on loopback
        self.first: list[float] = []
        self.total: list[float] = []
        self.errors: list[str] = []

    def once(self, record: bool) -> None:
        t0 = time.perf_counter()
        first = None
        last = b""
        try:
            resp = self.session.post(self.url, data=self.body, headers=self.headers,
                                     stream=True, timeout=30)
            try:
                if resp.status_code != 200:
                    raise RuntimeError(f"HTTP {resp.status_code}: {resp.content[:200]!r}")
                for line in self.reader(resp, self.chunk_size):
                    if first is None and self.mark in line:
                        first = time.perf_counter()
                    if line.strip():
                        last = line
                end = time.perf_counter()
            finally:
                resp.close()
            if first is None:
                raise RuntimeError("no text in the stream")
            if self.end not in last:
                raise RuntimeError(f"stream did not end properly (last line {last[:120]!r})")
        except Exception as exc:  # noqa: BLE001 - counted and reported, the run goes on
            self.errors.append(f"{self.name}: {exc}")
            return
        if record:
            self.first.append(first - t0)
            self.total.append(end - t0)

    def connections(self) -> int:
        """TCP connections this session opened (1 when keep-alive works)."""
        n = 0
        for pool in self.session.get_adapter(self.url).poolmanager.pools._container.values():
            n += pool.num_connections
        return n


# ---- processes ----------------------------------------------------------------------------------

class FakeProcess:
    """``python tests/fake_upstream.py`` in its own process (no GIL shared with the clients)."""

    def __init__(self, folder: pathlib.Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.out_path = folder / "fake.out"
        self._out = open(self.out_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "tests", "fake_upstream.py"), "--port", str(self.port),
             "--default-scenario", SCENARIO, "--quiet"],
            cwd=ROOT, stdout=self._out, stderr=subprocess.STDOUT)

    def wait_ready(self) -> "FakeProcess":
        deadline = time.monotonic() + 10
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"fake upstream exited: {self.out_path.read_text()}")
            try:
                requests.get(self.url + "/ready", timeout=1)     # any answer (a 404) means up
                break
            except requests.RequestException:
                if time.monotonic() > deadline:
                    raise RuntimeError("fake upstream did not start") from None
                time.sleep(0.05)
        return self

    def stop(self) -> str:
        """Stop it; its one-line summary ('N requests, M violations, K disconnects')."""
        if self.proc.poll() is None:
            self.proc.terminate()       # the fake turns SIGTERM into a clean stop with a summary
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()
        lines = self.out_path.read_text(errors="replace").strip().splitlines()
        return lines[-1] if lines else ""


class FakeThread:
    """``FakeUpstream`` in a thread of this process."""

    def __init__(self, folder: pathlib.Path):
        self.fake = FakeUpstream()
        self.fake.default_scenario = SCENARIO
        self.fake.start()
        self.url = self.fake.url

    def wait_ready(self) -> "FakeThread":
        return self

    def stop(self) -> str:
        self.fake.stop()
        summary = (f"{len(self.fake.requests)} requests, {len(self.fake.violations)} violations, "
                   f"{len(self.fake.disconnects)} disconnects")
        if self.fake.violations:
            summary += " -- first: " + self.fake.violations[0]
        return summary


def worker_rss(master_pid: int) -> dict[int, float]:
    """RSS in MiB of every child of ``master_pid`` (gunicorn's workers), by pid."""
    pids: set[int] = set()
    try:
        for task in os.listdir(f"/proc/{master_pid}/task"):
            with open(f"/proc/{master_pid}/task/{task}/children") as f:
                pids.update(int(p) for p in f.read().split())
    except OSError:
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as f:
                        if int(f.read().rsplit(")", 1)[1].split()[1]) == master_pid:
                            pids.add(int(entry))
                except (OSError, ValueError, IndexError):
                    pass
    out = {}
    for pid in sorted(pids):
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        out[pid] = int(line.split()[1]) / 1024
        except OSError:
            pass
    return out


# ---- statistics and report ----------------------------------------------------------------------

def summary(samples: list[float]) -> dict:
    ms = sorted(s * 1000 for s in samples)
    if not ms:
        return {"n": 0}
    q = statistics.quantiles(ms, n=100, method="inclusive") if len(ms) > 1 else [ms[0]] * 99
    return {"n": len(ms), "median": round(statistics.median(ms), 3), "p90": round(q[89], 3),
            "p99": round(q[98], 3), "mean": round(statistics.fmean(ms), 3),
            "min": round(ms[0], 3), "max": round(ms[-1], 3)}


def table(title: str, direct: dict, gateway: dict) -> str:
    rows = [f"{title:<22}{'median':>9}{'p90':>9}{'p99':>9}{'mean':>9}{'min':>9}{'max':>9}"]
    for name, s in (("direct", direct), ("gateway", gateway)):
        rows.append(f"  {name:<20}" + "".join(f"{s.get(k, float('nan')):>9.3f}"
                                               for k in ("median", "p90", "p99", "mean", "min", "max")))
    rows.append(f"  {'overhead (median)':<20}{gateway['median'] - direct['median']:>9.3f}"
                f"   (mean {gateway['mean'] - direct['mean']:.3f}, "
                f"p90 {gateway['p90'] - direct['p90']:.3f})")
    return "\n".join(rows)


# ---- main ---------------------------------------------------------------------------------------

def run_client(direct: Side, gateway: Side, warmup: int, count: int, barrier: threading.Barrier,
               stop: threading.Event) -> None:
    try:
        for _ in range(warmup):
            direct.once(False)
            gateway.once(False)
        barrier.wait()
        for i in range(count):
            if stop.is_set():
                return
            if len(direct.errors) + len(gateway.errors) > MAX_ERRORS:
                stop.set()          # a server died: say so now rather than fail every request
                return
            # alternate which side goes first, so neither always follows the other
            first, second = (direct, gateway) if i % 2 == 0 else (gateway, direct)
            first.once(True)
            second.once(True)
    except threading.BrokenBarrierError:
        pass


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=300, help="measured requests per side (default 300)")
    ap.add_argument("--warmup", type=int, default=20,
                    help="unmeasured requests per side and client thread first (default 20)")
    ap.add_argument("--concurrency", type=int, default=1, help="client threads at once (default 1)")
    ap.add_argument("--workers", type=int, default=int(os.environ.get("WEB_CONCURRENCY", "2")),
                    help="gunicorn workers (default $WEB_CONCURRENCY or 2)")
    ap.add_argument("--reader", choices=("read1", "lines"), default="read1",
                    help="read1: split lines from each socket read (default); "
                         "lines: requests' iter_lines(chunk_size)")
    ap.add_argument("--chunk-size", type=int, default=65536,
                    help="read size for either reader (default 65536)")
    ap.add_argument("--fake", choices=("process", "thread"), default="process",
                    help="run the fake upstream in its own process (default) or in a thread here")
    ap.add_argument("--route", choices=("cli", "provider"), default="cli",
                    help="upstream route: the CLI's NDJSON (default) or the Provider API's SSE")
    ap.add_argument("--surface", choices=tuple(SURFACES), default="chat",
                    help="gateway endpoint: /v1/chat/completions (default) or /v1/responses "
                         "(first chunk: the first response.output_text.delta event)")
    ap.add_argument("--state", choices=("file", "redis"), default="file",
                    help="where the gateway keeps its state: the files beside the usage file "
                         "(default) or a redis-server started for the run on a free loopback "
                         "port (tests/redis_server.py; needs redis-server installed)")
    ap.add_argument("--json", action="store_true", help="print only the JSON line")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)

    def say(*a):
        if not args.json:
            print(*a, flush=True)

    def _terminate(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, _terminate)

    reader = read1_lines if args.reader == "read1" else iter_lines
    k = max(1, args.concurrency)
    tmp = tempfile.TemporaryDirectory(prefix="bench-first-chunk-")
    folder = pathlib.Path(tmp.name)
    fake = server = redis = None
    clients: list[tuple[Side, Side]] = []
    stop = threading.Event()
    interrupted = False
    result = None
    try:
        # assigned before waiting, so that a Ctrl-C during startup still stops what was started
        fake = (FakeProcess if args.fake == "process" else FakeThread)(folder)
        fake.wait_ready()
        cfg_dict = gateway_config(fake.url, folder)
        if args.route == "provider":
            cfg_dict["commandcode"].update(mode="provider", api_key=PRO_KEY)
        if args.state == "redis":
            from tests.redis_server import RedisServer
            redis = RedisServer()
            redis.start()
            cfg_dict.update(state=redis.url, state_prefix="bench")
        cfg_path = folder / "config.yaml"
        cfg_path.write_text(yaml.safe_dump(cfg_dict))
        server = Gunicorn(str(cfg_path), free_port(), workers=args.workers)
        server.wait_ready()
        deadline = time.monotonic() + 20     # wait_ready returns once the first worker answers
        while len(worker_rss(server.proc.pid)) < args.workers and time.monotonic() < deadline:
            time.sleep(0.05)
        settled, seen = time.monotonic() + 3, None     # and until they finished loading the app
        while time.monotonic() < settled and seen != (seen := worker_rss(server.proc.pid)):
            time.sleep(0.1)
        cfg = config_mod.validate(cfg_dict)
        up_body, up_headers = direct_request(cfg)
        gw_path, gw_json, gw_mark, gw_end = SURFACES[args.surface]
        gw_body = json.dumps(gw_json).encode()
        gw_headers = {"Authorization": f"Bearer {LOCAL_KEY}", "Content-Type": "application/json"}
        assert cfg["commandcode"]["api_key"] == (PRO_KEY if args.route == "provider" else UPSTREAM_KEY)
        direct_path, direct_mark, direct_end = (
            (CHAT_PATH, b'"content":"', b"[DONE]") if args.route == "provider"
            else (cli.GENERATE_PATH, DIRECT_MARK, b'"finish"'))

        # a worker builds its upstream session and pool on its first request: reach the workers
        # through fresh connections before the measured (keep-alive) sessions warm up
        for _ in range(4 * args.workers):
            with requests.Session() as s:
                s.trust_env = False
                s.post(server.url + gw_path, data=gw_body,
                       headers={**gw_headers, "Connection": "close"}, timeout=30).content
        rss_boot = worker_rss(server.proc.pid)

        for _ in range(k):
            clients.append((
                Side("direct", fake.url + direct_path, up_body, up_headers, direct_mark,
                     direct_end, reader, args.chunk_size),
                Side("gateway", server.url + gw_path, gw_body, gw_headers,
                     gw_mark, gw_end, reader, args.chunk_size)))
        per = [args.requests // k + (1 if i < args.requests % k else 0) for i in range(k)]
        rss: dict = {}
        # all clients warmed up: snapshot the workers' memory, then measure
        barrier = threading.Barrier(k + 1, action=lambda: rss.update(before=worker_rss(server.proc.pid)))
        threads = [threading.Thread(target=run_client, args=(d, g, args.warmup, n, barrier, stop),
                                    name=f"client-{i}", daemon=True)
                   for i, ((d, g), n) in enumerate(zip(clients, per))]
        for t in threads:
            t.start()
        barrier.wait()
        started = time.perf_counter()
        for t in threads:
            while t.is_alive():
                t.join(0.2)     # short joins keep Ctrl-C responsive
        wall = time.perf_counter() - started
        rss_before, rss_after = rss["before"], worker_rss(server.proc.pid)

        d_first = [x for d, _ in clients for x in d.first]
        g_first = [x for _, g in clients for x in g.first]
        d_total = [x for d, _ in clients for x in d.total]
        g_total = [x for _, g in clients for x in g.total]
        errs = [e for d, g in clients for e in d.errors + g.errors]
        result = {
            "bench": "first_chunk", "route": args.route, "surface": args.surface,
            "scenario": SCENARIO, "state": args.state,
            "requests": args.requests,
            "concurrency": k, "workers": args.workers,
            "threads_per_worker": int(os.environ.get("GATEWAY_THREADS", "16")),
            "reader": args.reader, "fake": args.fake, "wall_s": round(wall, 3),
            "first_chunk_ms": {"direct": summary(d_first), "gateway": summary(g_first)},
            "total_ms": {"direct": summary(d_total), "gateway": summary(g_total)},
            "connections": {"direct": sum(d.connections() for d, _ in clients),
                            "gateway": sum(g.connections() for _, g in clients)},
            "rss_mib_per_worker": {"boot": [round(v, 1) for v in rss_boot.values()],
                                   "before": [round(v, 1) for v in rss_before.values()],
                                   "after": [round(v, 1) for v in rss_after.values()]},
            "errors": len(errs),
        }
        for key in ("first_chunk_ms", "total_ms"):
            part = result[key]
            if part["direct"]["n"] and part["gateway"]["n"]:
                part["overhead_median"] = round(part["gateway"]["median"] - part["direct"]["median"], 3)
                part["overhead_mean"] = round(part["gateway"]["mean"] - part["direct"]["mean"], 3)
        if errs:
            say(f"{len(errs)} failed requests{' (run stopped early)' if stop.is_set() else ''}, "
                f"first: {errs[0]}")
    except KeyboardInterrupt:
        interrupted = True
        stop.set()
    finally:
        for d, g in clients:
            d.session.close()
            g.session.close()
        log = ""
        if server is not None:
            server.stop()
            log = server.log()
        fake_summary = fake.stop() if fake is not None else ""
        if redis is not None:
            redis.close()
        tmp.cleanup()
    if interrupted:
        print("interrupted; gunicorn and the fake upstream are stopped", file=sys.stderr)
        return 130

    result["fake_upstream"] = fake_summary
    violations = _violations(fake_summary)
    result["violations"] = violations
    result["gunicorn_tracebacks"] = log.count("Traceback")
    f, t = result["first_chunk_ms"], result["total_ms"]
    if f["direct"]["n"] and f["gateway"]["n"]:
        say(f"{args.requests} requests per side, concurrency {k}, {args.workers} gunicorn workers, "
            f"reader {args.reader}, fake in a {args.fake}, state in {args.state}, {wall:.2f} s")
        say(table("first chunk (ms)", f["direct"], f["gateway"]))
        say(table("total (ms)", t["direct"], t["gateway"]))
        say(f"TCP connections opened: direct {result['connections']['direct']}, "
            f"gateway {result['connections']['gateway']} (keep-alive: one per client thread)")
        rss_w = result["rss_mib_per_worker"]
        say(f"RSS per worker (MiB): after boot {rss_w['boot']}, after warm-up {rss_w['before']}, "
            f"after the run {rss_w['after']}")
        say(f"fake upstream: {fake_summary}; gunicorn tracebacks: {result['gunicorn_tracebacks']}")
    print(json.dumps(result, separators=(",", ":")), flush=True)
    ok = result["errors"] == 0 and violations == 0 and result["gunicorn_tracebacks"] == 0
    return 0 if ok else 1


def _violations(summary_line: str) -> int:
    """The violation count of the fake's summary line; -1 when it is missing."""
    try:
        return int(summary_line.split(" violations")[0].rsplit(" ", 1)[1])
    except (IndexError, ValueError):
        return -1


if __name__ == "__main__":
    sys.exit(main())
