"""What the gateway asks Command Code about accounts and models, outside of model calls.

* Each key's credits (``GET /alpha/billing/credits``): plan, balances and usage windows, for
  ``/usage`` and for the plan filter of ``/v1/models``; cached a minute per key (a failure ten
  seconds, so a flapping endpoint is not hammered).
* The Provider API's model list (``GET /provider/v1/models``), fetched by a background thread in
  each worker and refreshed hourly: a request never waits for it, and until it arrives (or
  when it cannot) the shipped catalog serves alone.

These GETs carry the CLI's headers for account endpoints (upstream-protocol.md 3.2), as the CLI
itself sends them; none is on the hot path.
"""
from __future__ import annotations

import logging
import os
import threading
import time

from . import errors, keys

log = logging.getLogger("gateway.account")

CREDITS_PATH = "/alpha/billing/credits"
MODELS_PATH = "/provider/v1/models"
CREDITS_TTL, CREDITS_FAILURE_TTL = 60.0, 10.0
MODELS_TTL, MODELS_RETRY = 3600.0, 300.0
_TIMEOUT = 5.0


class Account:
    """Credits per key, cached."""

    def __init__(self, cfg: dict, transport):
        cc = cfg["commandcode"]
        self._url = cc["base_url"] + CREDITS_PATH
        self._transport = transport
        self._headers = {"Content-Type": "application/json", "User-Agent": "cli",
                         "x-command-code-version": cc["cli_version"],
                         "x-cli-environment": "production"}
        self._cache: dict[str, tuple[float, object]] = {}

    def credits(self, key: str) -> dict:
        """The ``/alpha/billing/credits`` body for ``key``; raises the mapped GatewayError."""
        label = keys.label(key)
        entry = self._cache.get(label)
        now = time.monotonic()
        if entry is None or entry[0] <= now:
            try:
                value = self._transport.get_json(self._url, dict(self._headers,
                                                                 Authorization=f"Bearer {key}"),
                                                 timeout=_TIMEOUT)
                if not isinstance(value, dict):
                    raise errors.UpstreamError("Command Code's credits answer is not an object")
                ttl = CREDITS_TTL
            except errors.GatewayError as err:
                value, ttl = err, CREDITS_FAILURE_TTL
            entry = self._cache[label] = (now + ttl, value)
        if isinstance(entry[1], errors.GatewayError):
            raise entry[1]
        return entry[1]


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
