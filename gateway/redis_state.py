"""The Redis backends of :mod:`gateway.state`, so several gateway instances share one state.

``state: redis://...`` in the configuration builds one :class:`RedisState`; its attributes are
the backends ``Gateway`` hands to its callers (``usage``, ``key_routes``, ``credits``,
``failures``, ``model_list``, ``conversations(...)``).  This is the only module that imports
``redis`` (redis-py), so a gateway without ``state`` never loads it.

Redis must never fail or stall a request, so:

* Every socket operation times out after ``SOCKET_TIMEOUT`` (connecting too); redis-py's own
  retries are off (``Retry(NoBackoff(), 0)``) and there are no health-check pings.  Each worker
  has one blocking pool of ``pool_size`` connections that waits ``POOL_WAIT`` at most for a
  free one.  The pool is made lazily in the process that uses it, after gunicorn forked.
* A :class:`gateway.breaker.Breaker` sends every call to a local fallback for ``break_for``
  seconds after a failure (one warning when it opens, one when it closes): usage counts wait in
  memory, key routes / credits / failures / the model list use this process's memory, stored
  responses are not kept.

Key layout (``{p}`` is ``prefix``, so several gateways can share one Redis)::

    {p}:usage:totals                 hash   counter -> n (all time)
    {p}:usage:models  / :keys        set    model names / key labels seen
    {p}:usage:model:{model}          hash   that model's counters
    {p}:usage:key:{label}            hash   that key label's counters
    {p}:usage:days                   zset   day -> its UTC midnight (unix seconds)
    {p}:usage:day:{YYYY-MM-DD}       hash   that day's counters; expires days_kept after its
                                            last request
    {p}:usage:daymodels:{YYYY-MM-DD} hash   "{model}:{counter}" -> n, that day per model;
                                            expires as the day hash
    {p}:usage:dayerrors:{YYYY-MM-DD} hash   error code -> requests that ended with it; the same
    {p}:usage:done:{entry id}        string the entry was counted (exactly-once marker, 2 days)
    {p}:recent                       list   JSON access lines, newest first, trimmed to 100
    {p}:routes                       hash   key label -> "route|unix time"
    {p}:routes:probing               string the probing lock's owner token (PX lease)
    {p}:credits:v:{label}            string JSON {"until", "value"|"error"}; kept a day past its ttl
    {p}:credits:lru / :credits:seq   zset / counter: least recently used labels, bounded
    {p}:credits:claim:{label}        string refresh lock (SET NX PX)
    {p}:failure:{label}              string JSON error, PX ttl
    {p}:models                       string JSON list (kept a day)
    {p}:models:claim                 string refresh lock (SET NX PX)
    {p}:conv:{response|item|thread}:{id}  string "until|JSON", PX ttl_days

Stored conversations are bounded by their expiry, not by ``max_mb``: size Redis with
``maxmemory`` and a ``volatile-ttl`` (or ``volatile-lru``) policy so the oldest of them go first
when it is full -- every key above except the usage totals and the route hash has a TTL.
"""
from __future__ import annotations

import calendar
import copy
import json
import logging
import os
import threading
import time
import uuid
from contextlib import contextmanager
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from . import errors, metrics, state, usage
from .breaker import Breaker
from .key_routes import CLI, PROVIDER, route_of
from .state import MemoryCache, MemoryFailures, MemoryModelList

log = logging.getLogger("gateway.state")

SOCKET_TIMEOUT = 0.25       # connect, read and write: a slow Redis is a down Redis
POOL_WAIT = 0.2             # the longest a thread waits for a free connection of its worker
MARKER_TTL = 2 * 86400      # how long a usage entry's "counted" marker outlives it
FLUSH_EVERY = 1.0           # pending usage entries are retried this often
STALE_KEEP = 86400.0        # a credits entry is served stale this long past its ttl
MODEL_LIST_KEEP = 86400     # the model list outlives its hourly refresh by this much
PROBE_LEASE = 30.0          # the probing lock frees itself after this (a prober that died)
PROBE_WAIT = 30.0           # the longest a prober waits for another's lock
PROBE_POLL = 0.05
CREDITS_MAX_KEYS = 1024     # as gateway.account.CREDITS_MAX_KEYS, for every instance together
_UNAVAILABLE = object()     # what a call returns when Redis could not be asked

