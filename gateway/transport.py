"""Transport: the one HTTP connection pool per worker process, and raw streaming reads.

Kept apart from translation (which never touches sockets) and from session policy decisions
made elsewhere.  Policy here is deliberately small:

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
import socket
import threading

import requests
import urllib3.exceptions
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from . import errors
from .upstream import failures

_ERROR_BODY_LIMIT = 64 * 1024
_READ_SIZE = 64 * 1024


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
        """POST and return the open response once its headers arrived; raise on any failure.

        A non-2xx answer is read (at most 64 KiB) and turned into the matching GatewayError.
        """
        self.session                # (re)built in this process before its adapter is used
        prep = self._prepare(url, headers, body)
        try:
            resp = self._adapter.send(prep, stream=True, timeout=self.timeout,
                                      proxies=self._proxies)
        except requests.exceptions.RequestException as exc:
            raise _unreachable(exc, url) from None
        if resp.status_code >= 300:
            try:
                body = resp.raw.read(_ERROR_BODY_LIMIT, decode_content=True)
            except Exception:       # the error body is best effort; the status still counts
                body = b""
            finally:
                resp.close()
            raise failures.from_http(resp.status_code, body)
        return resp

    def get_json(self, url: str, headers: dict, timeout: float = 10.0):
        """GET a small JSON document (account and model-list endpoints; not the hot path)."""
        try:
            resp = self.session.get(url, headers=headers, timeout=(self.timeout[0], timeout))
        except requests.exceptions.RequestException as exc:
            raise _unreachable(exc, url) from None
        with resp:
            if resp.status_code >= 300:
                raise failures.from_http(resp.status_code, resp.content[:_ERROR_BODY_LIMIT])
            try:
                return resp.json()
            except ValueError:
                raise errors.UpstreamError(f"Command Code answered {url.split('/', 3)[-1]} "
                                           "with something that is not JSON") from None


#: What a request that got no HTTP answer means, by the class of the innermost exception
#: (requests wraps urllib3's inside a ConnectionError(MaxRetryError(reason)): with ``read=0``
#: retries an upstream that accepts and never answers comes back as a "ConnectionError" whose
#: reason is a read timeout).  First match wins.
_NO_ANSWER = (
    ((requests.exceptions.ConnectTimeout, urllib3.exceptions.ConnectTimeoutError),
     errors.UpstreamTimeout, "Command Code did not accept the connection in time"),
    ((requests.exceptions.Timeout, urllib3.exceptions.TimeoutError, socket.timeout, TimeoutError),
     errors.UpstreamTimeout, "Command Code did not answer in time"),
)


def _reasons(exc: BaseException):
    """``exc`` and what it wraps: MaxRetryError's reason, the first argument, the causes."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        inner = getattr(exc, "reason", None)
        if not isinstance(inner, BaseException) and exc.args and isinstance(exc.args[0], BaseException):
            inner = exc.args[0]
        exc = inner if isinstance(inner, BaseException) else (exc.__cause__ or exc.__context__)


def _unreachable(exc: requests.exceptions.RequestException, url: str) -> errors.GatewayError:
    """The gateway error for a request that got no HTTP answer (never names more than the host)."""
    for classes, error, message in _NO_ANSWER:
        if any(isinstance(e, classes) for e in _reasons(exc)):
            return error(message)
    where = "/".join(url.split("/", 3)[:3])
    return errors.UpstreamError(f"cannot reach Command Code at {where} ({type(exc).__name__})")


def iter_events(resp: requests.Response, decoder):
    """Lists of canonical events from ``resp``'s body through ``decoder`` (``feed``/``end``/
    ``done``), one list per network read that completed an event; the response is closed after.

    After the final event the body is still read to its end, so the connection goes back to
    the pool instead of being dropped.
    """
    try:
        for chunk in iter_chunks(resp):
            events = decoder.feed(chunk)
            if events:
                yield events
        if not decoder.done:
            events = decoder.end()
            if events:
                yield events
    finally:
        resp.close()


def iter_chunks(resp: requests.Response):
    """Yield body bytes as they arrive (one socket read each), never waiting to fill a buffer."""
    raw = resp.raw
    try:
        while True:
            chunk = raw.read1(_READ_SIZE, decode_content=True)
            if not chunk:
                return
            yield chunk
    except Exception as exc:
        if any(isinstance(e, _NO_ANSWER[1][0]) for e in _reasons(exc)):
            raise errors.UpstreamTimeout("Command Code went silent for longer than "
                                         "commandcode.idle_timeout") from None
        raise errors.UpstreamError(f"the Command Code stream broke off ({type(exc).__name__})") from None


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
