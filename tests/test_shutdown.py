"""Stopping (``gateway/worker.py`` ``handle_exit``, ``relay.stop_by``, gunicorn.conf.py): on SIGTERM
and on SIGINT (Fly's default) new connections are refused at once, streams in flight finish
within ``graceful_timeout``, and one still running near the deadline ends with the codec's error
event and counts as failed -- never a stream cut mid-chunk, never a lost count."""
from __future__ import annotations

import json
import signal
import socket
import threading
import time

import pytest
import yaml

from tests.conftest import LOCAL_KEY, Gunicorn, free_port, gateway_config

FLASH = "deepseek/deepseek-v4-flash"


def stream(port: int, content: str, out: dict, key: str) -> None:
    body = json.dumps({"model": FLASH, "stream": True,
                       "messages": [{"role": "user", "content": content}]}).encode()
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                 f"{LOCAL_KEY}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}"
                 f"\r\n\r\n".encode() + body)
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except OSError:
            break
        if not chunk:
            break
        data += chunk
        if data.endswith(b"0\r\n\r\n"):     # the chunked body's proper end
            break
    sock.close()
    out[key] = data.decode("utf-8", "replace")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stopping_refuses_new_connections_and_ends_streams_properly(fake_server, tmp_path, sig):
    fake_server.reset()
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(gateway_config(fake_server.url, tmp_path)))
    server = Gunicorn(str(path), free_port(), workers=1, extra_env={"GRACEFUL_TIMEOUT": "5"}).wait_ready()
    out: dict = {}
    threads = [threading.Thread(target=stream, args=(server.port, c, out, k))
               for k, c in (("short", "[[slow:10]]"), ("long", "[[endless:60]]"))]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 5
    while len([r for r in fake_server.requests if r["method"] == "POST"]) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    stopped = time.monotonic()
    server.proc.send_signal(sig)
    time.sleep(0.5)
    with pytest.raises(OSError):                # refused (or reset), not left in a backlog
        with socket.create_connection(("127.0.0.1", server.port), timeout=2) as s:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            if not s.recv(100):
                raise ConnectionResetError("closed without an answer")
    for t in threads:
        t.join(15)
    server.proc.wait(15)
    server._log.close()
    assert time.monotonic() - stopped < 8
    assert out["short"].rstrip().endswith("0") and "data: [DONE]" in out["short"]
    assert '"error"' in out["long"] and "gateway_restarting" in out["long"], out["long"][-500:]
    assert out["long"].endswith("0\r\n\r\n")          # a complete chunked body, not a cut
    usage = json.loads((tmp_path / "usage.json").read_text())
    assert (usage["total_requests"], usage["failed_requests"]) == (2, 1)
    assert "Traceback" not in server.log()


def test_a_whole_answer_caught_by_the_stop_deadline_is_a_503(fake, tmp_path, monkeypatch):
    """Not streamed, there is no event to end with: the client gets 503 gateway_restarting."""
    from gateway import create_app, relay
    c = create_app(gateway_config(fake.url, tmp_path)).test_client()
    monkeypatch.setattr(relay, "stop_by", time.monotonic())     # the deadline has passed
    r = c.post("/v1/chat/completions", headers={"Authorization": f"Bearer {LOCAL_KEY}"},
               json={"model": FLASH, "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 503 and r.json["error"]["code"] == "gateway_restarting"
