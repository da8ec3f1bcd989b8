"""A real ``redis-server`` for tests: loopback only, no persistence, in a temporary folder.

The Redis backends are tested against the server itself (no fake), including its failures:
:meth:`RedisServer.stop` / :meth:`start` (same port) for a server that goes away and comes back,
:meth:`pause` / :meth:`resume` (SIGSTOP / SIGCONT) for one that hangs with its sockets open.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ask(port: int, command: bytes, timeout: float = 0.5) -> bytes:
    """One raw RESP command over a fresh socket (no client library: it may not be installed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(command)
        return s.recv(1024)


class RedisServer:
    """``redis-server`` on a free loopback port; ``password`` adds ``--requirepass``."""

    def __init__(self, password: str | None = None):
        self.port = _free_port()
        self.password = password
        self.folder = tempfile.mkdtemp(prefix="redis-test-")
        self.proc: subprocess.Popen | None = None
        self.paused = False

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def db_url(self, db: int) -> str:
        return self.url.rsplit("/", 1)[0] + f"/{db}"

    def _command(self) -> list[str]:
        cmd = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", "--dir", self.folder, "--protected-mode", "no"]
        return cmd + (["--requirepass", self.password] if self.password else [])

    def start(self, timeout: float = 10.0) -> "RedisServer":
        self.proc = subprocess.Popen(self._command(), cwd=self.folder,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.paused = False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
            try:
                if self.ping():
                    return self
            except OSError:
                pass
            time.sleep(0.02)
        raise RuntimeError("redis-server did not answer PING")

    def _auth(self) -> bytes:
        if not self.password:
            return b""
        pw = self.password.encode()
        return b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n" % (len(pw), pw)

    def ping(self) -> bool:
        reply = _ask(self.port, self._auth() + b"PING\r\n")
        return b"PONG" in reply or (self.password is not None and reply.startswith(b"+OK"))

    def flush(self) -> None:
        _ask(self.port, self._auth() + b"FLUSHALL\r\n")

    def pause(self) -> None:
        os.kill(self.proc.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)
        self.paused = False

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        if self.paused:
            self.resume()
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