# ---- Lua: each runs atomically in Redis -------------------------------------------------------

# KEYS: done marker, totals, models set, model hash, days zset, day hash, keys set, key hash,
# day-models hash, day-errors hash.
# ARGV: marker ttl, model, day, day score, day ttl ms, prune below, label, error code, then
# name, n pairs.
RECORD = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then return 0 end
local function add(key, prefix)
  for i = 9, #ARGV, 2 do
    if ARGV[i + 1] ~= '0' then redis.call('HINCRBY', key, prefix .. ARGV[i], ARGV[i + 1]) end
  end
end
add(KEYS[2], '')
redis.call('SADD', KEYS[3], ARGV[2]); add(KEYS[4], '')
redis.call('ZADD', KEYS[5], ARGV[4], ARGV[3]); add(KEYS[6], '')
redis.call('PEXPIRE', KEYS[6], ARGV[5])
add(KEYS[9], ARGV[2] .. ':'); redis.call('PEXPIRE', KEYS[9], ARGV[5])
if ARGV[8] ~= '' then
  redis.call('HINCRBY', KEYS[10], ARGV[8], 1); redis.call('PEXPIRE', KEYS[10], ARGV[5])
end
redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', '(' .. ARGV[6])
if ARGV[7] ~= '' then redis.call('SADD', KEYS[7], ARGV[7]); add(KEYS[8], '') end
return 1
"""

# KEYS: days zset.  ARGV: the day-models and day-errors hash prefixes.  One snapshot of every
# day kept: day, its models hash, its errors hash, repeated.
HISTORY = """
local out = {}
for _, d in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  table.insert(out, d)
  table.insert(out, redis.call('HGETALL', ARGV[1] .. d))
  table.insert(out, redis.call('HGETALL', ARGV[2] .. d))
end
return out
"""

# KEYS: totals, models set, days zset, keys set.  ARGV: the model, day and key hash prefixes.
# One snapshot: the sections always add up to the totals.
READ = """
local out = {redis.call('HGETALL', KEYS[1])}
for s = 2, 4 do
  local members
  if s == 3 then members = redis.call('ZRANGE', KEYS[s], 0, -1)
  else members = redis.call('SMEMBERS', KEYS[s]) end
  local section = {}
  for _, m in ipairs(members) do
    local h = redis.call('HGETALL', ARGV[s - 1] .. m)
    if #h > 0 then table.insert(section, m); table.insert(section, h) end
  end
  table.insert(out, section)
end
return out
"""

# KEYS: the lock.  ARGV: the owner's token.  Only the owner releases it.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: value, lru zset, seq.  ARGV: label.  A read makes the label the most recently used.
LRU_GET = """
local v = redis.call('GET', KEYS[1])
if v then redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[3]), ARGV[1]) end
return v
"""

# KEYS: value, lru zset, seq.  ARGV: label, value, px, max keys, value key prefix.
LRU_PUT = """
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[3]), ARGV[1])
local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[4])
if over > 0 then
  local old = redis.call('ZRANGE', KEYS[2], 0, over - 1)
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, over - 1)
  for _, label in ipairs(old) do redis.call('DEL', ARGV[5] .. label) end
end
return 1
"""

_SCRIPTS = {"record": RECORD, "read": READ, "history": HISTORY, "release": RELEASE, "lru_get": LRU_GET,
            "lru_put": LRU_PUT}


def public_url(url: str) -> str:
    """``url`` without its password (in the user part or a ``password=`` query), for logs."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        user, host = netloc.rsplit("@", 1)
        user = user.split(":", 1)[0]
        netloc = f"{user}@{host}" if user else host
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k.lower() != "password"])
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _dumps(value) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


# ---- the connection, per worker -------------------------------------------------------------

