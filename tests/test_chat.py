"""``gateway/chat.py`` without HTTP: first-event gating, relaying through an encoder, counting
once, and the stream slot, with a fake gateway and fake upstream streams."""
from __future__ import annotations

import json
import threading
import time

import pytest

from gateway import chat, errors, keys
from gateway.canonical import STOP, Finish, TextDelta, Usage
from gateway.capacity import Slots
from gateway.catalog import Catalog
from gateway.codecs import openai_chat
from gateway.upstream.fake import FakeRoute

CATALOG = Catalog.load()
USAGE = Usage(input_tokens=5, output_tokens=2)


class Stream:
    """Upstream batches, then (optionally) an exception or a silence until aborted."""

    def __init__(self, batches, then=None, silent=False):
        self.batches, self.then, self.silent = batches, then, silent
        self.aborted = threading.Event()

    def __iter__(self):
        yield from self.batches
        if self.silent:
            self.aborted.wait(10)
        if self.then is not None:
            raise self.then

    def abort(self):
        self.aborted.set()


class Route:
    def __init__(self, stream):
        self.stream, self.opened = stream, []

    def open(self, req, api_key=None):
        self.opened.append((req.model.id, api_key))
        if isinstance(self.stream, Exception):
            raise self.stream
        return self.stream


class UsageLog:
    path = "/nowhere/usage.json"

    def __init__(self):
        self.records, self.errors = [], []

    def record(self, model, usage, failed, label, error=None):
        self.records.append((model, usage, failed, label))
        self.errors.append(error)


class FakeGateway:
    def __init__(self, stream, slots=2, keepalive=5.0):
        self.route = Route(stream)
        self.usage = UsageLog()
        self.slots = Slots(slots)
        self.keepalive_interval = keepalive

    def upstream_key(self, environ):
        return environ.get(keys.UPSTREAM_KEY) or "gateway-key"


class Encoder:
    """Names what it was asked to encode."""

    def event(self, ev):
        return f"event:{type(ev).__name__}\n".encode()

    def heartbeat(self):
        return b"beat\n"

    def error(self, err):
        return f"error:{err.code}\n".encode()


ENVIRON = {keys.KEY_LABEL: "gateway"}


def request(stream=False):
    return openai_chat.decode({"model": "deepseek-v4-flash", "stream": stream,
                               "messages": [{"role": "user", "content": "hi"}]}, CATALOG, None)


def answer():
    return [[TextDelta("Hel")], [TextDelta("lo"), Finish(STOP, USAGE)]]


# ---- collect -----------------------------------------------------------------------------------

def test_collect_returns_the_events_counts_once_and_frees_the_slot():
    gw = FakeGateway(Stream(answer()))
    events = chat.collect(gw, request(), dict(ENVIRON))
    assert events == [TextDelta("Hel"), TextDelta("lo"), Finish(STOP, USAGE)]
    assert gw.usage.records == [("deepseek/deepseek-v4-flash", USAGE, False, "gateway")]
    assert gw.slots.busy == 0


def test_the_route_gets_the_key_the_gateway_chooses():
    gw = FakeGateway(Stream(answer()))
    chat.collect(gw, request(), dict(ENVIRON))
    chat.collect(gw, request(), {**ENVIRON, keys.UPSTREAM_KEY: "user_own"})
    assert [key for _, key in gw.route.opened] == ["gateway-key", "user_own"]


def test_collect_without_finish_is_an_error_counted_as_failed():
    gw = FakeGateway(Stream([[TextDelta("Hel")]]))
    with pytest.raises(errors.UpstreamError):
        chat.collect(gw, request(), dict(ENVIRON))
    assert [failed for *_, failed, _ in gw.usage.records] == [True]
    assert gw.slots.busy == 0


# ---- before the first event --------------------------------------------------------------------

@pytest.mark.parametrize("stream", [
    errors.RateLimited("slow down"),                        # the route refuses at once
    Stream([], then=errors.InsufficientCredits("broke")),   # upstream fails before any output
])
def test_a_failure_before_the_first_event_is_raised_counted_and_frees_the_slot(stream):
    gw = FakeGateway(stream)
    with pytest.raises(errors.GatewayError) as info:
        chat.stream(gw, request(True), Encoder(), dict(ENVIRON))
    assert info.value.status in (402, 429)
    assert [(usage, failed) for _, usage, failed, _ in gw.usage.records] == [(None, True)]
    assert gw.slots.busy == 0


def test_a_stream_closed_without_a_word_is_a_502():
    gw = FakeGateway(Stream([]))
    with pytest.raises(errors.UpstreamError) as info:
        chat.open_events(gw, request(), dict(ENVIRON))
    assert "without answering" in info.value.message and gw.slots.busy == 0


def test_a_full_worker_refuses_at_once_without_calling_upstream():
    gw = FakeGateway(Stream(answer()), slots=0)
    with pytest.raises(errors.AtCapacity):
        chat.collect(gw, request(), dict(ENVIRON))
    assert gw.route.opened == [] and gw.usage.records == []


