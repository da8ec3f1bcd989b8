"""The contracts of gateway/state.py, run against every backend.

Each fixture below is parametrized over the backends of one contract and gives a *factory*:
each call returns a new handle on the same state (for a file backend a new object on the same
file, as another worker would open; for the in-process one the same object).  A new backend
(Redis: ``gateway.redis_state``, a new ``RedisState`` per handle on a fresh key prefix, as
another instance would open it) is one more ``param`` and one more branch here, and must pass
every test as is.
Time is an injected clock, so expiry is tested without sleeping.
"""
from __future__ import annotations

import json
import threading
import uuid

import pytest

from gateway import errors, state, usage
from gateway.account import SharedFailures
from gateway.canonical import Usage
from gateway.conversations import ConversationStore
from gateway.key_routes import CLI, PROVIDER, RECHECK_SECONDS, KeyRoutes
from gateway.usage import COUNTERS, UsageStore


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, now: float = 1_700_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def redis_states(request):
    """A factory of ``RedisState`` handles on the session's redis-server, all on one fresh
    prefix (another instance's view of the same state), closed after the test."""
    made = []

    def make(**kw):
        from gateway.redis_state import RedisState
        server = request.getfixturevalue("redis_server")
        made.append(RedisState(server.url, prefix=f"t{uuid.uuid4().hex[:12]}" if not made
                               else made[0].prefix, **kw))
        return made[-1]

    yield make
    for one in made:
        one.close()


def _shared(make_one):
    """A factory that always hands out the one in-process object ``make_one`` built."""
    one = make_one()
    return lambda: one


@pytest.fixture(params=["file", "memory", "redis"])
def usage_backend(request, tmp_path, redis_states):
    if request.param == "redis":
        return lambda: redis_states().usage
    if request.param == "file":
        return lambda: UsageStore(str(tmp_path / "usage.json"))
    return _shared(state.MemoryUsage)


@pytest.fixture(params=["file", "memory", "redis"])
def routes_backend(request, tmp_path, clock, redis_states):
    if request.param == "redis":
        return lambda: redis_states(clock=clock).key_routes
    if request.param == "file":
        return lambda: KeyRoutes(str(tmp_path / "key_routes.json"), clock=clock)
    return _shared(lambda: state.MemoryKeyRoutes(clock=clock))


@pytest.fixture(params=["file", "memory", "redis"])
def failures_backend(request, tmp_path, clock, redis_states):
    if request.param == "redis":
        return lambda: redis_states(clock=clock).failures
    if request.param == "file":
        return lambda: SharedFailures(str(tmp_path / "billing_failures.json"), clock=clock)
    return _shared(lambda: state.MemoryFailures(clock=clock))


@pytest.fixture(params=["memory", "redis"])
def credits_backend(request, clock, redis_states):
    if request.param == "redis":
        def make(max_keys=1024):
            cache = redis_states(clock=clock).credits
            cache.max_keys = max_keys
            return cache
        return make
    return lambda max_keys=1024: state.MemoryCache(max_keys, clock=clock)


@pytest.fixture(params=["memory", "redis"])
def model_list_backend(request, redis_states):
    if request.param == "redis":
        return lambda: redis_states().model_list
    return _shared(state.MemoryModelList)


@pytest.fixture(params=["file", "memory", "redis"])
def conversations_backend(request, tmp_path, clock, redis_states):
    if request.param == "redis":
        return lambda: redis_states(clock=clock).conversations(ttl_days=1, max_mb=512)
    if request.param == "file":
        return lambda: ConversationStore(str(tmp_path / "state.sqlite3"), ttl_days=1, clock=clock)
    return _shared(lambda: state.MemoryConversations(ttl_days=1, clock=clock))


# ---- usage -------------------------------------------------------------------------------------


def test_usage_backend_follows_the_contract(usage_backend):
    assert isinstance(usage_backend(), state.UsageCounter)
    assert isinstance(usage_backend().path, str)


def test_usage_starts_at_zero(usage_backend):
    assert usage_backend().read() == usage.empty()


def test_usage_counts_add_up_per_model_day_and_key(usage_backend):
    store = usage_backend()
    store.record("m1", Usage(10, 2, 3, 4, 1), key="key-a")
    store.record("m1", Usage(1, 1), failed=True, key="key-b")
    store.record("m2", None, failed=True)
    data = usage_backend().read()                   # another handle sees the same totals
    assert data["total_requests"] == 3 and data["failed_requests"] == 2
    assert (data["prompt_tokens"], data["completion_tokens"]) == (11, 3)
    assert (data["cache_read_tokens"], data["cache_write_tokens"]) == (3, 4)
    assert data["reasoning_tokens"] == 1
    assert data["models"]["m1"]["total_requests"] == 2 and data["models"]["m2"]["prompt_tokens"] == 0
    assert set(data["keys"]) == {"key-a", "key-b"} and data["keys"]["key-b"]["failed_requests"] == 1
    for section in ("models", "days"):
        assert {k: sum(b[k] for b in data[section].values()) for k in COUNTERS} == \
            {k: data[k] for k in COUNTERS}