class Link:
    """One Redis client per process (made on first use, again after a fork) behind a breaker.

    :meth:`call` is the only way the backends reach Redis: ``fn(client)`` or, when Redis is
    unavailable or the breaker is open, ``fallback()``; it never raises a Redis error."""

    def __init__(self, url: str, pool_size: int = 176, break_for: float = 5.0):
        self.url = url
        self.public = public_url(url)
        self.pool_size = pool_size
        self.breaker = Breaker(f"Redis at {self.public}", break_for)
        self._client: redis.Redis | None = None
        self._scripts: dict = {}
        self._pid: int | None = None
        self._lock = threading.Lock()
        self.skipping_conversations = False     # RedisConversations logs an outage once

    def client(self) -> redis.Redis:
        if self._client is None or self._pid != os.getpid():
            self._connect()
        return self._client

    def _connect(self) -> None:
        if self._pid != os.getpid():        # forked: the parent's locks mean nothing here
            self._lock = threading.Lock()
            self.breaker.reset()
        with self._lock:
            if self._client is not None and self._pid == os.getpid():
                return
            pool = redis.BlockingConnectionPool.from_url(
                self.url, max_connections=self.pool_size, timeout=POOL_WAIT,
                socket_timeout=SOCKET_TIMEOUT, socket_connect_timeout=SOCKET_TIMEOUT,
                retry=Retry(NoBackoff(), 0), health_check_interval=0, decode_responses=True)
            client = redis.Redis(connection_pool=pool)
            self._scripts = {name: client.register_script(src) for name, src in _SCRIPTS.items()}
            self._client, self._pid = client, os.getpid()

    def script(self, name: str):
        """A registered Lua script (EVALSHA, loaded again when the server forgot it)."""
        self.client()
        return self._scripts[name]

    def call(self, fn, fallback=lambda: _UNAVAILABLE):
        """``fn(client)``'s result, or ``fallback()``'s (by default :data:`_UNAVAILABLE`)."""
        ticket = self.breaker.allow()
        if ticket is None:
            return fallback()
        try:
            result = fn(self.client())
        except redis.RedisError as exc:
            if not _pool_exhausted(exc):    # a burst of this worker's, not a Redis fault
                self.breaker.failed(exc)
                metrics.state_error("redis")
            return fallback()
        self.breaker.succeeded(ticket)
        return result

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None and self._pid == os.getpid():
            client.connection_pool.disconnect()


def _pool_exhausted(exc: Exception) -> bool:
    """Every connection of this worker busy for POOL_WAIT (redis-py's BlockingConnectionPool
    says so in these words): that call falls back alone, the breaker stays closed."""
    return isinstance(exc, redis.ConnectionError) and str(exc) == "No connection available."


# ---- usage -------------------------------------------------------------------------------------

def _bucket(flat: list) -> dict:
    """A counters hash (HGETALL's flat list) as a usage bucket with every counter."""
    bucket = dict.fromkeys(usage.COUNTERS, 0)
    for name, value in zip(flat[::2], flat[1::2]):
        if name in bucket:
            bucket[name] = int(value)
    return bucket


def _section(flat: list) -> dict:
    return {name: _bucket(h) for name, h in zip(flat[::2], flat[1::2])}


def _increments(entry: tuple) -> list:
    """What one entry adds, as (counter, n) pairs flattened (``usage._add`` in numbers)."""
    _model, u, failed, _key, _day, _error = entry
    values = {"total_requests": 1, "failed_requests": 1 if failed else 0,
              "prompt_tokens": u.input_tokens, "completion_tokens": u.output_tokens,
              "cache_read_tokens": u.cache_read_tokens, "cache_write_tokens": u.cache_write_tokens,
              "reasoning_tokens": u.reasoning_tokens}
    return [x for name in usage.COUNTERS for x in (name, str(int(values[name])))]


