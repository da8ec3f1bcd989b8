"""Stream slots (``gateway/capacity.py``): a worker relays ``stream_slots`` model calls at once,
answers the next one at once with 503 and ``Retry-After`` in the caller's envelope, and keeps
its service endpoints fast meanwhile; with the defaults, two workers hold 256 open streams."""
from __future__ import annotations

import concurrent.futures
import json
import socket
import time

import pytest
import requests

from gateway import capacity, errors
from tests.conftest import LOCAL_KEY, start_gateway

FLASH = "deepseek/deepseek-v4-flash"
AUTH = {"Authorization": f"Bearer {LOCAL_KEY}"}


def test_slots_count_and_release_once():
    slots = capacity.Slots(2)
    a, b = slots.take(), slots.take()
    assert slots.full
    with pytest.raises(errors.AtCapacity) as info:
        slots.take()
    assert info.value.status == 503 and info.value.retry_after == capacity.RETRY_AFTER
    a.release()
    a.release()                     # twice: counted once
    assert slots.busy == 1 and not slots.full
    b.release()
    assert slots.busy == 0


def open_stream(server, body: dict, path="/v1/chat/completions") -> socket.socket:
    """A streamed request on a raw socket, read up to its first body bytes; left open."""
    data = json.dumps(body).encode()
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {LOCAL_KEY}\r\n"
                 f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n".encode()
                 + data)
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        assert chunk, "the gateway closed the connection"
        head += chunk
    assert head.startswith(b"HTTP/1.1 200"), head[:200]
    return sock


@pytest.fixture(scope="module")
def small(fake_server, tmp_path_factory):
    """One worker with four stream slots: easy to fill."""
    server = start_gateway(fake_server, tmp_path_factory, "small-capacity", stream_slots=4,
                           workers=1)
    yield server
    server.stop()


ENDLESS = {"model": FLASH, "stream": True, "messages": [{"role": "user", "content": "[[endless:20]]"}]}


@pytest.mark.parametrize("path,body,envelope", [
    ("/v1/chat/completions", {"model": FLASH, "messages": [{"role": "user", "content": "hi"}]}, "openai"),
    ("/v1/messages", {"model": FLASH, "max_tokens": 9, "messages": [{"role": "user", "content": "hi"}]}, "anthropic"),
    ("/v1/responses", {"model": FLASH, "input": "hi"}, "responses"),
])
def test_a_full_worker_answers_at_once_with_503_and_keeps_its_service_endpoints(small, fake, path,
                                                                                  body, envelope):
    socks = [open_stream(small, ENDLESS) for _ in range(4)]
    try:
        started = time.monotonic()
        r = requests.post(small.url + path, json=body, headers=AUTH, timeout=10)
        assert time.monotonic() - started < 1.0
        assert r.status_code == 503 and r.headers["Retry-After"] == str(capacity.RETRY_AFTER)
        err = r.json()["error"]
        if envelope == "anthropic":
            assert r.json()["type"] == "error" and err["type"] == "overloaded_error"
        else:
            assert err["code"] == ("server_is_overloaded" if envelope == "responses" else "gateway_at_capacity")
        for service in ("/health", "/v1/models", "/usage"):
            started = time.monotonic()
            assert requests.get(small.url + service, headers=AUTH, timeout=5).status_code == 200
            assert time.monotonic() - started < 0.5, service
    finally:
        for s in socks:
            s.close()
    deadline = time.monotonic() + 5     # the slots come back as the streams end
    while time.monotonic() < deadline:
        r = requests.post(small.url + path, json=body, headers=AUTH, timeout=10)
        if r.status_code == 200:
            break
        time.sleep(0.1)
    assert r.status_code == 200


def test_two_default_workers_hold_256_streams_and_answer_a_fresh_one_fast(fake_server, tmp_path_factory, fake):
    """The defaults (2 workers x 160 slots): 256 open streams, spread over both workers, and a
    fresh request still gets its first chunk quickly (the benchmark measures it precisely)."""
    server = start_gateway(fake_server, tmp_path_factory, "default-capacity")
    socks = []
    try:
        with concurrent.futures.ThreadPoolExecutor(32) as pool:
            socks = list(pool.map(lambda _: open_stream(server, ENDLESS), range(256)))
        started = time.monotonic()
        r = requests.post(server.url + "/v1/chat/completions", headers=AUTH, timeout=10, stream=True,
                          json={"model": FLASH, "stream": True, "messages": [{"role": "user", "content": "hi"}]})
        first = next(r.iter_lines())
        assert r.status_code == 200 and first and time.monotonic() - started < 1.0
        r.close()
    finally:
        for s in socks:
            s.close()
        server.stop()
