"""The state the gateway keeps between requests, behind small contracts.

Everything a request reads or leaves for later goes through one of these protocols: the usage
counter (:class:`UsageCounter`), each key's route in ``auto`` mode (:class:`RouteMemory`), the
credits per key (:class:`CreditsCache`), the billing failures every worker should know of
(:class:`FailureMemory`), the last model list (:class:`ModelListCache`) and the stored
Responses and threads (:class:`ConversationState`).  Callers (``chat.py``, the views,
``upstream/auto.py``, ``account.py``) use only these methods, with the names they always had,
so where the state lives is the business of whoever builds the objects: :func:`open_shared`
(which ``Gateway.__init__`` calls).

Two kinds of backend exist today.  The file backends, for one machine with many workers, sit
where they always did -- :class:`gateway.usage.UsageStore`, :class:`gateway.key_routes.KeyRoutes`,
:class:`gateway.account.SharedFailures`, :class:`gateway.conversations.ConversationStore` (the
credits cache and the model list were never shared, so their only backend is in-process).  The
in-memory ones below serve one process: tests, embedding, and the reference a new backend is
checked against -- they sit beside the contracts as httpx's ``MockTransport`` sits beside its
transport contract.

The Redis backend (``gateway/redis_state.py``, to share the state between several instances)
plugs in without touching a caller: classes with the same methods, chosen in one place,
:func:`open_shared` at the end of this module, which ``Gateway.__init__`` calls and hands out
-- ``Account(..., failures=..., cache=...)``, ``ModelDiscovery(..., cache=...)``, ``usage``,
``conversations`` and the ``AutoRoute``'s memory (through ``upstream/routes.build``).  The two
caches also offer ``claim``: with a shared backend one instance refreshes while the others
wait for its answer; the in-process ones always grant it, which leaves one process as it was.
Shared backends must date things with the wall clock (``time.time``): a monotonic clock means
nothing in another process.  Each class here takes an injectable ``clock`` for the same reason tests need one.
"""
from __future__ import annotations

import copy
import fcntl
import json
import logging
import os
import threading
import time
from collections import OrderedDict, deque
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Callable, Protocol, runtime_checkable

from . import errors, usage
from .canonical import Usage
from .key_routes import route_of

Clock = Callable[[], float]
log = logging.getLogger("gateway.state")

#: What a recent-requests entry may hold: the access line's fields (``access.Recorder._line``,
#: which never has a key, a prompt or an answer) plus when it finished.  Anything else is
#: dropped before it is stored, so a field added to a line is not kept until it is named here.
RECENT_FIELDS = ("time", "method", "path", "status", "surface", "model", "route", "key",
                 "client", "scheme", "ttfb_ms", "duration_ms", "tokens_in", "tokens_out",
                 "tokens_cached", "tokens_reasoning", "error")
RECENT_MAX = 100


def recent_entry(line: dict) -> dict:
    """``line`` cut down to :data:`RECENT_FIELDS` (every backend stores exactly this)."""
    return {k: line.get(k) for k in RECENT_FIELDS}


def newest_first(lines: list[dict]) -> list[dict]:
    """``lines`` by ``time``, newest first: requests finishing at once on several threads or
    workers are stored in the order they got to the store, which may differ by a few ms."""
    return sorted(lines, key=lambda line: line.get("time") or 0, reverse=True)


# ---- the contracts -----------------------------------------------------------------------------

@runtime_checkable
class UsageCounter(Protocol):
    """Token totals: overall, per model, per UTC day and per key label (``usage.empty()``'s
    shape plus a ``keys`` section once a label was given).  ``path`` names where they live, for
    log lines."""

    path: str

    def record(self, model: str, usage: Usage | None, failed: bool = False,
               key: str | None = None, error: str | None = None) -> None:
        """Count one finished request (``usage`` None: a request with no tokens; ``error``:
        the error code it ended with, None when it succeeded), in one atomic step with its
        history."""

    def read(self) -> dict:
        """Every total as of now; the caller may change what it gets."""

    def history(self) -> dict:
        """``{"day_models": {day: {model: counters}}, "day_errors": {day: {code: n}}}`` for
        the days kept (a day appears in ``day_errors`` once it had an error)."""