# ---- stream ------------------------------------------------------------------------------------

def test_stream_encodes_each_event_and_counts_before_the_last_bytes():
    gw = FakeGateway(Stream(answer()))
    body, release = chat.stream(gw, request(True), Encoder(), dict(ENVIRON))
    assert gw.slots.busy == 1           # held while the body is being sent
    out = []
    for chunk in body:
        out.append(chunk)
        if chunk == b"event:Finish\n":
            assert gw.usage.records[-1][2] is False     # counted before it went out
    assert out == [b"event:TextDelta\n", b"event:TextDelta\n", b"event:Finish\n"]
    assert len(gw.usage.records) == 1 and gw.slots.busy == 0
    release()                           # after the body: counts nothing twice
    assert gw.slots.busy == 0


def test_a_failure_after_output_is_the_encoders_error_and_a_failed_call():
    gw = FakeGateway(Stream([[TextDelta("Hel")]], then=errors.UpstreamError(
        "cut", code="upstream_truncated")))
    body, _ = chat.stream(gw, request(True), Encoder(), dict(ENVIRON))
    assert list(body) == [b"event:TextDelta\n", b"error:upstream_truncated\n"]
    assert [failed for *_, failed, _ in gw.usage.records] == [True]


def test_a_bug_while_relaying_is_a_gateway_error_event():
    class Broken(Encoder):
        def event(self, ev):
            if type(ev) is Finish:
                raise RuntimeError("bug")
            return super().event(ev)

    gw = FakeGateway(Stream(answer()))
    body, _ = chat.stream(gw, request(True), Broken(), dict(ENVIRON))
    assert list(body)[-1] == b"error:gateway_error\n"
    assert gw.slots.busy == 0


def test_silence_becomes_the_encoders_heartbeat_and_leaving_aborts_upstream():
    stream = Stream([[TextDelta("a")]], silent=True)
    gw = FakeGateway(stream, keepalive=0.1)
    body, _ = chat.stream(gw, request(True), Encoder(), dict(ENVIRON))
    assert next(body) == b"event:TextDelta\n"
    assert next(body) == b"beat\n"
    body.close()                        # the client went away
    assert stream.aborted.wait(1)
    assert [failed for *_, failed, _ in gw.usage.records] == [True] and gw.slots.busy == 0


def test_release_frees_the_slot_when_the_body_is_never_read():
    stream = Stream(answer())
    gw = FakeGateway(stream)
    body, release = chat.stream(gw, request(True), Encoder(), dict(ENVIRON))
    assert gw.slots.busy == 1
    release()
    assert gw.slots.busy == 0


def test_real_codec_encoder_fits_the_contract():
    gw = FakeGateway(Stream(answer()))
    body, _ = chat.stream(gw, request(True), openai_chat.ChunkEncoder("m"), dict(ENVIRON))
    raw = b"".join(body)
    assert raw.count(b"chat.completion.chunk") == 4 and raw.endswith(b"data: [DONE]\n\n")


# ---- with the fake route (gateway/upstream/fake.py) and a real codec ---------------------------

def _on_fake_route(route, keepalive=5.0):
    gw = FakeGateway(None, keepalive=keepalive)
    gw.route = route
    return gw


def test_a_fake_route_through_the_openai_codec_is_a_whole_sse_stream():
    route = FakeRoute(answer())
    gw = _on_fake_route(route)
    req = request(True)
    body, _ = chat.stream(gw, req, openai_chat.ChunkEncoder(req.model.id), dict(ENVIRON))
    text = b"".join(body).decode()
    chunks = [json.loads(line[6:]) for line in text.splitlines()
              if line.startswith("data: {")]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks
                   if c["choices"]) == "Hello"
    assert text.endswith("data: [DONE]\n\n")
    assert [key for _, key in route.opened] == ["gateway-key"] and not route.aborted
    assert gw.usage.records == [("deepseek/deepseek-v4-flash", USAGE, False, "gateway")]


def test_a_fake_routes_refusal_is_raised_before_any_byte_and_counted():
    gw = _on_fake_route(FakeRoute(answer(), open_error=errors.RateLimited("slow down")))
    with pytest.raises(errors.RateLimited):
        chat.stream(gw, request(True), Encoder(), dict(ENVIRON))
    assert [failed for *_, failed, _ in gw.usage.records] == [True] and gw.slots.busy == 0


def test_a_client_leaving_a_silent_fake_route_aborts_it():
    route = FakeRoute(answer(), hold_after=1)
    gw = _on_fake_route(route, keepalive=0.1)
    body, _ = chat.stream(gw, request(True), Encoder(), dict(ENVIRON))
    assert next(body) == b"event:TextDelta\n"
    assert next(body) == b"beat\n"              # upstream is holding: a heartbeat
    body.close()
    deadline = time.monotonic() + 2
    while not route.aborted and time.monotonic() < deadline:
        time.sleep(0.01)
    assert route.aborted and gw.slots.busy == 0