def _day_models(flat: list) -> dict:
    """A day-models hash (fields ``{model}:{counter}``; a model id may hold ``:``, a counter
    name never does) as ``{model: bucket}``."""
    models: dict = {}
    for field, value in zip(flat[::2], flat[1::2]):
        model, _, name = field.rpartition(":")
        if name in usage.COUNTERS:
            models.setdefault(model, dict.fromkeys(usage.COUNTERS, 0))[name] = int(value)
    return models


def _history(flat: list) -> dict:
    """The :data:`HISTORY` script's answer as ``usage.empty_history()``'s shape."""
    hist = usage.empty_history()
    for day, models, codes in zip(flat[::3], flat[1::3], flat[2::3]):
        if models:
            hist["day_models"][day] = _day_models(models)
        if codes:
            hist["day_errors"][day] = {c: int(n) for c, n in zip(codes[::2], codes[1::2])}
    return hist


def _utc_midnight(day: str) -> int:
    return calendar.timegm(time.strptime(day, "%Y-%m-%d"))


class RedisUsage:
    """The Redis :class:`gateway.state.UsageCounter`, exact across every instance.

    Each record is one entry with its own id, applied by :data:`RECORD` at most once (its
    marker is set in the same atomic step as the counters).  An entry whose call failed -- it may
    still have landed -- stays pending in this process and is sent again with the same id by a
    background flusher and the next record, so nothing is lost and nothing counts twice."""

    def __init__(self, link: Link, prefix: str, days_kept: float = 400, clock=time.time):
        self._link = link
        self.path = link.public
        self._k = f"{prefix}:usage"
        self.days_kept = days_kept
        self._clock = clock
        self._pending: dict[str, tuple] = {}        # entry id -> entry, not known to be counted
        self._last = usage.empty()                  # the totals last read, for an outage
        self._last_history = usage.empty_history()  # the same for the history
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._flushing = threading.Lock()
        self._flusher_pid: int | None = None
        self._closed = threading.Event()

    def _own(self) -> None:
        """After a fork, locks of our own: a thread of the parent may have held its locks.
        What was pending is kept (the parent sends it too: the entry ids make that harmless)."""
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._lock, self._flushing = threading.Lock(), threading.Lock()

    def record(self, model: str, usage_, failed: bool = False, key: str | None = None,
               error: str | None = None) -> None:
        self._own()
        item = (uuid.uuid4().hex, usage.new_entry(model, usage_, failed, key, self._clock(),
                                                  error))
        if self._send([item]):
            if self._pending:
                self.flush(wait=False)
            return
        with self._lock:
            self._pending[item[0]] = item[1]
        self._start_flusher()

    def _keys(self, entry: tuple, entry_id: str) -> list:
        model, _u, _f, key, day, _e = entry
        k = self._k
        return [f"{k}:done:{entry_id}", f"{k}:totals", f"{k}:models", f"{k}:model:{model}",
                f"{k}:days", f"{k}:day:{day}", f"{k}:keys", f"{k}:key:{key or ''}",
                f"{k}:daymodels:{day}", f"{k}:dayerrors:{day}"]

    def _args(self, entry: tuple) -> list:
        model, _u, _f, key, day, error = entry
        ttl = self.days_kept * 86400
        start = _utc_midnight(day)
        return [MARKER_TTL, model, day, start, _ms(ttl), int(start - ttl - 86400), key or "",
                error or "", *_increments(entry)]

    def _send(self, items: list) -> bool:
        """Apply ``items`` (id, entry) in order; True when every one is known counted.  Those
        counted leave the pending ones as they go."""
        def apply(_client):
            script = self._link.script("record")
            for entry_id, entry in items:
                script(keys=self._keys(entry, entry_id), args=self._args(entry))
                with self._lock:
                    self._pending.pop(entry_id, None)
            return True
        return self._link.call(apply, lambda: False)

    def flush(self, wait: bool = True) -> bool:
        """Send the pending entries; False when some remain.  ``wait``: queue behind another
        thread's flush instead of leaving it to that one."""
        self._own()
        if not self._flushing.acquire(blocking=wait):
            return False
        try:
            with self._lock:
                items = list(self._pending.items())
            return not items or self._send(items)
        finally:
            self._flushing.release()

    def _start_flusher(self) -> None:
        with self._lock:
            if self._flusher_pid == os.getpid():
                return
            self._flusher_pid = os.getpid()
        threading.Thread(target=self._flush_loop, daemon=True, name="redis-usage").start()

    def _flush_loop(self) -> None:
        while not self._closed.wait(FLUSH_EVERY):
            if self._pending:           # an open breaker answers at once
                self.flush(wait=False)

    def read(self) -> dict:
        """Every instance's totals plus this process's pending entries; during an outage the
        totals last read instead (never raises)."""
        return self._merged(self._fetch, "_last", usage.apply_entry)

    def history(self) -> dict:
        """Every instance's per-day models and error counts (the days kept) plus this
        process's pending entries; during an outage the history last read (never raises)."""
        return self._merged(self._fetch_history, "_last_history", usage.apply_history)

    def _merged(self, fetch, last: str, apply) -> dict:
        """``fetch``'s snapshot from Redis (remembered in attribute ``last``, which stands in
        while Redis is unavailable), copied, with this process's pending entries ``apply``-ed."""
        self._own()
        snapshot = self._link.call(fetch, lambda: None)
        with self._lock:
            if snapshot is not None:
                setattr(self, last, snapshot)
            out = copy.deepcopy(getattr(self, last))
            pending = list(self._pending.values())
        for entry in pending:
            apply(out, entry)
        return out

    def _fetch_history(self, _client) -> dict:
        k = self._k
        return _history(self._link.script("history")(
            keys=[f"{k}:days"], args=[f"{k}:daymodels:", f"{k}:dayerrors:"]))

    def _fetch(self, _client) -> dict:
        k = self._k
        totals, models, days, keys = self._link.script("read")(
            keys=[f"{k}:totals", f"{k}:models", f"{k}:days", f"{k}:keys"],
            args=[f"{k}:model:", f"{k}:day:", f"{k}:key:"])
        data = {**_bucket(totals), "models": _section(models), "days": _section(days)}
        if keys:
            data["keys"] = _section(keys)
        return data

    def close(self) -> None:
        """Stop the flusher after one last attempt at what is pending."""
        self._closed.set()
        if self._pending:
            self.flush()


