"""The Redis backends (gateway/redis_state.py) against a real redis-server, its failures included.

The contracts every backend shares are in tests/test_state.py; here is what only Redis has:
exactly-once usage counting (an entry id applied twice counts once, a reply lost to a hung
server counts once), pending counts surviving a server that went away, every call bounded in
time while the server is stopped or hung (the breaker, logged once each way), the distributed
probing lock, expiry in Redis itself, passwords and db numbers in the URL, and prefixes that keep
gateways apart.  Servers that are stopped or paused are each test's own.
"""
from __future__ import annotations

import logging
import os
import threading
import time
import uuid

import pytest
import redis

from gateway import errors, usage
from gateway.canonical import Usage
from gateway.key_routes import CLI, PROVIDER
from gateway.redis_state import RedisState, public_url
from gateway.usage import UsageStore
from tests.redis_server import RedisServer

PASSWORD = "pw-Secret-7f3a"


@pytest.fixture
def states(redis_server):
    """``make(**kw)``: a RedisState on the session server; same ``prefix`` = same state."""
    made = []
    prefix = f"t{uuid.uuid4().hex[:12]}"

    def make(url=None, **kw):
        kw.setdefault("prefix", prefix)
        made.append(RedisState(url or redis_server.url, **kw))
        return made[-1]

    yield make
    for one in made:
        one.close()


@pytest.fixture
def own_server():
    """A redis-server of this test alone, to stop, restart and pause."""
    server = RedisServer().start()
    yield server
    server.close()


@pytest.fixture
def log(caplog):
    caplog.set_level(logging.INFO, logger="gateway.state")
    return caplog


def raw(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, decode_responses=True, socket_timeout=2)


