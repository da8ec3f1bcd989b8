"""What the gateway asks Command Code about accounts and models, outside of model calls.

* Each key's credits (``GET /alpha/billing/credits``): plan, balances and usage windows, for
  ``/usage`` and for the plan filter of ``/v1/models``; cached a minute per key (a failure ten
  seconds, so a flapping endpoint is not hammered).  A request never waits more than a second
  for them: the lookup runs on a background thread, and a slow one leaves the request with the
  last known value (or none) while it finishes.  A failure is written to a small shared file,
  so the other workers do not each wait on the same broken endpoint.
* The Provider API's model list (``GET /provider/v1/models``), fetched by a background thread in
  each worker and refreshed hourly: a request never waits for it, and until it arrives (or
  when it cannot) the shipped catalog serves alone.

These GETs carry the CLI's headers for account endpoints (upstream-protocol.md 3.2), as the CLI
itself sends them; none is on the hot path.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time

from . import errors, keys
from .usage import replace_atomically

log = logging.getLogger("gateway.account")

CREDITS_PATH = "/alpha/billing/credits"
MODELS_PATH = "/provider/v1/models"
CREDITS_TTL, CREDITS_FAILURE_TTL = 60.0, 10.0
CREDITS_WAIT = 1.0          # the longest a request waits for a credits lookup
MODELS_TTL, MODELS_RETRY = 3600.0, 300.0
_TIMEOUT = 5.0


class SharedFailures:
    """Billing failures per key label, until when, shared by every worker through one file
    (replaced atomically; a lost update only means one more worker asks once more)."""

    def __init__(self, path: str):
        self.path = path

    def _read(self) -> dict:
        try:
            with open(self.path, "rb") as f:
                data = json.loads(f.read())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def get(self, label: str) -> errors.GatewayError | None:
        entry = self._read().get(label)
        if isinstance(entry, list) and len(entry) == 3 and entry[0] > time.time():
            return errors.error_for_status(int(entry[1]), str(entry[2]))
        return None

    def put(self, label: str, err: errors.GatewayError, ttl: float) -> None:
        now = time.time()
        data = {k: v for k, v in self._read().items()
                if isinstance(v, list) and v and v[0] > now}
        data[label] = [now + ttl, err.status, err.message]
        try:
            replace_atomically(self.path, json.dumps(data).encode(), ".billing-failures-")
        except OSError:
            log.warning("could not write %s; other workers will ask again", self.path)


class Account:
    """Credits per key, cached; looked up in the background, waited for at most a second."""

    def __init__(self, cfg: dict, transport, failures_path: str | None = None):
        cc = cfg["commandcode"]
        self._url = cc["base_url"] + CREDITS_PATH
        self._transport = transport
        self._headers = {"Content-Type": "application/json", "User-Agent": "cli",
                         "x-command-code-version": cc["cli_version"],
                         "x-cli-environment": "production"}
        self._cache: dict[str, tuple[float, object]] = {}
        self._pending: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self._failures = SharedFailures(failures_path) if failures_path else None

    def credits(self, key: str, wait: float = CREDITS_WAIT) -> dict:
        """The ``/alpha/billing/credits`` body for ``key``; raises the mapped GatewayError.

        Fresh from the cache, or from a lookup finished within ``wait`` seconds; otherwise the
        last known body, or, with none, an UpstreamTimeout (the lookup goes on meanwhile).
        """
        label = keys.label(key)
        entry = self._cache.get(label)
        if entry is None or entry[0] <= time.monotonic():
            self._refresh(label, key).wait(wait)
            newer = self._cache.get(label)
            if newer is not entry:
                entry = newer
            elif entry is None or isinstance(entry[1], errors.GatewayError):
                raise errors.UpstreamTimeout("Command Code's billing endpoint is slow to answer; "
                                             "it is being asked again in the background")
        if isinstance(entry[1], errors.GatewayError):
            raise entry[1]
        return entry[1]

    def _refresh(self, label: str, key: str) -> threading.Event:
        """The lookup of ``label``'s credits under way, started if none is."""
        with self._lock:
            done = self._pending.get(label)
            if done is None:
                done = self._pending[label] = threading.Event()
                threading.Thread(target=self._lookup, args=(label, key, done), daemon=True,
                                 name="credits-lookup").start()
            return done

    def _lookup(self, label: str, key: str, done: threading.Event) -> None:
        try:
            remembered = self._failures.get(label) if self._failures else None
            if remembered is not None:
                value, ttl = remembered, CREDITS_FAILURE_TTL
            else:
                try:
                    value = self._transport.get_json(
                        self._url, dict(self._headers, Authorization=f"Bearer {key}"),
                        timeout=_TIMEOUT)
                    if not isinstance(value, dict):
                        raise errors.UpstreamError("Command Code's credits answer is not an object")
                    ttl = CREDITS_TTL
                except errors.GatewayError as err:
                    value, ttl = err, CREDITS_FAILURE_TTL
                    if self._failures is not None:
                        self._failures.put(label, err, ttl)
            self._cache[label] = (time.monotonic() + ttl, value)
        except Exception:       # never leave a waiter hanging on a lookup that broke
            log.exception("the credits lookup failed")
        finally:
            with self._lock:
                self._pending.pop(label, None)
            done.set()


class ModelDiscovery:
    """Fetches the Provider API's model list in the background and hands it to ``on_update``."""

    def __init__(self, cfg: dict, transport, on_update):
        self._url = cfg["commandcode"]["base_url"] + MODELS_PATH
        self._transport = transport
        self._on_update = on_update
        self._pid: int | None = None
        self._lock = threading.Lock()
        self.fetched_at: float | None = None

    def ensure_running(self) -> None:
        """Start this process's refresher once (after gunicorn forked, never in the master)."""
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid != os.getpid():
                self._pid = os.getpid()
                threading.Thread(target=self._run, name="model-list", daemon=True).start()

    def fetch_once(self) -> bool:
        try:
            body = self._transport.get_json(self._url, {"Accept": "application/json"},
                                            timeout=_TIMEOUT)
            entries = body.get("data") if isinstance(body, dict) else None
            if not isinstance(entries, list):
                raise errors.UpstreamError("the model list has no 'data' array")
        except errors.GatewayError as err:
            log.info("could not refresh the model list from %s (%s); the shipped catalog "
                     "serves meanwhile", MODELS_PATH, err.message)
            return False
        self._on_update(entries)
        self.fetched_at = time.time()
        return True

    def _run(self) -> None:
        while True:
            time.sleep(MODELS_TTL if self.fetch_once() else MODELS_RETRY)