@runtime_checkable
class RecentRequests(Protocol):
    """The last :data:`RECENT_MAX` finished requests of every worker, as their access lines
    (:data:`RECENT_FIELDS`), for the status page.  Never raises into a request."""

    def add(self, line: dict) -> None:
        """Keep ``line`` (cut to :data:`RECENT_FIELDS`) as the newest; the oldest past the cap go."""

    def read(self, limit: int = RECENT_MAX) -> list[dict]:
        """The newest ``limit`` lines, newest first."""


@runtime_checkable
class RouteMemory(Protocol):
    """Which route (``key_routes.CLI`` or ``PROVIDER``) each key label takes in ``auto`` mode."""

    def get(self, label: str, fresh: bool = False) -> str | None:
        """The remembered route; None when unknown or a CLI-only record due for a recheck.
        ``fresh``: do not trust what this process saw last."""

    def probing(self) -> AbstractContextManager:
        """Held while a key's route is being found out: one prober at a time, everywhere the
        memory is shared."""

    def remember(self, label: str, route: str) -> None:
        """Record ``label``'s route, now; call inside :meth:`probing`."""


@runtime_checkable
class CreditsCache(Protocol):
    """The last credits answer (a body or a GatewayError) per key label.  An entry past its
    ``ttl`` is still returned, marked stale: it serves while a refresh is under way."""

    def get(self, label: str) -> tuple[object, bool] | None:
        """``(value, fresh)``, or None when nothing is known of ``label``."""

    def put(self, label: str, value: object, ttl: float) -> None:
        """Keep ``value`` for ``label``, fresh for ``ttl`` seconds."""

    def claim(self, label: str, ttl: float) -> bool:
        """True when the caller may refresh ``label`` now: no other holder of the same cache
        claimed it in the last ``ttl`` seconds (a shared backend lets one instance ask Command
        Code while the others wait for its answer).  A one-process backend always says True."""


@runtime_checkable
class FailureMemory(Protocol):
    """Billing failures per key label, shared so that other workers do not ask again."""

    def get(self, label: str) -> errors.GatewayError | None:
        """The failure still in force for ``label`` (same status and message), or None."""

    def put(self, label: str, err: errors.GatewayError, ttl: float) -> None:
        """Remember ``err`` for ``ttl`` seconds; a backend that cannot write only logs."""


@runtime_checkable
class ModelListCache(Protocol):
    """The last good ``data`` of the Provider API's model list."""

    def get(self) -> list[dict] | None:
        """The entries, or None when no list was fetched yet."""

    def put(self, entries: list[dict]) -> None:
        """Replace the list."""

    def claim(self, ttl: float) -> bool:
        """True when the caller should fetch the list this period: nobody sharing the cache
        claimed it in the last ``ttl`` seconds.  A one-process backend always says True."""


@runtime_checkable
class ConversationState(Protocol):
    """Stored Responses, their items by id, and Anthropic threads; each entry expires."""

    def put(self, response: dict, input_items: list, own_from: int = 0) -> None:
        """Store ``response`` under its id with the whole input that led to it, and each of
        its own items (``input_items[own_from:]`` and its output) by id."""

    def get(self, response_id: str) -> dict | None:
        """``{"response": ..., "input": [...], "own_from": n}``, or None."""

    def get_item(self, item_id: str) -> dict | None:
        """One stored item (what an ``item_reference`` names), or None."""

    def delete(self, response_id: str) -> bool:
        """Remove a response and its own items; False when there was none."""

    def put_thread(self, message_id: str, entry: dict) -> None:
        """A message thread as it stands after ``message_id``."""

    def get_thread(self, message_id: str) -> dict | None:
        """The thread stored under ``message_id``, or None."""


# ---- the in-process backends -------------------------------------------------------------------

