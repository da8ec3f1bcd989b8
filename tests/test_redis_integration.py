"""Several gateway instances sharing one Redis (``state: redis://...``), end to end.

Two gunicorns (2 gthread workers each: four processes) in front of the fake upstream share a
real ``redis-server`` (tests/redis_server.py) under a prefix of their own, in ``auto`` mode with
a Go key and ``client_keys: passthrough``, the plan read from Command Code and the model list
discovered -- everything that is shared is in use.  The official SDKs drive them from threads,
spread over both instances.  What is checked is what several instances must agree on:

* usage totals are exact whichever instance counted and whichever is asked;
* a Go key is tried on the Provider API once in all, the credits and the model list are asked
  for once in all;
* a stored response or thread continues through the other instance;
* Redis going away (stopped, or hung with SIGSTOP) in the middle of a run fails no request and
  slows none by more than a second, and once it is back the totals catch up exactly;
* the logs hold no traceback and never the Redis password (the server requires one).

The Redis of this module is its own (the outage tests stop and hang it); its stop is a
``SHUTDOWN SAVE`` and its start loads that snapshot, as a managed Redis restarts, so that
"the totals equal the requests made" is a statement about the gateway, not about persistence.
"""
from __future__ import annotations

import concurrent.futures
import json
import threading
import time
import uuid

import anthropic
import openai
import pytest
import requests

from tests.conftest import LOCAL_KEY, start_gateway
from tests.fake_upstream import CREDITS_PATH, GO_KEY, NEW_PROVIDER_MODEL, USAGE
from tests.redis_server import RedisServer

pytestmark = pytest.mark.timeout(180)

PASSWORD = "redis-pw-" + uuid.uuid4().hex
FLASH = "deepseek/deepseek-v4-flash"
GENERATE = "/alpha/generate"
#: scenario -> (the marker put in the prompt, the text the answer must be)
SCENARIOS = {"text": ("", "Hello world"), "reasoning": ("[[reasoning]] ", "4")}
KINDS = ("openai", "openai-stream", "anthropic", "anthropic-stream")
COUNTERS = ("total_requests", "failed_requests", "prompt_tokens", "completion_tokens",
            "cache_read_tokens", "cache_write_tokens", "reasoning_tokens")


class Pair:
    """The two instances, and what their start cost upstream."""

    def __init__(self, servers, prefix: str, models_calls: int):
        self.servers, self.prefix, self.models_calls = servers, prefix, models_calls
        self.a, self.b = servers


@pytest.fixture(scope="module")
def redis_pw():
    """This module's own password-protected Redis (the outages below stop and hang it)."""
    server = RedisServer(password=PASSWORD).start()
    yield server
    server.close()


@pytest.fixture(scope="module")
def pair(redis_pw, fake_server, tmp_path_factory):
    fake_server.reset()
    prefix = f"ccgw-it-{uuid.uuid4().hex[:8]}"
    common = dict(state=redis_pw.url, state_prefix=prefix, client_keys="passthrough",
                  commandcode={"mode": "auto", "api_key": GO_KEY}, plan="auto",
                  discover_models=True)
    servers = []
    try:
        for name in ("redis-a", "redis-b"):
            servers.append(start_gateway(fake_server, tmp_path_factory, name, **common))
        deadline = time.monotonic() + 15      # the model list: fetched by one of four processes
        while fake_server.models_calls < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(2.0)                        # ...and no other fetch follows
        yield Pair(servers, prefix, fake_server.models_calls)
    finally:
        for server in servers:
            server.stop()
    for server in servers:
        check_log(server.log())


def check_log(log: str) -> None:
    assert "Traceback" not in log, log
    assert PASSWORD not in log, "the Redis password reached the log"
    assert "user_" not in log, "a Command Code key reached the log"


# ---- driving the instances -----------------------------------------------------------------------

class Clients:
    """One SDK client per (instance, surface, key), made once per thread."""

    def __init__(self):
        self._made: dict = {}

    def openai(self, server, key=LOCAL_KEY) -> openai.OpenAI:
        return self._get(("openai", server.url, key), lambda: openai.OpenAI(
            base_url=server.url + "/v1", api_key=key, max_retries=0, timeout=30))

    def anthropic(self, server, key=LOCAL_KEY) -> anthropic.Anthropic:
        return self._get(("anthropic", server.url, key), lambda: anthropic.Anthropic(
            base_url=server.url, api_key=key, max_retries=0, timeout=30))

    def _get(self, name, make):
        if name not in self._made:
            self._made[name] = make()
        return self._made[name]

    def close(self) -> None:
        for client in self._made.values():
            client.close()


