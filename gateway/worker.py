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

import errno
import json
import resource
import selectors
import signal
import threading
import time
from datetime import timedelta
from functools import partial

from gunicorn import http, util
from gunicorn.http import errors as http_errors
from gunicorn.http.wsgi import Response, default_environ
from gunicorn.http2 import negotiation
from gunicorn.workers.gthread import TConn, ThreadWorker

from . import capacity, relay
from .arrival import Arrival, PacedUnreader

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



#: what a client that stopped halfway through its request gets before the connection closes
_TOO_SLOW = json.dumps({"error": {
    "message": "the request did not arrive in time: send the request line and headers within "
               "a few seconds and the body without pausing",
    "type": "invalid_request_error", "code": "request_timeout", "param": None}}).encode()
_TOO_SLOW = (b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n"
             b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(_TOO_SLOW)
             + _TOO_SLOW)
# accept() errors that mean "not now" rather than "this worker is broken": out of file
# descriptors (a flood of connections over the process's limit), or the client already left
_ACCEPT_LATER = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
#: the open-files limit a worker raises itself to, when the host's hard limit allows
_NOFILE = 65536


class GatewayWorker(JsonErrorWorker):
    """The worker gunicorn.conf.py names: JSON parse errors, requests gathered before a thread
    takes them, and connections spread by load.

    **Arriving requests.**  A connection, new or kept alive, waits in the main loop (no thread)
    until its request line, headers and the start of its body are in (gateway/arrival.py); one
    too slow is dropped there, so stalled clients never hold the threads others need.  TLS
    connections (a gateway serving TLS itself rather than behind nginx) keep gunicorn's own
    handling: their bytes cannot be read before the handshake.

    **Spreading by load.**  Every worker waits on the same listening socket and the kernel wakes them all; whoever calls
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
        self._arriving: dict[TConn, Arrival] = {}
        super().__init__(*args, **kwargs)

    @property
    def _serving(self) -> int:
        """Connections being served: every open one but the idle keep-alives and those whose
        request is still arriving."""
        return self.nr_conns - len(self.keepalived_conns) - len(self._arriving)

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
                    self._pause()
                    return
        self._waited = 0
        try:
            sock, addr = listener.accept()
        except OSError as exc:
            if exc.errno in _ACCEPT_LATER:        # try again after the loop's next turn
                self.log.warning("Cannot accept a connection now: %s", exc)
                self._pause()
            elif exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        conn = TConn(self.cfg, sock, addr, listener.getsockname())      # non-blocking
        if self.cfg.is_ssl or negotiation.prior_knowledge_allowed(self.cfg, addr):
            sock.setblocking(True)
            self.enqueue_req(conn)
            return
        self._await(conn)

    def _pause(self):
        """Stop accepting for ``_PAUSE`` seconds."""
        self._paused_until = time.monotonic() + self._PAUSE
        self.set_accept_enabled(False)
        # the run loop re-enables accepting when it next wakes: at the pause's end
        timer = threading.Timer(self._PAUSE, self.method_queue.defer, (lambda: None,))
        timer.daemon = True
        timer.start()

    # -- arriving requests (gateway/arrival.py) ----------------------------------------------

    def on_client_socket_readable(self, conn, client):
        """A kept-alive connection's next request begins: gather it like a new one's."""
        if self.cfg.is_ssl:
            return super().on_client_socket_readable(conn, client)
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self._await(conn)

    def _await(self, conn):
        self._arriving[conn] = Arrival(time.monotonic())
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_arriving, conn))

    def _on_arriving(self, conn, sock):
        try:
            data = sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        arrival = self._arriving[conn]
        if not data:                    # the client left (or never sent anything)
            self._drop(conn)
        elif arrival.feed(data, time.monotonic()):
            self._hand_over(conn, arrival)

    def _hand_over(self, conn, arrival):
        """The request is in: a thread takes the connection, reading first what is gathered."""
        del self._arriving[conn]
        self.poller.unregister(conn.sock)
        if conn.parser is None:
            conn.parser = http.get_parser(self.cfg, conn.sock, conn.client)
            conn.parser.unreader = PacedUnreader(conn.sock)
        conn.parser.unreader.unread(bytes(arrival.buf))
        conn.data_ready = True
        conn.sock.setblocking(True)
        self.enqueue_req(conn)

    def _drop(self, conn, late: str | None = None):
        """Close a connection whose request is still arriving; one ``late`` with a request it
        had begun to send gets a 408 first (best effort: it may not be reading)."""
        arrival = self._arriving.pop(conn)
        try:
            self.poller.unregister(conn.sock)
        except (KeyError, ValueError, OSError):
            pass
        self.nr_conns -= 1
        if late and arrival.buf:
            self.log.info("Dropped a connection from %s: its %s did not arrive in time",
                          conn.client[0] if isinstance(conn.client, tuple) else conn.client,
                          late)
            try:
                conn.sock.send(_TOO_SLOW)
            except OSError:
                pass
        conn.close()

    def murder_pending(self):
        """Every turn of the loop (and while stopping): also drop the arrivals that are late."""
        super().murder_pending()
        if self._arriving:
            now = time.monotonic()
            for conn, arrival in list(self._arriving.items()):
                late = arrival.overdue(now)
                if late:
                    self._drop(conn, late)

    def handle(self, conn):
        """In the thread: what it reads of this request is paced from now."""
        unreader = conn.parser.unreader if conn.parser is not None else None
        if isinstance(unreader, PacedUnreader):
            unreader.restart(time.monotonic())
        return super().handle(conn)

    def init_process(self):
        """Allow this process as many open files as the host lets it: every connection, waiting
        or served, and every upstream call holds one, and the soft limit many hosts start
        services with (1,024) is below what ``worker_connections`` admits.  (Go and nginx's
        ``worker_rlimit_nofile`` do the same.)"""
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        wanted = _NOFILE if hard == resource.RLIM_INFINITY else min(hard, _NOFILE)
        if soft != resource.RLIM_INFINITY and soft < wanted:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            except (ValueError, OSError) as exc:
                self.log.warning("Cannot raise the open-files limit from %s: %s", soft, exc)
        super().init_process()

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
