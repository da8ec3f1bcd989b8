"""Plans, quota and the model list, in one process (Flask's test client against the fake).

The end-to-end behaviour through gunicorn is in test_routes_integration.py; this file pins the
caching and failure rules that are hard to see from outside: how often Command Code is asked.
"""
from __future__ import annotations

import json
import threading
import time

from gateway import create_app, errors
from tests.conftest import LOCAL_KEY, gateway_config
from tests.fake_upstream import CREDITS_PATH, GO_KEY, NEW_PROVIDER_MODEL, PROVIDER_MODELS_PATH


def make(fake, tmp_path, **overrides):
    app = create_app(gateway_config(fake.url, tmp_path, **overrides))
    c = app.test_client()
    c.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {LOCAL_KEY}"
    return app, c


def calls(fake, path):
    return [r for r in fake.requests if r["path"] == path]


def later(account, seconds: float) -> None:
    """Move the clock of ``account``'s credits cache ``seconds`` on."""
    cache = account._cache
    base = cache.clock
    cache.clock = lambda: base() + seconds


def ids(c):
    return {m["id"] for m in c.get("/v1/models").json["data"]}


def test_credits_are_asked_once_a_minute_for_usage_and_models(fake, tmp_path):
    _, c = make(fake, tmp_path, plan="auto", commandcode={"api_key": GO_KEY})
    for _ in range(3):
        assert c.get("/usage").json["upstream"]["plan"] == "individual-go"
        assert "claude-sonnet-5" not in ids(c)
    assert len(calls(fake, CREDITS_PATH)) == 1
    assert calls(fake, CREDITS_PATH)[0]["headers"]["authorization"] == f"Bearer {GO_KEY}"


def test_a_billing_failure_is_retried_after_ten_seconds_not_at_every_request(fake, tmp_path, monkeypatch):
    app, c = make(fake, tmp_path, plan="auto", commandcode={"api_key": GO_KEY})
    fake.billing_status = 500
    for _ in range(3):
        r = c.get("/usage")
        assert r.status_code == 200 and "error" in r.json["upstream"]
    assert len(calls(fake, CREDITS_PATH)) == 1
    assert "claude-opus-5" in ids(c)            # unknown plan: nothing hidden
    fake.billing_status = 200
    account = app.extensions["gateway"].account
    later(account, 11)                                     # ten seconds later...
    shared = account._failures.path                        # ...for every worker too
    with open(shared) as f:
        data = json.load(f)
    with open(shared, "w") as f:
        json.dump({k: [until - 11, *rest] for k, (until, *rest) in data.items()}, f)
    assert c.get("/usage").json["upstream"]["plan"] == "individual-go"


def test_a_fixed_plan_or_all_asks_nothing(fake, tmp_path):
    _, c = make(fake, tmp_path, plan="goat")
    listed = ids(c)
    assert "google/gemini-3.8-flash" in listed and "claude-sonnet-5" not in listed
    _, c = make(fake, tmp_path, plan="all")
    assert "claude-opus-5" in ids(c)
    assert calls(fake, CREDITS_PATH) == []


def test_exclude_models_beats_the_plan_and_include_models(fake, tmp_path):
    _, c = make(fake, tmp_path, plan="go", include_models=["claude-"], exclude_models=["claude-opus"])
    listed = ids(c)
    assert "claude-sonnet-5" in listed and "claude-opus-5" not in listed


def test_model_list_fetch_merges_and_a_failed_fetch_keeps_what_was_there(fake, tmp_path):
    app, c = make(fake, tmp_path, discover_models=True)
    gw = app.extensions["gateway"]
    assert gw.discovery.fetch_once() is True
    assert NEW_PROVIDER_MODEL in ids(c)
    fake.models_status = 503
    assert gw.discovery.fetch_once() is False
    assert NEW_PROVIDER_MODEL in ids(c)         # the last good list stays
    assert calls(fake, PROVIDER_MODELS_PATH)