def test_usage_read_is_the_callers_copy(usage_backend):
    store = usage_backend()
    store.record("m", Usage(1, 1))
    got = store.read()
    got["total_requests"] = 99
    got["models"]["m"]["prompt_tokens"] = 99
    again = store.read()
    assert again["total_requests"] == 1 and again["models"]["m"]["prompt_tokens"] == 1


def test_usage_no_increment_is_lost_between_threads(usage_backend):
    store = usage_backend()

    def work():
        for _ in range(25):
            store.record("m", Usage(2, 1))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    data = store.read()
    assert data["total_requests"] == 100 and data["prompt_tokens"] == 200


# ---- key routes --------------------------------------------------------------------------------


def test_routes_backend_follows_the_contract(routes_backend):
    assert isinstance(routes_backend(), state.RouteMemory)


def test_routes_remember_then_get_round_trips(routes_backend):
    routes = routes_backend()
    assert routes.get("k1") is None and routes.get("k1", fresh=True) is None
    with routes.probing():
        routes.remember("k1", CLI)
        routes.remember("k2", PROVIDER)
    other = routes_backend()
    assert (other.get("k1"), other.get("k2"), other.get("k3")) == (CLI, PROVIDER, None)
    with other.probing():
        other.remember("k1", PROVIDER)          # the plan was upgraded
    assert routes.get("k1", fresh=True) == PROVIDER


def test_routes_cli_only_records_expire_after_the_recheck_time(routes_backend, clock):
    routes = routes_backend()
    with routes.probing():
        routes.remember("go", CLI)
        routes.remember("pro", PROVIDER)
    clock.advance(RECHECK_SECONDS - 5)
    assert routes.get("go") == CLI
    clock.advance(10)
    assert routes.get("go") is None and routes.get("go", fresh=True) is None
    assert routes.get("pro") == PROVIDER         # only CLI-only records are rechecked
    with routes.probing():
        routes.remember("go", CLI)               # rechecked: a new day starts
    assert routes_backend().get("go") == CLI


def test_routes_probing_lets_one_thread_in_at_a_time(routes_backend):
    routes = routes_backend()
    order: list[str] = []
    entered = threading.Event()

    def contender():
        entered.set()
        with routes_backend().probing():
            order.append("contender")

    with routes.probing():
        t = threading.Thread(target=contender)
        t.start()
        entered.wait(5)
        t.join(0.2)
        assert t.is_alive() and order == []     # it waits while the lock is held
        order.append("holder")
    t.join(5)
    assert order == ["holder", "contender"]


# ---- billing failures --------------------------------------------------------------------------


def test_failures_backend_follows_the_contract(failures_backend):
    assert isinstance(failures_backend(), state.FailureMemory)


def test_failures_round_trip_status_and_message_until_they_expire(failures_backend, clock):
    memory = failures_backend()
    assert memory.get("k") is None
    memory.put("k", errors.error_for_status(502, "billing is down"), ttl=10)
    got = failures_backend().get("k")           # another worker's handle
    assert isinstance(got, errors.GatewayError)
    assert (got.status, got.message) == (502, "billing is down")
    assert type(got) is type(errors.error_for_status(502, "x"))
    assert failures_backend().get("other") is None
    clock.advance(9)
    assert memory.get("k") is not None
    clock.advance(2)
    assert memory.get("k") is None


def test_failures_each_get_is_a_new_error(failures_backend):
    memory = failures_backend()
    memory.put("k", errors.error_for_status(500, "boom"), ttl=10)
    assert memory.get("k") is not memory.get("k")


def test_failures_keep_other_labels_when_one_is_written(failures_backend, clock):
    memory = failures_backend()
    memory.put("a", errors.error_for_status(500, "a"), ttl=20)
    memory.put("b", errors.error_for_status(503, "b"), ttl=5)
    clock.advance(6)
    failures_backend().put("c", errors.error_for_status(500, "c"), ttl=20)
    assert memory.get("a").message == "a" and memory.get("c").message == "c"
    assert memory.get("b") is None


# ---- credits cache -----------------------------------------------------------------------------


