"""One access record per request: timed at the WSGI edge, logged once, counted in the metrics.

The record is a dict in the WSGI environ (:data:`RECORD`) that the layers fill as they learn
things -- the endpoint when Flask routes the request, the model, route and tokens when the call
is counted (``chat._record``), the error code when an error is answered -- and :class:`Recorder`,
which wraps the Flask app, times it: the first byte of the body (what a streaming client waits
for) and the last, when the server closes the body.  Only then is the line written, so a
stream of ten minutes is one line with its real duration, and the counters in
:mod:`gateway.metrics` move once per request.

Never a key, a prompt or an answer: the key appears as its label (``gateway``, or
``key-<hash>``), the path as the route's rule where ids would be.
"""
from __future__ import annotations

import ipaddress
import logging
import time

from . import keys, metrics

log = logging.getLogger("gateway.access")

RECORD = "gateway.access"

#: Flask endpoint -> the surface named in logs and metrics
SURFACES = {
    "openai.chat_completions": "chat", "openai.completions": "completions",
    "openai.list_models": "models", "openai.get_model": "models",
    "responses.create": "responses", "responses.retrieve": "responses_state",
    "responses.delete": "responses_state", "responses.input_items": "responses_state",
    "anthropic.messages": "messages", "anthropic.count_tokens": "count_tokens",
    "meta.index": "index", "meta.health": "health", "meta.usage": "usage",
    "meta.metrics": "metrics", "meta.usage_recent": "usage",
}
#: what the logs and metrics say of the model calls (the surfaces that take a stream slot)
MODEL_CALLS = {"chat", "completions", "responses", "messages"}
_QUIET = {"health", "metrics"}          # polled every few seconds: logged at debug, not info


def record(environ: dict) -> dict:
    """The request's access record (created on first use: a request Flask never routed)."""
    rec = environ.get(RECORD)
    if rec is None:
        rec = environ[RECORD] = {}
    return rec


class TrustedProxies:
    """Which peers may say who the client is (``X-Forwarded-For``): gunicorn's
    ``forwarded_allow_ips`` (``FORWARDED_ALLOW_IPS``), loopback by default.  Behind a trusted
    proxy the client is the last address in the header that is not itself a trusted proxy."""

    def __init__(self, spec: str = "127.0.0.1,::1"):
        self.any = "*" in spec
        self.networks = [ipaddress.ip_network(part.strip(), strict=False)
                         for part in spec.split(",") if part.strip() and part.strip() != "*"]

    def trusted(self, address: str) -> bool:
        if self.any:
            return True
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self.networks)

    def client(self, environ: dict) -> str:
        peer = environ.get("REMOTE_ADDR") or "-"
        forwarded = environ.get("HTTP_X_FORWARDED_FOR")
        if not forwarded or not self.trusted(peer):
            return peer
        hops = [h.strip() for h in forwarded.split(",") if h.strip()]
        for hop in reversed(hops):
            if not _is_address(hop):
                return peer             # not an address: a header no proxy of ours wrote
            if not self.trusted(hop):
                return hop
        return hops[0] if hops else peer    # every hop a proxy of ours: the first is the client


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def worth_keeping(line: dict) -> bool:
    """Whether a finished request goes to the recent-requests list: the model calls, and
    anything that failed -- not the health checks, scrapes and page loads that would push
    them out of a list of a hundred."""
    return line["surface"] in MODEL_CALLS or line["status"] >= 400


class Recorder:
    """WSGI middleware: times each request and, when its body is closed, writes its access
    line (``emit``), counts it in the metrics and, when :func:`worth_keeping`, hands it with
    its ``time`` (epoch seconds) to ``on_finish`` (the recent-requests list's ``add``)."""

    def __init__(self, app, emit, proxies: TrustedProxies, on_finish=None):
        self.app = app
        self.emit = emit
        self.proxies = proxies
        self.on_finish = on_finish
        self._finish_failed = False     # log the first failure of on_finish only

    def __call__(self, environ, start_response):
        started = time.perf_counter()
        rec = record(environ)
        rec["status"] = 0

        def start(status, headers, exc_info=None):
            rec["status"] = int(status.split(" ", 1)[0])
            return start_response(status, headers, exc_info)

        return _Timed(self, self.app(environ, start), environ, rec, started)

    def finish(self, environ: dict, rec: dict, started: float, first: float | None) -> None:
        now = time.perf_counter()
        line = self._line(environ, rec, now - started,
                          None if first is None else first - started)
        try:
            _count(line)
        except Exception:           # metrics must never break an answer
            log.debug("could not update the metrics", exc_info=True)
        self.emit(line)
        if self.on_finish is not None and worth_keeping(line):
            self._keep({**line, "time": time.time()})

    def _keep(self, line: dict) -> None:
        """``on_finish(line)``; a failure is logged once and never reaches the response."""
        try:
            self.on_finish(line)
        except Exception:
            if not self._finish_failed:
                log.warning("could not keep a request in the recent list", exc_info=True)
            self._finish_failed = True

    def _line(self, environ: dict, rec: dict, duration: float, ttfb: float | None) -> dict:
        usage = rec.get("usage")
        return {
            "method": environ.get("REQUEST_METHOD", "-"),
            "path": rec.get("rule") or environ.get("PATH_INFO", "-"),
            "status": rec.get("status", 0),
            "surface": SURFACES.get(rec.get("endpoint"), "other"),
            "model": rec.get("model"),
            "route": getattr(rec.get("upstream"), "route_name", None),
            "key": environ.get(keys.KEY_LABEL),
            "client": self.proxies.client(environ),
            "scheme": environ.get("wsgi.url_scheme"),
            "ttfb_ms": None if ttfb is None else round(ttfb * 1000, 1),
            "duration_ms": round(duration * 1000, 1),
            "tokens_in": usage.input_tokens if usage else None,
            "tokens_out": usage.output_tokens if usage else None,
            "tokens_cached": usage.cache_read_tokens if usage else None,
            "tokens_reasoning": usage.reasoning_tokens if usage else None,
            "error": rec.get("error"),
        }


class _Timed:
    """The app's body, passed through chunk by chunk; notes the first one and, on close, has
    the recorder finish the request."""

    def __init__(self, recorder: Recorder, body, environ, rec, started):
        self._recorder, self._body = recorder, body
        self._environ, self._rec, self._started = environ, rec, started
        self._first: float | None = None
        self._done = False

    def __iter__(self):
        for chunk in self._body:
            if self._first is None and chunk:
                self._first = time.perf_counter()
            yield chunk

    def close(self):
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            if not self._done:
                self._done = True
                self._recorder.finish(self._environ, self._rec, self._started, self._first)


def _count(line: dict) -> None:
    surface = line["surface"]
    metrics.REQUESTS.labels(surface, line["model"] or "-", line["route"] or "-",
                            str(line["status"])).inc()
    metrics.DURATION.labels(surface).observe(line["duration_ms"] / 1000)
    if line["ttfb_ms"] is not None:
        metrics.TTFB.labels(surface).observe(line["ttfb_ms"] / 1000)
    for kind in ("in", "out", "cached", "reasoning"):
        if line[f"tokens_{kind}"]:
            metrics.TOKENS.labels(kind).inc(line[f"tokens_{kind}"])
    if line["error"] and surface in MODEL_CALLS:
        metrics.UPSTREAM_ERRORS.labels(line["error"]).inc()


def quiet(line: dict) -> bool:
    """Health checks and scrapes that went well: logged at debug, so they do not drown the rest."""
    return line["surface"] in _QUIET and line["status"] < 400