def test_no_upstream_key_means_no_plan_lookup_and_an_upstream_error_in_usage(fake, tmp_path):
    _, c = make(fake, tmp_path, plan="auto", commandcode={"api_key": None})
    assert "claude-opus-5" in ids(c)
    assert c.get("/usage").json["upstream"] == {"error": "the gateway has no Command Code API key"}
    assert calls(fake, CREDITS_PATH) == []


class _SlowTransport:
    """get_json that blocks until released, counting its calls."""

    def __init__(self):
        self.calls, self.release = 0, threading.Event()

    def get_json(self, url, headers, timeout=10.0):
        self.calls += 1
        self.release.wait(10)
        raise errors.UpstreamTimeout("Command Code did not answer in time")


def test_a_hung_billing_endpoint_never_holds_a_request(fake, tmp_path):
    """/usage and /v1/models answer within about a second while billing hangs, and the lookup
    is not started again by every request meanwhile."""
    app, c = make(fake, tmp_path, plan="auto", commandcode={"api_key": GO_KEY})
    gw = app.extensions["gateway"]
    slow = _SlowTransport()
    gw.account._transport = slow
    try:
        for path in ("/usage", "/v1/models", "/usage"):
            started = time.monotonic()
            r = c.get(path)
            assert r.status_code == 200 and time.monotonic() - started < 1.5
        assert "slow" in c.get("/usage").json["upstream"]["error"]
        assert "claude-opus-5" in ids(c)           # plan unknown meanwhile: nothing hidden
        assert slow.calls == 1
    finally:
        slow.release.set()


def test_a_stale_plan_is_used_while_a_refresh_is_slow(fake, tmp_path):
    app, c = make(fake, tmp_path, plan="auto", commandcode={"api_key": GO_KEY})
    assert c.get("/usage").json["upstream"]["plan"] == "individual-go"
    account = app.extensions["gateway"].account
    later(account, 61)                                     # a minute later: due for a refresh
    slow = _SlowTransport()
    account._transport = slow
    try:
        started = time.monotonic()
        assert c.get("/usage").json["upstream"]["plan"] == "individual-go"
        assert "claude-sonnet-5" not in ids(c) and time.monotonic() - started < 2.5
    finally:
        slow.release.set()


def test_a_billing_failure_is_remembered_across_workers(fake, tmp_path):
    """A second worker (another Account on the same state folder) does not ask again."""
    from gateway.account import Account
    from gateway.config import validate
    fake.billing_status = 500
    cfg = validate(gateway_config(fake.url, tmp_path, commandcode={"api_key": GO_KEY}))
    path = str(tmp_path / "billing_failures.json")
    from gateway.transport import Transport
    cc = cfg["commandcode"]
    first = Account(cc["base_url"], cc["cli_version"], Transport(1, 5), path)
    second = Account(cc["base_url"], cc["cli_version"], Transport(1, 5), path)
    for account in (first, second):
        try:
            account.credits(GO_KEY)
        except errors.GatewayError:
            pass
    assert len(calls(fake, CREDITS_PATH)) == 1


class _CountingTransport:
    """get_json that answers a Go plan at once, counting the keys it was asked about."""

    def __init__(self):
        self.asked: list[str] = []

    def get_json(self, url, headers, timeout=10.0):
        self.asked.append(headers["Authorization"])
        return {"credits": {"planId": "individual-go"}}


def test_the_credits_cache_keeps_a_bounded_number_of_keys():
    """Passthrough keys cannot grow the cache without end: past its size, the least recently
    used key goes (and is asked again when it comes back); the others are still served."""
    from gateway.account import Account
    from gateway.state import MemoryCache
    transport = _CountingTransport()
    account = Account("http://upstream.invalid", "1.0", transport, cache=MemoryCache(max_keys=2))
    for key in ("user_a", "user_b", "user_a", "user_c"):       # b is the least recently used
        assert account.credits(key, wait=5)["credits"]["planId"] == "individual-go"
    assert len(account._cache) == 2
    assert transport.asked == ["Bearer user_a", "Bearer user_b", "Bearer user_c"]
    account.credits("user_a", wait=5)                          # still cached
    account.credits("user_b", wait=5)                          # evicted: asked again
    assert transport.asked[3:] == ["Bearer user_b"]