def ask(clients: Clients, server, kind: str, scenario: str, model: str, key=LOCAL_KEY,
        text: str = "hi") -> str:
    """One model call through ``server`` with the SDK ``kind`` names; the answer's text."""
    prompt = [{"role": "user", "content": SCENARIOS[scenario][0] + text}]
    if kind.startswith("openai"):
        client = clients.openai(server, key)
        if kind == "openai":
            return client.chat.completions.create(model=model, messages=prompt) \
                .choices[0].message.content
        return "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
            model=model, messages=prompt, stream=True) if c.choices)
    client = clients.anthropic(server, key)
    if kind == "anthropic":
        reply = client.messages.create(model=model, max_tokens=256, messages=prompt)
    else:
        with client.messages.stream(model=model, max_tokens=256, messages=prompt) as stream:
            reply = stream.get_final_message()
    return "".join(b.text for b in reply.content if b.type == "text")


class Traffic:
    """Client threads sending requests until ``limit`` were made or :meth:`stop`: request ``i``
    goes to instance ``i % 2`` with SDK ``KINDS[i // 2 % 4]`` and scenario ``i // 8 % 2``, so
    every combination reaches both instances.  Each request's end time, duration, scenario and
    failure (None when its answer was right) is kept."""

    def __init__(self, servers, model: str, threads: int = 6, limit: int = 400):
        self.servers, self.model, self.limit = servers, model, limit
        self.records: list[tuple[float, float, str, str | None]] = []
        self._next, self._lock, self._stop = 0, threading.Lock(), threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def start(self) -> "Traffic":
        for t in self._threads:
            t.start()
        return self

    def _take(self) -> int | None:
        with self._lock:
            if self._stop.is_set() or self._next >= self.limit:
                return None
            self._next += 1
            return self._next - 1

    def _run(self) -> None:
        clients = Clients()
        try:
            while (i := self._take()) is not None:
                scenario = ("text", "reasoning")[i // 8 % 2]
                started, failure = time.monotonic(), None
                try:
                    got = ask(clients, self.servers[i % 2], KINDS[i // 2 % 4], scenario,
                              self.model, text=f"request {i}")
                    if got != SCENARIOS[scenario][1]:
                        failure = f"request {i}: wrong answer {got!r}"
                except Exception as exc:  # noqa: BLE001 - every failure is reported by the test
                    failure = f"request {i} ({KINDS[i // 2 % 4]}): {exc!r}"
                ended = time.monotonic()
                with self._lock:
                    self.records.append((ended, ended - started, scenario, failure))
        finally:
            clients.close()

    def stop(self) -> "Traffic":
        self._stop.set()
        return self.join()

    def join(self) -> "Traffic":
        for t in self._threads:
            t.join(60)
        assert not any(t.is_alive() for t in self._threads), "a client thread hung"
        return self

    def failures(self) -> list[str]:
        return [r[3] for r in self.records if r[3] is not None]

    def expected(self) -> dict:
        """What these requests must add to ``/usage`` (every one answered, none failed)."""
        out = dict.fromkeys(COUNTERS, 0)
        for _, _, scenario, _ in self.records:
            u = USAGE[scenario]
            out["total_requests"] += 1
            for name, part in (("prompt_tokens", "input"), ("completion_tokens", "output"),
                               ("cache_read_tokens", "cache_read"),
                               ("cache_write_tokens", "cache_write"),
                               ("reasoning_tokens", "reasoning")):
                out[name] += u[part]
        return out


def totals(server, model: str) -> tuple[dict, dict]:
    """``/usage`` of ``server``: the overall counters and those of ``model``."""
    data = requests.get(server.url + "/usage", headers={"Authorization": f"Bearer {LOCAL_KEY}"},
                        timeout=10).json()
    return ({k: data.get(k, 0) for k in COUNTERS},
            {k: data["models"].get(model, {}).get(k, 0) for k in COUNTERS})


def plus(before: dict, added: dict) -> dict:
    return {k: before[k] + added[k] for k in COUNTERS}


def wait_for_totals(pair: Pair, model: str, want: tuple[dict, dict], within: float) -> list:
    """Poll both instances until each shows ``want`` (or ``within`` seconds passed); what each
    showed last."""
    deadline = time.monotonic() + within
    while True:
        seen = [totals(s, model) for s in pair.servers]
        if all(s == want for s in seen) or time.monotonic() > deadline:
            return seen
        time.sleep(0.25)


# ---- a) usage ------------------------------------------------------------------------------------

def test_usage_totals_are_exact_across_instances(pair, fake):
    """48 requests over both instances and all four workers, streamed and not, both SDKs, two
    scenarios: either instance's /usage shows exactly 48 more, with the exact token sums."""
    model = "zai-org/GLM-5.1"
    overall, by_model = totals(pair.a, model)
    traffic = Traffic(pair.servers, model, threads=8, limit=48).start().join()
    assert traffic.failures() == []
    assert len(traffic.records) == 48
    added = traffic.expected()
    assert added["reasoning_tokens"] > 0 and added["cache_read_tokens"] > 0
    want = (plus(overall, added), plus(by_model, added))
    seen = wait_for_totals(pair, model, want, within=5)
    assert seen == [want, want]
    print(f"\nusage: {len(traffic.records)} requests made, counted "
          f"{[s[1]['total_requests'] - by_model['total_requests'] for s in seen]}")


# ---- b) one probe, one credits lookup, one model list --------------------------------------------

def _calls_by(fake, key: str, prefix: str, method: str = "POST") -> list[dict]:
    return [r for r in fake.requests if r["method"] == method and r["path"].startswith(prefix)
            and r["headers"].get("authorization") == f"Bearer {key}"]


def test_a_go_key_is_probed_once_across_both_instances(pair, fake):
    """24 concurrent first requests of a fresh Go key (passthrough), over both instances, both
    SDKs: one Provider API attempt in all four processes, every request answered on the CLI
    route."""
    key = f"user_go_{uuid.uuid4().hex}"
    fake.plans[key] = "individual-go"
    local = threading.local()

    def one(i: int) -> str:
        if not hasattr(local, "clients"):
            local.clients = Clients()
        return ask(local.clients, pair.servers[i % 2], KINDS[i // 2 % 4], "text", FLASH, key,
                   text=f"first {i}")

    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(one, range(24)))
    assert answers == ["Hello world"] * 24
    assert len(_calls_by(fake, key, "/provider/v1/")) == 1
    assert len(_calls_by(fake, key, GENERATE)) == 24
    for i in range(4):                                  # remembered everywhere from now on
        assert ask(Clients(), pair.servers[i % 2], "openai", "text", FLASH, key) == "Hello world"
    assert len(_calls_by(fake, key, "/provider/v1/")) == 1


def test_credits_and_the_model_list_are_asked_for_once_across_both_instances(pair, fake):
    """The plan of a new key, wanted by 16 concurrent /v1/models over both instances, is asked
    of Command Code once; the model list was fetched once by the four processes at start,
    and every one of them lists what it brought."""
    assert pair.models_calls == 1
    key = f"user_go_{uuid.uuid4().hex}"
    fake.plans[key] = "individual-go"

    def listed(i: int) -> set:
        r = requests.get(pair.servers[i % 2].url + "/v1/models", timeout=10,
                         headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 200, r.text
        return {m["id"] for m in r.json()["data"]}

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        lists = list(pool.map(listed, range(16)))
    assert len(_calls_by(fake, key, CREDITS_PATH, "GET")) == 1
    for ids in lists:
        assert NEW_PROVIDER_MODEL in ids                # the discovered list, in every process
        assert "claude-sonnet-5" not in ids             # the Go plan, read once for all
    assert fake.models_calls == 0                       # nobody fetched the list again


# ---- c) conversations continue through the other instance ----------------------------------------

def test_a_stored_response_continues_through_the_other_instance(pair, fake):
    clients = Clients()
    first = clients.openai(pair.a).responses.create(model=FLASH, input="first question",
                                                    store=True)
    assert first.output_text == "Hello world"
    assert clients.openai(pair.b).responses.retrieve(first.id).id == first.id
    second = clients.openai(pair.b).responses.create(model=FLASH, input="second question",
                                                     previous_response_id=first.id)
    assert second.output_text == "Hello world"
    sent = json.dumps([r["body"] for r in fake.requests if r["path"] == GENERATE][-1])
    assert "first question" in sent and "second question" in sent
    clients.close()


def test_a_thread_continues_through_the_other_instance(pair, fake):
    clients = Clients()
    first = clients.anthropic(pair.a).messages.create(
        model=FLASH, max_tokens=256, system="Be brief.",
        messages=[{"role": "user", "content": "thread opener"}],
        extra_body={"thread": {"type": "create"}})
    second = clients.anthropic(pair.b).messages.create(
        model=FLASH, max_tokens=256, messages=[{"role": "user", "content": "thread follow-up"}],
        extra_body={"thread": {"type": "continue", "previous_message_id": first.id}})
    assert second.content[0].text == "Hello world"
    sent = json.dumps([r["body"] for r in fake.requests if r["path"] == GENERATE][-1])
    assert "thread opener" in sent and "thread follow-up" in sent and "Be brief." in sent
    clients.close()


# ---- d), e) Redis goes away in the middle of a run -------------------------------------------------

def _through_an_outage(pair, model: str, go_away, come_back, label: str) -> None:
    """Traffic for 2 s, then ``go_away()`` for 3 s, ``come_back()``, 2.5 s more: no request
    fails or takes a second longer than the slowest before the outage; then both instances'
    totals equal the requests made, once the pending counts are flushed."""
    overall, by_model = totals(pair.a, model)
    noticed = [(s.log().count(" is unavailable ("), s.log().count(" answers again"))
               for s in pair.servers]
    traffic = Traffic(pair.servers, model, threads=6, limit=20000).start()
    time.sleep(2.0)
    outage = time.monotonic()
    go_away()
    time.sleep(3.0)
    come_back()
    back = time.monotonic()
    time.sleep(2.5)
    traffic.stop()
    assert traffic.failures() == []
    assert len(traffic.records) < traffic.limit, "the run ended before Redis came back"
    before = [d for end, d, _, _ in traffic.records if end < outage]
    after = [d for end, d, _, _ in traffic.records if end >= outage]
    assert before and after and any(end > back + 1 for end, _, _, _ in traffic.records)
    added = traffic.expected()
    want = (plus(overall, added), plus(by_model, added))
    flushed = time.monotonic()
    seen = wait_for_totals(pair, model, want, within=30)
    print(f"\n{label}: {len(traffic.records)} requests made ({len(after)} from the outage on), "
          f"counted {[s[1]['total_requests'] - by_model['total_requests'] for s in seen]} "
          f"{time.monotonic() - flushed:.1f} s after the run; longest request before "
          f"{max(before):.3f} s, from the outage on {max(after):.3f} s")
    assert max(after) <= max(before) + 1.0
    assert seen == [want, want]
    for server, (went, back) in zip(pair.servers, noticed):     # each instance saw it go
        log = server.log()                                     # and come back
        assert log.count(" is unavailable (") > went and log.count(" answers again") > back, log


def _shutdown_keeping_data(server: RedisServer) -> None:
    """``SHUTDOWN SAVE``: Redis stops, its data written to the folder its restart reads."""
    import redis
    client = redis.Redis(host="127.0.0.1", port=server.port, password=server.password,
                         socket_timeout=5)
    try:
        client.shutdown(save=True)
    except redis.ConnectionError:
        pass
    finally:
        client.close()
    server.proc.wait(10)


def test_redis_stopped_and_started_again_mid_run(pair, redis_pw, fake):
    _through_an_outage(pair, "zai-org/GLM-5.2", lambda: _shutdown_keeping_data(redis_pw),
                       redis_pw.start, "Redis stopped")


def test_redis_hung_and_resumed_mid_run(pair, redis_pw, fake):
    _through_an_outage(pair, "zai-org/GLM-5.3", redis_pw.pause, redis_pw.resume, "Redis hung")


# ---- f) the logs --------------------------------------------------------------------------------

def test_the_logs_show_no_traceback_and_never_the_password(pair, redis_pw):
    """After both outages: each instance said Redis went away and came back, naming it by its
    address only."""
    for server in pair.servers:
        log = server.log()
        check_log(log)
        assert f"127.0.0.1:{redis_pw.port}" in log, log
