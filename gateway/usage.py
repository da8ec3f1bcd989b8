"""The usage store: token totals in one JSON file shared by every worker process and thread.

Each request updates the file once, at its end, under an exclusive ``fcntl`` lock on a side
lock file; the new content is written to a temporary file in the same folder, flushed to disk
and moved over the old one with ``os.replace``.  So no increment is lost whatever the number of
workers and threads, and a kill -9 at any moment leaves either the previous or the next
complete file, never half of one.  Readers need no lock: the file they open is always whole.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import tempfile
import threading
import time

from .canonical import Usage

log = logging.getLogger("gateway.usage")

COUNTERS = ("total_requests", "failed_requests", "prompt_tokens", "completion_tokens",
            "cache_read_tokens", "cache_write_tokens", "reasoning_tokens")


def _zero() -> dict:
    return dict.fromkeys(COUNTERS, 0)


def empty() -> dict:
    return {**_zero(), "models": {}, "days": {}}


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


class UsageStore:
    def __init__(self, path: str):
        self.path = os.path.abspath(path)
        self.folder = os.path.dirname(self.path)
        self._lock_path = self.path + ".lock"
        self._thread_lock = threading.Lock()     # flock is per open file, so serialise our threads too

    def read(self) -> dict:
        """The current totals (a fresh structure when the file does not exist yet)."""
        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            return empty()
        except ValueError:
            return self._quarantine()
        return data if isinstance(data, dict) else self._quarantine()

    def _quarantine(self) -> dict:
        """A file we did not write (hand-edited, truncated by a full disk): keep it aside, start over."""
        aside = f"{self.path}.corrupt-{int(time.time())}"
        try:
            os.replace(self.path, aside)
            log.error("usage file %s was not valid JSON; moved it to %s", self.path, aside)
        except OSError:
            pass
        return empty()

    def record(self, model: str, usage: Usage | None, failed: bool = False) -> None:
        """Add one request to the totals, the model's and today's (UTC) buckets."""
        usage = usage or Usage()
        day = time.strftime("%Y-%m-%d", time.gmtime())
        with self._thread_lock, open(self._lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            data = self.read()
            _add(data, usage, failed)
            _add(data.setdefault("models", {}).setdefault(model, _zero()), usage, failed)
            _add(data.setdefault("days", {}).setdefault(day, _zero()), usage, failed)
            self._write(data)
            # the lock is released when the lock file is closed

    def _write(self, data: dict) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".usage-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=1, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
