"""gateway/arrival.py without a server: when an arriving request is ready for a thread, when its
client is late, and the paced reads a thread does itself (over a real socket pair)."""
from __future__ import annotations

import socket
import time

import pytest

from gateway import arrival
from gateway.arrival import Arrival, PacedUnreader, TooSlow

HEAD = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"


def test_a_request_without_a_body_is_ready_when_its_head_is():
    a = Arrival(0.0)
    assert not a.feed(b"GET /health HTTP/1.1\r\nHo", 0.1)
    assert not a.feed(b"st: x\r\n", 0.2)
    assert a.feed(b"\r\n", 0.3)
    assert a.head_at == 0.3 and bytes(a.buf).endswith(b"\r\n\r\n")


def test_a_body_of_known_length_is_gathered_first():
    a = Arrival(0.0)
    assert not a.feed(HEAD + b"Content-Length: 10\r\n\r\n01234", 0.1)
    assert a.feed(b"56789", 0.2)


def test_a_large_body_is_gathered_only_up_to_body_max():
    a = Arrival(0.0)
    assert not a.feed(HEAD + b"Content-Length: 10000000\r\n\r\n", 0.1)
    assert a.feed(b"x" * arrival.BODY_MAX, 0.2)


@pytest.mark.parametrize("header", [
    b"Transfer-Encoding: chunked",          # a thread reads chunks, paced
    b"Expect: 100-continue",                # its client waits for the 100 before the body
    b"Content-Length: abc",                 # gunicorn's 400
    b"Content-Length: 5\r\nContent-Length: 5",
])
def test_headers_a_thread_must_handle_hand_over_with_the_head(header):
    a = Arrival(0.0)
    assert a.feed(HEAD + header + b"\r\nContent-Type: x\r\n\r\n", 0.1)


def test_a_bare_lf_head_is_handed_over_for_gunicorn_to_refuse():
    assert Arrival(0.0).feed(b"GET /health HTTP/1.1\nHost: x\n\n", 0.1)


def test_a_head_that_never_ends_is_handed_over_past_head_max():
    a = Arrival(0.0)
    assert not a.feed(HEAD + b"X-A: " + b"a" * (arrival.HEAD_MAX - 100), 0.1)
    assert a.feed(b"a" * 200, 0.2)


def test_headers_are_late_after_head_timeout():
    a = Arrival(100.0)
    a.feed(b"POST /v1/chat/comp", 100.1)
    assert a.overdue(100.0 + arrival.HEAD_TIMEOUT) is None
    assert a.overdue(100.1 + arrival.HEAD_TIMEOUT) == "request headers"
    assert Arrival(0.0).overdue(arrival.HEAD_TIMEOUT + 0.1) == "request headers"   # nothing sent


def test_a_body_is_late_when_it_falls_below_the_minimum_rate():
    a = Arrival(0.0)
    a.feed(HEAD + b"Content-Length: 200000\r\n\r\n", 1.0)
    assert a.overdue(1.0 + arrival.BODY_GRACE) is None                 # the grace
    assert a.overdue(1.1 + arrival.BODY_GRACE) == "request body"       # nothing came
    b = Arrival(0.0)
    b.feed(HEAD + b"Content-Length: 200000\r\n\r\n", 1.0)
    b.feed(b"x" * arrival.MIN_BODY_RATE * 3, 2.0)                      # 3 s' worth
    assert b.overdue(0.9 + arrival.BODY_GRACE + 3) is None
    assert b.overdue(1.1 + arrival.BODY_GRACE + 3) == "request body"


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


def test_paced_reads_return_what_comes_and_leave_the_socket_blocking(pair):
    server, client = pair
    reader = PacedUnreader(server)
    client.sendall(b"hello")
    assert reader.read() == b"hello"
    assert server.gettimeout() is None          # writes of the response are never bounded


def test_a_stalled_read_gives_up_after_the_grace(pair, monkeypatch):
    monkeypatch.setattr(arrival, "BODY_GRACE", 0.3)
    server, client = pair
    reader = PacedUnreader(server)
    client.sendall(b"x" * 100)
    assert reader.read() == b"x" * 100
    started = time.monotonic()
    with pytest.raises(TooSlow) as info:
        reader.read()
    assert 0.2 < time.monotonic() - started < 2
    assert isinstance(info.value, TimeoutError)       # what the app's body reader looks for
    assert "too slowly" in str(info.value)
    assert server.gettimeout() is None


def test_the_pace_restarts_with_each_request(pair, monkeypatch):
    monkeypatch.setattr(arrival, "BODY_GRACE", 0.2)
    server, client = pair
    reader = PacedUnreader(server)
    time.sleep(0.3)                 # a long answer to the request before
    with pytest.raises(TooSlow):
        reader.read()
    reader.restart(time.monotonic())
    client.sendall(b"next")
    assert reader.read() == b"next"