# ---- recent requests ----------------------------------------------------------------------------

class RedisRecent:
    """The Redis :class:`gateway.state.RecentRequests`: one list for every instance (LPUSH
    then LTRIM in one pipeline, so it never holds more than ``max_entries``), written through
    to this process's list, which serves when Redis is unavailable."""

    KEEP = 30 * 86400           # a gateway gone quiet leaves no list behind for ever

    def __init__(self, link: Link, prefix: str, max_entries: int = state.RECENT_MAX):
        self._link = link
        self._key = f"{prefix}:recent"
        self.max_entries = max_entries
        self._local = state.MemoryRecent(max_entries)

    def add(self, line: dict) -> None:
        entry = state.recent_entry(line)
        self._local.add(entry)

        def push(r):
            with r.pipeline(transaction=True) as pipe:
                pipe.lpush(self._key, _dumps(entry))
                pipe.ltrim(self._key, 0, self.max_entries - 1)
                pipe.expire(self._key, self.KEEP)
                pipe.execute()
        self._link.call(push)

    def read(self, limit: int = state.RECENT_MAX) -> list[dict]:
        limit = max(0, min(limit, self.max_entries))
        if not limit:
            return []
        raw = self._link.call(lambda r: r.lrange(self._key, 0, limit - 1))
        if raw is _UNAVAILABLE:
            return self._local.read(limit)
        return state.newest_first([line for line in map(_loads, raw) if isinstance(line, dict)])


# ---- key routes --------------------------------------------------------------------------------