def test_credits_backend_follows_the_contract(credits_backend):
    assert isinstance(credits_backend(), state.CreditsCache)


def test_credits_fresh_then_stale_but_still_served(credits_backend, clock):
    cache = credits_backend()
    assert cache.get("k") is None
    body = {"credits": {"planId": "individual-go"}}
    cache.put("k", body, ttl=60)
    assert cache.get("k") == (body, True)
    clock.advance(60)
    assert cache.get("k") == (body, False)      # past its ttl: stale, kept for a slow refresh
    cache.put("k", {"new": 1}, ttl=60)
    assert cache.get("k") == ({"new": 1}, True)


def test_credits_cache_is_bounded_least_recently_used_first(credits_backend):
    cache = credits_backend(max_keys=3)
    for label in ("a", "b", "c"):
        cache.put(label, label, ttl=60)
    assert cache.get("a") is not None           # a is used: b is now the oldest
    cache.put("d", "d", ttl=60)
    assert cache.get("b") is None
    assert [cache.get(k)[0] for k in ("a", "c", "d")] == ["a", "c", "d"]
    for i in range(100):
        cache.put(f"x{i}", i, ttl=60)
    assert len(cache) == 3 and cache.get("x99") == (99, True)


# ---- model list --------------------------------------------------------------------------------


def test_model_list_round_trips(model_list_backend):
    cache = model_list_backend()
    assert isinstance(cache, state.ModelListCache)
    assert cache.get() is None
    entries = [{"id": "a"}, {"id": "b", "context_length": 1000}]
    cache.put(entries)
    assert model_list_backend().get() == entries
    cache.put([])
    assert cache.get() == []


# ---- conversations -----------------------------------------------------------------------------


def response(rid: str, *items: dict) -> dict:
    return {"id": rid, "model": "m", "output": list(items)}


def test_conversations_backend_follows_the_contract(conversations_backend):
    assert isinstance(conversations_backend(), state.ConversationState)


def test_conversations_put_get_delete_and_items(conversations_backend):
    store = conversations_backend()
    out = {"id": "msg_out", "type": "message", "content": []}
    inputs = [{"id": "msg_old", "role": "user", "content": "earlier"},
              {"id": "msg_in", "role": "user", "content": "q"}]
    store.put(response("resp_1", out), inputs, own_from=1)
    other = conversations_backend()
    assert other.get("resp_1") == {"response": response("resp_1", out), "input": inputs,
                                   "own_from": 1}
    assert other.get_item("msg_out") == out and other.get_item("msg_in") == inputs[1]
    assert other.get_item("msg_old") is None    # from the chain before: not this one's
    assert other.get("resp_2") is None
    assert other.delete("resp_1") is True and store.get("resp_1") is None
    assert store.get_item("msg_out") is None and store.delete("resp_1") is False


def test_conversations_what_is_got_is_not_what_was_stored(conversations_backend):
    store = conversations_backend()
    resp = response("resp_1")
    store.put(resp, [])
    resp["model"] = "changed"
    got = store.get("resp_1")
    got["response"]["id"] = "mutated"
    assert store.get("resp_1")["response"] == response("resp_1")


def test_conversations_threads_are_apart_from_responses(conversations_backend):
    store = conversations_backend()
    store.put_thread("msg_1", {"messages": [{"role": "user", "content": "q"}]})
    assert conversations_backend().get_thread("msg_1") == {"messages": [{"role": "user",
                                                                          "content": "q"}]}
    assert store.get("msg_1") is None and store.get_thread("msg_2") is None


def test_conversations_expire_after_their_ttl(conversations_backend, clock):
    store = conversations_backend()
    store.put(response("resp_1", {"id": "it_1", "type": "message"}), [])
    store.put_thread("msg_1", {"messages": []})
    clock.advance(86400 - 1)
    assert store.get("resp_1") is not None and store.get_thread("msg_1") is not None
    clock.advance(2)
    assert store.get("resp_1") is None and store.get_item("it_1") is None
    assert store.get_thread("msg_1") is None and store.delete("resp_1") is False


# ---- usage history (per day and model, errors per day) ----------------------------------------


