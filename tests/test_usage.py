"""The usage store (gateway/usage.py): exact totals, no lost increment under many processes and
threads, no half-written file after kill -9, corrupt files moved aside, temp files beside the target.
"""
from __future__ import annotations

import fnmatch
import json
import logging
import multiprocessing
import os
import random
import stat
import threading
import time

import pytest

from gateway import usage as usage_mod
from gateway.canonical import Usage
from gateway.usage import COUNTERS, UsageStore

FORK = multiprocessing.get_context("fork")


def today() -> str:
    return time.strftime("%Y-%m-%d", time.gmtime())


def zeros() -> dict:
    return dict.fromkeys(COUNTERS, 0)


def bucket(requests=0, failed=0, prompt=0, completion=0, cache_read=0, cache_write=0,
           reasoning=0) -> dict:
    return {"total_requests": requests, "failed_requests": failed, "prompt_tokens": prompt,
            "completion_tokens": completion, "cache_read_tokens": cache_read,
            "cache_write_tokens": cache_write, "reasoning_tokens": reasoning}


def add_into(target: dict, u: Usage, failed: bool) -> None:
    target["total_requests"] += 1
    target["failed_requests"] += 1 if failed else 0
    target["prompt_tokens"] += u.input_tokens
    target["completion_tokens"] += u.output_tokens
    target["cache_read_tokens"] += u.cache_read_tokens
    target["cache_write_tokens"] += u.cache_write_tokens
    target["reasoning_tokens"] += u.reasoning_tokens


def counters(b: dict) -> dict:
    return {k: b[k] for k in COUNTERS}


def sum_buckets(buckets) -> dict:
    out = zeros()
    for b in buckets:
        for k in COUNTERS:
            out[k] += b[k]
    return out


def assert_well_formed(data: dict) -> None:
    """The structure every file the store writes has, and its internal consistency."""
    assert isinstance(data, dict)
    assert set(data) == set(COUNTERS) | {"models", "days"}
    for k in COUNTERS:
        assert isinstance(data[k], int) and data[k] >= 0, k
    assert isinstance(data["models"], dict) and isinstance(data["days"], dict)
    for group in (data["models"], data["days"]):
        for b in group.values():
            assert set(b) == set(COUNTERS)
        # every record adds to the top level, one model and one day: the sums must agree
        assert sum_buckets(group.values()) == counters(data)
    for day in data["days"]:
        time.strptime(day, "%Y-%m-%d")


# ---- 1. basic totals ---------------------------------------------------------------------------


def test_read_missing_file_is_zeros(tmp_path):
    store = UsageStore(str(tmp_path / "usage.json"))
    assert store.read() == {**zeros(), "models": {}, "days": {}}
    assert not (tmp_path / "usage.json").exists()        # reading creates nothing


def test_record_exact_totals_per_model_and_day(tmp_path):
    path = tmp_path / "usage.json"
    store = UsageStore(str(path))
    before = today()
    store.record("model-a", Usage(100, 20, 30, 40, 5))
    store.record("model-a", Usage(1, 2, 3, 4, 0), failed=True)
    store.record("model-b", Usage(7, 8, 0, 0, 9))
    store.record("model-b", None, failed=True)           # a failure with no usage: counted, 0 tokens
    store.record("model-c", None)                        # no usage, not failed
    after = today()

    a = bucket(requests=2, failed=1, prompt=101, completion=22, cache_read=33, cache_write=44,
               reasoning=5)
    b = bucket(requests=2, failed=1, prompt=7, completion=8, reasoning=9)
    c = bucket(requests=1)
    total = bucket(requests=5, failed=2, prompt=108, completion=30, cache_read=33, cache_write=44,
                   reasoning=14)

    data = store.read()
    assert counters(data) == total
    assert data["models"] == {"model-a": a, "model-b": b, "model-c": c}
    if before == after:
        assert data["days"] == {before: total}
    else:                                                # crossed UTC midnight during the test
        assert set(data["days"]) <= {before, after}
        assert sum_buckets(data["days"].values()) == total
    assert_well_formed(data)
    # what read() returns is exactly what is on disk
    assert usage_mod.without_history(json.loads(path.read_text(encoding="utf-8"))) == data
    # a second store object on the same file continues the same totals
    UsageStore(str(path)).record("model-c", Usage(1))
    assert store.read()["total_requests"] == 6
    assert store.read()["models"]["model-c"] == bucket(requests=2, prompt=1)