class RedisKeyRoutes:
    """The Redis :class:`gateway.state.RouteMemory`: one hash for every instance, a distributed
    lock for :meth:`probing` (so a Go key is probed once in all), this process's memory when
    Redis is unavailable.  Like the file backend, a route this process knows is not asked
    again unless ``fresh``."""

    def __init__(self, link: Link, prefix: str, clock=time.time):
        self._link = link
        self._hash = f"{prefix}:routes"
        self._lock_key = f"{prefix}:routes:probing"
        self._clock = clock
        self._known: dict[str, tuple[str, float]] = {}
        self._local = threading.Lock()
        self.lease, self.wait, self.poll = PROBE_LEASE, PROBE_WAIT, PROBE_POLL

    def get(self, label: str, fresh: bool = False) -> str | None:
        entry = None if fresh else self._known.get(label)
        if entry is None:
            raw = self._link.call(lambda r: r.hget(self._hash, label))
            if raw is not _UNAVAILABLE:
                parsed = _route_entry(raw)
                if parsed is not None:
                    self._known[label] = parsed
            entry = self._known.get(label)
        return route_of(entry, self._clock())

    def remember(self, label: str, route: str) -> None:
        now = self._clock()
        self._known[label] = (route, now)
        self._link.call(lambda r: r.hset(self._hash, label, f"{route}|{int(now)}"))

    @contextmanager
    def probing(self):
        """This process's threads queue on a local lock; the one holding it takes the Redis
        lock (or, Redis unavailable or the wait over, goes ahead with the local one only)."""
        with self._local:
            token = self._acquire()
            try:
                yield
            finally:
                if token is not None:
                    self._link.call(lambda r: self._link.script("release")(
                        keys=[self._lock_key], args=[token]))

    def _acquire(self) -> str | None:
        token, deadline = uuid.uuid4().hex, time.monotonic() + self.wait
        while True:
            got = self._link.call(lambda r: bool(r.set(self._lock_key, token, nx=True,
                                                       px=_ms(self.lease))))
            if got is True:
                return token
            if got is _UNAVAILABLE:
                return None
            if time.monotonic() >= deadline:
                log.warning("waited %gs for another instance's key-route probe; going ahead",
                            self.wait)
                return None
            time.sleep(self.poll)


def _route_entry(raw) -> tuple[str, float] | None:
    if not isinstance(raw, str) or "|" not in raw:
        return None
    route, _, at = raw.partition("|")
    try:
        return (route, float(at)) if route in (CLI, PROVIDER) else None
    except ValueError:
        return None


# ---- credits, failures, the model list -------------------------------------------------------

def error_json(err: errors.GatewayError) -> dict:
    """What rebuilds ``err``: its class (by name, from gateway.errors), status, code, message,
    retry_after, param and details."""
    return {"type": type(err).__name__, "status": err.status, "code": err.code,
            "message": err.message, "retry_after": err.retry_after, "param": err.param,
            "details": err.details}


def error_from(data: dict) -> errors.GatewayError:
    """A new error like the one :func:`error_json` described (a class gateway.errors does not
    have becomes the one its status maps to)."""
    kw = {k: data.get(k) for k in ("code", "retry_after", "param", "details")}
    cls = getattr(errors, str(data.get("type")), None)
    status, message = int(data["status"]), str(data["message"])
    if isinstance(cls, type) and issubclass(cls, errors.GatewayError):
        return cls(message, status=status, **kw)
    return errors.error_for_status(status, message, **kw)


def _loads(raw):
    try:
        return json.loads(raw) if isinstance(raw, str) else None
    except ValueError:
        return None


def _claim(link: Link, key: str, ttl: float) -> bool:
    """True for exactly one caller per ``ttl`` among every instance (and when Redis is
    unavailable: then each process refreshes for itself)."""
    got = link.call(lambda r: bool(r.set(key, "1", nx=True, px=_ms(ttl))))
    return got is _UNAVAILABLE or got


