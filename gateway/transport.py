"""Transport: the one HTTP connection pool per worker process, and raw streaming reads.

It only moves bytes: it knows nothing of Command Code's formats, nor of what a client is told
when something fails.  What goes wrong is raised as one of the neutral exceptions below
(:class:`TransportError` and its kinds), mapped from requests' and urllib3's by class in one
table; the routes turn them into what a client sees, in Command Code's words.
Policy here is deliberately small:

* one ``requests.Session`` per process, created after gunicorn forks, so connections to Command
  Code are reused across requests and never shared between processes;
* ``trust_env`` off, with proxies read from the environment once at startup: with it on,
  ``requests`` re-reads the environment and ``~/.netrc`` on every request, and a netrc entry
  would silently replace our ``Authorization`` header;
* connect failures are retried twice (nothing reached upstream yet); nothing else is retried,
  because the client's SDK already retries and a doubled retry only multiplies waiting;
* requests go straight to the session's transport adapter, from a request prepared once per
  URL: ``Session.request`` would re-parse the URL and merge cookies, hooks and settings we never
  use on every call, which costs about a quarter of a millisecond on the hot path.
"""
from __future__ import annotations

import os
import threading

import requests
import urllib3.exceptions
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

_ERROR_BODY_LIMIT = 64 * 1024
_READ_SIZE = 64 * 1024


# ---- what can go wrong, in neutral terms -------------------------------------------------------

class TransportError(Exception):
    """A request or a response body that could not be moved; ``cause`` names the library's
    exception class (for messages: the exception itself may quote a URL or a header)."""

    def __init__(self, cause: str = ""):
        super().__init__(cause)
        self.cause = cause


class ConnectFailed(TransportError):
    """No HTTP answer at all (refused, DNS, TLS, reset before the headers); ``where`` is the
    scheme and host only, never the path or query."""

    def __init__(self, cause: str, where: str):
        super().__init__(cause)
        self.where = where


class TimedOut(TransportError):
    """Nothing arrived for longer than the timeout (before the headers, or inside the body)."""


class ConnectTimedOut(TimedOut):
    """The connection itself was not accepted in time."""


class BrokeOff(TransportError):
    """The body stopped arriving for a reason other than a timeout (reset, bad chunking...)."""


class StatusError(TransportError):
    """An answer whose status is not 2xx; ``body`` is at most 64 KiB of it (maybe empty)."""

    def __init__(self, status: int, body: bytes):
        super().__init__(f"HTTP {status}")
        self.status = status
        self.body = body


class NotJSON(TransportError):
    """A 2xx answer to :meth:`Transport.get_json` that does not parse as JSON; ``path`` is the
    URL's path (without scheme and host)."""

    def __init__(self, path: str):
        super().__init__("not JSON")
        self.path = path


#: requests' and urllib3's failures -> ours, by class; first row wins.  Each row is tested
#: against the whole chain of wrapped exceptions: requests wraps urllib3's inside a
#: ConnectionError(MaxRetryError(reason)), so with ``read=0`` retries an upstream that accepts
#: and never answers comes back as a "ConnectionError" whose reason is a read timeout.
#: Whatever no row matches is the caller's ``otherwise`` (ConnectFailed or BrokeOff).
_FAILURES: tuple[tuple[tuple[type[BaseException], ...], type[TransportError]], ...] = (
    # a refused or unresolvable host: first, because urllib3 2 makes NewConnectionError a
    # subclass of ConnectTimeoutError, and it is no timeout (requests makes the same exception)
    ((urllib3.exceptions.NewConnectionError, urllib3.exceptions.NameResolutionError),
     ConnectFailed),
    ((requests.exceptions.ConnectTimeout, urllib3.exceptions.ConnectTimeoutError), ConnectTimedOut),
    ((requests.exceptions.Timeout, urllib3.exceptions.TimeoutError, TimeoutError), TimedOut),
)