def test_failure_without_usage_counts_a_request_with_zero_tokens(tmp_path):
    store = UsageStore(str(tmp_path / "usage.json"))
    store.record("m", None, failed=True)
    data = store.read()
    assert counters(data) == bucket(requests=1, failed=1)
    assert data["models"] == {"m": bucket(requests=1, failed=1)}
    assert sum_buckets(data["days"].values()) == bucket(requests=1, failed=1)


def test_days_are_utc_days(tmp_path, monkeypatch):
    """The day bucket follows time.gmtime(): two records either side of UTC midnight split."""
    store = UsageStore(str(tmp_path / "usage.json"))
    fake_now = [0]
    real_gmtime = time.gmtime
    monkeypatch.setattr(usage_mod.time, "gmtime",
                        lambda secs=None: real_gmtime(fake_now[0] if secs is None else secs))
    fake_now[0] = 1704153599            # 2024-01-01T23:59:59Z
    store.record("m", Usage(1, 1))
    fake_now[0] = 1704153600            # 2024-01-02T00:00:00Z
    store.record("m", Usage(2, 2))
    store.record("m", Usage(3, 3), failed=True)
    data = store.read()
    assert data["days"] == {"2024-01-01": bucket(requests=1, prompt=1, completion=1),
                            "2024-01-02": bucket(requests=2, failed=1, prompt=5, completion=5)}
    assert data["models"]["m"] == bucket(requests=3, failed=1, prompt=6, completion=6)


# ---- 2. many processes x threads ---------------------------------------------------------------

PROCS, THREADS, PER_THREAD = 6, 3, 50
MODELS = ("model-x", "model-y")


def planned(proc: int, thread: int, i: int) -> tuple[str, Usage | None, bool]:
    """The (model, usage, failed) the i-th record of this thread makes: known, varied numbers."""
    model = MODELS[(proc + thread + i) % 2]
    failed = (i % 7 == 3)
    if i % 11 == 5:
        return model, None, failed
    return model, Usage(input_tokens=1000 * proc + 10 * thread + i + 1,
                        output_tokens=proc + thread + 2 * i,
                        cache_read_tokens=i % 5,
                        cache_write_tokens=(proc * thread) % 3,
                        reasoning_tokens=(i * 3) % 4), failed


def _worker(path: str, proc: int) -> None:
    store = UsageStore(path)                 # one store per process, shared by its threads (as the app)
    errors = []

    def run(thread: int) -> None:
        try:
            for i in range(PER_THREAD):
                store.record(*planned(proc, thread, i))
        except BaseException as exc:         # noqa: BLE001 - reported through the exit code
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(t,)) for t in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def test_no_lost_increment_across_processes_and_threads(tmp_path):
    path = str(tmp_path / "usage.json")
    day_before = today()
    procs = [FORK.Process(target=_worker, args=(path, p)) for p in range(PROCS)]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join(timeout=60)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
    assert [p.exitcode for p in procs] == [0] * PROCS
    day_after = today()

    total, per_model = zeros(), {m: zeros() for m in MODELS}
    for proc in range(PROCS):
        for thread in range(THREADS):
            for i in range(PER_THREAD):
                model, u, failed = planned(proc, thread, i)
                add_into(total, u or Usage(), failed)
                add_into(per_model[model], u or Usage(), failed)
    assert total["total_requests"] == PROCS * THREADS * PER_THREAD

    data = UsageStore(path).read()
    assert_well_formed(data)
    assert counters(data) == total
    assert data["models"] == per_model
    if day_before == day_after:
        assert data["days"] == {day_before: total}
    else:
        assert set(data["days"]) <= {day_before, day_after}
        assert sum_buckets(data["days"].values()) == total
    # every temp file was moved into place: nothing left behind
    assert sorted(os.listdir(tmp_path)) == ["usage.json", "usage.json.lock"]


# ---- 3. kill -9 --------------------------------------------------------------------------------

KILLS = 30


def _tight_writer(path: str, n: int) -> None:
    store = UsageStore(path)
    i = 0
    while True:
        store.record(MODELS[i % 2], Usage(n + 1, i % 10, 1, 2, 3), failed=(i % 5 == 0))
        i += 1