class RedisCache:
    """The Redis :class:`gateway.state.CreditsCache`: shared, bounded to ``max_keys`` labels
    (least recently used first, as the in-process one), each entry kept :data:`STALE_KEEP`
    past its ttl to serve while a refresh is under way.  Written through to this process's
    LRU, which serves when Redis is unavailable."""

    def __init__(self, link: Link, prefix: str, clock=time.time, max_keys: int = CREDITS_MAX_KEYS):
        self._link = link
        self._p = f"{prefix}:credits"
        self._clock = clock
        self.max_keys = max_keys
        self._local = MemoryCache(max_keys, clock=clock)

    def _keys(self, label: str) -> list:
        return [f"{self._p}:v:{label}", f"{self._p}:lru", f"{self._p}:seq"]

    def get(self, label: str) -> tuple[object, bool] | None:
        raw = self._link.call(lambda r: self._link.script("lru_get")(
            keys=self._keys(label), args=[label]))
        if raw is _UNAVAILABLE:
            return self._local.get(label)
        data = _loads(raw)
        if not isinstance(data, dict) or "until" not in data:
            return None
        value = error_from(data["error"]) if "error" in data else data.get("value")
        return value, data["until"] > self._clock()

    def put(self, label: str, value: object, ttl: float) -> None:
        self._local.put(label, value, ttl)
        data = {"until": self._clock() + ttl}
        if isinstance(value, errors.GatewayError):
            data["error"] = error_json(value)
        else:
            data["value"] = value
        self._link.call(lambda r: self._link.script("lru_put")(
            keys=self._keys(label),
            args=[label, _dumps(data), _ms(ttl + STALE_KEEP), self.max_keys, f"{self._p}:v:"]))

    def claim(self, label: str, ttl: float) -> bool:
        return _claim(self._link, f"{self._p}:claim:{label}", ttl)

    def __len__(self) -> int:
        got = self._link.call(lambda r: r.zcard(f"{self._p}:lru"))
        return len(self._local) if got is _UNAVAILABLE else int(got)


class RedisFailures:
    """The Redis :class:`gateway.state.FailureMemory`: each failure a key with the failure's
    ttl; written through to this process's memory, which serves when Redis is unavailable."""

    def __init__(self, link: Link, prefix: str, clock=time.time):
        self._link = link
        self._p = f"{prefix}:failure"
        self._clock = clock
        self._local = MemoryFailures(clock=clock)

    def get(self, label: str) -> errors.GatewayError | None:
        raw = self._link.call(lambda r: r.get(f"{self._p}:{label}"))
        if raw is _UNAVAILABLE:
            return self._local.get(label)
        data = _loads(raw)
        if not isinstance(data, dict) or not data.get("until", 0) > self._clock():
            return None
        try:
            return error_from(data)
        except (KeyError, TypeError, ValueError):
            return None

    def put(self, label: str, err: errors.GatewayError, ttl: float) -> None:
        self._local.put(label, err, ttl)
        data = {**error_json(err), "until": self._clock() + ttl}
        self._link.call(lambda r: r.set(f"{self._p}:{label}", _dumps(data), px=_ms(ttl)))


class RedisModelList:
    """The Redis :class:`gateway.state.ModelListCache`: one list for every instance, written
    through to this process's, which serves when Redis has none or is unavailable."""

    def __init__(self, link: Link, prefix: str):
        self._link = link
        self._key = f"{prefix}:models"
        self._local = MemoryModelList()

    def get(self) -> list[dict] | None:
        raw = self._link.call(lambda r: r.get(self._key))
        entries = None if raw is _UNAVAILABLE else _loads(raw)
        return entries if isinstance(entries, list) else self._local.get()

    def put(self, entries: list[dict]) -> None:
        self._local.put(entries)
        self._link.call(lambda r: r.set(self._key, _dumps(list(entries)), ex=MODEL_LIST_KEEP))

    def claim(self, ttl: float) -> bool:
        return _claim(self._link, f"{self._key}:claim", ttl)


# ---- conversations -----------------------------------------------------------------------------

