"""The usage store: token totals in one JSON file shared by every worker process and thread.

Each request updates the file once, at its end, under an exclusive ``fcntl`` lock on a side
lock file; the new content is written to a temporary file in the same folder and moved over
the old one with ``os.replace``.  So no increment is lost whatever the number of workers and
threads, and a kill -9 at any moment leaves either the previous or the next complete file,
never half of one.  Readers need no lock: the file they open is always whole.

There is deliberately no fsync: a killed process loses nothing that reached the page cache, and
a disk flush per request would serialise every worker behind the disk.  After a power cut the
file may be older or, on some file systems, empty; an unusable file is set aside and counting
restarts (see ``_quarantine``).
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import tempfile
import threading
import time

from . import metrics
from .canonical import Usage

log = logging.getLogger("gateway.usage")

COUNTERS = ("total_requests", "failed_requests", "prompt_tokens", "completion_tokens",
            "cache_read_tokens", "cache_write_tokens", "reasoning_tokens")


def _zero() -> dict:
    return dict.fromkeys(COUNTERS, 0)


SECTIONS = ("models", "days", "keys")
#: the file's extra top-level keys, for :meth:`UsageStore.history` (never in ``read()``)
HISTORY = ("day_models", "day_errors")
HISTORY_DAYS = 400          # the file keeps this many days of history (Redis: usage_days_kept)


def empty() -> dict:
    return {**_zero(), "models": {}, "days": {}}


_encoder = json.JSONEncoder(separators=(",", ":"))     # compact, so the C encoder does the work


def _encode(data: dict) -> bytes:
    return _encoder.encode(data).encode()


def _valid_bucket(bucket) -> bool:
    return isinstance(bucket, dict) and all(
        isinstance(bucket.get(k, 0), int) and not isinstance(bucket.get(k, 0), bool) for k in COUNTERS)


def _valid_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _valid_nested(days, valid_leaf) -> bool:
    """``{day: {name: leaf}}`` with every leaf passing ``valid_leaf``."""
    return isinstance(days, dict) and all(
        isinstance(per_day, dict) and all(valid_leaf(v) for v in per_day.values())
        for per_day in days.values())


def _valid(data) -> bool:
    """True for a structure this module wrote (every counter an integer, buckets mappings,
    the history sections when present nested the same way)."""
    if not _valid_bucket(data):
        return False
    for section in SECTIONS:
        buckets = data.get(section, {})
        if not isinstance(buckets, dict) or not all(_valid_bucket(b) for b in buckets.values()):
            return False
    return (_valid_nested(data.get("day_models", {}), _valid_bucket)
            and _valid_nested(data.get("day_errors", {}), _valid_count))


def _add(bucket: dict, usage: Usage, failed: bool) -> None:
    for key in COUNTERS:
        bucket.setdefault(key, 0)
    bucket["total_requests"] += 1
    bucket["failed_requests"] += 1 if failed else 0
    bucket["prompt_tokens"] += usage.input_tokens
    bucket["completion_tokens"] += usage.output_tokens
    bucket["cache_read_tokens"] += usage.cache_read_tokens
    bucket["cache_write_tokens"] += usage.cache_write_tokens
    bucket["reasoning_tokens"] += usage.reasoning_tokens


def day(now: float | None = None) -> str:
    """The UTC day a request counts in (``now`` in seconds; the current time when None)."""
    return time.strftime("%Y-%m-%d", time.gmtime(now))


def new_entry(model: str, usage: Usage | None, failed: bool = False, key: str | None = None,
              now: float | None = None, error: str | None = None) -> tuple:
    """One request as every usage backend records it: its day is fixed when it ends, so an
    increment that waits (a disk fault, a slow backend) still counts on the right day.
    ``error``: the error code it ended with (None: it succeeded), for the daily error counts."""
    return (model, usage or Usage(), failed, key, day(now), error or None)


def empty_history() -> dict:
    return {"day_models": {}, "day_errors": {}}


def apply_entry(data: dict, entry: tuple) -> None:
    """Add one request (a :func:`new_entry`) to the totals ``data``, in place; shared by every
    backend so they agree on what a record adds."""
    model, usage, failed, key, day, _error = entry
    _add(data, usage, failed)
    _add(data.setdefault("models", {}).setdefault(model, _zero()), usage, failed)
    _add(data.setdefault("days", {}).setdefault(day, _zero()), usage, failed)
    if key:
        _add(data.setdefault("keys", {}).setdefault(key, _zero()), usage, failed)


def apply_history(hist: dict, entry: tuple) -> None:
    """Add one request to the history ``hist`` (``day_models`` and ``day_errors``), in place:
    the same step as :func:`apply_entry`, so a day's models always add up to its ``days``
    bucket, and shared by every backend so they keep the same shape."""
    model, usage, failed, _key, day, error = entry
    per_day = hist.setdefault("day_models", {}).setdefault(day, {})
    _add(per_day.setdefault(model, _zero()), usage, failed)
    if error:
        codes = hist.setdefault("day_errors", {}).setdefault(day, {})
        codes[error] = codes.get(error, 0) + 1


def prune_history(hist: dict, keep_days: float = HISTORY_DAYS, now: float | None = None) -> None:
    """Drop the days older than ``keep_days`` (a file grows by a day's models each day)."""
    oldest = day((time.time() if now is None else now) - keep_days * 86400)
    for section in HISTORY:
        days = hist.setdefault(section, {})
        for old in [d for d in days if d < oldest]:
            del days[old]


def split_history(data: dict) -> dict:
    """Take the history sections out of a file's content (what ``read()`` must not show)."""
    return {section: data.pop(section, {}) for section in HISTORY}


def without_history(data: dict) -> dict:
    """A file's content as ``read()`` shows it: the history sections left out."""
    return {k: v for k, v in data.items() if k not in HISTORY}


class UsageStore:
    """The usage file (the file backend of :class:`gateway.state.UsageCounter`).  A disk fault (full, read-only, gone) loses nothing: the increments wait
    in this process's memory, are retried every few seconds and with the next request, and are
    written all at once when the file can be written again -- one log line when the fault
    starts, one when it ends, never a traceback per request."""

    RETRY_EVERY = 5.0

    def __init__(self, path: str):
        self.path = os.path.abspath(path)
        self.folder = os.path.dirname(self.path)
        self._lock_path = self.path + ".lock"
        self._thread_lock = threading.Lock()     # flock is per open file, so serialise our threads too
        self._tmp_prefix = f".{os.path.basename(self.path)}-"
        self._cleaned = False
        self._pending: list[tuple] = []          # increments not on disk yet (this process)
        self._fault: str | None = None           # what went wrong, while it lasts

    def read(self) -> dict:
        """The current totals, without locking: the file on disk is always a complete one.

        A file we cannot use reads as zeros here; only a writer, under the lock, moves it aside.
        """
        data = self._load()
        data = data if data is not None else empty()
        split_history(data)
        return self._with_pending(data, apply_entry)

    def history(self) -> dict:
        """Per day, each model's counters and the error counts by code (the last
        :data:`HISTORY_DAYS` days), from the same file as :meth:`read`, without locking."""
        data = self._load()
        hist = split_history(data) if data is not None else empty_history()
        return self._with_pending(hist, apply_history)

    def _with_pending(self, out: dict, apply) -> dict:
        """``out`` with what this worker counted during a disk fault ``apply``-ed to it."""
        with self._thread_lock:
            pending = list(self._pending)
        for entry in pending:
            apply(out, entry)
        return out

    def _load(self) -> dict | None:
        """The file's totals; an empty structure if it does not exist; None if it is unusable."""
        try:
            with open(self.path, "rb") as f:
                data = json.loads(f.read())
        except FileNotFoundError:
            return empty()
        except (ValueError, UnicodeDecodeError):
            return None
        return data if _valid(data) else None

    def _quarantine(self) -> dict:
        """A file we did not write (hand-edited, cut short by a full disk): keep it, start over."""
        aside = f"{self.path}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{time.time_ns() % 10**9}"
        try:
            os.replace(self.path, aside)
            log.error("usage file %s was not a usage file we wrote; moved it to %s and started "
                      "counting again", self.path, aside)
        except OSError as exc:
            log.error("usage file %s is unusable and could not be moved aside (%s); it will be "
                      "replaced", self.path, exc.strerror)
        return empty()

    def _clean_stale_temp_files(self) -> None:
        """Remove temp files of writers killed mid-write (called under the lock, so none is live)."""
        prefix = self._tmp_prefix
        for name in os.listdir(self.folder):
            if name.startswith(prefix) and name.endswith(".tmp"):
                try:
                    os.unlink(os.path.join(self.folder, name))
                except OSError:
                    pass

    def record(self, model: str, usage: Usage | None, failed: bool = False,
               key: str | None = None, error: str | None = None) -> None:
        """Add one request to the totals, the model's and today's (UTC) buckets, and the
        bucket of ``key`` (a key's label, never a key) when given; and to today's history
        (its model's counters, ``error``'s count), in the same file write."""
        entry = new_entry(model, usage, failed, key, error=error)
        with self._thread_lock:
            self._pending.append(entry)
            self._flush()

    def _flush(self) -> bool:
        """Write every pending increment in one update; call with ``_thread_lock`` held.

        The file is replaced whole or not at all, so after a failure none of them is on disk
        and all stay pending: nothing is lost and nothing is counted twice.
        """
        try:
            with open_private(self._lock_path) as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                if not self._cleaned:   # once per process: a new worker tidies after a killed one
                    self._clean_stale_temp_files()
                    self._cleaned = True
                data = self._load()
                if data is None:
                    data = self._quarantine()
                for entry in self._pending:
                    apply_entry(data, entry)
                    apply_history(data, entry)      # same file, same replace: always in step
                prune_history(data)
                self._write(data)
                # the lock is released when the lock file is closed
        except OSError as exc:
            metrics.state_error("usage_file")
            if self._fault is None:
                self._fault = exc.strerror or type(exc).__name__
                log.error("cannot write the usage file %s (%s): counting in memory until it "
                          "can be written", self.path, self._fault)
                threading.Thread(target=self._retry, daemon=True, name="usage-retry").start()
            return False
        if self._fault is not None:
            log.warning("the usage file %s can be written again: %d requests counted meanwhile "
                        "are in it", self.path, len(self._pending))
            self._fault = None
        self._pending.clear()
        return True

    def _retry(self) -> None:
        while True:
            time.sleep(self.RETRY_EVERY)
            with self._thread_lock:
                if not self._pending or self._flush():
                    return

    def _write(self, data: dict) -> None:
        replace_atomically(self.path, _encode(data), self._tmp_prefix)


def open_private(path: str):
    """Open (creating it mode 0600) a lock file for appending: like the data files it guards,
    nobody but the gateway's user needs to see it."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "a")


def replace_atomically(path: str, data: bytes, prefix: str) -> None:
    """Write ``path`` whole or not at all: a temporary file (mode 0600) in the same folder,
    then ``os.replace``.  Readers see the old file or the new one, never half of one."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=prefix, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
