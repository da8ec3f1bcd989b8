"""Which route each Command Code key takes in ``auto`` mode, remembered by every worker.

``auto`` tries the Provider API first.  A Go-plan key answers ``403 upgrade_required`` there, and
would do so on every request, so the first such answer is written down: the key is *CLI-only*
and goes straight to the CLI route from then on, in every worker process.  The record is a small
JSON file beside the usage file, ``{label: [route, unix time]}``, with labels from
:func:`gateway.keys.label` (never keys), replaced atomically under an exclusive lock.

The first request of a key whose route is unknown is made under that same lock, so however many
workers and threads start at once, exactly one of them asks the Provider API; the others wait
for its answer (response headers, not the whole answer) and read the outcome.  A CLI-only record
is rechecked after a day, so a key whose plan was upgraded moves to the Provider API.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import time
from contextlib import contextmanager

from .usage import open_private, replace_atomically

log = logging.getLogger("gateway.key_routes")

CLI, PROVIDER = "cli", "provider"
RECHECK_SECONDS = 24 * 3600


def route_of(entry: tuple[str, float] | None, now: float) -> str | None:
    """The route a record ``(route, unix time)`` stands for at ``now``: None when there is no
    record or when it is a CLI-only one old enough to recheck (every backend applies this)."""
    if entry is None:
        return None
    route, at = entry
    if route == CLI and now - at > RECHECK_SECONDS:
        return None
    return route


class KeyRoutes:
    """The file backend of :class:`gateway.state.RouteMemory`.

    ``clock`` (unix seconds) is read when a record is written and when its age is checked; it
    is looked up at each call, so tests may also patch ``time.time``.
    """

    def __init__(self, path: str, clock=None):
        self.path = os.path.abspath(path)
        self._clock = clock or (lambda: time.time())
        self._lock_path = self.path + ".lock"
        self._thread_lock = threading.Lock()
        self._known: dict[str, tuple[str, float]] = {}
        self._stamp: tuple | None = None       # (inode, mtime, size) of the file last read

    def get(self, label: str, fresh: bool = False) -> str | None:
        """The remembered route of ``label`` (None: unknown, or a CLI-only record to recheck).

        A dict lookup when this process knows the key; otherwise (or when ``fresh``) the file
        is re-read if another process changed it.
        """
        entry = None if fresh else self._known.get(label)
        if entry is None:
            self._reload(force=fresh)
            entry = self._known.get(label)
        return route_of(entry, self._clock())

    def _reload(self, force: bool = False) -> None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)     # every write is a new inode
        if stamp == self._stamp and not force:
            return
        try:
            with open(self.path, "rb") as f:
                data = json.loads(f.read())
        except (OSError, ValueError):
            log.warning("key route file %s is unreadable; it will be rewritten", self.path)
            return
        if isinstance(data, dict):
            self._known = {k: (v[0], float(v[1])) for k, v in data.items()
                           if isinstance(v, list) and len(v) == 2 and v[0] in (CLI, PROVIDER)
                           and isinstance(v[1], (int, float))}
        self._stamp = stamp

    @contextmanager
    def probing(self):
        """Exclusive across every thread and worker: hold it while finding out a key's route."""
        with self._thread_lock, open_private(self._lock_path) as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def remember(self, label: str, route: str) -> None:
        """Record ``label``'s route; call inside :meth:`probing`."""
        self._reload(force=True)
        self._known[label] = (route, self._clock())
        data = {k: [r, int(at)] for k, (r, at) in self._known.items()}
        replace_atomically(self.path, json.dumps(data, separators=(",", ":")).encode(),
                           ".key-routes-")
