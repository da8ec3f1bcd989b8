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

With the state in Redis (several instances) both caches are shared, and each refresh is made
once for all of them: the instance that claims it asks Command Code, the others take its answer
from the cache (``claim`` in :mod:`gateway.state`).

These GETs carry the CLI's headers for account endpoints (docs/protocol.md §3.2), as the CLI
itself sends them (one copy, :func:`gateway.upstream.cli.cli_headers`), and their failures are
worded as on every route (:mod:`gateway.upstream.exchange`); none is on the hot path.

What is kept between requests sits behind the small contracts of :mod:`gateway.state`: the
credits per key in a :class:`~gateway.state.CreditsCache` (by default a bounded in-process LRU,
so passthrough keys cannot grow it without end), the billing failures in a
:class:`~gateway.state.FailureMemory` (by default :class:`SharedFailures`, the file), the last
model list in a :class:`~gateway.state.ModelListCache`.  Constructors take what they use, not
the configuration, so another backend is one argument away.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time

from . import errors, keys
from .state import CreditsCache, FailureMemory, MemoryCache, MemoryModelList, ModelListCache
from .upstream.cli import cli_headers
from .upstream.exchange import get_json
from .usage import replace_atomically

log = logging.getLogger("gateway.account")

CREDITS_PATH = "/alpha/billing/credits"
MODELS_PATH = "/provider/v1/models"
CREDITS_TTL, CREDITS_FAILURE_TTL = 60.0, 10.0
CREDITS_WAIT = 1.0          # the longest a request waits for a credits lookup
CREDITS_MAX_KEYS = 1024     # keys whose credits are kept; past it the least recently used go
MODELS_TTL, MODELS_RETRY = 3600.0, 300.0
_TIMEOUT = 5.0
#: with a shared cache: how long one instance's claim to refresh holds (its lookup's own time
#: limit and a little more) and so how long the others wait for its answer, polling this often
CLAIM_WAIT, CLAIM_POLL = _TIMEOUT + 1.0, 0.1
#: how long the process that fetched the model list holds the period: a little under the
#: period, so that its next turn (a period after its fetch ended) finds the claim free
MODELS_CLAIM = MODELS_TTL - 60.0


class SharedFailures:
    """Billing failures per key label, until when, shared by every worker through one file
    (replaced atomically; a lost update only means one more worker asks once more).  The file
    backend of :class:`gateway.state.FailureMemory`; ``clock`` is unix seconds, because the
    file is shared by processes (a monotonic clock is not)."""

    def __init__(self, path: str, clock=None):
        self.path = path
        self._clock = clock or time.time

    def _read(self) -> dict:
        try:
            with open(self.path, "rb") as f:
                data = json.loads(f.read())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def get(self, label: str) -> errors.GatewayError | None:
        entry = self._read().get(label)
        if isinstance(entry, list) and len(entry) == 3 and entry[0] > self._clock():
            return errors.error_for_status(int(entry[1]), str(entry[2]))
        return None

    def put(self, label: str, err: errors.GatewayError, ttl: float) -> None:
        now = self._clock()
        data = {k: v for k, v in self._read().items()
                if isinstance(v, list) and v and v[0] > now}
        data[label] = [now + ttl, err.status, err.message]
        try:
            replace_atomically(self.path, json.dumps(data).encode(), ".billing-failures-")
        except OSError:
            log.warning("could not write %s; other workers will ask again", self.path)


class _Lookup:
    """One credits lookup under way: waiters wait on ``done``; ``value`` is what it found (a
    body or a GatewayError), None until then or when the lookup itself broke."""

    __slots__ = ("done", "value")

    def __init__(self):
        self.done = threading.Event()
        self.value = None


