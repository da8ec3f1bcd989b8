"""The in-memory route (gateway/upstream/fake.py) keeps the route contract (gateway/upstream/base.py),
so tests of what sits above a route can trust it: batches as given, failures where asked, a key
required, abort from another thread."""
from __future__ import annotations

import threading
import time

import pytest

from gateway import errors
from gateway.canonical import STOP, ChatRequest, Finish, Message, Text, TextDelta, Usage
from gateway.catalog import Catalog
from gateway.upstream.base import UpstreamStream
from gateway.upstream.fake import FakeRoute

MODEL = Catalog.load().resolve("deepseek/deepseek-v4-flash")
REQ = ChatRequest(MODEL, MODEL.id, [Message("user", [Text("hi")])])
BATCHES = [[TextDelta("he")], [TextDelta("y")], [Finish(STOP, Usage(input_tokens=3))]]


def test_plays_the_batches_and_records_what_it_was_opened_with():
    route = FakeRoute(BATCHES)
    stream = route.open(REQ, "user_k")
    assert isinstance(stream, UpstreamStream)
    assert list(stream) == BATCHES
    assert route.opened == [(REQ, "user_k")]
    assert not route.aborted and not stream.aborted


def test_every_open_plays_the_same_batches():
    route = FakeRoute(BATCHES)
    assert list(route.open(REQ, "a")) == list(route.open(REQ, "b")) == BATCHES
    assert [key for _, key in route.opened] == ["a", "b"]


def test_a_missing_key_is_the_same_503_as_on_every_route():
    route = FakeRoute(BATCHES)
    for key in (None, ""):
        with pytest.raises(errors.NotConfigured) as info:
            route.open(REQ, key)
        assert info.value.code == "upstream_key_missing"
    assert route.opened == []


def test_an_open_error_is_raised_on_connect_before_any_event():
    route = FakeRoute(BATCHES, open_error=errors.RateLimited("slow down", retry_after=7))
    stream = route.open(REQ, "user_k")          # opening does not wait for the network
    with pytest.raises(errors.RateLimited) as info:
        next(iter(stream))
    assert info.value.retry_after == 7
    with pytest.raises(errors.RateLimited):
        route.open(REQ, "user_k").connect()


def test_an_error_mid_stream_after_the_given_batches():
    route = FakeRoute(BATCHES, error=errors.UpstreamError("cut", code="upstream_truncated"),
                      error_after=1)
    got = []
    with pytest.raises(errors.UpstreamError) as info:
        for batch in route.open(REQ, "user_k"):
            got.append(batch)
    assert got == BATCHES[:1] and info.value.code == "upstream_truncated"


def test_an_error_without_error_after_comes_after_every_batch():
    route = FakeRoute(BATCHES[:2], error=errors.UpstreamError("cut"))
    got = []
    with pytest.raises(errors.UpstreamError):
        for batch in route.open(REQ, "user_k"):
            got.append(batch)
    assert got == BATCHES[:2]


def test_abort_before_iterating_yields_nothing():
    route = FakeRoute(BATCHES)
    stream = route.open(REQ, "user_k")
    stream.abort()
    assert list(stream) == [] and route.aborted


def test_abort_between_batches_stops_the_stream():
    route = FakeRoute(BATCHES)
    stream = route.open(REQ, "user_k")
    it = iter(stream)
    assert next(it) == BATCHES[0]
    stream.abort()
    assert list(it) == [] and stream.aborted


def test_a_held_stream_waits_until_aborted_from_another_thread():
    route = FakeRoute(BATCHES, hold_after=1)
    stream = route.open(REQ, "user_k")
    got, finished = [], threading.Event()

    def read():
        got.extend(stream)
        finished.set()

    threading.Thread(target=read, daemon=True).start()
    time.sleep(0.05)
    assert got == BATCHES[:1] and not finished.is_set()      # silent, like a stalled upstream
    stream.abort()
    assert finished.wait(2) and got == BATCHES[:1] and route.aborted