def test_kill_9_never_leaves_a_half_written_file(tmp_path):
    """Kill -9 a writer at random moments, 30 times; after each kill the file parses, has the full
    structure, is internally consistent and its total never goes down.

    Stray temp files: a writer killed between ``mkstemp`` and ``os.replace`` leaves its
    ``.usage.json-*.tmp`` behind until the next process records (it cleans them up once, under
    the lock), so we assert at most one per kill, that nothing else appears in the folder (in
    particular no ``.corrupt-*``: no writer ever saw a partial file), and that a clean record
    from a new store afterwards removes them all.
    """
    path = str(tmp_path / "usage.json")
    rng = random.Random(1234)
    last_total, kills, grew = 0, 0, 0
    deadline = time.monotonic() + 12
    while kills < KILLS and time.monotonic() < deadline:
        p = FORK.Process(target=_tight_writer, args=(path, kills), daemon=True)
        p.start()
        time.sleep(rng.uniform(0, 0.030))
        p.kill()                                       # SIGKILL
        p.join(timeout=10)
        assert p.exitcode == -9, p.exitcode
        kills += 1

        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                text = f.read()
            data = json.loads(text)                    # never half a file
            assert_well_formed(usage_mod.without_history(data))
            assert set(data["models"]) <= set(MODELS)
            assert data["total_requests"] >= last_total, "total went down after a kill"
            grew += data["total_requests"] > last_total
            last_total = data["total_requests"]

        names = os.listdir(tmp_path)
        strays = [n for n in names if fnmatch.fnmatch(n, ".usage.json-*.tmp")]
        others = sorted(set(names) - set(strays))
        assert others in ([], ["usage.json.lock"], ["usage.json", "usage.json.lock"]), names
        assert len(strays) <= kills, strays

    assert kills >= 10, f"only {kills} kill cycles ran before the time limit"
    assert last_total > 0 and grew >= 3, "the writer hardly ever got to write"

    # the store still works after all this (the flock of the killed writers is released)
    done = threading.Event()

    def final_record():
        UsageStore(path).record("model-x", Usage(1))
        done.set()

    threading.Thread(target=final_record, daemon=True).start()
    assert done.wait(10), "record blocked: a killed writer's lock was not released"
    data = UsageStore(path).read()
    assert_well_formed(data)
    assert data["total_requests"] == last_total + 1
    assert {n for n in os.listdir(tmp_path) if n.endswith(".tmp")} == set()   # tidied by the new store


STORM_WRITERS = 4


