"""The per-key route memory of ``auto`` mode (gateway/key_routes.py), across threads and processes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest

from gateway.key_routes import CLI, PROVIDER, RECHECK_SECONDS, KeyRoutes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---- key routes ------------------------------------------------------------------------------------

@pytest.fixture
def routes_path(tmp_path):
    return str(tmp_path / "key-routes.json")


def write_routes(path: str, data) -> None:
    with open(path, "w") as f:
        f.write(data if isinstance(data, str) else json.dumps(data))


def test_key_routes_unknown_without_a_file(routes_path):
    r = KeyRoutes(routes_path)
    assert r.get("k1") is None and r.get("k1", fresh=True) is None
    assert not os.path.exists(routes_path)


def test_key_routes_remember_is_seen_by_another_process(routes_path, tmp_path):
    a, b = KeyRoutes(routes_path), KeyRoutes(routes_path)
    assert b.get("k1") is None
    before = time.time()
    with a.probing():
        a.remember("k1", CLI)
    assert a.get("k1") == CLI
    assert b.get("k1") == CLI                     # an unknown label re-reads a changed file
    with open(routes_path) as f:
        data = json.load(f)
    assert list(data) == ["k1"] and data["k1"][0] == "cli"
    assert isinstance(data["k1"][1], int) and before - 1 <= data["k1"][1] <= time.time()
    assert sorted(os.listdir(tmp_path)) == ["key-routes.json", "key-routes.json.lock"]
    with a.probing():
        a.remember("k2", PROVIDER)
    assert b.get("k2") == PROVIDER            # b had read the file before: re-read on change
    assert b.get("k3") is None


def test_key_routes_remember_keeps_the_other_processes_records(routes_path):
    a, b, c = KeyRoutes(routes_path), KeyRoutes(routes_path), KeyRoutes(routes_path)
    with a.probing():
        a.remember("k1", CLI)
    with b.probing():
        b.remember("k2", PROVIDER)            # b never read the file: it must not drop k1
    with a.probing():
        a.remember("k3", PROVIDER)            # a's view is stale: it must not drop k2
    assert {k: c.get(k) for k in ("k1", "k2", "k3")} == {"k1": CLI, "k2": PROVIDER, "k3": PROVIDER}
    with open(routes_path) as f:
        assert set(json.load(f)) == {"k1", "k2", "k3"}


def test_key_routes_known_labels_are_cached_until_asked_fresh(routes_path):
    a, b = KeyRoutes(routes_path), KeyRoutes(routes_path)
    with a.probing():
        a.remember("k1", PROVIDER)
    assert b.get("k1") == PROVIDER
    with a.probing():
        a.remember("k1", CLI)                 # the plan changed, seen by a
    assert b.get("k1") == PROVIDER            # a dict lookup: no file read on the hot path
    assert b.get("k1", fresh=True) == CLI
    assert b.get("k1") == CLI


def test_key_routes_cli_only_record_expires_after_the_recheck_time(routes_path):
    now = time.time()
    write_routes(routes_path, {"old-cli": ["cli", int(now - RECHECK_SECONDS - 60)],
                               "recent-cli": ["cli", int(now - RECHECK_SECONDS + 60)],
                               "old-provider": ["provider", int(now - 10 * RECHECK_SECONDS)]})
    r = KeyRoutes(routes_path)
    assert r.get("old-cli") is None
    assert r.get("old-cli", fresh=True) is None
    assert r.get("recent-cli") == CLI
    assert r.get("old-provider") == PROVIDER          # only CLI-only records are rechecked
    with r.probing():
        r.remember("old-cli", CLI)                    # rechecked: still Go, a new day starts
    assert r.get("old-cli") == CLI
    assert KeyRoutes(routes_path).get("old-cli") == CLI


def test_key_routes_expiry_uses_the_clock(routes_path, monkeypatch):
    r = KeyRoutes(routes_path)
    with r.probing():
        r.remember("k", CLI)
    real = time.time()
    monkeypatch.setattr("gateway.key_routes.time.time", lambda: real + RECHECK_SECONDS - 5)
    assert r.get("k") == CLI
    monkeypatch.setattr("gateway.key_routes.time.time", lambda: real + RECHECK_SECONDS + 5)
    assert r.get("k") is None


def test_key_routes_unreadable_or_odd_files(routes_path):
    write_routes(routes_path, "{not json")
    r = KeyRoutes(routes_path)
    assert r.get("k") is None
    with r.probing():
        r.remember("k", PROVIDER)             # the broken file is rewritten
    assert KeyRoutes(routes_path).get("k") == PROVIDER
    write_routes(routes_path, {"a": ["cli"], "b": ["other", 1], "c": ["provider", "x"],
                               "d": ["provider", 5], "e": "cli", "f": ["cli", 1, 2],
                               "g": ["cli", time.time()]})
    r = KeyRoutes(routes_path)
    assert {k: r.get(k) for k in "abcdefg"} == {"a": None, "b": None, "c": None, "d": PROVIDER,
                                                 "e": None, "f": None, "g": CLI}
    write_routes(routes_path, "[1, 2]")
    assert KeyRoutes(routes_path).get("d") is None


def test_key_routes_probing_excludes_threads_and_other_instances(routes_path):
    a, b = KeyRoutes(routes_path), KeyRoutes(routes_path)
    order: list[str] = []

    def contender(routes, name):
        with routes.probing():
            order.append(name)

    with a.probing():
        threads = [threading.Thread(target=contender, args=(a, "same-instance")),
                   threading.Thread(target=contender, args=(b, "other-instance"))]
        for t in threads:
            t.start()
        time.sleep(0.2)
        assert order == []                    # both wait while the lock is held
        order.append("holder")
    for t in threads:
        t.join(5)
        assert not t.is_alive()
    assert order[0] == "holder" and sorted(order[1:]) == ["other-instance", "same-instance"]


_TRY_LOCK = """
import fcntl, sys
with open(sys.argv[1], "a") as f:
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        sys.exit(3)
sys.exit(0)
"""


def test_key_routes_probing_lock_excludes_another_process(routes_path):
    r = KeyRoutes(routes_path)
    lock = routes_path + ".lock"
    with r.probing():
        held = subprocess.run([sys.executable, "-c", _TRY_LOCK, lock], timeout=30)
        assert held.returncode == 3
    free = subprocess.run([sys.executable, "-c", _TRY_LOCK, lock], timeout=30)
    assert free.returncode == 0


_PROBE_IN_CHILD = """
import sys
from gateway.key_routes import KeyRoutes
r = KeyRoutes(sys.argv[1])
print("waiting", flush=True)
with r.probing():
    print("got " + str(r.get("k1", fresh=True)), flush=True)
    r.remember("k2", "cli")
"""


def test_key_routes_another_process_waits_then_reads_the_outcome(routes_path):
    r = KeyRoutes(routes_path)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with r.probing():
        child = subprocess.Popen([sys.executable, "-c", _PROBE_IN_CHILD, routes_path], cwd=ROOT,
                                 env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert child.stdout.readline().strip() == "waiting"
            time.sleep(0.3)
            assert child.poll() is None           # blocked on the lock we hold
            r.remember("k1", PROVIDER)
        except BaseException:
            child.kill()
            raise
    out, err = child.communicate(timeout=30)
    assert child.returncode == 0, err
    assert out.strip() == "got provider"
    assert r.get("k2") == CLI and r.get("k1") == PROVIDER
