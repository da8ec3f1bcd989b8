"""Logs and metrics of a real gunicorn (2 workers, ``log_format: json``) after a mixed run
driven by the SDKs: every log line is JSON, each request has one access line with the fields
the README promises, no key appears anywhere, and ``/metrics`` -- summed over both workers by
prometheus_client's multiprocess mode -- counts exactly the requests and tokens made."""
from __future__ import annotations

import json
import threading
import time
from collections import Counter

import anthropic
import openai
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import LOCAL_KEY, UPSTREAM_KEY, start_gateway

FLASH = "deepseek/deepseek-v4-flash"
METRICS_KEY = "scrape-only-key-7c1f"
ACCESS_FIELDS = {"time", "level", "logger", "method", "path", "status", "surface", "model",
                 "route", "key", "client", "scheme", "ttfb_ms", "duration_ms", "tokens_in", "tokens_out",
                 "tokens_cached", "tokens_reasoning", "error"}


@pytest.fixture(scope="module")
def observed(fake_server, tmp_path_factory):
    server = start_gateway(fake_server, tmp_path_factory, "observed", log_format="json",
                           metrics_key=METRICS_KEY)
    yield server
    server.stop()


def scrape(server) -> dict:
    text = requests.get(server.url + "/metrics", timeout=5,
                        headers={"Authorization": f"Bearer {METRICS_KEY}"}).text
    out: dict = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            out[key] = sample.value
    return out


def total(samples: dict, name: str, **labels) -> float:
    return sum(v for (n, ls), v in samples.items()
               if n == name and all(dict(ls).get(k) == v2 for k, v2 in labels.items()))


def usage(server) -> dict:
    return requests.get(server.url + "/usage", timeout=5,
                        headers={"Authorization": f"Bearer {LOCAL_KEY}"}).json()


def mixed_run(server) -> Counter:
    """Chat (streamed and not) and Messages calls from both SDKs on 8 threads, plus errors."""
    oa = openai.OpenAI(base_url=server.url + "/v1", api_key=LOCAL_KEY, max_retries=0)
    an = anthropic.Anthropic(base_url=server.url, api_key=LOCAL_KEY, max_retries=0)
    made: Counter = Counter()
    lock = threading.Lock()

    def one(i: int) -> None:
        if i % 2:
            stream = oa.chat.completions.create(model=FLASH, stream=bool(i % 4 == 1),
                                                messages=[{"role": "user", "content": "hi"}])
            if i % 4 == 1:
                assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
            surface = "chat"
        else:
            an.messages.create(model=FLASH, max_tokens=50,
                               messages=[{"role": "user", "content": "hi"}])
            surface = "messages"
        with lock:
            made[surface] += 1

    threads = [threading.Thread(target=lambda k=k: [one(k * 6 + j) for j in range(6)])
               for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    with pytest.raises(openai.NotFoundError):
        oa.chat.completions.create(model="no-such-model", messages=[{"role": "user",
                                                                      "content": "hi"}])
    made["chat_404"] += 1
    assert requests.get(server.url + "/v1/models", timeout=5).status_code == 401
    made["models_401"] += 1
    return made


def test_metrics_over_two_workers_count_exactly_what_was_made(observed):
    before, usage_before = scrape(observed), usage(observed)
    made = mixed_run(observed)
    time.sleep(0.3)                         # the last access records close with their bodies
    after, usage_after = scrape(observed), usage(observed)

    def delta(name, **labels):
        return total(after, name, **labels) - total(before, name, **labels)

    assert delta("ccgw_requests_total", surface="chat", status="200") == made["chat"]
    assert delta("ccgw_requests_total", surface="messages", status="200") == made["messages"]
    assert delta("ccgw_requests_total", surface="chat", status="404") == made["chat_404"]
    assert delta("ccgw_requests_total", surface="models", status="401") == made["models_401"]
    assert delta("ccgw_requests_total", surface="chat", route="cli", model=FLASH,
                 status="200") == made["chat"]
    for kind, counter in (("in", "prompt_tokens"), ("out", "completion_tokens"),
                          ("cached", "cache_read_tokens"), ("reasoning", "reasoning_tokens")):
        assert delta("ccgw_tokens_total", kind=kind) == \
            usage_after[counter] - usage_before[counter], kind
    assert delta("ccgw_request_duration_seconds_count", surface="chat") == \
        made["chat"] + made["chat_404"]
    assert delta("ccgw_time_to_first_byte_seconds_count", surface="messages") == \
        made["messages"]
    assert total(after, "ccgw_streams_in_flight") == 0
    assert total(after, "ccgw_stream_slots") == 2 * 160          # both workers' slots
    assert delta("ccgw_upstream_errors_total", error="model_not_found") == 1


def test_the_metrics_key_reads_metrics_and_nothing_else(observed):
    assert requests.get(observed.url + "/metrics", timeout=5).status_code == 401
    assert requests.get(observed.url + "/metrics", timeout=5,
                        headers={"Authorization": f"Bearer {LOCAL_KEY}"}).status_code == 200
    assert requests.get(observed.url + "/v1/models", timeout=5,
                        headers={"Authorization": f"Bearer {METRICS_KEY}"}).status_code == 401


def test_every_log_line_is_json_with_one_access_line_per_request_and_no_key(observed):
    mixed_run(observed)
    time.sleep(0.3)
    log = observed.log()
    lines = [json.loads(line) for line in log.splitlines() if line.strip()]   # every one JSON
    access = [line for line in lines if line["logger"] == "gateway.access"]
    assert access and all(set(line) == ACCESS_FIELDS for line in access)
    calls = [line for line in access if line["surface"] in ("chat", "messages")
             and line["status"] == 200]
    assert calls and all(line["model"] == FLASH and line["route"] == "cli"
                         and line["key"] == "gateway" and line["tokens_in"] > 0
                         and line["ttfb_ms"] <= line["duration_ms"] for line in calls)
    assert any(line["error"] == "model_not_found" and line["status"] == 404 for line in access)
    started = [line for line in lines if "effective configuration" in line.get("message", "")]
    assert len(started) == 1 and '"***"' in started[0]["message"]
    for secret in (LOCAL_KEY, UPSTREAM_KEY, METRICS_KEY, "user_"):
        assert secret not in log, secret
    assert "Traceback" not in log