def wait_until(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def breaker_lines(caplog) -> tuple[int, int]:
    text = [r.getMessage() for r in caplog.records if r.name == "gateway.state"]
    return (sum("is unavailable" in t for t in text), sum("answers again" in t for t in text))


# ---- usage: exact ------------------------------------------------------------------------------

def test_usage_reads_exactly_as_the_file_store_does(states, tmp_path):
    file_store, redis_usage = UsageStore(str(tmp_path / "usage.json")), states().usage
    for store in (file_store, redis_usage):
        store.record("m1", Usage(10, 2, 3, 4, 1), key="key-a")
        store.record("m1", Usage(1, 1), failed=True, key="key-b")
        store.record("m:2", None, failed=True)
    assert redis_usage.read() == file_store.read()


def test_usage_one_entry_id_applied_twice_counts_once(states):
    counter = states().usage
    item = (uuid.uuid4().hex, usage.new_entry("m", Usage(5, 1), key="k"))
    assert counter._send([item]) and counter._send([item])     # a retry after a lost reply
    script = counter._link.script("record")
    assert script(keys=counter._keys(item[1], item[0]), args=counter._args(item[1])) == 0
    data = states().usage.read()
    assert data["total_requests"] == 1 and data["prompt_tokens"] == 5
    assert data["keys"]["k"]["total_requests"] == 1 and data["models"]["m"]["completion_tokens"] == 1


def test_usage_from_several_instances_and_threads_adds_up(states):
    instances = [states().usage for _ in range(3)]

    def work(counter):
        for _ in range(30):
            counter.record("m", Usage(2, 1), key="k")

    threads = [threading.Thread(target=work, args=(c,)) for c in instances for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    data = states().usage.read()
    assert data["total_requests"] == 180 and data["prompt_tokens"] == 360
    assert data["keys"]["k"]["completion_tokens"] == 180


def test_usage_a_reply_lost_to_a_hung_server_counts_once(own_server):
    state = RedisState(own_server.url, prefix="lost", break_for=0.3)
    try:
        state.usage.record("m", Usage(1, 1))
        assert state.usage.read()["total_requests"] == 1
        own_server.pause()              # the next command reaches the socket, its reply never comes
        started = time.monotonic()
        state.usage.record("m", Usage(1, 1))
        assert time.monotonic() - started < 0.5
        assert state.usage.read()["total_requests"] == 2    # 1 read before + 1 pending
        own_server.resume()             # the server now runs the command: it has landed
        assert wait_until(lambda: not state.usage._pending)  # the flusher sent it again
        other = RedisState(own_server.url, prefix="lost")
        assert other.usage.read()["total_requests"] == 2
        other.close()
    finally:
        state.close()


def test_usage_pending_counts_survive_a_stopped_server(own_server, log):
    state = RedisState(own_server.url, prefix="down", break_for=0.2)
    try:
        own_server.stop()
        for _ in range(3):
            state.usage.record("m", Usage(4, 1), key="k")
        data = state.usage.read()       # never raises: zeros read before, plus what is pending
        assert data["total_requests"] == 3 and data["keys"]["k"]["prompt_tokens"] == 12
        own_server.start()              # same port, empty (no persistence)
        assert wait_until(lambda: not state.usage._pending)
        other = RedisState(own_server.url, prefix="down")
        got = other.usage.read()
        other.close()
        assert got["total_requests"] == 3 and got["prompt_tokens"] == 12
        assert breaker_lines(log) == (1, 1)
    finally:
        state.close()


def test_usage_read_during_an_outage_is_the_last_read_plus_pending(own_server):
    state = RedisState(own_server.url, prefix="last", break_for=60)
    try:
        state.usage.record("m", Usage(1, 1))
        assert state.usage.read()["total_requests"] == 1
        own_server.stop()
        state.usage.record("m", Usage(1, 1))
        assert state.usage.read()["total_requests"] == 2
        assert state.usage.read()["models"]["m"]["prompt_tokens"] == 2
    finally:
        state.close()


# ---- bounded in time, logged once --------------------------------------------------------------

def every_call(state: RedisState) -> list:
    conv = state.conversations(ttl_days=1, max_mb=10)
    resp = {"id": "resp_x", "model": "m", "output": [{"id": "it_x", "type": "message"}]}
    return [
        lambda: state.usage.record("m", Usage(1, 1), key="k"),
        state.usage.read,
        lambda: state.key_routes.get("k"),
        lambda: state.key_routes.get("k", fresh=True),
        lambda: state.key_routes.remember("k", CLI),
        lambda: _probe_once(state.key_routes),
        lambda: state.credits.get("k"),
        lambda: state.credits.put("k", {"a": 1}, 60),
        lambda: state.credits.claim("k", 60),
        lambda: state.failures.get("k"),
        lambda: state.failures.put("k", errors.UpstreamError("x"), 10),
        state.model_list.get,
        lambda: state.model_list.put([{"id": "a"}]),
        lambda: state.model_list.claim(60),
        lambda: conv.put(resp, []),
        lambda: conv.get("resp_x"),
        lambda: conv.get_item("it_x"),
        lambda: conv.put_thread("msg_x", {"messages": []}),
        lambda: conv.get_thread("msg_x"),
        lambda: conv.delete("resp_x"),
    ]


def _probe_once(routes) -> None:
    with routes.probing():
        pass


def calls_are_quick(state: RedisState, rounds: int = 3) -> float:
    slowest = 0.0
    for _ in range(rounds):
        for call in every_call(state):
            started = time.monotonic()
            call()
            slowest = max(slowest, time.monotonic() - started)
    return slowest


@pytest.mark.parametrize("how", ["stopped", "hung"])
def test_every_call_is_quick_while_redis_is_down_and_the_breaker_logs_once(own_server, log, how):
    state = RedisState(own_server.url, prefix="quick", break_for=0.3)
    try:
        state.usage.record("m", Usage(1, 1))            # connected and well
        own_server.stop() if how == "stopped" else own_server.pause()
        started = time.monotonic()
        assert calls_are_quick(state) < 0.5
        time.sleep(0.35)                                # the breaker lets one call try again
        assert calls_are_quick(state) < 0.5
        assert time.monotonic() - started < 2.0         # one timeout per trial, not per call
        assert state.key_routes.get("k") == CLI         # the local memory served meanwhile
        assert state.conversations(1, 10).get("resp_x") is None
        assert breaker_lines(log) == (1, 0)
        own_server.start() if how == "stopped" else own_server.resume()
        time.sleep(0.35)
        assert wait_until(lambda: state.usage.read() and not state.usage._pending)
        assert breaker_lines(log) == (1, 1)
        # 6 counted in the outage; a restarted server lost the first (no persistence)
        assert state.usage.read()["total_requests"] == (6 if how == "stopped" else 7)
    finally:
        state.close()


def test_conversations_log_once_that_they_are_not_kept_in_an_outage(own_server, log):
    state = RedisState(own_server.url, prefix="conv", break_for=60)
    conv = state.conversations(ttl_days=1, max_mb=10)
    own_server.stop()
    for i in range(5):
        conv.put_thread(f"msg_{i}", {"messages": []})
        assert conv.get_thread(f"msg_{i}") is None
    assert sum("are not kept" in r.getMessage() for r in log.records) == 1
    state.close()


def test_claim_is_one_callers_per_period_and_everyones_when_redis_is_down(states, own_server):
    results = [states().credits.claim("k", 5) for _ in range(4)]
    assert results == [True, False, False, False]
    assert states().credits.claim("other", 5) is True
    assert [states().model_list.claim(0.2) for _ in range(2)] == [True, False]
    time.sleep(0.3)
    assert states().model_list.claim(0.2) is True
    down = RedisState(own_server.url, prefix="claim")
    own_server.stop()
    assert down.credits.claim("k", 5) is True and down.model_list.claim(5) is True
    down.close()


# ---- the probing lock --------------------------------------------------------------------------

def test_probing_excludes_a_second_instance_and_its_threads(states):
    first, second = states().key_routes, states().key_routes
    inside: list[str] = []
    active, most = [0], [0]
    guard = threading.Lock()

    def probe(routes):
        with routes.probing():
            with guard:
                active[0] += 1
                most[0] = max(most[0], active[0])
            inside.append("in")
            time.sleep(0.05)
            with guard:
                active[0] -= 1

    with first.probing():
        threads = [threading.Thread(target=probe, args=(r,)) for r in (second, second, first)]
        for t in threads:
            t.start()
        time.sleep(0.3)
        assert inside == [] and all(t.is_alive() for t in threads)
        inside.append("holder")
    for t in threads:
        t.join(10)
    assert inside == ["holder", "in", "in", "in"] and most[0] == 1


def test_a_probe_lock_left_by_a_dead_holder_frees_itself(states, redis_server):
    state = states()
    state.key_routes.lease = 0.4
    holder = states().key_routes
    holder.lease = 0.4
    held = holder.probing()
    held.__enter__()                      # taken, never released: the holder "died"
    started = time.monotonic()
    with state.key_routes.probing():
        assert 0.2 < time.monotonic() - started < 2.0
    assert held


def test_a_prober_waits_a_bounded_time(states, redis_server, log):
    holder, waiter = states().key_routes, states().key_routes
    waiter.wait = 0.3
    with holder.probing():
        started = time.monotonic()
        with waiter.probing():
            assert 0.25 < time.monotonic() - started < 1.5
    assert any("going ahead" in r.getMessage() for r in log.records)


def test_routes_are_shared_and_a_fresh_get_sees_another_instances_change(states):
    a, b = states().key_routes, states().key_routes
    with a.probing():
        a.remember("go", CLI)
    assert b.get("go") == CLI
    with b.probing():
        b.remember("go", PROVIDER)
    assert a.get("go") == CLI and a.get("go", fresh=True) == PROVIDER


# ---- expiry in Redis itself --------------------------------------------------------------------

def test_usage_days_expire_after_days_kept_and_the_totals_stay(states, redis_server):
    state = states(days_kept=0.6 / 86400)
    state.usage.record("m", Usage(3, 1))
    today = usage.day()
    assert list(state.usage.read()["days"]) == [today]
    ttl = raw(redis_server.url).pttl(f"{state.prefix}:usage:day:{today}")
    assert 0 < ttl <= 600
    time.sleep(0.8)
    data = state.usage.read()
    assert data["days"] == {} and data["total_requests"] == 1 and data["models"]["m"]


def test_conversations_expire_in_redis(states, redis_server):
    state = states()
    conv = state.conversations(ttl_days=0.5 / 86400, max_mb=10)
    conv.put({"id": "resp_t", "model": "m", "output": [{"id": "it_t"}]}, [])
    conv.put_thread("msg_t", {"messages": []})
    assert conv.get("resp_t") and conv.get_item("it_t") and conv.get_thread("msg_t") == {
        "messages": []}
    time.sleep(0.7)
    assert conv.get("resp_t") is None and conv.get_item("it_t") is None
    assert raw(redis_server.url).keys(f"{state.prefix}:conv:*") == []


def test_failures_round_trip_class_code_and_retry_after(states):
    states().failures.put("k", errors.RateLimited("slow down", retry_after=7, code="c1"), 10)
    got = states().failures.get("k")
    assert type(got) is errors.RateLimited
    assert (got.status, got.code, got.message, got.retry_after) == (429, "c1", "slow down", 7)
    states().credits.put("k", errors.InsufficientCredits("empty"), 10)
    value, fresh = states().credits.get("k")
    assert type(value) is errors.InsufficientCredits and value.code == "insufficient_quota"


# ---- the URL: passwords, db numbers, prefixes --------------------------------------------------

def test_a_password_in_the_url_works_and_is_never_shown(log):
    with RedisServer(password=PASSWORD) as server:
        state = RedisState(server.url, prefix="pw")
        state.usage.record("m", Usage(1, 1))
        assert state.usage.read()["total_requests"] == 1
        assert PASSWORD not in state.usage.path and "127.0.0.1" in state.usage.path
        wrong = RedisState(server.url.replace(PASSWORD, PASSWORD + "x"), prefix="pw")
        wrong.usage.record("m", Usage(1, 1))        # refused: counted in memory, logged once
        assert wrong.usage.read()["total_requests"] == 1
        wrong.close()
        server.stop()
        state.usage.record("m", Usage(1, 1))
        state.close()
    assert breaker_lines(log)[0] == 2
    assert PASSWORD not in log.text and PASSWORD + "x" not in log.text


def test_public_url_drops_every_password():
    assert public_url("redis://:s3c@h:6379/0") == "redis://h:6379/0"
    assert public_url("rediss://user:s3c@h:6380/2") == "rediss://user@h:6380/2"
    assert public_url("redis://h/0?password=s3c&db=1") == "redis://h/0?db=1"
    assert public_url("redis://h:6379") == "redis://h:6379"


def test_a_db_number_in_the_url_is_used(states, redis_server):
    state = states(redis_server.db_url(3))
    state.usage.record("m", Usage(1, 1))
    assert raw(redis_server.db_url(3)).exists(f"{state.prefix}:usage:totals") == 1
    assert raw(redis_server.url).exists(f"{state.prefix}:usage:totals") == 0


def test_two_prefixes_do_not_see_each_other(states):
    a, b = states(prefix=f"a{uuid.uuid4().hex[:8]}"), states(prefix=f"b{uuid.uuid4().hex[:8]}")
    a.usage.record("m", Usage(1, 1), key="k")
    with a.key_routes.probing():
        a.key_routes.remember("k", CLI)
        with b.key_routes.probing():         # a lock of its own, not a's
            pass
    a.conversations(1, 10).put({"id": "resp_p", "model": "m", "output": []}, [])
    a.model_list.put([{"id": "x"}])
    assert b.usage.read() == usage.empty()
    assert b.key_routes.get("k") is None and b.conversations(1, 10).get("resp_p") is None
    assert b.model_list.get() is None and a.model_list.get() == [{"id": "x"}]


# ---- processes ---------------------------------------------------------------------------------

def test_a_forked_worker_makes_its_own_connections(states):
    state = states()
    state.usage.record("m", Usage(1, 1))           # the parent's pool is in use
    pid = os.fork()
    if pid == 0:                                    # the child: count once, leave at once
        code = 1
        try:
            state.usage.record("m", Usage(1, 1))
            code = 0 if state._link._pid == os.getpid() and not state.usage._pending else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    state.usage.record("m", Usage(1, 1))            # the parent's connections still work
    assert states().usage.read()["total_requests"] == 3


def test_an_exhausted_pool_falls_back_for_that_call_without_opening_the_breaker(states, log):
    state = states(pool_size=1)
    state.usage.record("m", Usage(1, 1))
    assert state.usage.read()["total_requests"] == 1
    pool = state._link.client().connection_pool
    held = pool.get_connection()                    # every connection of the worker is busy
    started = time.monotonic()
    state.usage.record("m", Usage(1, 1))
    assert 0.15 < time.monotonic() - started < 0.5  # waited POOL_WAIT, then counted in memory
    assert state.usage.read()["total_requests"] == 2    # the last read, plus the pending one
    assert not state._link.breaker.is_open
    pool.release(held)
    state.usage.record("m", Usage(1, 1))            # and the pending one goes with it
    assert states().usage.read()["total_requests"] == 3 and not state.usage._pending
    assert breaker_lines(log) == (0, 0)


def test_scripts_are_loaded_again_when_the_server_forgot_them(states, redis_server):
    state = states()
    state.usage.record("m", Usage(1, 1))
    raw(redis_server.url).script_flush()            # a restarted or failed-over server
    state.usage.record("m", Usage(1, 1))
    assert state.usage.read()["total_requests"] == 2 and not state.usage._pending
