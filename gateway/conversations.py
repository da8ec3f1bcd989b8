"""Conversation state: stored Responses and Anthropic message threads, shared by every worker,
in SQLite beside the usage file.

Clients that chain answers (``previous_response_id``, ``GET /v1/responses/{id}``) may reach any
gunicorn worker, so the store cannot live in one process's memory.  SQLite in WAL mode is in the
standard library, needs no server, lets readers proceed while one writer writes, and survives a
restart; a later backend (Redis, for several instances) only has to offer the same methods
(:class:`gateway.state.ConversationState`; ``state.MemoryConversations`` is the in-process one).

What is stored per response is what continuing it needs: the response object as the client got
it (its ``output`` with our ``encrypted_content`` reasoning, so a continued tool turn keeps the
model's reasoning) and the whole input that led to it (earlier turns of the chain included), so a
continuation never walks the chain; and each of its own items by id, for clients that send
``item_reference`` instead of an item they already got.  A thread (the Anthropic SDKs' tool runners: ``thread: {type: "continue",
previous_message_id}`` with only the new turn) is stored the same way: under each reply's id,
the whole conversation up to and including that reply.  Rows expire after ``responses_ttl_days``; when the file
grows past ``responses_max_mb`` the oldest rows go first.  The file is created mode 0600.
"""
from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from contextlib import contextmanager

log = logging.getLogger("gateway.conversations")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    expires REAL NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS responses_expires ON responses (expires);
CREATE INDEX IF NOT EXISTS responses_created ON responses (created);
CREATE TABLE IF NOT EXISTS items (
    id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    expires REAL NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS items_expires ON items (expires);
CREATE TABLE IF NOT EXISTS threads (
    id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    expires REAL NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS threads_expires ON threads (expires);
"""
_PRUNE_EVERY = 200          # writes between two expiry sweeps (per worker)
_TABLES = ("responses", "items", "threads")


def _dumps(value) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


class ConversationStore:
    """Stored responses (``put``, ``get``, ``delete``), their items (``get_item``, for
    ``item_reference``) and threads (``put_thread``, ``get_thread``); each call is one short
    transaction.

    One SQLite connection per thread (SQLite connections must not cross threads), opened on first
    use in the worker that uses it, never inherited through a fork.  The file backend of
    :class:`gateway.state.ConversationState`; ``clock`` (unix seconds) dates rows and decides
    their expiry.
    """

    def __init__(self, path: str, ttl_days: float = 30, max_mb: float = 512, clock=None):
        self.path = os.path.abspath(path)
        self._clock = clock or time.time
        self.ttl = ttl_days * 86400
        self.max_bytes = int(max_mb * 1024 * 1024)
        self._local = threading.local()
        self._writes = 0

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None or getattr(self._local, "pid", None) != os.getpid():
            if not os.path.exists(self.path):
                fd = os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600)
                os.close(fd)
            db = sqlite3.connect(self.path, timeout=10, isolation_level=None,
                                 check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")     # WAL: durable at checkpoints, never torn
            db.executescript(_SCHEMA)
            self._local.db, self._local.pid = db, os.getpid()
        return db

    def put(self, response: dict, input_items: list, own_from: int = 0) -> None:
        """Store ``response`` (keyed by its ``id``) with the full input that produced it;
        ``own_from``: where the request's own items start (before it: the chain it continued)."""
        now = self._clock()
        own = [i for i in input_items[own_from:] + response["output"]
               if isinstance(i, dict) and isinstance(i.get("id"), str)]
        with self._transaction() as db:
            self._put("responses", response["id"],
                      {"response": response, "input": input_items, "own_from": own_from}, now)
            db.executemany("INSERT OR REPLACE INTO items (id, created, expires, data) "
                           "VALUES (?,?,?,?)", [(i["id"], now, now + self.ttl, _dumps(i))
                                                for i in own])
        self._count_write(now)

    def get_item(self, item_id: str) -> dict | None:
        """One stored input or output item by its id (what an ``item_reference`` names)."""
        return self._get("items", item_id)

    def get(self, response_id: str) -> dict | None:
        """``{"response": ..., "input": [...], "own_from": n}``, or None when unknown or expired."""
        return self._get("responses", response_id)

    def put_thread(self, message_id: str, entry: dict) -> None:
        """An Anthropic message thread as it stands after the message ``message_id``:
        ``{"messages": [...], "system": ..., "tools": ...}``, the reply included."""
        now = self._clock()
        self._put("threads", message_id, entry, now)
        self._count_write(now)

    def get_thread(self, message_id: str) -> dict | None:
        return self._get("threads", message_id)

    def _put(self, table: str, key: str, value: dict, now: float) -> None:
        self._db().execute(f"INSERT OR REPLACE INTO {table} (id, created, expires, data) "
                           "VALUES (?,?,?,?)", (key, now, now + self.ttl, _dumps(value)))

    def _count_write(self, now: float) -> None:
        self._writes += 1
        if self._writes % _PRUNE_EVERY == 1:
            self.prune(now)

    def _get(self, table: str, key: str) -> dict | None:
        row = self._db().execute(f"SELECT data FROM {table} WHERE id = ? AND expires > ?",
                                 (key, self._clock())).fetchone()
        return json.loads(row[0]) if row else None

    def delete(self, response_id: str) -> bool:
        """Remove a stored response and the items only it stored (its input and output)."""
        entry = self.get(response_id)
        if entry is None:
            return False
        own = entry["input"][entry.get("own_from", 0):] + entry["response"]["output"]
        with self._transaction() as db:
            db.execute("DELETE FROM responses WHERE id = ?", (response_id,))
            db.executemany("DELETE FROM items WHERE id = ?",
                           [(i["id"],) for i in own if isinstance(i, dict) and i.get("id")])
        return True

    @contextmanager
    def _transaction(self):
        """One write transaction: a response and its items go in (or out) together."""
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def prune(self, now: float | None = None) -> None:
        """Drop expired rows; past the size cap, the oldest tenth of the rest as well."""
        db = self._db()
        for table in _TABLES:
            db.execute(f"DELETE FROM {table} WHERE expires <= ?", (now or self._clock(),))
        pages, free, size = (db.execute(f"PRAGMA {p}").fetchone()[0]
                             for p in ("page_count", "freelist_count", "page_size"))
        if (pages - free) * size > self.max_bytes:      # freed pages are reused, not counted
            for table in _TABLES:
                count = db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
                db.execute(f"DELETE FROM {table} WHERE id IN (SELECT id FROM {table} "
                           "ORDER BY created LIMIT ?)", (max(1, count // 10),))
            log.warning("the conversation store %s is over responses_max_mb: dropped the oldest "
                        "tenth of its responses and threads", self.path)
