"""gateway/metrics.py in one process: the text exposition names every metric, and the state
errors count (the multi-worker sums are checked against a real gunicorn elsewhere)."""
from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from gateway import metrics


def families() -> dict:
    return {f.name: f for f in text_string_to_metric_families(metrics.render().decode())}


def test_every_metric_is_exposed():
    names = set(families())
    for name in ("ccgw_requests", "ccgw_tokens", "ccgw_streams_in_flight", "ccgw_stream_slots",
                 "ccgw_time_to_first_byte_seconds", "ccgw_request_duration_seconds",
                 "ccgw_upstream_errors", "ccgw_state_errors"):
        assert name in names, name


def test_a_state_error_is_counted_by_store():
    def count():
        fam = families().get("ccgw_state_errors")
        return sum(s.value for s in fam.samples
                   if s.name == "ccgw_state_errors_total" and s.labels.get("store") == "usage_file")
    before = count()
    metrics.state_error("usage_file")
    assert count() == before + 1