class MemoryUsage:
    """Usage totals in this process's memory (lost on exit, never shared)."""

    path = ":memory:"

    def __init__(self, clock: Clock | None = None):
        self._clock = clock
        self._data = usage.empty()
        self._history = usage.empty_history()
        self._lock = threading.Lock()

    def record(self, model: str, usage_: Usage | None, failed: bool = False,
               key: str | None = None, error: str | None = None) -> None:
        now = self._clock() if self._clock else None
        entry = usage.new_entry(model, usage_, failed, key, now, error)
        with self._lock:
            usage.apply_entry(self._data, entry)
            usage.apply_history(self._history, entry)
            usage.prune_history(self._history, now=now)

    def read(self) -> dict:
        with self._lock:
            return copy.deepcopy(self._data)

    def history(self) -> dict:
        with self._lock:
            return copy.deepcopy(self._history)


class MemoryRecent:
    """Recent requests in this process's memory (and Redis's fallback)."""

    def __init__(self, max_entries: int = RECENT_MAX):
        self._lines: deque = deque(maxlen=max_entries)
        self._lock = threading.Lock()

    def add(self, line: dict) -> None:
        with self._lock:
            self._lines.appendleft(recent_entry(line))

    def read(self, limit: int = RECENT_MAX) -> list[dict]:
        with self._lock:
            return newest_first([dict(line) for line in list(self._lines)[:max(0, limit)]])