def _chain(exc: BaseException):
    """``exc`` and what it wraps: MaxRetryError's reason, the first argument, the causes."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        inner = getattr(exc, "reason", None)
        if not isinstance(inner, BaseException) and exc.args and isinstance(exc.args[0], BaseException):
            inner = exc.args[0]
        exc = inner if isinstance(inner, BaseException) else (exc.__cause__ or exc.__context__)


def _neutral(exc: BaseException, otherwise: type[TransportError], *args) -> TransportError:
    """Our exception for ``exc``: the first :data:`_FAILURES` row it matches, else ``otherwise``."""
    chain = list(_chain(exc))
    for classes, ours in _FAILURES:
        if any(isinstance(e, classes) for e in chain):
            if ours is ConnectFailed:
                return ConnectFailed(type(exc).__name__, *(args or ("Command Code",)))
            return ours(type(exc).__name__)
    return otherwise(type(exc).__name__, *args)


def _host(url: str) -> str:
    return "/".join(url.split("/", 3)[:3])


# ---- the pool ----------------------------------------------------------------------------------

class Transport:
    """Sends requests to Command Code and hands back raw streaming responses."""

    def __init__(self, connect_timeout: float, idle_timeout: float, pool_size: int = 32):
        self.timeout = (connect_timeout, idle_timeout)
        self._pool_size = pool_size
        self._proxies = requests.utils.get_environ_proxies("https://api.commandcode.ai")
        self._lock = threading.Lock()
        self._pid = None
        self._session = None
        self._adapter = None
        self._prepared: dict[str, requests.PreparedRequest] = {}

    @property
    def session(self) -> requests.Session:
        """The process's session; rebuilt once in a forked child (a pool must not cross a fork)."""
        if self._pid != os.getpid():
            with self._lock:
                if self._pid != os.getpid():
                    s = requests.Session()
                    s.trust_env = False
                    s.proxies.update(self._proxies)
                    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=self._pool_size,
                                          max_retries=Retry(total=None, connect=2, read=0, status=0,
                                                            other=0, redirect=0, backoff_factor=0.1,
                                                            allowed_methods=None))
                    s.mount("http://", adapter)
                    s.mount("https://", adapter)
                    self._session, self._adapter, self._pid = s, adapter, os.getpid()
        return self._session

    def _prepare(self, url: str, headers: dict, body: bytes) -> requests.PreparedRequest:
        template = self._prepared.get(url)
        if template is None:
            template = self.session.prepare_request(requests.Request("POST", url))
            template.headers.pop("Content-Length", None)
            self._prepared[url] = template
        prep = template.copy()
        prep.headers.update(headers)
        prep.headers["Content-Length"] = str(len(body))
        prep.body = body
        return prep

    def post_stream(self, url: str, headers: dict, body: bytes) -> requests.Response:
        """POST and return the open response once its headers arrived.

        Raises :class:`StatusError` for a non-2xx answer (its body read, at most 64 KiB), else
        :class:`ConnectTimedOut`, :class:`TimedOut` or :class:`ConnectFailed`.
        """
        self.session                # (re)built in this process before its adapter is used
        prep = self._prepare(url, headers, body)
        try:
            resp = self._adapter.send(prep, stream=True, timeout=self.timeout,
                                      proxies=self._proxies)
        except requests.exceptions.RequestException as exc:
            raise _neutral(exc, ConnectFailed, _host(url)) from None
        if resp.status_code >= 300:
            try:
                body = resp.raw.read(_ERROR_BODY_LIMIT, decode_content=True)
            except Exception:       # the error body is best effort; the status still counts
                body = b""
            finally:
                resp.close()
            raise StatusError(resp.status_code, body)
        return resp

    def get_json(self, url: str, headers: dict, timeout: float = 10.0):
        """GET a small JSON document (account and model-list endpoints; not the hot path).

        Raises as :meth:`post_stream` does, or :class:`NotJSON`.
        """
        try:
            resp = self.session.get(url, headers=headers, timeout=(self.timeout[0], timeout))
        except requests.exceptions.RequestException as exc:
            raise _neutral(exc, ConnectFailed, _host(url)) from None
        with resp:
            if resp.status_code >= 300:
                raise StatusError(resp.status_code, resp.content[:_ERROR_BODY_LIMIT])
            try:
                return resp.json()
            except ValueError:
                raise NotJSON(url.split("/", 3)[-1]) from None


def iter_chunks(resp: requests.Response):
    """Yield body bytes as they arrive (one socket read each), never waiting to fill a buffer.

    Raises :class:`TimedOut` when the body went silent too long, else :class:`BrokeOff`.
    """
    raw = resp.raw
    try:
        while True:
            chunk = raw.read1(_READ_SIZE, decode_content=True)
            if not chunk:
                return
            yield chunk
    except Exception as exc:        # whatever a broken body raises (urllib3, socket, or a close)
        raise _neutral(exc, BrokeOff) from None


def abort(resp: requests.Response) -> None:
    """Close ``resp`` from any thread, waking a reader blocked on its socket.

    ``close()`` alone does not wake a thread blocked in ``recv`` on Linux; ``shutdown`` does.
    """
    try:
        resp.raw.shutdown()         # urllib3's own SHUT_RD on the live socket
    except Exception:               # already released or closed: nothing left to wake
        pass
    try:
        resp.close()
    except Exception:
        pass
