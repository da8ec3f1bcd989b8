"""Relaying an upstream stream to a client: keep-alives in silences, and stopping when either side goes.

A blocking socket read cannot also watch the clock, so the upstream is read on a small helper
thread and handed over through a queue, one batch of events per network read.  The request
thread waits on that queue with a timeout: when upstream is silent it can send a keep-alive
(so proxies and clients keep the stream open through minutes of reasoning) and notice that the
client has gone away, in which case the upstream response is closed at once.
"""
from __future__ import annotations

import os
import queue
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Union

from . import errors
from .canonical import Event, Finish
from .upstream.base import UpstreamStream     # batches of events, one per read; abort()


#: ``() -> bool``: True once the client has closed its connection.
ClientGone = Callable[[], bool]

#: Yielded by :func:`pump` after ``interval`` seconds without upstream events.
HEARTBEAT = object()

#: When this worker must have ended every relay (``time.monotonic()``), set by the worker when
#: it is told to stop: a stream still running then ends with the codec's error event and counts
#: as failed, instead of being cut mid-chunk when gunicorn's graceful timeout kills the process.
stop_by: float = float("inf")
_END = object()
_POLL = 1.0     # how often a silent stream checks whether the client is still there
#: how often a flowing one does: a whole (non-streamed) answer writes nothing to the client
#: until it is complete, so only this check notices a client that left while upstream talks
_GONE_CHECK = 0.5


class _ReaderPool:
    """Daemon threads kept for reuse: starting a thread per request costs more than a hand-over.

    A thread is started only when none is idle, so concurrency is never capped; daemon threads
    never hold up a worker's exit while blocked on a silent upstream.
    """

    def __init__(self):
        self._pid = os.getpid()
        self._tasks: queue.SimpleQueue = queue.SimpleQueue()
        self._idle = 0
        self._lock = threading.Lock()

    def submit(self, fn) -> None:
        if self._pid != os.getpid():    # forked: the parent's idle threads do not exist here
            self.__init__()
        with self._lock:
            if self._idle:
                self._idle -= 1
                self._tasks.put(fn)
                return
        threading.Thread(target=self._work, args=(fn,), name="upstream-reader", daemon=True).start()

    def _work(self, fn) -> None:
        while True:
            fn()                    # never raises: pump's reader hands every exception over
            with self._lock:
                self._idle += 1
            fn = self._tasks.get()


_readers = _ReaderPool()


def client_gone_checker(environ: dict) -> ClientGone | None:
    """A cheap ``() -> bool`` telling whether the client closed its connection, or None.

    gunicorn exposes the client socket as ``gunicorn.socket``; a readable socket whose peek
    returns no bytes has been closed by the peer.
    """
    sock = environ.get("gunicorn.socket")
    if sock is None:
        return None

    def gone() -> bool:
        try:
            readable, _, _ = select.select([sock], [], [], 0)
            if not readable:
                return False
            return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True
    return gone


def pump(stream: UpstreamStream, interval: float,
         client_gone: ClientGone | None = None) -> Iterator[Union[Event, object]]:
    """Iterate ``stream`` (an iterable of event lists with ``abort()``) on a reader thread.

    Yields events one by one, or :data:`HEARTBEAT` after ``interval`` seconds of silence.  An
    exception raised upstream is re-raised here.  If the consumer stops early (client gone,
    or it closes this generator before the end) the upstream is aborted, unless the stream
    already delivered its last event and is only being drained for connection reuse.
    """
    q: queue.SimpleQueue = queue.SimpleQueue()

    def read():
        try:
            for batch in stream:
                q.put(batch)
                time.sleep(0)       # let the consumer take the GIL now, not after the next read
            q.put(_END)
        except BaseException as exc:        # handed to the consumer, which decides
            q.put(exc)

    _readers.submit(read)
    wait = min(_POLL, interval)
    last = checked = time.monotonic()
    finished = False
    try:
        while True:
            if time.monotonic() >= stop_by:
                raise errors.ShuttingDown("the gateway is restarting and could not finish this "
                                          "answer in time; send the request again")
            try:
                item = q.get(timeout=wait)
            except queue.Empty:
                if client_gone is not None and client_gone():
                    return
                now = time.monotonic()
                if now - last >= interval:
                    last = now
                    yield HEARTBEAT
                continue
            if item is _END:
                finished = True
                return
            if isinstance(item, BaseException):
                finished = True
                raise item
            last = time.monotonic()
            if isinstance(item[-1], Finish):
                finished = True         # whatever follows is draining, not worth aborting
            elif client_gone is not None and last - checked >= _GONE_CHECK:
                checked = last
                if client_gone():
                    return
            yield from item
    finally:
        if not finished:
            stream.abort()
