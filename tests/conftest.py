"""Shared fixtures: a fake Command Code upstream, a fresh app per test, and a real gunicorn.

The fake upstream is a real HTTP server on a loopback port (tests/fake_upstream.py); it checks
every request the gateway sends against the protocol (docs/protocol.md), and any mismatch fails
the test that caused it.  Integration tests run the gateway exactly as users do -- ``gunicorn wsgi:app`` with
gunicorn.conf.py, two gthread workers -- configured through ``GATEWAY_CONFIG``.
"""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time

import pytest
import requests
import yaml

from tests.fake_upstream import PRO_KEY, FakeUpstream

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOCAL_KEY = "test-local-key"
UPSTREAM_KEY = "user_test_key_0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def fake_server():
    with FakeUpstream() as fake:
        yield fake


@pytest.fixture
def fake(fake_server):
    """The session's fake upstream, cleared for this test; fails the test on protocol violations."""
    fake_server.reset()
    yield fake_server
    assert fake_server.violations == [], "the gateway sent requests that break the protocol"


def gateway_config(fake_url: str, tmp_path, **overrides) -> dict:
    cfg = {"api_key": LOCAL_KEY,
           "commandcode": {"api_key": UPSTREAM_KEY, "base_url": fake_url, "mode": "cli"},
           "usage_file": str(tmp_path / "usage.json"),
           "keepalive_interval": 0.5, "plan": "all", "discover_models": False}
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return cfg


@pytest.fixture
def app(fake, tmp_path):
    """A fresh app (no server) pointed at the fake upstream."""
    from gateway import create_app
    return create_app(gateway_config(fake.url, tmp_path))


@pytest.fixture
def client(app):
    c = app.test_client()
    c.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {LOCAL_KEY}"
    return c


class Gunicorn:
    """``gunicorn wsgi:app`` in a subprocess, as a user would start it."""

    def __init__(self, config_path: str, port: int, workers: int = 2, extra_env: dict | None = None):
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        env = {k: v for k, v in os.environ.items()
               if k not in ("COMMAND_CODE_API_KEY", "GATEWAY_API_KEY", "COMMANDCODE_BASE_URL",
                         "COMMANDCODE_MODE")}
        env.update(GATEWAY_CONFIG=config_path, HOST="127.0.0.1", PORT=str(port),
                   WEB_CONCURRENCY=str(workers), PYTHONUNBUFFERED="1", **(extra_env or {}))
        self.log_path = config_path + ".log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "wsgi:app"], cwd=ROOT,
                                     env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 20.0) -> "Gunicorn":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited: {self.log()}")
            try:
                if requests.get(self.url + "/health", timeout=1).ok:
                    return self
            except requests.RequestException:
                time.sleep(0.1)
        raise RuntimeError(f"gunicorn did not start: {self.log()}")

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._log.close()


@pytest.fixture(scope="session")
def gateway(fake_server, tmp_path_factory):
    """A real gunicorn (2 gthread workers) in front of the fake upstream, for the whole session."""
    folder = tmp_path_factory.mktemp("gateway")
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(gateway_config(fake_server.url, folder)))
    server = Gunicorn(str(path), free_port()).wait_ready()
    server.usage_file = str(folder / "usage.json")
    yield server
    server.stop()
    assert "Traceback" not in server.log(), server.log()


def start_gateway(fake_server, tmp_path_factory, name: str, workers: int = 2,
                  **overrides) -> "Gunicorn":
    """A gunicorn (2 gthread workers) configured with ``gateway_config`` plus ``overrides``."""
    folder = tmp_path_factory.mktemp(name)
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(gateway_config(fake_server.url, folder, **overrides)))
    server = Gunicorn(str(path), free_port(), workers=workers).wait_ready()
    server.folder = folder
    server.usage_file = str(folder / "usage.json")
    return server


@pytest.fixture(scope="session")
def provider_gateway(fake_server, tmp_path_factory):
    server = start_gateway(fake_server, tmp_path_factory, "provider",
                           commandcode={"mode": "provider", "api_key": PRO_KEY})
    yield server
    server.stop()
    assert "Traceback" not in server.log(), server.log()


@pytest.fixture
def openai_client(gateway, fake):
    import openai
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=LOCAL_KEY, max_retries=0,
                         timeout=30)


@contextlib.contextmanager
def usage_delta(server, *models: str):
    """What the requests made inside the ``with`` block added to ``/usage``'s totals on
    ``server`` for each of ``models``: yields a dict that is filled on exit with
    ``{model: {counter: increase}}`` (a model ``/usage`` has not seen yet counts from 0)."""
    counters = ("total_requests", "failed_requests", "prompt_tokens", "completion_tokens",
                "cache_read_tokens", "cache_write_tokens", "reasoning_tokens")

    def totals() -> dict:
        data = requests.get(server.url + "/usage", headers={"Authorization": f"Bearer {LOCAL_KEY}"},
                            timeout=5).json()
        return {m: data["models"].get(m, {}) for m in models}

    before, delta = totals(), {}
    yield delta
    after = totals()
    delta.update({m: {k: after[m].get(k, 0) - before[m].get(k, 0) for k in counters} for m in models})


@pytest.fixture(scope="session")
def redis_server():
    """One real ``redis-server`` (loopback, no persistence) for the session; tests keep apart by
    a fresh key prefix each.  Tests that stop or pause a server start their own
    (tests/redis_server.py)."""
    from tests.redis_server import RedisServer
    with RedisServer() as server:
        yield server


#: tests that wait out something long started earlier: run last, so the wait overlaps the suite
LAST = ("test_silent_stream_survived_on_keepalives",)


def pytest_collection_modifyitems(session, config, items):
    """Move :data:`LAST` to the end of the run (tests/test_nginx.py's 65 s silent stream)."""
    items.sort(key=lambda item: item.originalname in LAST)