def test_usage_history_days_by_model_add_up_and_errors_count_by_code(usage_backend):
    store = usage_backend()
    store.record("m1", Usage(10, 2, 3, 4, 1), key="key-a")
    store.record("m1", Usage(1, 1), failed=True, error="upstream_timeout")
    store.record("vendor/m:2", None, failed=True, error="rate_limit_exceeded")
    store.record("vendor/m:2", Usage(5, 5), failed=True, error="rate_limit_exceeded")
    other = usage_backend()                         # another worker's (instance's) view
    hist, data = other.history(), other.read()
    assert set(hist) == {"day_models", "day_errors"}
    assert set(data) == set(COUNTERS) | {"models", "days", "keys"}      # read() unchanged
    assert set(hist["day_models"]) == set(data["days"])
    for day, models in hist["day_models"].items():
        assert {k: sum(b[k] for b in models.values()) for k in COUNTERS} == \
            {k: data["days"][day][k] for k in COUNTERS}
        for model, bucket in models.items():
            assert set(bucket) == set(COUNTERS)
    totals_by_model: dict = {}
    for models in hist["day_models"].values():
        for model, bucket in models.items():
            acc = totals_by_model.setdefault(model, dict.fromkeys(COUNTERS, 0))
            for k in COUNTERS:
                acc[k] += bucket[k]
    assert totals_by_model == {m: {k: b[k] for k in COUNTERS} for m, b in data["models"].items()}
    (codes,) = hist["day_errors"].values()
    assert codes == {"upstream_timeout": 1, "rate_limit_exceeded": 2}


def test_usage_history_starts_empty_and_is_the_callers_copy(usage_backend):
    store = usage_backend()
    assert store.history() == {"day_models": {}, "day_errors": {}}
    store.record("m", Usage(1, 1), error=None)
    got = store.history()
    next(iter(got["day_models"].values()))["m"]["prompt_tokens"] = 99
    assert next(iter(store.history()["day_models"].values()))["m"]["prompt_tokens"] == 1
    assert store.history()["day_errors"] == {}


def test_file_usage_history_keeps_400_days(tmp_path):
    """Days older than HISTORY_DAYS go at the next write; read() never shows the history."""
    path = tmp_path / "usage.json"
    store = UsageStore(str(path))
    store.record("m", Usage(1))
    raw = json.loads(path.read_text())
    raw["day_models"]["2000-01-01"] = {"m": dict.fromkeys(COUNTERS, 1)}
    raw["day_errors"]["2000-01-01"] = {"x": 1}
    path.write_text(json.dumps(raw))
    assert "2000-01-01" in store.history()["day_models"]
    store.record("m", Usage(1), failed=True, error="x")
    hist = store.history()
    assert "2000-01-01" not in hist["day_models"] and "2000-01-01" not in hist["day_errors"]
    assert set(store.read()) == set(COUNTERS) | {"models", "days"}


# ---- recent requests ---------------------------------------------------------------------------


@pytest.fixture(params=["file", "memory", "redis"])
def recent_backend(request, tmp_path, redis_states):
    if request.param == "redis":
        return lambda: redis_states().recent
    if request.param == "file":
        return lambda: state.FileRecent(str(tmp_path / "recent.jsonl"))
    return _shared(state.MemoryRecent)


def line(i: int, **extra) -> dict:
    return {**dict.fromkeys(state.RECENT_FIELDS), "time": 1_700_000_000.0 + i,
            "status": 200, "surface": "chat", "path": f"/v1/chat/completions#{i}", **extra}


def test_recent_backend_follows_the_contract(recent_backend):
    assert isinstance(recent_backend(), state.RecentRequests)
    assert recent_backend().read() == []


def test_recent_is_newest_first_capped_at_100_and_shared(recent_backend):
    recent = recent_backend()
    for i in range(130):
        recent.add(line(i))
    got = recent_backend().read()                   # another process's view
    assert [x["time"] for x in got] == [1_700_000_000.0 + i for i in range(129, 29, -1)]
    assert got[0] == line(129)                      # every field kept as it was
    assert [x["time"] for x in recent_backend().read(3)] == [
        1_700_000_000.0 + i for i in (129, 128, 127)]


def test_recent_keeps_the_access_line_fields_only(recent_backend):
    recent_backend().add(line(1, prompt="never stored", error="upstream_timeout", status=504))
    (got,) = recent_backend().read()
    assert set(got) == set(state.RECENT_FIELDS)
    assert (got["error"], got["status"]) == ("upstream_timeout", 504)


def test_recent_fields_are_the_access_line_fields():
    from gateway import access
    rec = access.Recorder(None, lambda line: None, access.TrustedProxies())
    assert set(rec._line({}, {}, 0.1, None)) | {"time"} == set(state.RECENT_FIELDS)


def test_file_recent_never_raises(tmp_path, caplog):
    recent = state.FileRecent(str(tmp_path / "missing" / "recent.jsonl"))
    recent.add(line(1))
    recent.add(line(2))
    assert recent.read() == []
    assert len([r for r in caplog.records if "recent-requests" in r.getMessage()]) == 1