def _acking_writer(path: str, acks: str) -> None:
    """Record without end; after each record returns, append a byte to ``acks``: what a client
    would have seen as a finished request."""
    store = UsageStore(path)
    fd = os.open(acks, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    while True:
        store.record(MODELS[0], Usage(1, 1))
        os.write(fd, b".")


def test_a_kill_9_storm_loses_no_acknowledged_increment(tmp_path):
    """Four writers at once, one of them killed -9 at a random moment every few milliseconds
    and replaced, for about five seconds: every record that returned is in the file, and at
    most one more per kill (killed after its write, before its acknowledgement)."""
    path = str(tmp_path / "usage.json")
    rng = random.Random(99)
    procs, kills, n = [], 0, 0

    def start():
        nonlocal n
        p = FORK.Process(target=_acking_writer, args=(path, str(tmp_path / f"acks-{n}")),
                         daemon=True)
        p.start()
        procs.append(p)
        n += 1

    for _ in range(STORM_WRITERS):
        start()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        time.sleep(rng.uniform(0.002, 0.04))
        victim = procs.pop(rng.randrange(len(procs)))
        victim.kill()
        victim.join(10)
        assert victim.exitcode == -9
        kills += 1
        start()
    for p in procs:                      # the survivors are killed too: the storm's last kills
        p.kill()
        p.join(10)
    kills += len(procs)

    # a writer killed before it opened its acknowledgements acknowledged nothing
    acked = sum(os.path.getsize(tmp_path / f"acks-{i}") for i in range(n)
                if os.path.exists(tmp_path / f"acks-{i}"))
    data = UsageStore(path).read()
    assert_well_formed(data)
    print(f"kill -9 storm: {kills} kills, {acked} acknowledged, {data['total_requests']} in the file")
    assert kills >= 50 and acked >= 100, (kills, acked)
    assert acked <= data["total_requests"] <= acked + kills
    assert data["prompt_tokens"] == data["total_requests"]
    assert not [name for name in os.listdir(tmp_path) if ".corrupt-" in name]


def test_a_real_read_only_then_full_disk_loses_nothing(tmp_path):
    """The kernel's own EROFS and ENOSPC (tests/usage_disk_faults.py mounts a 256 KB tmpfs in a
    user namespace, remounts it read-only, then fills it): nothing lost, nothing counted twice,
    one log line as each fault starts and one as it ends, and the files stay mode 0600."""
    import subprocess
    import sys
    folder = tmp_path / "disk"
    folder.mkdir()
    script = os.path.join(os.path.dirname(__file__), "usage_disk_faults.py")
    run = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", sys.executable,
                          script, str(folder)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    seen = json.loads(run.stdout)
    assert seen["writable"] == 3
    assert seen["read_only"] == 3 and seen["read_only_seen_by_store"] == 7
    assert seen["after_read_only"] == 7
    assert seen["full"] == 7 and seen["full_seen_by_store"] == 12
    assert seen["after_full"] == 12 and seen["final"] == 13
    assert seen["files"] == ["usage.json", "usage.json.lock"]        # no temp file left behind
    assert set(seen["modes"].values()) == {"0o600"}
    log = seen["log"]
    assert len(log) == 4, log
    assert "Read-only file system" in log[0] and "can be written again: 4 requests" in log[1]
    assert "No space left on device" in log[2] and "can be written again: 5 requests" in log[3]


# ---- 4. corrupt file ---------------------------------------------------------------------------


@pytest.mark.parametrize("content", ['{"total', "", "[1, 2, 3]", "\xff\xfe garbage",
                                     '{"models": []}', '{"total_requests": "5"}',
                                     '{"days": {"2026-01-01": {"prompt_tokens": null}}}'])
def test_corrupt_file_is_moved_aside_and_counting_restarts(tmp_path, caplog, content):
    path = tmp_path / "usage.json"
    path.write_bytes(content.encode("latin-1"))
    store = UsageStore(str(path))
    with caplog.at_level(logging.ERROR, logger="gateway.usage"):
        store.record("m", Usage(5, 6, 1, 2, 3))          # does not raise

    aside = [n for n in os.listdir(tmp_path) if n.startswith("usage.json.corrupt-")]
    assert len(aside) == 1, os.listdir(tmp_path)
    assert (tmp_path / aside[0]).read_bytes() == content.encode("latin-1")   # kept as it was

    data = store.read()
    assert_well_formed(data)
    assert counters(data) == bucket(requests=1, prompt=5, completion=6, cache_read=1,
                                    cache_write=2, reasoning=3)
    assert list(data["models"]) == ["m"]

    errors = [r for r in caplog.records if r.name == "gateway.usage" and r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert str(path) in errors[0].getMessage() and aside[0] in errors[0].getMessage()
    assert sorted(os.listdir(tmp_path)) == sorted(["usage.json", "usage.json.lock", aside[0]])


def test_read_of_corrupt_file_returns_zeros_and_leaves_it_to_the_writer(tmp_path):
    """Readers hold no lock, so they must never rename: only a writer under the lock may."""
    path = tmp_path / "usage.json"
    path.write_text('{"total', encoding="utf-8")
    data = UsageStore(str(path)).read()
    assert data == {**zeros(), "models": {}, "days": {}}
    assert path.read_text(encoding="utf-8") == '{"total'
    assert not [n for n in os.listdir(tmp_path) if n.startswith("usage.json.corrupt-")]


# ---- 5. temp file location, mode, cleanup ------------------------------------------------------


def test_temp_file_is_created_beside_the_usage_file(tmp_path, monkeypatch):
    folder = tmp_path / "store"
    folder.mkdir()
    created = []
    real_mkstemp = usage_mod.tempfile.mkstemp

    def spy(*args, **kwargs):
        fd, name = real_mkstemp(*args, **kwargs)
        created.append(name)
        return fd, name

    monkeypatch.setattr(usage_mod.tempfile, "mkstemp", spy)
    monkeypatch.chdir(tmp_path)                          # a relative path is resolved once, here
    store = UsageStore("store/usage.json")
    monkeypatch.chdir("/")                               # ... and a later chdir does not matter
    store.record("m", Usage(1, 2))
    store.record("m", Usage(1, 2))

    assert len(created) == 2
    for name in created:
        assert os.path.dirname(os.path.abspath(name)) == str(folder)   # same folder: atomic replace
        assert not os.path.exists(name)                                # it became usage.json
    assert sorted(os.listdir(folder)) == ["usage.json", "usage.json.lock"]
    assert sorted(os.listdir(tmp_path)) == ["store"]
    st = os.stat(folder / "usage.json")
    assert stat.S_ISREG(st.st_mode)
    assert st.st_mode & 0o600 == 0o600                   # the owner can read and rewrite it
    assert UsageStore(str(folder / "usage.json")).read()["total_requests"] == 2


def test_a_disk_fault_loses_no_increment_and_logs_once_each_way(tmp_path, monkeypatch, caplog):
    """A full (or read-only) disk: the old file stays whole, no temp file is left, the counts
    wait in memory (and /usage shows them), and they are written once the disk is back."""
    import logging
    path = tmp_path / "usage.json"
    store = UsageStore(str(path))
    store.record("m", Usage(3))
    before = path.read_bytes()

    def disk_full(data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(usage_mod, "_encode", disk_full)    # fails after the temp file exists
    with caplog.at_level(logging.WARNING, logger="gateway.usage"):
        for n in (4, 5, 6):
            store.record("m", Usage(n))                      # never raises
        assert path.read_bytes() == before
        assert sorted(os.listdir(tmp_path)) == ["usage.json", "usage.json.lock"]
        assert store.read()["prompt_tokens"] == 3 + 4 + 5 + 6       # this worker still sees them
        monkeypatch.undo()
        store.record("m", Usage(7))                          # the disk is back
    assert json.loads(path.read_bytes())["prompt_tokens"] == 3 + 4 + 5 + 6 + 7
    assert json.loads(path.read_bytes())["total_requests"] == 5
    assert store.read()["prompt_tokens"] == 25               # not counted twice
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and "No space left" in lines[0] and "3 requests" not in lines[0]
    assert "can be written again: 4 requests" in lines[1]


def test_pending_increments_are_written_without_a_new_request(tmp_path, monkeypatch):
    """The retry runs on its own: a worker that gets no more requests still writes them."""
    path = tmp_path / "usage.json"
    store = UsageStore(str(path))
    store.RETRY_EVERY = 0.1
    real = usage_mod.replace_atomically
    broken = {"on": True}

    def flaky(*a, **kw):
        if broken["on"]:
            raise OSError(30, "Read-only file system")
        return real(*a, **kw)

    monkeypatch.setattr(usage_mod, "replace_atomically", flaky)
    store.record("m", Usage(2))
    assert not path.exists()
    broken["on"] = False
    deadline = time.monotonic() + 3
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert json.loads(path.read_bytes())["prompt_tokens"] == 2


def test_lock_files_are_private_like_the_data_files(tmp_path):
    """The lock files beside usage.json and key_routes.json are created mode 0600."""
    import stat
    from gateway.canonical import Usage as U
    from gateway.key_routes import KeyRoutes
    store = UsageStore(str(tmp_path / "usage.json"))
    store.record("m", U(1, 1))
    routes = KeyRoutes(str(tmp_path / "key_routes.json"))
    with routes.probing():
        routes.remember("key-0123456789ab", "cli")
    for name in ("usage.json.lock", "key_routes.json.lock"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o600, name


# ---- history through the app: each failed call's error code is counted --------------------------


def test_a_failed_calls_error_code_reaches_the_daily_error_counts(client, app):
    """chat._record hands the access record's error code to the usage store."""
    gw = app.extensions["gateway"]
    ok = client.post("/v1/chat/completions", json={
        "model": "deepseek/deepseek-v4-flash", "messages": [{"role": "user", "content": "hi"}]})
    bad = client.post("/v1/chat/completions", json={
        "model": "deepseek/deepseek-v4-flash",
        "messages": [{"role": "user", "content": "[[error_first]]"}]})
    assert ok.status_code == 200 and bad.status_code >= 400
    code = bad.get_json()["error"]["code"]
    ok.close()
    bad.close()                                     # the access line is written on close
    hist = gw.usage.history()
    (codes,) = hist["day_errors"].values()
    assert codes == {code: 1}
    (models,) = hist["day_models"].values()
    assert models["deepseek/deepseek-v4-flash"]["total_requests"] == 2
    assert models["deepseek/deepseek-v4-flash"]["failed_requests"] == 1
    (line, *_) = gw.recent.read()
    assert line["error"] == code and line["status"] == bad.status_code
