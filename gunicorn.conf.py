"""gunicorn settings, read automatically by ``gunicorn wsgi:app`` from the working directory.

The threaded ``gthread`` worker lets one process relay several long streams at once.  Its
``timeout`` is a heartbeat of the worker's own loop, which keeps beating while requests
stream, so no amount of streaming (or upstream silence) makes gunicorn kill a worker.
"""
import os
import sys

from gateway import capacity as _capacity
from gateway import config as _config

try:
    _cfg = _config.load()       # also creates a default config file on first start
except _config.ConfigError as _exc:
    sys.stderr.write(f"gateway: {_exc}\n")
    sys.exit(1)

_host = _cfg.host
bind = f"[{_host}]:{_cfg.port}" if ":" in _host else f"{_host}:{_cfg.port}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gateway.worker.GatewayWorker"     # gthread: JSON parse errors, accepts by load
# each worker relays ``stream_slots`` model calls at once (GATEWAY_THREADS overrides it; see
# gateway/capacity.py), plus a reserve of threads so /health, /v1/models and /usage always
# answer, even when every slot is busy
threads = _cfg.stream_slots + _capacity.RESERVED_THREADS
# connections one worker holds open: served, kept alive, or still sending their request (those
# wait in the main loop, costing a file descriptor and a small buffer, not a thread: see
# gateway/arrival.py); past this the worker stops accepting until some close
worker_connections = 4000
timeout = 60                # worker heartbeat, not a request limit (see above)
# on SIGTERM (and SIGINT, see on_starting), running streams get this long to finish; one still
# running a few seconds before it ends with the codec's error event and counts as failed.  A
# host's kill timeout must be longer (Fly: kill_timeout; systemd: TimeoutStopSec).
graceful_timeout = int(os.environ.get("GRACEFUL_TIMEOUT", "60"))
keepalive = 75              # idle client connections (nginx upstream keepalive) stay open
accesslog = "-"
errorlog = "-"
# gunicorn 24+ opens a control socket in $HOME by default; two gateways on one host (or a test
# run beside a live one) would fight over it, and nothing here uses it.
control_socket_disable = True


def on_starting(server):
    """SIGINT is Fly's default kill signal; gunicorn's master treats it as a quick stop that
    kills every worker at once.  Make it the graceful stop SIGTERM is."""
    server.handle_int = server.handle_term


def post_worker_init(worker):
    """Start the worker's background model-list refresh (gateway/account.py) in the worker
    itself: with ``--preload`` the app was built in the master, whose threads a fork drops."""
    gw = worker.wsgi.extensions.get("gateway") if hasattr(worker.wsgi, "extensions") else None
    if gw is not None and gw.discovery is not None:
        gw.discovery.ensure_running()
