"""The conversation store (``gateway/conversations.py``): stored responses and threads in SQLite,
shared by processes, expiring, capped, and private to the gateway's user."""
from __future__ import annotations

import multiprocessing
import os
import stat
import time

from gateway.conversations import ConversationStore


def response(rid: str, text: str = "x") -> dict:
    return {"id": rid, "model": "m", "output": [{"type": "message", "content": [{"text": text}]}]}


def test_put_get_delete(tmp_path):
    store = ConversationStore(str(tmp_path / "state.sqlite3"))
    store.put(response("resp_1"), [{"role": "user", "content": "q"}], own_from=0)
    got = store.get("resp_1")
    assert got == {"response": response("resp_1"), "input": [{"role": "user", "content": "q"}],
                   "own_from": 0}
    assert store.get("resp_2") is None
    assert store.delete("resp_1") is True and store.get("resp_1") is None
    assert store.delete("resp_1") is False
    store.put_thread("msg_1", {"messages": [{"role": "user", "content": "q"}]})
    assert store.get_thread("msg_1") == {"messages": [{"role": "user", "content": "q"}]}
    assert store.get("msg_1") is None           # responses and threads are apart


def test_the_file_and_its_journal_are_private(tmp_path):
    path = tmp_path / "state.sqlite3"
    ConversationStore(str(path)).put(response("resp_1"), [])
    for name in os.listdir(tmp_path):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o600, name


def test_entries_expire(tmp_path):
    store = ConversationStore(str(tmp_path / "s.sqlite3"), ttl_days=0.5 / 86400)   # half a second
    store.put(response("resp_1"), [])
    store.put_thread("msg_1", {"messages": []})
    assert store.get("resp_1") is not None
    time.sleep(0.6)
    assert store.get("resp_1") is None and store.get_thread("msg_1") is None
    store.prune()
    db = store._db()
    assert db.execute("SELECT COUNT(*) FROM responses").fetchone()[0] == 0


def test_past_the_size_cap_the_oldest_go_first(tmp_path):
    store = ConversationStore(str(tmp_path / "s.sqlite3"), max_mb=0.2)
    for i in range(60):
        store.put(response(f"resp_{i}", "y" * 8000), [])
    store.prune()
    kept = [i for i in range(60) if store.get(f"resp_{i}") is not None]
    assert kept and kept[0] > 0 and kept[-1] == 59       # the newest stay, the oldest went


def _writer(path: str, start: int) -> None:
    store = ConversationStore(path)
    for i in range(start, start + 50):
        store.put(response(f"resp_{i}"), [])


def test_several_processes_share_one_store(tmp_path):
    """gunicorn workers are processes: what one stores, every other one reads."""
    path = str(tmp_path / "s.sqlite3")
    store = ConversationStore(path)
    store.put(response("resp_parent"), [])         # opened here before the fork
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(path, n * 100)) for n in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert all(store.get(f"resp_{n * 100 + i}") for n in range(3) for i in range(50))
    assert store.get("resp_parent") is not None


def test_items_are_found_by_id_until_their_response_is_deleted(tmp_path):
    store = ConversationStore(str(tmp_path / "s.sqlite3"))
    out = {"id": "resp_1", "output": [{"id": "msg_out", "type": "message", "content": []}]}
    store.put(out, [{"id": "msg_old", "role": "user", "content": "earlier"},
                    {"id": "msg_in", "role": "user", "content": "q"}], own_from=1)
    assert store.get_item("msg_out")["type"] == "message"
    assert store.get_item("msg_in")["content"] == "q"
    assert store.get_item("msg_old") is None        # from the chain before: not this one's
    assert store.delete("resp_1")
    assert store.get_item("msg_out") is None and store.get_item("msg_in") is None
