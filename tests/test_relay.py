"""``gateway/relay.py`` without HTTP: the reader thread, keep-alives in silences, a client that
leaves, the stop deadline, and how the client's socket is watched."""
from __future__ import annotations

import socket
import threading
import time

import pytest

from gateway import errors, relay
from gateway.canonical import Finish, TextDelta, Usage


# ---- relay mechanics ---------------------------------------------------------------------------

class BlockingStream:
    """An upstream that sends one event, then stays silent until aborted."""

    def __init__(self):
        self.aborted = threading.Event()

    def __iter__(self):
        yield [TextDelta("a")]
        self.aborted.wait(10)
        raise errors.UpstreamError("aborted")

    def abort(self):
        self.aborted.set()


def test_silent_upstream_yields_heartbeats_and_is_aborted_when_the_client_goes():
    stream = BlockingStream()
    gone_at = time.monotonic() + 1.2
    items = list(relay.pump(stream, 0.3, client_gone=lambda: time.monotonic() > gone_at))
    assert items[0] == TextDelta("a")
    assert items.count(relay.HEARTBEAT) >= 2
    assert stream.aborted.wait(1)


def test_pump_reraises_upstream_errors_and_does_not_abort_after_finish():
    class Finished:
        aborted = False

        def __iter__(self):
            yield [TextDelta("x"), Finish("stop", Usage())]

        def abort(self):
            self.aborted = True

    s = Finished()
    events = relay.pump(s, 5)
    assert next(events) == TextDelta("x") and isinstance(next(events), Finish)
    events.close()      # the consumer stops at Finish: the rest is draining, not an abort
    assert not s.aborted

    class Failing:
        def __iter__(self):
            raise errors.RateLimited("slow down")
            yield

        def abort(self):
            pass

    with pytest.raises(errors.RateLimited):
        list(relay.pump(Failing(), 5))


class Talking:
    """An upstream that sends a batch every 20 ms until aborted."""

    def __init__(self):
        self.aborted = threading.Event()

    def __iter__(self):
        while not self.aborted.is_set():
            yield [TextDelta("x")]
            time.sleep(0.02)
        raise errors.UpstreamError("aborted")

    def abort(self):
        self.aborted.set()


def test_a_client_that_leaves_while_upstream_talks_is_noticed_and_upstream_aborted():
    """A whole answer writes nothing to the client until it is complete: only the periodic
    check notices the client left, and then upstream is closed."""
    stream = Talking()
    left = threading.Event()
    threading.Timer(0.3, left.set).start()
    started = time.monotonic()
    items = list(relay.pump(stream, 5, client_gone=left.is_set))
    assert time.monotonic() - started < 3
    assert items and all(i == TextDelta("x") for i in items)     # never a heartbeat: it talks
    assert stream.aborted.wait(1)


def test_heartbeats_only_come_after_interval_seconds_of_silence():
    stream = BlockingStream()
    events = relay.pump(stream, 0.2)
    assert next(events) == TextDelta("a")
    started = time.monotonic()
    assert next(events) is relay.HEARTBEAT
    assert time.monotonic() - started >= 0.19
    events.close()          # the consumer stops before the end: upstream is aborted
    assert stream.aborted.wait(1)


def test_the_stop_deadline_ends_a_running_relay_with_shutting_down(monkeypatch):
    stream = BlockingStream()
    monkeypatch.setattr(relay, "stop_by", time.monotonic() + 0.3)
    events = relay.pump(stream, 5)
    assert next(events) == TextDelta("a")
    with pytest.raises(errors.ShuttingDown) as info:
        next(events)
    assert info.value.status == 503 and info.value.code == "gateway_restarting"
    assert stream.aborted.wait(1)


def test_a_stream_that_ends_without_finish_just_ends():
    class Short:
        aborted = False

        def __iter__(self):
            yield [TextDelta("a"), TextDelta("b")]

        def abort(self):
            self.aborted = True

    s = Short()
    assert list(relay.pump(s, 5)) == [TextDelta("a"), TextDelta("b")]
    assert not s.aborted        # it ended by itself: nothing to abort


def test_without_a_gunicorn_socket_there_is_no_check():
    assert relay.client_gone_checker({}) is None


def test_the_checker_tells_a_closed_client_from_a_quiet_or_talking_one():
    ours, theirs = socket.socketpair()
    try:
        gone = relay.client_gone_checker({"gunicorn.socket": ours})
        assert gone() is False              # quiet
        theirs.sendall(b"x")
        assert gone() is False              # pipelined bytes are not a close
        assert ours.recv(1) == b"x"
        theirs.close()
        assert gone() is True
    finally:
        ours.close()