class Account:
    """Credits per key, cached; looked up in the background, waited for at most a second.

    ``failures_path`` is the shared billing-failure file (:class:`SharedFailures`);
    ``failures`` another :class:`~gateway.state.FailureMemory` in its place, ``cache`` another
    :class:`~gateway.state.CreditsCache` than the in-process LRU.
    """

    def __init__(self, base_url: str, cli_version: str, transport,
                 failures_path: str | None = None, *, failures: FailureMemory | None = None,
                 cache: CreditsCache | None = None):
        self._url = base_url + CREDITS_PATH
        self._transport = transport
        self._headers = cli_headers(cli_version)     # the CLI's, for account endpoints
        self._cache = cache if cache is not None else MemoryCache(CREDITS_MAX_KEYS)
        self._pending: dict[str, _Lookup] = {}
        self._lock = threading.Lock()
        if failures is None and failures_path:
            failures = SharedFailures(failures_path)
        self._failures = failures

    def credits(self, key: str, wait: float = CREDITS_WAIT) -> dict:
        """The ``/alpha/billing/credits`` body for ``key``; raises the mapped GatewayError.

        Fresh from the cache, or from a lookup finished within ``wait`` seconds; otherwise the
        last known body, or, with none, an UpstreamTimeout (the lookup goes on meanwhile).
        """
        label = keys.label(key)
        entry = self._cache.get(label)          # (value, fresh) or None
        if entry is None or not entry[1]:
            lookup = self._refresh(label, key)
            lookup.done.wait(wait)
            if lookup.value is not None:
                entry = (lookup.value, True)
            elif entry is None or isinstance(entry[0], errors.GatewayError):
                raise errors.UpstreamTimeout("Command Code's billing endpoint is slow to answer; "
                                             "it is being asked again in the background")
        if isinstance(entry[0], errors.GatewayError):
            raise entry[0]
        return entry[0]

    def _refresh(self, label: str, key: str) -> _Lookup:
        """The lookup of ``label``'s credits under way, started if none is."""
        with self._lock:
            lookup = self._pending.get(label)
            if lookup is None:
                lookup = self._pending[label] = _Lookup()
                threading.Thread(target=self._lookup, args=(label, key, lookup), daemon=True,
                                 name="credits-lookup").start()
            return lookup

    def _ask(self, label: str, key: str) -> tuple[object, float]:
        """What the billing endpoint says of ``key`` (or what another worker heard), and how
        long that holds."""
        remembered = self._failures.get(label) if self._failures is not None else None
        if remembered is not None:
            return remembered, CREDITS_FAILURE_TTL
        try:
            value = get_json(self._transport, self._url,
                             dict(self._headers, Authorization=f"Bearer {key}"), _TIMEOUT)
            if not isinstance(value, dict):
                raise errors.UpstreamError("Command Code's credits answer is not an object")
            return value, CREDITS_TTL
        except errors.GatewayError as err:
            if self._failures is not None:
                self._failures.put(label, err, CREDITS_FAILURE_TTL)
            return err, CREDITS_FAILURE_TTL

    def _find(self, label: str, key: str) -> object | None:
        """``label``'s credits, asked by this process if it may, else heard from the one that
        does.

        With a shared cache (several instances) the :meth:`~CreditsCache.claim` lets exactly
        one of them ask Command Code per refresh; the others wait, at most as long as that
        lookup may take, for its answer to reach the cache, and meanwhile the caller keeps
        serving the last known value.  A claim left by an instance that died expires after
        the same time, and the next one to try asks itself.  The in-process cache always
        grants the claim: then this is the one lookup it always was.  None: nothing heard.
        """
        deadline = time.monotonic() + CLAIM_WAIT
        while True:
            if self._cache.claim(label, CLAIM_WAIT):
                value, ttl = self._ask(label, key)
                self._cache.put(label, value, ttl)
                return value
            entry = self._cache.get(label)
            if entry is not None and entry[1]:
                return entry[0]                 # the claim holder's answer
            if time.monotonic() >= deadline:
                return entry[0] if entry is not None else None
            time.sleep(CLAIM_POLL)

    def _lookup(self, label: str, key: str, lookup: _Lookup) -> None:
        try:
            lookup.value = self._find(label, key)
        except Exception:       # never leave a waiter hanging on a lookup that broke
            log.exception("the credits lookup failed")
        finally:
            with self._lock:
                self._pending.pop(label, None)
            lookup.done.set()


class ModelDiscovery:
    """Fetches the Provider API's model list in the background and hands it to ``on_list``.

    The last good list is also kept in ``cache`` (a :class:`~gateway.state.ModelListCache`;
    in-process by default).  A shared cache (Redis) lets one process of all the instances
    fetch it each period, by its :meth:`~gateway.state.ModelListCache.claim`; the others take
    the list from the cache (:meth:`refresh`).
    """

    def __init__(self, base_url: str, transport, on_list, cache: ModelListCache | None = None):
        self._url = base_url + MODELS_PATH
        self._transport = transport
        self._on_list = on_list
        self.cache = cache if cache is not None else MemoryModelList()
        self._pid: int | None = None
        self._lock = threading.Lock()
        self._claimed_until = 0.0       # unix time: this process holds the period's claim

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
            body = get_json(self._transport, self._url, {"Accept": "application/json"}, _TIMEOUT)
            entries = body.get("data") if isinstance(body, dict) else None
            if not isinstance(entries, list):
                raise errors.UpstreamError("the model list has no 'data' array")
        except errors.GatewayError as err:
            log.info("could not refresh the model list from %s (%s); the shipped catalog "
                     "serves meanwhile", MODELS_PATH, err.message)
            return False
        self.cache.put(entries)
        self._on_list(entries)
        return True

    def refresh(self) -> bool:
        """This period's list: fetched when this process claims the period (or still holds
        it: a holder whose fetch failed tries again at its retry, as a lone process would),
        otherwise taken from the cache that the holder fills.  With the in-process cache the
        claim is always granted, so each process fetches for itself as it always did."""
        if time.time() < self._claimed_until or self._claim():
            return self.fetch_once()
        return self._take_shared()

    def _claim(self) -> bool:
        if not self.cache.claim(MODELS_CLAIM):
            return False
        self._claimed_until = time.time() + MODELS_CLAIM
        return True

    def _take_shared(self) -> bool:
        """The list another process fetched, waited for as long as its fetch may take (all
        instances start at once: the holder is fetching it right now)."""
        deadline = time.monotonic() + CLAIM_WAIT
        entries = self.cache.get()
        while entries is None and time.monotonic() < deadline:
            time.sleep(CLAIM_POLL)
            entries = self.cache.get()
        if entries is None:
            return False
        self._on_list(entries)
        return True

    def _run(self) -> None:
        while True:
            time.sleep(MODELS_TTL if self.refresh() else MODELS_RETRY)
