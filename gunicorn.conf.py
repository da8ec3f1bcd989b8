"""gunicorn settings, read automatically by ``gunicorn wsgi:app`` from the working directory.

The threaded ``gthread`` worker lets one process relay several long streams at once.  Its
``timeout`` is a heartbeat of the worker's own loop, which keeps beating while requests
stream, so no amount of streaming (or upstream silence) makes gunicorn kill a worker.
"""
import glob
import json
import os
import sys
import tempfile

# Metrics are summed over the workers through files in one folder (gateway/metrics.py): it must
# be named before prometheus_client is first imported (by the gateway's modules below), and it
# starts empty, so a restart does not add the previous run's counts.
_METRICS_DIR_OURS = not os.environ.get("PROMETHEUS_MULTIPROC_DIR")
if _METRICS_DIR_OURS:           # removed again when gunicorn exits (on_exit)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="ccgw-metrics-")
for _stale in glob.glob(os.path.join(os.environ["PROMETHEUS_MULTIPROC_DIR"], "*.db")):
    os.unlink(_stale)

from gateway import capacity as _capacity  # noqa: E402
from gateway import config as _config  # noqa: E402
from gateway import logs as _logs  # noqa: E402

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
# the gateway writes one access line per request itself (gateway/access.py: surface, model,
# route, tokens, time to first byte...), so gunicorn's own would be a second one
accesslog = None
errorlog = "-"
# gunicorn's lines in the gateway's format (log_format: text or json)
logconfig_dict = _logs.gunicorn_logconfig(_cfg.log_format, _cfg.log_level)
# which peers may say who the client is (X-Forwarded-For) and how it connected
# (X-Forwarded-Proto): nginx on the same host by default; behind Fly's or Render's proxy set
# FORWARDED_ALLOW_IPS="*" (their proxy addresses vary and the app is not reachable otherwise)
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")
# gunicorn 24+ opens a control socket in $HOME by default; two gateways on one host (or a test
# run beside a live one) would fight over it, and nothing here uses it.
control_socket_disable = True


def on_starting(server):
    """SIGINT is Fly's default kill signal; gunicorn's master treats it as a quick stop that
    kills every worker at once.  Make it the graceful stop SIGTERM is.  Also say, once, what
    this deployment runs with (every secret masked)."""
    server.handle_int = server.handle_term
    server.log.info("effective configuration: %s",
                    json.dumps(_logs.effective(_cfg), ensure_ascii=False))


def on_exit(server):
    """The metrics folder this configuration made goes with the server."""
    if _METRICS_DIR_OURS:
        import shutil
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)


def child_exit(server, worker):
    """A worker's live gauges (streams in flight, its stream slots) go with it."""
    from prometheus_client import multiprocess
    multiprocess.mark_process_dead(worker.pid)


def post_worker_init(worker):
    """Start the worker's background model-list refresh (gateway/account.py) in the worker
    itself: with ``--preload`` the app was built in the master, whose threads a fork drops."""
    gw = worker.wsgi.extensions.get("gateway") if hasattr(worker.wsgi, "extensions") else None
    if gw is not None and gw.discovery is not None:
        gw.discovery.ensure_running()
