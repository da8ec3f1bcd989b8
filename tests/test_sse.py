"""SSE framing of the Provider API's streams (gateway/upstream/sse.py), fed in every split."""
from __future__ import annotations

from gateway.upstream.sse import SSEParser
from tests.wire_fixtures import split


# ---- SSEParser -------------------------------------------------------------------------------------

def parse(data: bytes, split) -> list:
    p = SSEParser()
    out: list = []
    for chunk in split(data):
        out += p.feed(chunk)
    return out + p.end()


def test_sse_events_fields_comments_and_crlf(split):
    data = (": keep-alive\n\n"
            "event: message_start\ndata: {\"a\": \"é世🎉\"}\n\n"
            "data: line one\ndata: line two\n\n"
            "id: 7\nretry: 100\ndata:no-space\n\n"
            "data:  two spaces\r\n\r\n"
            "event: lonely\n\n"
            "data: after lonely\n\n"
            "data\n\n").encode()
    assert parse(data, split) == [
        ("message_start", "{\"a\": \"é世🎉\"}".encode()),
        (None, b"line one\nline two"),
        (None, b"no-space"),
        (None, b" two spaces"),
        (None, b"after lonely"),        # an event name without data is dropped, then reset
        (None, b""),
    ]


def test_sse_last_event_without_its_blank_line_counts_at_end(split):
    assert parse(b"data: one\n\nevent: x\ndata: two\n", split) == [(None, b"one"), ("x", b"two")]
    assert parse(b"data: one\n\ndata: tw", split) == [(None, b"one"), (None, b"tw")]
    assert parse(b"", split) == []


def test_sse_feed_returns_events_as_soon_as_their_blank_line_arrives():
    p = SSEParser()
    assert p.feed(b"data: a") == []
    assert p.feed(b"bc\n") == []
    assert p.feed(b"\n") == [(None, b"abc")]
    assert p.feed(b"data: x\n\ndata: y\n\nda") == [(None, b"x"), (None, b"y")]
    assert p.feed(b"ta: z\r") == []
    assert p.feed(b"\n\r\n") == [(None, b"z")]
    assert p.end() == []
