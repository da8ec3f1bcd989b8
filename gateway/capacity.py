"""Stream slots: how many model calls one worker relays at once, and a fast "no" past that.

A gthread worker has a fixed pool of threads.  Model calls hold theirs for minutes (agents'
streams), so once every thread relays a stream, a new request would wait in the pool's queue
behind whole streams -- 6 s for the median client at twice the capacity, measured -- while
``/health`` probes time out.  Instead each worker counts its model calls against
``stream_slots`` (gunicorn runs that many threads plus a reserve, so the service endpoints
always find a thread), and a call past the limit is answered at once with 503 and
``Retry-After``: SDKs retry it, load balancers move on.  The count is per worker process; the
worker class (gateway/worker.py) reads the :class:`Board` the workers share to let a worker
with more room take new connections.
"""
from __future__ import annotations

import mmap
import os
import struct
import threading

from . import errors, metrics

#: threads beyond the stream slots, for /health, /v1/models, /usage, count_tokens, keep-alives
RESERVED_THREADS = 16
RETRY_AFTER = 2


class Slots:
    """A non-blocking counter of model calls in flight in this process."""

    def __init__(self, limit: int):
        self.limit = limit
        self.busy = 0
        self._lock = threading.Lock()
        metrics.SLOTS.set(limit)            # this worker's share of ccgw_stream_slots

    @property
    def full(self) -> bool:
        return self.busy >= self.limit

    def take(self) -> "Slot":
        """A slot, or AtCapacity at once when every one is taken."""
        with self._lock:
            if self.busy >= self.limit:
                raise errors.AtCapacity(
                    f"the gateway is relaying {self.limit} answers on this worker, its limit "
                    f"(stream_slots); retry in {RETRY_AFTER} s", retry_after=RETRY_AFTER)
            self.busy += 1
        metrics.IN_FLIGHT.inc()
        return Slot(self)


class Slot:
    """One taken slot; ``release`` may be called any number of times, it counts once."""

    __slots__ = ("_slots", "_held")

    def __init__(self, slots: Slots):
        self._slots, self._held = slots, True

    def release(self) -> None:
        slots = self._slots
        with slots._lock:
            if self._held:
                self._held = False
                slots.busy -= 1
                metrics.IN_FLIGHT.dec()


#: The slots of this worker process, for the worker class's accept decision.
current: Slots | None = None


class Board:
    """Each worker's number of connections being served, in memory shared by every worker of
    one gunicorn (made in the master, before it forks), so a worker can tell whether another
    one has more room before it takes a connection.  One cell per worker: pid and count."""

    CELLS = 128
    _CELL = struct.Struct("qq")

    def __init__(self):
        self._mem = mmap.mmap(-1, self.CELLS * self._CELL.size)     # anonymous and shared
        self._index: int | None = None
        self._pid = 0

    def _cell(self) -> int | None:
        pid = os.getpid()
        if self._pid != pid:            # first use in this worker: take a free or dead cell
            self._pid, self._index = pid, None
            for i in range(self.CELLS):
                owner, _ = self._CELL.unpack_from(self._mem, i * self._CELL.size)
                if owner == 0 or not _alive(owner):
                    self._CELL.pack_into(self._mem, i * self._CELL.size, pid, 0)
                    self._index = i
                    break
        return self._index

    def publish(self, active: int) -> None:
        i = self._cell()
        if i is not None:
            self._CELL.pack_into(self._mem, i * self._CELL.size, self._pid, active)

    def least_other(self) -> int | None:
        """The fewest connections another live worker serves (None: no other worker)."""
        mine = self._cell()
        best = None
        for i in range(self.CELLS):
            if i == mine:
                continue
            owner, active = self._CELL.unpack_from(self._mem, i * self._CELL.size)
            if owner and (best is None or active < best) and _alive(owner):
                best = active
        return best


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


#: Made when this module is first imported -- by gunicorn.conf.py, in the master -- so every
#: worker forked from it shares the same memory.
board = Board()
