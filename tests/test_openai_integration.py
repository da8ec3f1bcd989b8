"""The OpenAI surface end to end: the official ``openai`` SDK -> gunicorn (2 workers) -> fake upstream."""
from __future__ import annotations

import json
import time

import openai
import pytest
import requests

from tests.conftest import LOCAL_KEY
from tests.fake_upstream import UNICODE_TEXT, USAGE

FLASH = "deepseek/deepseek-v4-flash"
VISION = "moonshotai/Kimi-K3"
PNG = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4DwABBAEAwS2OUAAAAABJRU5ErkJggg=="


def ask(text: str) -> list[dict]:
    return [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}]


def last_body(fake) -> dict:
    return fake.requests[-1]["body"]


# ---- answers -----------------------------------------------------------------------------------

def test_plain_answer_with_usage(openai_client, fake):
    r = openai_client.chat.completions.create(model="deepseek-v4-flash", messages=ask("hi"))
    assert r.choices[0].message.content == "Hello world"
    assert r.choices[0].finish_reason == "stop"
    assert r.model == FLASH
    u = USAGE["text"]
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (u["input"], u["output"])
    assert r.usage.prompt_tokens_details.cached_tokens == u["cache_read"]
    assert r.usage.completion_tokens_details.reasoning_tokens == 0
    body = last_body(fake)
    assert body["params"]["model"] == FLASH and body["params"]["system"] == "Be brief."


def test_stream_relays_each_upstream_event_as_it_arrives(openai_client, fake):
    arrivals, texts, usage = [], [], None
    start = time.monotonic()
    stream = openai_client.chat.completions.create(model=FLASH, messages=ask("[[slow:6]]"), stream=True)
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.monotonic() - start)
            texts.append(chunk.choices[0].delta.content)
        if chunk.usage:
            usage = chunk.usage
    assert texts == [f"tok{i} " for i in range(6)]
    # upstream sends a token every 100 ms: they must reach the client spread out, not in one lump
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
    assert sum(g > 0.05 for g in gaps) >= 4, arrivals
    # usage arrives in the final chunk even though stream_options did not ask for it
    assert usage is not None and usage.completion_tokens == USAGE["slow"]["output"]