def test_the_default_credits_cache_is_bounded():
    from gateway.account import CREDITS_MAX_KEYS, Account
    account = Account("http://upstream.invalid", "1.0", _CountingTransport())
    assert account._cache.max_keys == CREDITS_MAX_KEYS


def test_credits_follow_the_ttls_on_the_caches_clock():
    """A good answer is fresh a minute, a failure ten seconds; stale ones are asked again."""
    from gateway.account import CREDITS_FAILURE_TTL, CREDITS_TTL, Account
    from gateway.state import MemoryCache
    now = [1000.0]
    transport = _CountingTransport()
    account = Account("http://upstream.invalid", "1.0", transport,
                      cache=MemoryCache(clock=lambda: now[0]))
    account.credits("user_a", wait=5)
    now[0] += CREDITS_TTL - 1
    account.credits("user_a", wait=5)
    assert len(transport.asked) == 1
    now[0] += 2
    account.credits("user_a", wait=5)
    assert len(transport.asked) == 2

    def failing(url, headers, timeout=10.0):
        transport.asked.append(headers["Authorization"])
        raise errors.UpstreamError("billing is down")

    transport.get_json = failing
    now[0] += CREDITS_TTL + 1
    for _ in range(2):
        try:
            account.credits("user_a", wait=5)
        except errors.UpstreamError as err:
            assert err.message == "billing is down"
    assert len(transport.asked) == 3                           # the failure is cached...
    now[0] += CREDITS_FAILURE_TTL + 1
    try:
        account.credits("user_a", wait=5)
    except errors.UpstreamError:
        pass
    assert len(transport.asked) == 4                           # ...ten seconds


def test_the_model_list_is_kept_in_its_cache(fake, tmp_path):
    app, _ = make(fake, tmp_path, discover_models=True)
    discovery = app.extensions["gateway"].discovery
    # (the app's background refresh may already have filled it: fetch once more, explicitly)
    assert discovery.fetch_once() is True
    assert NEW_PROVIDER_MODEL in {e["id"] for e in discovery.cache.get()}


# ---- shared caches (the state in Redis): one refresh for every instance --------------------------

class _SharedCredits:
    """A credits cache shared by several Accounts (as Redis is by several instances), with a
    claim that only the first asker of a period gets."""

    def __init__(self):
        from gateway.state import MemoryCache
        self.cache, self.claims = MemoryCache(), []
        self._held: set[str] = set()

    def get(self, label):
        return self.cache.get(label)

    def put(self, label, value, ttl):
        self.cache.put(label, value, ttl)

    def claim(self, label, ttl):
        self.claims.append(label)
        if label in self._held:
            return False
        self._held.add(label)
        return True


def test_a_shared_credits_cache_is_refreshed_by_one_account_only():
    """Two instances' Accounts on one shared cache: the one that claims the refresh asks, the
    other is answered from the cache without asking Command Code."""
    from gateway.account import Account
    shared, transport = _SharedCredits(), _CountingTransport()
    first = Account("http://upstream.invalid", "1.0", transport, cache=shared)
    second = Account("http://upstream.invalid", "1.0", transport, cache=shared)
    assert first.credits("user_a", wait=5)["credits"]["planId"] == "individual-go"
    assert second.credits("user_a", wait=5)["credits"]["planId"] == "individual-go"
    assert transport.asked == ["Bearer user_a"]


