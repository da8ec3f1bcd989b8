"""``/usage/recent`` over a real gunicorn with two workers: the list is one list for both
(``recent.jsonl`` beside the usage file), newest first, the access line's fields only."""
from __future__ import annotations

import os
import threading

import pytest
import requests

from gateway import state
from tests.conftest import LOCAL_KEY, start_gateway

FLASH = "deepseek/deepseek-v4-flash"
AUTH = {"Authorization": f"Bearer {LOCAL_KEY}"}


@pytest.fixture(scope="module")
def recent_gateway(fake_server, tmp_path_factory):
    server = start_gateway(fake_server, tmp_path_factory, "recent")
    yield server
    server.stop()
    assert "Traceback" not in server.log(), server.log()


def chat(server, text: str = "hi") -> None:
    r = requests.post(server.url + "/v1/chat/completions", headers=AUTH, timeout=30,
                      json={"model": FLASH, "messages": [{"role": "user", "content": text}]})
    assert r.status_code == 200, r.text


def workers_with(server, name: str) -> set[int]:
    """The gunicorn workers (children of the master) that hold ``name`` open."""
    found = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            if ppid != server.proc.pid:
                continue
            fds = os.listdir(f"/proc/{pid}/fd")
            if any(os.readlink(f"/proc/{pid}/fd/{fd}").endswith(name) for fd in fds):
                found.add(int(pid))
        except OSError:
            continue
    return found


def test_recent_lists_both_workers_requests_newest_first(recent_gateway, fake):
    server = recent_gateway
    # slow streams at once, in waves until both workers served some (a worker opens the
    # list's file when it first keeps a request): the busier one pauses its accepts
    made = 0
    for _ in range(6):
        threads = [threading.Thread(target=chat, args=(server, "[[slow:8]]")) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        made += len(threads)
        if len(workers_with(server, "recent.jsonl.lock")) == 2:
            break
    assert len(workers_with(server, "recent.jsonl.lock")) == 2, "one worker served every call"
    pattern = []
    for i in range(6):                  # then one at a time, in a known order
        if i % 2:
            assert requests.get(server.url + "/v1/nothing-here", headers=AUTH,
                                timeout=5).status_code == 404
            pattern.append(("other", 404))
        else:
            chat(server)
            pattern.append(("chat", 200))
    assert requests.get(server.url + "/health", timeout=5).ok      # not worth keeping
    for _ in range(4):                  # whichever worker answers, the same list
        r = requests.get(server.url + "/usage/recent", headers=AUTH, timeout=5)
        assert r.status_code == 200
        data = r.json()["data"]
        assert len(data) == min(100, made + 6)
        assert [(x["surface"], x["status"]) for x in data[:6]] == pattern[::-1]
        times = [x["time"] for x in data]
        assert times == sorted(times, reverse=True)
        assert all(set(x) == set(state.RECENT_FIELDS) for x in data)
        calls = [x for x in data if x["surface"] == "chat"]
        assert all(x["model"] == FLASH and x["key"] == "gateway" and x["tokens_in"] > 0
                   for x in calls)
        assert all(x["error"] for x in data if x["status"] == 404)
    assert set(requests.get(server.url + "/usage", headers=AUTH, timeout=5).json()) >= {
        "models", "days", "upstream"}


def test_recent_needs_the_local_key(recent_gateway):
    assert requests.get(recent_gateway.url + "/usage/recent", timeout=5).status_code == 401