class FileRecent:
    """Recent requests in a small file every worker shares (``recent.jsonl`` beside the usage
    file): one JSON line per request, appended under an exclusive ``fcntl`` lock (a side lock
    file, as the usage store does), and rewritten whole (atomically, keeping the newest
    ``max_entries``) once it holds twice that many.  Readers take no lock: they read complete
    lines and skip a torn last one.  A failure logs once and loses that line: the list is a
    convenience and must never fail a request."""

    def __init__(self, path: str, max_entries: int = RECENT_MAX):
        self.path = os.path.abspath(path)
        self.max_entries = max_entries
        self._lock_path = self.path + ".lock"
        self._thread_lock = threading.Lock()
        self._lock_file = None          # opened once per process, locked for each add
        self._pid = None
        self._failing = False

    def _lock(self):
        if self._lock_file is None or self._pid != os.getpid():
            self._lock_file, self._pid = usage.open_private(self._lock_path), os.getpid()
        return self._lock_file

    def _failed(self, exc: Exception) -> None:
        if not self._failing:
            log.warning("the recent-requests file %s cannot be used (%s); the list is "
                        "incomplete until it can", self.path, exc)
        self._failing = True

    def add(self, line: dict) -> None:
        text = (_dumps(recent_entry(line)) + "\n").encode()
        try:
            with self._thread_lock:
                lock = self._lock()
                fcntl.flock(lock, fcntl.LOCK_EX)
                try:
                    fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                    try:
                        os.write(fd, text)
                        size = os.fstat(fd).st_size
                    finally:
                        os.close(fd)
                    if size > 2 * self.max_entries * 400:       # about 400 bytes a line
                        self._compact()
                finally:
                    fcntl.flock(lock, fcntl.LOCK_UN)
        except OSError as exc:
            self._failed(exc)
            return
        self._failing = False

    def _compact(self) -> None:
        """Keep the newest ``max_entries`` lines (called under the lock)."""
        lines = self._lines()[-self.max_entries:]
        data = "".join(_dumps(x) + "\n" for x in lines).encode()
        usage.replace_atomically(self.path, data, f".{os.path.basename(self.path)}-")

    def _lines(self) -> list[dict]:
        try:
            with open(self.path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return []
        out = []
        for text in raw.split(b"\n"):
            try:
                out.append(json.loads(text))
            except ValueError:          # the empty tail, or a line being written
                continue
        return out

    def read(self, limit: int = RECENT_MAX) -> list[dict]:
        try:
            lines = self._lines()
        except OSError as exc:
            self._failed(exc)
            return []
        return newest_first(lines)[:max(0, min(limit, self.max_entries))]


class MemoryKeyRoutes:
    """Key routes for one process; :meth:`probing` excludes its threads only."""

    def __init__(self, clock: Clock | None = None):
        self._clock = clock or time.time
        self._known: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def get(self, label: str, fresh: bool = False) -> str | None:
        return route_of(self._known.get(label), self._clock())

    def probing(self) -> AbstractContextManager:
        return self._lock

    def remember(self, label: str, route: str) -> None:
        self._known[label] = (route, self._clock())


class MemoryCache:
    """A :class:`CreditsCache` bounded to ``max_keys`` labels: past it the least recently used
    one goes, so a gateway serving many passthrough keys keeps a fixed amount of memory.
    ``clock`` may be monotonic, as nothing outside this process reads it."""

    def __init__(self, max_keys: int = 1024, clock: Clock | None = None):
        self.max_keys = max_keys
        self.clock = clock or time.monotonic
        self._entries: OrderedDict[str, tuple[float, object]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, label: str) -> tuple[object, bool] | None:
        with self._lock:
            entry = self._entries.get(label)
            if entry is None:
                return None
            self._entries.move_to_end(label)
        expires, value = entry
        return value, expires > self.clock()

    def put(self, label: str, value: object, ttl: float) -> None:
        with self._lock:
            self._entries[label] = (self.clock() + ttl, value)
            self._entries.move_to_end(label)
            while len(self._entries) > self.max_keys:
                self._entries.popitem(last=False)

    def claim(self, label: str, ttl: float) -> bool:
        return True         # one process: the caller's own lookup is the only one (Account dedups)

    def __len__(self) -> int:
        return len(self._entries)


class MemoryFailures:
    """Billing failures for one process.  ``get`` builds a new error each time, as the file
    backend does, so no caller shares (and re-raises) another's exception object."""

    def __init__(self, clock: Clock | None = None):
        self._clock = clock or time.time
        self._until: dict[str, tuple[float, int, str]] = {}
        self._lock = threading.Lock()

    def get(self, label: str) -> errors.GatewayError | None:
        entry = self._until.get(label)
        if entry is None or entry[0] <= self._clock():
            return None
        return errors.error_for_status(entry[1], entry[2])

    def put(self, label: str, err: errors.GatewayError, ttl: float) -> None:
        now = self._clock()
        with self._lock:            # expired entries go at each write, as in the file
            self._until = {k: v for k, v in self._until.items() if v[0] > now}
            self._until[label] = (now + ttl, err.status, err.message)


class MemoryModelList:
    """The model list of this process."""

    def __init__(self):
        self._entries: list[dict] | None = None

    def get(self) -> list[dict] | None:
        return self._entries

    def put(self, entries: list[dict]) -> None:
        self._entries = list(entries)

    def claim(self, ttl: float) -> bool:
        return True         # one process fetches for itself, as it always did


def _dumps(value) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


class MemoryConversations:
    """Stored responses and threads in this process's memory.  Entries are kept as JSON text,
    as the file keeps them, so what a caller gets never aliases what another stored.  Past
    ``max_entries`` in a table its oldest tenth goes, as the file's size cap does."""

    def __init__(self, ttl_days: float = 30, max_entries: int = 10000,
                 clock: Clock | None = None):
        self.ttl = ttl_days * 86400
        self.max_entries = max_entries
        self._clock = clock or time.time
        self._tables: dict[str, dict[str, tuple[float, str]]] = {
            "responses": {}, "items": {}, "threads": {}}
        self._lock = threading.Lock()

    def _put(self, table: str, key: str, value, now: float) -> None:
        rows = self._tables[table]
        rows.pop(key, None)                 # a replaced row is a new one: it goes last
        rows[key] = (now + self.ttl, _dumps(value))
        if len(rows) > self.max_entries:
            for old in list(rows)[:max(1, len(rows) // 10)]:
                del rows[old]

    def _get(self, table: str, key: str):
        row = self._tables[table].get(key)
        return json.loads(row[1]) if row and row[0] > self._clock() else None

    def put(self, response: dict, input_items: list, own_from: int = 0) -> None:
        now = self._clock()
        own = [i for i in input_items[own_from:] + response["output"]
               if isinstance(i, dict) and isinstance(i.get("id"), str)]
        with self._lock:
            self._put("responses", response["id"],
                      {"response": response, "input": input_items, "own_from": own_from}, now)
            for item in own:
                self._put("items", item["id"], item, now)

    def get(self, response_id: str) -> dict | None:
        return self._get("responses", response_id)

    def get_item(self, item_id: str) -> dict | None:
        return self._get("items", item_id)

    def delete(self, response_id: str) -> bool:
        entry = self.get(response_id)
        if entry is None:
            return False
        own = entry["input"][entry.get("own_from", 0):] + entry["response"]["output"]
        with self._lock:
            self._tables["responses"].pop(response_id, None)
            for item in own:
                if isinstance(item, dict) and item.get("id"):
                    self._tables["items"].pop(item["id"], None)
        return True

    def put_thread(self, message_id: str, entry: dict) -> None:
        with self._lock:
            self._put("threads", message_id, entry, self._clock())

    def get_thread(self, message_id: str) -> dict | None:
        return self._get("threads", message_id)


# ---- choosing the backends ---------------------------------------------------------------------

@dataclass(frozen=True)
class Shared:
    """Every piece of state one gateway process keeps between requests, built together so that
    they all live in the same place (the files of one machine, or one Redis for several).
    ``conversations`` is None when ``store_responses`` is off; ``close`` lets the connections
    go (nothing to do for the files, which are opened per use)."""

    usage: UsageCounter
    key_routes: RouteMemory
    credits: CreditsCache
    failures: FailureMemory
    model_list: ModelListCache
    conversations: ConversationState | None
    close: Callable[[], None]
    recent: RecentRequests


def open_shared(cfg, state_dir: str) -> Shared:
    """The backends ``cfg`` (the validated settings) asks for: without ``state``, the file and
    in-process ones the gateway always had, in ``state_dir`` beside the usage file; with a
    ``redis://`` URL, the members of one :class:`gateway.redis_state.RedisState`.

    ``gateway.redis_state`` (and with it the redis client) is imported only in the second case,
    so a gateway that does not use Redis neither needs nor loads it.
    """
    if cfg.state is None:
        return _files(cfg, state_dir)
    from . import capacity
    from .redis_state import RedisState
    # a connection for every thread that may touch the state at once: each stream slot, and
    # the reserve threads that answer /usage and /health while every slot is busy
    redis = RedisState(cfg.state, cfg.state_prefix,
                       pool_size=cfg.stream_slots + capacity.RESERVED_THREADS,
                       days_kept=cfg.usage_days_kept)
    return Shared(usage=redis.usage, key_routes=redis.key_routes, credits=redis.credits,
                  failures=redis.failures, model_list=redis.model_list,
                  conversations=redis.conversations(cfg.responses_ttl_days, cfg.responses_max_mb)
                  if cfg.store_responses else None,
                  close=redis.close, recent=redis.recent)


def _files(cfg, state_dir: str) -> Shared:
    """One machine's state: files every worker shares, and per-process caches."""
    from .account import CREDITS_MAX_KEYS, SharedFailures      # account imports this module
    from .conversations import ConversationStore
    from .key_routes import KeyRoutes
    conversations = ConversationStore(
        os.path.join(state_dir, "state.sqlite3"), cfg.responses_ttl_days,
        cfg.responses_max_mb) if cfg.store_responses else None
    return Shared(usage=usage.UsageStore(cfg.usage_file),
                  key_routes=KeyRoutes(os.path.join(state_dir, "key_routes.json")),
                  credits=MemoryCache(CREDITS_MAX_KEYS),
                  failures=SharedFailures(os.path.join(state_dir, "billing_failures.json")),
                  model_list=MemoryModelList(), conversations=conversations,
                  close=lambda: None,
                  recent=FileRecent(os.path.join(state_dir, "recent.jsonl")))