def test_stream_final_chunk_is_usage_with_no_choices_then_done(gateway, fake):
    resp = requests.post(gateway.url + "/v1/chat/completions", stream=True, timeout=10,
                         headers={"Authorization": f"Bearer {LOCAL_KEY}"},
                         json={"model": FLASH, "messages": ask("hi"), "stream": True})
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    data = [line[6:] for line in resp.iter_lines(decode_unicode=True) if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    final = json.loads(data[-2])
    assert final["choices"] == [] and final["usage"]["prompt_tokens"] == USAGE["text"]["input"]
    finish = json.loads(data[-3])
    assert finish["choices"][0]["finish_reason"] == "stop"
    first = json.loads(data[0])
    assert first["choices"][0]["delta"]["role"] == "assistant"
    assert len({json.loads(d)["id"] for d in data[:-1]}) == 1


def test_utf8_split_mid_character_arrives_intact(openai_client, fake):
    stream = openai_client.chat.completions.create(model=FLASH, messages=ask("[[unicode]]"), stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == UNICODE_TEXT


def test_reasoning_is_reported_streamed_and_not(openai_client, fake):
    r = openai_client.chat.completions.create(model=FLASH, messages=ask("[[reasoning]]"),
                                              reasoning_effort="high")
    msg = r.choices[0].message
    assert msg.content == "4" and msg.reasoning_content == "Let me think."
    assert r.usage.completion_tokens_details.reasoning_tokens == 29
    assert last_body(fake)["params"]["reasoning_effort"] == "high"
    order = []
    for c in openai_client.chat.completions.create(model=FLASH, messages=ask("[[reasoning]]"),
                                                   stream=True):
        if c.choices and getattr(c.choices[0].delta, "reasoning_content", None):
            order.append("reasoning")
        if c.choices and c.choices[0].delta.content:
            order.append("text")
    assert order == ["reasoning", "text"]


def test_reasoning_effort_is_clamped_to_what_the_model_accepts(openai_client, fake):
    openai_client.chat.completions.create(model=FLASH, messages=ask("hi"), reasoning_effort="low")
    assert last_body(fake)["params"]["reasoning_effort"] == "high"     # flash takes high/max
    openai_client.chat.completions.create(model="moonshotai/Kimi-K2.6", messages=ask("hi"),
                                          reasoning_effort="low")
    assert "reasoning_effort" not in last_body(fake)["params"]          # model decides


def test_garbage_late_events_and_pause_turn(openai_client, fake):
    r = openai_client.chat.completions.create(model=FLASH, messages=ask("[[garbage]]"))
    assert r.choices[0].message.content == "ok"
    r = openai_client.chat.completions.create(model=FLASH, messages=ask("[[late_events]]"))
    assert "IGNORED" not in r.choices[0].message.content
    r = openai_client.chat.completions.create(model=FLASH, messages=ask("[[pause_turn]]"))
    assert r.choices[0].message.content == "Part one. Part two."
    assert r.usage.prompt_tokens == USAGE["pause_turn"]["input"]


@pytest.mark.parametrize("scenario,reason", [("length", "length"), ("raw_truncation", "length"),
                                             ("content_filter", "content_filter")])
def test_truncation_and_filtering_are_never_a_clean_stop(openai_client, fake, scenario, reason):
    r = openai_client.chat.completions.create(model=FLASH, messages=ask(f"[[{scenario}]]"))
    assert r.choices[0].finish_reason == reason
    stream = openai_client.chat.completions.create(model=FLASH, messages=ask(f"[[{scenario}]]"),
                                                   stream=True)
    reasons = [c.choices[0].finish_reason for c in stream if c.choices and c.choices[0].finish_reason]
    assert reasons == [reason]


# ---- tools -------------------------------------------------------------------------------------

TOOLS = [{"type": "function", "function": {
    "name": "read_file", "description": "Read a file",
    "parameters": {"type": "object", "properties": {"file_path": {"type": "string"}}}}}]


def test_tool_call_round_trip(openai_client, fake):
    messages = ask("[[tool_call]] read a.txt")
    r = openai_client.chat.completions.create(model=FLASH, messages=messages, tools=TOOLS)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.id == "call_1" and call.function.name == "read_file"
    assert json.loads(call.function.arguments) == {"file_path": "a.txt"}
    assert last_body(fake)["params"]["tools"][0]["name"] == "read_file"

    messages += [choice.message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": "hello\nworld"},
                 {"role": "user", "content": "[[echo]] summarise"}]
    r = openai_client.chat.completions.create(model=FLASH, messages=messages, tools=TOOLS)
    assert r.choices[0].message.content == "summarise"
    sent = last_body(fake)["params"]["messages"]
    assert sent[1]["content"][-1] == {"type": "tool-call", "toolCallId": "call_1",
                                      "toolName": "read_file", "input": {"file_path": "a.txt"}}
    assert sent[2] == {"role": "tool", "content": [{"type": "tool-result", "toolCallId": "call_1",
                                                    "toolName": "read_file",
                                                    "output": {"type": "text", "value": "hello\nworld"}}]}


def test_parallel_tool_calls_stream_with_stable_indexes(openai_client, fake):
    calls: dict[int, dict] = {}
    reasons = []
    stream = openai_client.chat.completions.create(model=FLASH, messages=ask("[[parallel_tools]]"),
                                                   tools=TOOLS, stream=True)
    for c in stream:
        if not c.choices:
            continue
        for tc in c.choices[0].delta.tool_calls or []:
            entry = calls.setdefault(tc.index, {"id": None, "name": "", "arguments": ""})
            entry["id"] = tc.id or entry["id"]
            entry["name"] += tc.function.name or ""
            entry["arguments"] += tc.function.arguments or ""
        if c.choices[0].finish_reason:
            reasons.append(c.choices[0].finish_reason)
    assert reasons == ["tool_calls"]
    assert calls[0]["id"] == "call_a" and json.loads(calls[0]["arguments"]) == {"city": "Paris"}
    assert calls[1]["id"] == "call_b" and json.loads(calls[1]["arguments"]) == {"city": "Tokyo"}


def test_reserved_tool_search_name_is_mapped_both_ways(openai_client, fake):
    tools = [{"type": "function", "function": {"name": "tool_search", "parameters": {"type": "object"}}}]
    r = openai_client.chat.completions.create(model=FLASH, messages=ask("[[tool_search]]"), tools=tools)
    assert r.choices[0].message.tool_calls[0].function.name == "tool_search"
    assert last_body(fake)["params"]["tools"][0]["name"] == "search_tools"


def test_the_whole_tool_list_is_sent(openai_client, fake):
    tools = [{"type": "function", "function": {"name": f"tool_{i}", "parameters": {"type": "object"}}}
             for i in range(40)]
    openai_client.chat.completions.create(model=FLASH, messages=ask("hi"), tools=tools)
    assert [t["name"] for t in last_body(fake)["params"]["tools"]] == [f"tool_{i}" for i in range(40)]


# ---- images ------------------------------------------------------------------------------------

def test_data_url_images_reach_upstream(openai_client, fake):
    content = [{"type": "text", "text": "[[image]] what is this"},
               {"type": "image_url", "image_url": {"url": PNG}}]
    r = openai_client.chat.completions.create(model=VISION,
                                              messages=[{"role": "user", "content": content}])
    assert r.choices[0].message.content == "images=1"
    part = last_body(fake)["params"]["messages"][0]["content"][1]
    assert part == {"type": "image", "image": PNG, "mimeType": "image/png"}


def test_remote_image_urls_are_refused_by_default(openai_client, fake):
    content = [{"type": "text", "text": "look"},
               {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.chat.completions.create(model=VISION, messages=[{"role": "user", "content": content}])
    assert info.value.body["param"] == "messages[0].content[1].image_url.url"
    assert "data: URL" in info.value.message
    assert fake.requests == []


def test_images_for_a_text_only_model_are_a_400(openai_client, fake):
    content = [{"type": "image_url", "image_url": {"url": PNG}}]
    with pytest.raises(openai.BadRequestError, match="does not accept images"):
        openai_client.chat.completions.create(model=FLASH, messages=[{"role": "user", "content": content}])


# ---- errors ------------------------------------------------------------------------------------

@pytest.mark.parametrize("scenario,exc,status,code", [
    ("http_401", openai.AuthenticationError, 401, "upstream_authentication_failed"),
    ("http_400_credits", openai.APIStatusError, 402, "insufficient_quota"),
    ("http_402", openai.APIStatusError, 402, "insufficient_quota"),
    ("http_403_model", openai.PermissionDeniedError, 403, "model_not_in_plan"),
    ("http_403_upgrade", openai.PermissionDeniedError, 403, "upgrade_required"),
    ("http_403_premium", openai.PermissionDeniedError, 403, "premium_credits_exhausted"),
    ("http_429_window", openai.RateLimitError, 429, "usage_limit_reached"),
    ("http_429_throttle", openai.RateLimitError, 429, "rate_limit_exceeded"),
    ("http_400_validation", openai.BadRequestError, 400, "bad_request"),
    ("http_500", openai.InternalServerError, 502, "upstream_error"),
    ("http_502_html", openai.InternalServerError, 502, "upstream_error"),
    ("http_529", openai.InternalServerError, 529, "overloaded"),
    # in-band errors before any output become real HTTP statuses
    ("error_first", openai.APIStatusError, 402, "insufficient_quota"),
    ("error_first:string", openai.InternalServerError, 529, "overloaded"),
    ("error_first:402", openai.APIStatusError, 402, "insufficient_quota"),
    ("error_first:429", openai.RateLimitError, 429, "rate_limit_exceeded"),
    ("error_first:model", openai.PermissionDeniedError, 403, "model_not_in_plan"),
    ("truncated_empty", openai.InternalServerError, 502, "upstream_truncated"),
    ("finish_error", openai.InternalServerError, 502, "upstream_finish_error"),
])
@pytest.mark.parametrize("stream", [False, True])
def test_upstream_failures_map_to_sdk_exceptions(openai_client, fake, scenario, exc, status, code, stream):
    after_output = stream and scenario == "finish_error"    # text came first: error in the stream
    with pytest.raises(openai.APIError if after_output else exc) as info:
        result = openai_client.chat.completions.create(model=FLASH, messages=ask(f"[[{scenario}]]"),
                                                       stream=stream)
        if stream:
            list(result)
    err = info.value
    if isinstance(err, openai.APIStatusError):
        assert err.status_code == status
        assert err.body["code"] == code
        assert "<html>" not in err.message
        if scenario == "http_429_window":
            assert 0 < int(err.response.headers["retry-after"]) <= 120
    else:
        assert after_output and err.body["code"] == code
    assert LOCAL_KEY not in str(err) and "user_test" not in str(err)


@pytest.mark.parametrize("scenario", ["error_after_text", "truncated", "truncated:abrupt"])
def test_failure_after_output_started_is_an_error_in_the_stream(openai_client, fake, scenario):
    got = []
    with pytest.raises(openai.APIError) as info:
        for c in openai_client.chat.completions.create(model=FLASH, messages=ask(f"[[{scenario}]]"),
                                                       stream=True):
            if c.choices and c.choices[0].delta.content:
                got.append(c.choices[0].delta.content)
        # reaching here would mean a truncated answer was reported as a success
    assert got and "".join(got) in ("Hello", "Hel")
    assert info.value.body["type"] in ("server_error",)


def test_truncated_non_streamed_answer_is_a_502(openai_client, fake):
    with pytest.raises(openai.InternalServerError) as info:
        openai_client.chat.completions.create(model=FLASH, messages=ask("[[truncated]]"))
    assert info.value.status_code == 502 and "incomplete" in info.value.message


def test_bad_requests_name_the_field(openai_client, fake):
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.chat.completions.create(model=FLASH, messages=ask("hi"), n=2)
    assert info.value.body["param"] == "n"
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.chat.completions.create(model=FLASH, messages=[{"role": "user"}])
    assert info.value.body["param"] == "messages[0].content"
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.chat.completions.create(model=FLASH, messages=ask("hi"), temperature=7)
    assert info.value.body["param"] == "temperature"
    with pytest.raises(openai.NotFoundError) as info:
        openai_client.chat.completions.create(model="no-such-model", messages=ask("hi"))
    assert info.value.body["code"] == "model_not_found"
    assert fake.requests == []


def test_malformed_json_is_a_400_in_the_openai_envelope(gateway, fake):
    r = requests.post(gateway.url + "/v1/chat/completions", data="{not json",
                      headers={"Authorization": f"Bearer {LOCAL_KEY}",
                               "Content-Type": "application/json"}, timeout=5)
    assert r.status_code == 400
    assert r.json()["error"]["type"] == "invalid_request_error"
    assert "not valid JSON" in r.json()["error"]["message"]


def test_wrong_local_key_is_a_401(gateway, fake):
    bad = openai.OpenAI(base_url=gateway.url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model=FLASH, messages=ask("hi"))
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


# ---- streams that wait, and clients that leave --------------------------------------------------

def test_silence_gets_keepalives_and_the_answer_still_arrives(gateway, fake):
    resp = requests.post(gateway.url + "/v1/chat/completions", stream=True, timeout=10,
                         headers={"Authorization": f"Bearer {LOCAL_KEY}"},
                         json={"model": FLASH, "messages": ask("[[reasoning_silence:2]]"), "stream": True})
    lines = [line for line in resp.iter_lines(decode_unicode=True) if line]
    keepalives = [i for i, line in enumerate(lines) if line.startswith(":")]
    first_text = next(i for i, line in enumerate(lines) if '"content"' in line)
    # keepalive_interval is 0.5 s in the test config: ~4 during 2 s of silence after the reasoning
    assert len(keepalives) >= 2 and keepalives[-1] < first_text
    assert lines[-1] == "data: [DONE]"


def test_status_is_committed_after_one_keepalive_interval_of_silence(gateway, fake):
    start = time.monotonic()
    resp = requests.post(gateway.url + "/v1/chat/completions", stream=True, timeout=10,
                         headers={"Authorization": f"Bearer {LOCAL_KEY}"},
                         json={"model": FLASH, "messages": ask("[[silence:2]]"), "stream": True})
    headers_after = time.monotonic() - start
    assert resp.status_code == 200 and headers_after < 1.8
    body = resp.text
    assert ": keep-alive" in body and "Hello" in body and body.endswith("data: [DONE]\n\n")


def test_client_leaving_closes_the_upstream_stream(gateway, fake):
    resp = requests.post(gateway.url + "/v1/chat/completions", stream=True, timeout=10,
                         headers={"Authorization": f"Bearer {LOCAL_KEY}"},
                         json={"model": FLASH, "messages": ask("[[endless]]"), "stream": True})
    next(resp.iter_lines())
    resp.close()
    assert fake.wait_for_disconnect("endless", timeout=5)


def test_concurrent_streams_are_served_in_parallel(openai_client, fake):
    import concurrent.futures

    def one(_):
        stream = openai_client.chat.completions.create(model=FLASH, messages=ask("[[slow:10]]"),
                                                       stream=True)
        return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(8)))
    elapsed = time.monotonic() - start
    assert all(r == "".join(f"tok{i} " for i in range(10)) for r in results)
    assert elapsed < 4.0        # 8 streams of ~1 s each, not one after another (8 s)


# ---- models, usage, health, CORS ----------------------------------------------------------------

def test_models_list_and_retrieve(openai_client):
    ids = [m.id for m in openai_client.models.list()]
    assert FLASH in ids and "claude-sonnet-5" in ids
    m = openai_client.models.retrieve("DeepSeek-V4-Flash")
    assert m.id == FLASH and m.model_extra["context_length"] == 1000000
    assert m.model_extra["reasoning_efforts"] == ["high", "max"] and m.model_extra["vision"] is False
    assert openai_client.models.retrieve("claude-haiku-4-5").id == "claude-haiku-4-5-20251001"
    with pytest.raises(openai.NotFoundError):
        openai_client.models.retrieve("gpt-0")


def test_usage_counts_every_request_once_across_workers(gateway, openai_client, fake):
    model = "zai-org/GLM-5"
    auth = {"Authorization": f"Bearer {LOCAL_KEY}"}
    before = requests.get(gateway.url + "/usage", headers=auth, timeout=5).json()
    for i in range(6):
        result = openai_client.chat.completions.create(model=model, messages=ask("hi"),
                                                       stream=bool(i % 2))
        if i % 2:
            list(result)    # read the stream to its end, as a client does
    after = requests.get(gateway.url + "/usage", headers=auth, timeout=5).json()
    prev = before["models"].get(model, {"total_requests": 0, "prompt_tokens": 0, "cache_read_tokens": 0})
    now = after["models"][model]
    assert now["total_requests"] - prev["total_requests"] == 6
    assert now["prompt_tokens"] - prev["prompt_tokens"] == 6 * USAGE["text"]["input"]
    assert now["cache_read_tokens"] - prev["cache_read_tokens"] == 6 * USAGE["text"]["cache_read"]
    for key in ("total_requests", "prompt_tokens", "completion_tokens", "cache_read_tokens",
                "cache_write_tokens"):
        assert key in after
    assert after["total_requests"] - before["total_requests"] >= 6
    assert "user_test" not in json.dumps(after) and LOCAL_KEY not in json.dumps(after)
    assert requests.get(gateway.url + "/usage", timeout=5).status_code == 401


def test_health_needs_no_key_and_cors_preflight_is_answered(gateway):
    assert requests.get(gateway.url + "/health", timeout=5).json() == {"status": "ok"}
    r = requests.options(gateway.url + "/v1/chat/completions", timeout=5, headers={
        "Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})
    assert r.status_code == 204
    assert r.headers["Access-Control-Allow-Origin"] == "*"
    assert "POST" in r.headers["Access-Control-Allow-Methods"]
    assert "authorization" in r.headers["Access-Control-Allow-Headers"]


@pytest.mark.parametrize("path,body", [
    ("/v1/chat/completions", {"model": FLASH, "messages": [{"role": "user", "content": "[[endless]]"}]}),
    ("/v1/messages", {"model": FLASH, "max_tokens": 100, "messages": [{"role": "user", "content": "[[endless]]"}]}),
    ("/v1/responses", {"model": FLASH, "input": "[[endless]]", "store": False}),
])
def test_client_leaving_a_whole_answer_closes_upstream_within_a_second(gateway, fake, path, body):
    """Not streamed, nothing is written to the client until the answer is complete: the gateway
    must notice a client that left while upstream keeps talking (a token every 100 ms here)."""
    import socket
    data = json.dumps(body).encode()
    sock = socket.create_connection(("127.0.0.1", gateway.port))
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {LOCAL_KEY}\r\n"
                 f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n".encode() + data)
    deadline = time.monotonic() + 5
    while not any(r["scenario"] == "endless" for r in fake.requests) and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.5)             # upstream is streaming tokens now
    sock.close()
    left = time.monotonic()
    assert fake.wait_for_disconnect("endless", timeout=3)
    assert time.monotonic() - left < 1.2