class RedisConversations:
    """The Redis :class:`gateway.state.ConversationState`.  Each row is ``"until|JSON"`` with a
    Redis expiry of ``ttl_days`` (``until`` is checked too, against ``clock``).  A response and
    its items are written in one MULTI/EXEC.  While Redis is unavailable nothing is stored (one
    log line) and nothing is found, so a continuation gets its clear 404."""

    def __init__(self, link: Link, prefix: str, ttl_days: float = 30, max_mb: float = 512,
                 clock=time.time):
        self._link = link
        self._p = f"{prefix}:conv"
        self.ttl = ttl_days * 86400
        self.max_mb = max_mb            # not enforced here: Redis's maxmemory policy is
        self._clock = clock

    def _row(self, value) -> str:
        return f"{self._clock() + self.ttl:.3f}|{_dumps(value)}"

    def _write(self, rows: dict) -> None:
        def run(r):
            with r.pipeline(transaction=True) as pipe:
                for key, text in rows.items():
                    pipe.set(key, text, px=_ms(self.ttl))
                pipe.execute()
            return True
        self._noted(self._link.call(run, lambda: False))

    def _noted(self, stored: bool) -> None:
        """One log line per outage (per RedisState) for the responses not stored."""
        if not stored and not self._link.skipping_conversations:
            log.warning("Redis cannot be reached: stored responses and threads are not kept "
                        "until it can")
        self._link.skipping_conversations = not stored

    def _read(self, key: str):
        raw = self._link.call(lambda r: r.get(key), lambda: None)
        if not isinstance(raw, str) or "|" not in raw:
            return None
        until, _, text = raw.partition("|")
        try:
            return json.loads(text) if float(until) > self._clock() else None
        except ValueError:
            return None

    def put(self, response: dict, input_items: list, own_from: int = 0) -> None:
        own = [i for i in input_items[own_from:] + response["output"]
               if isinstance(i, dict) and isinstance(i.get("id"), str)]
        rows = {f"{self._p}:response:{response['id']}":
                self._row({"response": response, "input": input_items, "own_from": own_from})}
        rows.update({f"{self._p}:item:{i['id']}": self._row(i) for i in own})
        self._write(rows)

    def get(self, response_id: str) -> dict | None:
        return self._read(f"{self._p}:response:{response_id}")

    def get_item(self, item_id: str) -> dict | None:
        return self._read(f"{self._p}:item:{item_id}")

    def delete(self, response_id: str) -> bool:
        entry = self.get(response_id)
        if entry is None:
            return False
        own = entry["input"][entry.get("own_from", 0):] + entry["response"]["output"]
        keys = [f"{self._p}:response:{response_id}"] + [
            f"{self._p}:item:{i['id']}" for i in own if isinstance(i, dict) and i.get("id")]
        self._link.call(lambda r: r.delete(*keys))
        return True

    def put_thread(self, message_id: str, entry: dict) -> None:
        self._write({f"{self._p}:thread:{message_id}": self._row(entry)})

    def get_thread(self, message_id: str) -> dict | None:
        return self._read(f"{self._p}:thread:{message_id}")


# ---- the whole ---------------------------------------------------------------------------------

class RedisState:
    """Every shared backend on one Redis (``url``: ``redis://``, ``rediss://`` for TLS, with
    user, password and db as redis-py reads them), namespaced by ``prefix``.  Nothing connects
    until first used, in the process that uses it."""

    def __init__(self, url: str, prefix: str = "ccgw", pool_size: int = 176, *,
                 days_kept: float = 400, break_for: float = 5.0, clock=time.time):
        self.prefix = prefix
        self._clock = clock
        self._link = Link(url, pool_size, break_for)
        self.usage = RedisUsage(self._link, prefix, days_kept, clock)
        self.key_routes = RedisKeyRoutes(self._link, prefix, clock)
        self.credits = RedisCache(self._link, prefix, clock)
        self.failures = RedisFailures(self._link, prefix, clock)
        self.model_list = RedisModelList(self._link, prefix)
        self.recent = RedisRecent(self._link, prefix)

    @property
    def path(self) -> str:
        return self._link.public

    def conversations(self, ttl_days: float, max_mb: float) -> RedisConversations:
        return RedisConversations(self._link, self.prefix, ttl_days, max_mb, self._clock)

    def close(self) -> None:
        """Send what usage still has pending (one attempt), stop its flusher, disconnect."""
        self.usage.close()
        self._link.close()
