"""Prometheus metrics, correct across every gunicorn worker.

Each worker is its own process with its own counters, and a scrape lands on one of them, so
the numbers must be summed where they are read.  prometheus_client's multiprocess mode does
this: with ``PROMETHEUS_MULTIPROC_DIR`` set before this module is imported (gunicorn.conf.py
sets it in the master, to a fresh folder, and marks a worker's files dead when it exits),
every process writes its values to memory-mapped files there and ``GET /metrics`` merges them.
Without it (the app under a test client, or another server) the values live in this process.

The labels are bounded by design: surface, model (the catalog's ids, or ``-``), route, status
and error class; never a key, a prompt or a path with ids in it.
"""
from __future__ import annotations

import os

from prometheus_client import (CollectorRegistry, Counter, Gauge, Histogram,
                               generate_latest, multiprocess)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST

#: a first byte after a whole reasoning pause, or a stream of many minutes, must still land in
#: a bucket that says so
_TTFB_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)

REQUESTS = Counter("ccgw_requests_total", "Requests answered, by surface, model, route and "
                   "status", ["surface", "model", "route", "status"])
TOKENS = Counter("ccgw_tokens_total", "Tokens of finished model calls, by kind", ["kind"])
IN_FLIGHT = Gauge("ccgw_streams_in_flight", "Model calls being relayed now",
                  multiprocess_mode="livesum")
SLOTS = Gauge("ccgw_stream_slots", "Model calls the live workers can relay at once",
              multiprocess_mode="livesum")
TTFB = Histogram("ccgw_time_to_first_byte_seconds", "From the request to the first byte of "
                 "the answer's body", ["surface"], buckets=_TTFB_BUCKETS)
DURATION = Histogram("ccgw_request_duration_seconds", "From the request to the answer's last "
                     "byte", ["surface"], buckets=_DURATION_BUCKETS)
UPSTREAM_ERRORS = Counter("ccgw_upstream_errors_total", "Model calls that failed, by the "
                          "gateway's error class", ["error"])
STORE_ERRORS = Counter("ccgw_state_errors_total", "Writes or reads of the gateway's state that "
                       "failed (usage file, Redis), by store", ["store"])


def render() -> bytes:
    """The text exposition of every metric, summed over the live and dead workers."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest()


def state_error(store: str) -> None:
    """Count a failed state operation (``store``: ``usage_file``, ``redis``...); never raises,
    since it is called from the paths that are already handling a failure."""
    try:
        STORE_ERRORS.labels(store).inc()
    except Exception:       # a full disk can break the metrics files too
        pass
