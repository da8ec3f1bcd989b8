"""gateway/upstream/auto.py by the route contract alone: two FakeRoutes and an in-memory route
memory, no HTTP.  A key's first call tries the Provider API; a Go key's 403 upgrade_required
sends that same call to the CLI route and is remembered, so later calls go straight there."""
from __future__ import annotations

import pytest

from gateway import errors, keys
from gateway.canonical import STOP, Finish, TextDelta, Usage
from gateway.catalog import Catalog
from gateway.codecs import openai_chat
from gateway.key_routes import CLI, PROVIDER
from gateway.state import MemoryKeyRoutes
from gateway.upstream.auto import AutoRoute
from gateway.upstream.failures import NoProviderAccess
from gateway.upstream.fake import FakeRoute

ANSWER = [[TextDelta("hi")], [Finish(STOP, Usage(3, 1))]]
KEY = "user_auto_test_key"


def request():
    return openai_chat.decode({"model": "deepseek-v4-flash",
                               "messages": [{"role": "user", "content": "hi"}]},
                              Catalog.load(), None)


def events(stream) -> list:
    return [ev for batch in stream for ev in batch]


def test_a_provider_key_stays_on_the_provider_api_and_is_remembered():
    provider, cli, memory = FakeRoute(ANSWER), FakeRoute(ANSWER), MemoryKeyRoutes()
    route = AutoRoute(provider, cli, memory)
    assert events(route.open(request(), KEY)) == [ev for b in ANSWER for ev in b]
    assert len(provider.opened) == 1 and cli.opened == []
    assert memory.get(keys.label(KEY)) == PROVIDER


def test_a_go_key_falls_back_to_the_cli_route_once_and_then_goes_straight_there():
    provider = FakeRoute(ANSWER, open_error=NoProviderAccess("no Provider API"))
    cli, memory = FakeRoute(ANSWER), MemoryKeyRoutes()
    route = AutoRoute(provider, cli, memory)
    for _ in range(3):
        assert events(route.open(request(), KEY))[-1] == Finish(STOP, Usage(3, 1))
    assert len(provider.opened) == 1                 # probed once
    assert len(cli.opened) == 3
    assert memory.get(keys.label(KEY)) == CLI


def test_other_provider_failures_are_the_callers_not_a_fallback():
    provider = FakeRoute(ANSWER, open_error=errors.RateLimited("slow down"))
    cli = FakeRoute(ANSWER)
    with pytest.raises(errors.RateLimited):
        events(AutoRoute(provider, cli, MemoryKeyRoutes()).open(request(), KEY))
    assert cli.opened == []


def test_aborting_stops_whichever_route_was_chosen():
    provider = FakeRoute(ANSWER, open_error=NoProviderAccess("no Provider API"))
    cli = FakeRoute(ANSWER, hold_after=1)
    stream = AutoRoute(provider, cli, MemoryKeyRoutes()).open(request(), KEY)
    batches = iter(stream)
    assert next(batches) == [TextDelta("hi")]
    stream.abort()
    assert list(batches) == [] and cli.aborted


def test_a_missing_key_is_the_503_every_route_gives():
    with pytest.raises(errors.GatewayError) as info:
        AutoRoute(FakeRoute(), FakeRoute(), MemoryKeyRoutes()).open(request(), None)
    assert info.value.status == 503
