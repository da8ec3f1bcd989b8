"""The gunicorn worker the gateway runs (``worker_class`` in gunicorn.conf.py): gthread's, with
JSON in place of gunicorn's HTML error pages.

A request gunicorn's own parser rejects (a bad request line, ``Content-Length: abc``, too many
or too long headers, a malformed chunk) never reaches the app: gunicorn answers it with an HTML
page.  The gateway's clients read JSON errors, so this worker answers those in the OpenAI
envelope (the only one possible before the path is known), with the status gunicorn chose —
400, or 414, 417, 431, 501 — and gunicorn's one warning line in the log, no traceback.
Anything else (the app's own faults) goes to gunicorn's handling as before.

It also keeps gunicorn from writing a second answer on a connection: when the app answered
without reading a body (a 401, a 404) and that body then proves malformed or cut short while
gunicorn discards it, the response has already gone out, so the connection is just closed.
"""
from __future__ import annotations

import json
import signal
import threading
import time
from datetime import timedelta

from gunicorn import util
from gunicorn.http import errors as http_errors
from gunicorn.http.wsgi import Response, default_environ
from gunicorn.workers.gthread import ThreadWorker

from . import capacity, relay

#: seconds before gunicorn's graceful timeout by which every stream has ended with its error
#: event and been counted, so the kill that follows cuts nothing mid-way
_STOP_MARGIN = 3.0

# (exception class, status, reason, code): the first that matches; any other parse error is 400
_STATUSES = (
    (http_errors.LimitRequestLine, 414, "URI Too Long", "request_line_too_long"),
    (http_errors.LimitRequestHeaders, 431, "Request Header Fields Too Large",
     "request_headers_too_large"),
    (http_errors.ExpectationFailed, 417, "Expectation Failed", "expectation_failed"),
    (http_errors.UnsupportedTransferCoding, 501, "Not Implemented", "unsupported_transfer_coding"),
    (http_errors.ForbiddenProxyRequest, 403, "Forbidden", "forbidden_proxy_request"),
)
# parse exceptions that are the server's fault, not the client's: gunicorn's 500 stays
_SERVER_FAULTS = tuple(getattr(http_errors, name) for name in (
    "ConfigurationProblem", "InvalidResponseHeader", "InvalidResponseHeaderName")
    if hasattr(http_errors, name))