def test_while_another_instance_refreshes_the_last_value_serves_and_its_answer_is_taken():
    """The claim is held elsewhere and the entry is stale: the request gets the stale value at
    once, and the lookup picks up the other instance's answer as soon as it is in the cache."""
    from gateway.account import Account
    from gateway.keys import label
    shared, transport = _SharedCredits(), _CountingTransport()
    account = Account("http://upstream.invalid", "1.0", transport, cache=shared)
    name = label("user_a")
    shared.put(name, {"credits": {"planId": "individual-pro"}}, -1)    # stale
    shared._held.add(name)                                             # another instance asks
    started = time.monotonic()
    assert account.credits("user_a", wait=0.3)["credits"]["planId"] == "individual-pro"
    assert time.monotonic() - started < 1
    shared.put(name, {"credits": {"planId": "individual-max"}}, 60)   # its answer arrives
    deadline = time.monotonic() + 3
    while account._pending and time.monotonic() < deadline:
        time.sleep(0.05)
    assert account.credits("user_a", wait=1)["credits"]["planId"] == "individual-max"
    assert transport.asked == []


def test_with_nothing_cached_and_the_claim_held_a_request_times_out_but_the_lookup_lands():
    from gateway.account import Account
    from gateway.keys import label
    shared, transport = _SharedCredits(), _CountingTransport()
    account = Account("http://upstream.invalid", "1.0", transport, cache=shared)
    shared._held.add(label("user_a"))
    try:
        account.credits("user_a", wait=0.2)
        raise AssertionError("expected a timeout")
    except errors.UpstreamTimeout:
        pass
    shared.put(label("user_a"), {"credits": {"planId": "individual-go"}}, 60)
    assert account.credits("user_a", wait=2)["credits"]["planId"] == "individual-go"
    assert transport.asked == []


class _SharedModels:
    """A model list cache shared by several processes, with a claim per period."""

    def __init__(self, entries=None, held=False):
        self.entries, self.held, self.claims = entries, held, 0

    def get(self):
        return self.entries

    def put(self, entries):
        self.entries = list(entries)

    def claim(self, ttl):
        self.claims += 1
        if self.held:
            return False
        self.held = True
        return True


def test_the_model_list_is_fetched_once_for_every_process_sharing_it(fake, tmp_path):
    from gateway.account import ModelDiscovery
    from gateway.transport import Transport
    shared, lists = _SharedModels(), []
    processes = [ModelDiscovery(fake.url, Transport(1, 5), lists.append, cache=shared)
                 for _ in range(3)]
    assert all(p.refresh() for p in processes)
    assert len(calls(fake, PROVIDER_MODELS_PATH)) == 1
    assert len(lists) == 3 and all(NEW_PROVIDER_MODEL in {e["id"] for e in got} for got in lists)


def test_a_holder_whose_fetch_failed_tries_again_and_the_others_wait_for_the_list(fake, tmp_path):
    """The fetching process keeps its claim for the period, so its retry fetches again; a
    process that finds the claim held and no list yet says so (and retries later)."""
    import gateway.account as account_mod
    from gateway.transport import Transport
    shared = _SharedModels()
    holder = account_mod.ModelDiscovery(fake.url, Transport(1, 5), lambda e: None, cache=shared)
    fake.models_status = 503
    assert holder.refresh() is False
    other = account_mod.ModelDiscovery(fake.url, Transport(1, 5), lambda e: None, cache=shared)
    old = account_mod.CLAIM_WAIT
    account_mod.CLAIM_WAIT = 0.2
    try:
        assert other.refresh() is False                 # the claim is held, no list anywhere
    finally:
        account_mod.CLAIM_WAIT = old
    fake.models_status = 200
    assert holder.refresh() is True                     # still its period: it fetches again
    assert len(calls(fake, PROVIDER_MODELS_PATH)) == 2
    assert other.refresh() is True                      # and the other takes that list
    assert len(calls(fake, PROVIDER_MODELS_PATH)) == 2