class JsonErrorWorker(ThreadWorker):
    """gunicorn's gthread worker; parse errors are answered in JSON (see the module)."""

    def handle_error(self, req, client, addr, exc):
        if not isinstance(exc, http_errors.ParseException) or isinstance(exc, _SERVER_FAULTS):
            return super().handle_error(req, client, addr, exc)
        status, reason, code = next(((s, r, c) for cls, s, r, c in _STATUSES
                                     if isinstance(exc, cls)),
                                    (400, "Bad Request", "invalid_http_request"))
        addr = addr or ("", -1)         # a unix socket
        self.log.warning("Invalid request from ip=%s: %s", addr[0], exc)
        body = json.dumps({"error": {
            "message": f"the HTTP request could not be parsed: {str(exc)[:300]}",
            "type": "invalid_request_error", "code": code, "param": None}}).encode()
        if req is None and isinstance(exc, http_errors.InvalidHeader):
            req = getattr(exc, "req", None)     # the request line was read: log it
        if req is not None:
            try:
                environ = default_environ(req, client, self.cfg)
                environ["REMOTE_ADDR"], environ["REMOTE_PORT"] = addr[0], str(addr[1])
                resp = Response(req, client, self.cfg)
                resp.status, resp.response_length = f"{status} {reason}", len(body)
                self.log.access(resp, req, environ, timedelta(0))
            except Exception:
                self.log.debug("Failed to log the refused request.")
        head = (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
        try:
            util.write_nonblock(client, head.encode("latin-1") + body)
        except Exception:
            self.log.debug("Failed to send error message.")
        return None

    def _keepalive_after(self, conn, keepalive):
        # gunicorn discards the unread body here, after the response went out (gunicorn 24+)
        try:
            return super()._keepalive_after(conn, keepalive)
        except (http_errors.ParseException, http_errors.NoMoreData) as exc:
            self.log.debug("Closing the connection: its unread body is malformed (%s)", exc)
            return False



class GatewayWorker(JsonErrorWorker):
    """The worker gunicorn.conf.py names: JSON parse errors, and connections spread by load.

    Every worker waits on the same listening socket and the kernel wakes them all; whoever calls
    ``accept`` first gets the connection.  Left alone, a burst of long streams piles a few more
    onto one worker than its ``stream_slots`` while the other has room, and those get 503.  So
    a worker within ``_NEAR_FULL`` of its slots (counting connections being served, not idle
    keep-alives) that sees, on the board the workers share (:class:`capacity.Board`), another
    worker serving fewer, stops accepting for ``_PAUSE`` seconds: that worker takes the waiting
    connection meanwhile.  If it is still waiting after ``_MAX_PAUSES`` pauses, the other one
    cannot take it, and this one accepts it after all: its reserve threads answer /health at
    once and a model call gets its 503 if it is full.
    """

    _NEAR_FULL = 8
    _PAUSE = 0.03
    _MAX_PAUSES = 3         # then accept anyway: the board says another has room, but it is slow

    def __init__(self, *args, **kwargs):
        self._paused_until = 0.0
        self._waited = 0           # pauses in a row for the connection now waiting
        self._listeners_closed = False
        super().__init__(*args, **kwargs)

    @property
    def _serving(self) -> int:
        """Connections being served: every open one but the idle keep-alives."""
        return self.nr_conns - len(self.keepalived_conns)

    @property
    def worker_connections(self):
        """gthread accepts while ``nr_conns < worker_connections``: 0 during a pause."""
        return 0 if time.monotonic() < self._paused_until else self._connections

    @worker_connections.setter
    def worker_connections(self, value):
        self._connections = value

    def notify(self):
        """The loop's heartbeat (every event batch, at least once a second): also publish how
        many connections this worker serves, for the others' accept decisions."""
        super().notify()
        capacity.board.publish(self._serving)

    def accept(self, listener):
        slots = capacity.current
        if slots is not None:
            active = self._serving
            capacity.board.publish(active)
            if active >= slots.limit - self._NEAR_FULL and self._waited < self._MAX_PAUSES:
                other = capacity.board.least_other()
                if other is not None and other < active:     # another worker has more room
                    self._waited += 1
                    self._paused_until = time.monotonic() + self._PAUSE
                    self.set_accept_enabled(False)
                    # the run loop re-enables accepting when it next wakes: at the pause's end
                    timer = threading.Timer(self._PAUSE, self.method_queue.defer, (lambda: None,))
                    timer.daemon = True
                    timer.start()
                    return
        self._waited = 0
        super().accept(listener)

    # -- stopping --------------------------------------------------------------------------

    def init_signals(self):
        """SIGINT stops gracefully too: it is Fly's default kill signal (and Ctrl-C's), and
        gunicorn would otherwise treat it as a quick stop that cuts every stream."""
        super().init_signals()
        signal.signal(signal.SIGINT, self.handle_exit)

    def handle_exit(self, sig, frame):
        """Stop: close the listening sockets at once (new connections are refused, so a load
        balancer moves on, instead of waiting in the backlog), let streams finish, and end
        those still running shortly before the graceful timeout with their error event."""
        if self.alive:
            relay.stop_by = time.monotonic() + max(0.5, self.cfg.graceful_timeout - _STOP_MARGIN)
            self.set_accept_enabled(False)
            self._listeners_closed = True
            for listener in self.sockets:
                listener.close()
        super().handle_exit(sig, frame)

    def set_accept_enabled(self, enabled):
        """Never again once the listeners are closed (a stop can come while the worker boots,
        before its loop has enabled accepting)."""
        if enabled and self._listeners_closed:
            return
        super().set_accept_enabled(enabled)
