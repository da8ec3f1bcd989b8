"""A property-based fuzz of every endpoint's body (hypothesis), in-process with the Flask test
client and the fake upstream, and a smaller raw-socket part against the real gunicorn.

Whatever the body -- random JSON, a valid-looking request with fields of random values and
types, deep nesting, lone surrogates, NaN, random bytes -- the answer is never a 500, never
HTML, always in the caller's envelope (Anthropic's on /v1/messages*, OpenAI's elsewhere), with a
status from the expected set, and nothing logs a traceback.  Derandomized and bounded, so a run
is the same everywhere and the module takes well under 30 s; ``FUZZ_EXAMPLES`` scales it up
(``FUZZ_EXAMPLES=10 pytest tests/test_fuzz.py`` runs ten times as many inputs).
"""
from __future__ import annotations

import base64
import copy
import json
import logging
import os
import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway import create_app
from tests import raw_http
from tests.conftest import LOCAL_KEY, gateway_config

SCALE = float(os.environ.get("FUZZ_EXAMPLES", "1"))
MODEL = "deepseek/deepseek-v4-flash"
ANTHROPIC_PATHS = ("/v1/messages", "/v1/messages/count_tokens")
PATHS = ("/v1/chat/completions", "/v1/completions", "/v1/responses") + ANTHROPIC_PATHS
EXPECTED = {200, 400, 404, 413}          # 404: an unknown model, response or thread id
RAN = {"in-process": 0, "raw socket": 0}


def fuzz_settings(examples: int):
    return settings(max_examples=max(1, int(examples * SCALE)), deadline=None, derandomize=True,
                    database=None, suppress_health_check=list(HealthCheck))


# -- what bodies are made of ---------------------------------------------------------------

KEYS = """model messages content role type text stream stream_options include_usage temperature
top_p max_tokens max_completion_tokens max_output_tokens tools tool_choice function name
description parameters arguments tool_calls id tool_call_id call_id output input instructions
prompt stop stop_sequences system thinking budget_tokens reasoning effort summary
encrypted_content reasoning_content image_url url detail source media_type data tool_use_id
is_error cache_control ttl signature metadata user n seed response_format json_schema schema
format previous_response_id store thread previous_message_id namespace action command
working_directory timeout_ms input_schema strict defer_loading title tool_name
parallel_tool_calls output_config conversation include truncation suffix echo logprobs
properties required items definition syntax citations context_management""".split()
TYPES = """text image image_url input_text output_text input_image input_file input_audio refusal
summary_text reasoning_text function custom namespace local_shell message reasoning
function_call function_call_output custom_tool_call custom_tool_call_output local_shell_call
local_shell_call_output item_reference additional_tools tool_use tool_result thinking
redacted_thinking document search_result tool_reference server_tool_use web_search_tool_result
base64 url content auto none any tool required json_schema json_object grammar enabled disabled
adaptive ephemeral create continue object string array""".split()
ROLES = ["user", "assistant", "system", "developer", "tool", "model", ""]
MODELS = [MODEL, "deepseek-v4-flash", "claude-sonnet-5", "moonshotai/Kimi-K3", "no-such-model",
          ""]
NASTY_TEXT = ["\ud800", "a\udfffb", "\ud83d", "\ude00\ud83d", "\ud83d\ude00", "\x00", "\u2028",
              "\ufeff", "é" * 3, "\U0010ffff"]


def _ours(value) -> str:
    """A reasoning item's ``encrypted_content`` as the gateway makes it, around ``value``."""
    return "ccgw1." + base64.urlsafe_b64encode(value.encode("utf-8", "surrogatepass")).decode()


JSON_IN_STRINGS = ['{}', '{"a": 1}', '[1]', '{"a": NaN}', '{"a": Infinity}', '{"a": 1e999}',
                   '{"a": "\\ud800"}', '{"a": "\\ud83d\\ude00"}', '{"a":' * 400 + '1' + '}' * 400,
                   '[' * 5000 + ']' * 5000, '{"a": ', 'null']
# what the codecs parse again: tool call arguments, and our reasoning items' encrypted_content
INNER = JSON_IN_STRINGS + [_ours(s) for s in [*JSON_IN_STRINGS, '{"t": "\\ud800"}',
                                              '{"t": "a\udc00"}', '{"t": "x", "s": 1}']]
STRINGS = (["", "hi", "call_1", "toolu_1", "fc_1", "resp_0", "msg_0", "data:image/png;base64,"
            "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAAB"
            "JRU5ErkJggg==", "data:image/png;base64,!!", "data:text/plain,hi",
            "http://127.0.0.1:9/x.png", "ftp://x", "ccgw1.", "ccgw1.!!"] + ROLES + TYPES + MODELS)

# the hand-picked strings first and most often (hypothesis favours what comes first)
text = st.one_of(st.sampled_from(INNER + NASTY_TEXT), st.sampled_from(STRINGS),
                 st.text(max_size=12),
                 st.text(st.characters(exclude_categories=()), max_size=6))    # surrogates too
# text that passes the body's own checks, for the codecs' inner parses
inner_text = st.one_of(st.sampled_from(INNER), st.text(max_size=8))
numbers = st.one_of(st.integers(-3, 3), st.integers(),
                    st.sampled_from([2 ** 63, 10 ** 30, -2 ** 64, 0.5, 1e308, -0.0]),
                    st.floats(allow_nan=True, allow_infinity=True))
leaves = st.one_of(st.none(), st.booleans(), numbers, text)
keys = st.one_of(st.sampled_from(KEYS), text)


def objects(children):
    return st.dictionaries(keys, children, max_size=5)


values = st.recursive(leaves, lambda c: st.one_of(st.lists(c, max_size=4), objects(c)),
                      max_leaves=12)


@st.composite
def parts(draw):
    """A content block / part / input item: a known ``type`` and a few known fields."""
    part = {"type": draw(st.sampled_from(TYPES))} if draw(st.integers(0, 9)) else {}
    for key in draw(st.lists(st.sampled_from(KEYS), max_size=4)):
        part[key] = draw(st.one_of(text, values, st.lists(st.deferred(lambda: parts()),
                                                          max_size=2)))
    return part


content = st.one_of(text, st.lists(parts(), max_size=3))


@st.composite
def messages(draw):
    msg = {"role": draw(st.sampled_from(ROLES))} if draw(st.integers(0, 9)) else {}
    if draw(st.integers(0, 9)):
        msg["content"] = draw(content)
    if draw(st.integers(0, 3)) == 0:
        msg["tool_calls"] = draw(st.lists(st.fixed_dictionaries({
            "id": text, "type": st.sampled_from(["function", "x"]),
            "function": st.fixed_dictionaries({"name": text, "arguments": st.one_of(text, values)})
        }), max_size=2))
    for key in draw(st.lists(st.sampled_from(KEYS), max_size=2)):
        msg[key] = draw(values)
    return msg


PNG_B64 = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAAB"
           "JRU5ErkJggg==")
PNG = "data:image/png;base64," + PNG_B64
VISION = "moonshotai/Kimi-K3"        # takes images and a reasoning effort
SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
_CHAT_TURNS = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": [{"type": "text", "text": "hi"},
                                 {"type": "image_url", "image_url": {"url": PNG}}]},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function",
         "function": {"name": "get", "arguments": '{"a": 1}'}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "42"},
    {"role": "user", "content": "go on"}]
_ANTHROPIC_TURNS = [
    {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "image", "source": {
        "type": "base64", "media_type": "image/png", "data": PNG_B64}}]},
    {"role": "assistant", "content": [{"type": "thinking", "thinking": "hmm", "signature": "s"},
                                      {"type": "tool_use", "id": "toolu_1", "name": "get",
                                       "input": {"a": 1}}]},
    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                  "content": "42"}, {"type": "text", "text": "go on"}]}]
_ANTHROPIC = {"model": VISION, "system": [{"type": "text", "text": "be brief",
                                          "cache_control": {"type": "ephemeral"}}],
              "messages": _ANTHROPIC_TURNS,
              "tools": [{"name": "get", "description": "d", "input_schema": SCHEMA}],
              "tool_choice": {"type": "auto"}, "metadata": {"user_id": "u"}}
TEMPLATES = {      # requests the gateway answers 200 (test_the_templates_are_accepted)
    "/v1/chat/completions": [
        {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
        {"model": VISION, "messages": _CHAT_TURNS, "temperature": 0.5, "max_tokens": 100,
         "tools": [{"type": "function", "function": {"name": "get", "description": "d",
                                                     "parameters": SCHEMA}}],
         "tool_choice": "auto", "stop": ["x"], "reasoning_effort": "high", "user": "u",
         "response_format": {"type": "json_schema", "json_schema": {"name": "x",
                                                                    "schema": SCHEMA}},
         "stream_options": {"include_usage": True}, "metadata": {"k": "v"}}],
    "/v1/completions": [
        {"model": MODEL, "prompt": "hi"},
        {"model": MODEL, "prompt": ["hi there"], "max_tokens": 20, "stop": "\n",
         "temperature": 0.2, "top_p": 0.9, "user": "u"}],
    "/v1/responses": [
        {"model": MODEL, "input": "hi"},
        {"model": VISION, "instructions": "be brief", "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "hi"},
                                         {"type": "input_image", "image_url": PNG}]},
            {"type": "reasoning", "summary": [{"type": "summary_text", "text": "thought"}],
             "encrypted_content": _ours('{"t": "thought", "s": ""}')},
            {"type": "function_call", "call_id": "c1", "name": "get", "arguments": '{"a": 1}'},
            {"type": "function_call_output", "call_id": "c1", "output": "42"},
            {"role": "user", "content": "go on"}],
         "tools": [{"type": "function", "name": "get", "parameters": SCHEMA}],
         "reasoning": {"effort": "high"}, "max_output_tokens": 100, "metadata": {"k": "v"},
         "text": {"format": {"type": "json_schema", "name": "x", "schema": SCHEMA}}}],
    "/v1/messages": [
        {"model": MODEL, "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]},
        {**_ANTHROPIC, "max_tokens": 100, "temperature": 1, "stop_sequences": ["x"],
         "thinking": {"type": "enabled", "budget_tokens": 1024}}],
    "/v1/messages/count_tokens": [
        {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}, _ANTHROPIC],
}


def base_body(path: str) -> dict:
    return copy.deepcopy(TEMPLATES[path][0])


def _spots(value, parent=None, key=None):
    """Every (container, key or index) in ``value``, the containers themselves included."""
    if parent is not None:
        yield parent, key
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _spots(v, value, k)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _spots(v, value, i)


def _same_kind(value):
    """Random values of the kind ``value`` is: what keeps a request valid but varies it."""
    if isinstance(value, bool):
        return st.booleans()
    if isinstance(value, (int, float)):
        return numbers
    if isinstance(value, str):
        return text
    if isinstance(value, list):
        return st.lists(st.one_of(text, parts()), max_size=3)
    return objects(values)


@st.composite
def mutated(draw, path: str) -> dict:
    """A template request with one to three changes anywhere in it: a value replaced by one of
    its kind (most often) or by anything, wrapped or repeated, a member dropped, a known field
    added."""
    body = copy.deepcopy(draw(st.sampled_from(TEMPLATES[path])))
    for _ in range(draw(st.integers(1, 3))):
        spots = list(_spots(body))[::-1]        # the deepest first: hypothesis favours index 0
        if not spots:
            break
        container, key = draw(st.sampled_from(spots))
        op = draw(st.integers(0, 9))
        if op <= 4:
            container[key] = draw(_same_kind(container[key]))
        elif op <= 6:
            container[key] = draw(st.one_of(leaves, values, content, st.sampled_from(STRINGS)))
        elif op == 7:
            del container[key]
        elif op == 8:
            container[key] = draw(st.sampled_from([[container[key]], {"type": container[key]},
                                                   [container[key]] * 2]))
        else:
            target = container[key] if isinstance(container[key], dict) else body
            target[draw(st.sampled_from(KEYS))] = draw(st.one_of(values, content,
                                                                 st.sampled_from(STRINGS)))
    if draw(st.integers(0, 3)) == 0:
        body["stream"] = True
    return body


STRUCTURAL = {"model", "role", "type", "media_type", "effort", "url", "data", "image_url",
              "tool_choice", "format"}
@st.composite
def reworded(draw, path: str) -> dict:
    """A template request with each of its free-text strings (not a model, role, type...)
    replaced, one time in three, by JSON text or random text."""
    body = copy.deepcopy(draw(st.sampled_from(TEMPLATES[path][::-1])))
    for container, key in list(_spots(body)):
        if isinstance(container[key], str) and key not in STRUCTURAL and not draw(
                st.integers(0, 2)):
            container[key] = draw(inner_text)
    return body


@st.composite
def valid_looking(draw, path: str) -> dict:
    """The simplest request with its main field and a few others, each of a random shape."""
    body = base_body(path)
    if draw(st.booleans()):
        body["model"] = draw(st.sampled_from(MODELS))
    turns = st.lists(st.one_of(messages(), parts()), min_size=1, max_size=4)
    if path == "/v1/completions":
        body["prompt"] = draw(st.one_of(text, st.lists(st.one_of(text, numbers), max_size=3),
                                        values))
    elif path == "/v1/responses":
        body["input"] = draw(st.one_of(text, turns, values))
    else:
        body["messages"] = draw(st.one_of(turns, values))
    body.update(draw(st.dictionaries(st.sampled_from(KEYS), st.one_of(
        values, content, st.lists(parts(), max_size=2)), max_size=4)))
    return body


def encode(value, ascii_only: bool) -> bytes:
    """JSON text of ``value`` (NaN and Infinity as Python writes them); lone surrogates as
    \\u escapes, or as their UTF-8 bytes (CESU-8) when not ``ascii_only``."""
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


@st.composite
def deep(draw, path: str) -> bytes:
    """A valid request with a field nested to a random depth, by arrays or objects."""
    depth = draw(st.one_of(st.sampled_from([257, 1000, 3000, 100_000]), st.integers(200, 1500)))
    opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}"), ('[{"b":', "}]")]))
    nested = opener * depth + "1" + closer * depth
    field = draw(st.sampled_from(["metadata", "tools", "content", "messages", "input", "prompt"]))
    body = json.dumps({**base_body(path), field: "@@"}).replace('"@@"', nested)
    return body.encode()


@st.composite
def mangled(draw, path: str) -> bytes:
    """A valid request's bytes, cut, spliced or with bytes changed."""
    data = bytearray(encode(draw(mutated(path)), draw(st.booleans())))
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(data)))
        how = draw(st.integers(0, 2))
        if how == 0:
            del data[i:]
        elif how == 1:
            data[i:i] = draw(st.sampled_from([b"\xed\xa0\x80", b"\xff", b"\x00", b"NaN", b"[",
                                              b"\\ud800", b'"', b"\\", b"}", b"\xc3"]))
        else:
            data[i:i + 1] = draw(st.binary(min_size=1, max_size=2))
    return bytes(data)


def _encoded(requests):
    return st.tuples(requests, st.booleans()).map(lambda t: encode(*t))


def bodies(path: str):
    """Mostly a template with a few changes, so that most inputs reach the codecs, the
    encoders and the fake upstream; the rest anything from random shapes to random bytes."""
    return st.integers(0, 19).flatmap(lambda i: (
        _encoded(mutated(path)) if i < 8 else
        _encoded(reworded(path)) if i < 11 else
        _encoded(valid_looking(path)) if i < 13 else
        _encoded(values) if i < 15 else
        deep(path) if i < 17 else
        mangled(path) if i < 19 else st.binary(max_size=64)))


# -- what every answer must be -------------------------------------------------------------

def check(path: str, status: int, content_type: str, body: bytes) -> None:
    assert status in EXPECTED, (status, body[:500])
    assert b"<html" not in body.lower() and b"Traceback" not in body
    if status == 200:
        assert content_type.startswith(("application/json", "text/event-stream")), content_type
        return
    assert content_type.startswith("application/json"), content_type
    err = json.loads(body)
    if path.startswith("/v1/messages"):
        assert set(err) == {"type", "error"} and err["type"] == "error", err
        assert isinstance(err["error"]["type"], str) and isinstance(err["error"]["message"], str)
    else:
        assert set(err) == {"error"}, err
        assert {"message", "type", "code", "param"} <= set(err["error"]), err
        assert isinstance(err["error"]["message"], str) and err["error"]["message"]


@pytest.fixture
def fuzz_client(fake, tmp_path):
    fake.default_scenario = "fast"          # no pauses between pieces: more inputs a second
    app = create_app(gateway_config(fake.url, tmp_path))
    c = app.test_client()
    c.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {LOCAL_KEY}"
    return c


@pytest.mark.parametrize("path", PATHS)
def test_the_templates_are_accepted(fuzz_client, fake, path):
    for body in TEMPLATES[path]:
        for stream in (False, True):
            r = fuzz_client.post(path, json={**body, "stream": True} if stream else body)
            assert r.status_code == 200, (body, r.get_data())


@pytest.mark.parametrize("path", PATHS)
def test_every_body_gets_an_answer_in_the_envelope(fuzz_client, fake, caplog, path):
    caplog.set_level(logging.WARNING)

    @fuzz_settings(500)
    @given(data=bodies(path))
    def run(data: bytes):
        RAN["in-process"] += 1
        r = fuzz_client.post(path, data=data, content_type="application/json")
        check(path, r.status_code, r.content_type or "", r.get_data())

    run()
    tracebacks = [rec for rec in caplog.records if rec.exc_info or rec.levelno >= logging.ERROR]
    assert not tracebacks, [rec.getMessage() for rec in tracebacks]


# -- raw sockets against the real gunicorn -------------------------------------------------

HEADER_NAMES = [b"Content-Length", b"Transfer-Encoding", b"Content-Type", b"Expect",
                b"Connection", b"Host", b"Authorization", b"x-api-key", b"X-Forwarded-For",
                b"Upgrade", b"Bad Name", b"", b"X\x00"]
HEADER_VALUES = [b"0", b"5", b"-1", b"abc", b"1e3", b"99999999999999999999", b"chunked",
                 b"gzip, chunked", b"chunked, chunked", b"identity", b"100-continue",
                 b"close", b"keep-alive", b"h2c", b"Bearer " + LOCAL_KEY.encode(),
                 b"application/json", b"\xff\xfe", b"a\r\nX-Injected: 1", b" ", b"x" * 9000]


@st.composite
def raw_requests(draw) -> bytes:
    path = draw(st.sampled_from(PATHS))
    method = draw(st.sampled_from([b"POST", b"GET", b"PUT", b"G T", b"", b"\x16\x03\x01"]))
    target = draw(st.sampled_from([path.encode(), b"/health", b"*", b"", b"/" + b"a" * 5000,
                                   b"/%zz"]))
    version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.x", b""]))
    eol = draw(st.sampled_from([b"\r\n"] * 6 + [b"\n", b"\r"]))
    head = b" ".join(x for x in (method, target, version) if x) + eol
    head += b"Host: 127.0.0.1" + eol + b"Authorization: Bearer " + LOCAL_KEY.encode() + eol
    for _ in range(draw(st.integers(0, 4))):
        head += draw(st.sampled_from(HEADER_NAMES)) + b": " + draw(
            st.one_of(st.sampled_from(HEADER_VALUES), st.binary(max_size=8))) + eol
    if draw(st.integers(0, 9)) == 0:
        head += b"".join(b"X-%d: v" % i + eol for i in range(draw(st.integers(90, 200))))
    body = encode(draw(mutated(path)), True)
    framing = draw(st.integers(0, 3))
    if framing == 0:
        head += b"Content-Length: %d" % len(body) + eol
    elif framing == 1:
        head += b"Transfer-Encoding: chunked" + eol
        body = draw(st.sampled_from([raw_http.chunk(body) + raw_http.LAST_CHUNK,
                                     b"zz\r\n" + body, b"%x\r\n" % (len(body) + 9) + body,
                                     raw_http.chunk(body) + b"0\r\nbad trailer\r\n\r\n",
                                     b"5;x=\x01\r\nabcde\r\n0\r\n\r\n"]))
    return head + eol + body[:draw(st.integers(0, len(body)))] if framing == 3 else \
        head + eol + body


def test_raw_requests_get_json_or_nothing_and_no_traceback(gateway, fake):
    @fuzz_settings(200)
    @given(data=raw_requests())
    def run(data: bytes):
        RAN["raw socket"] += 1
        try:
            r = raw_http.exchange(gateway.port, data, timeout=5, half_close=True)
        except (ConnectionError, socket.timeout):
            return
        while r.status == 100:              # Expect: 100-continue
            r = raw_http.parse(r.raw.split(b"\r\n\r\n", 1)[1])
        if not r.raw:
            return                          # closed without an answer: allowed
        assert b"<html" not in r.raw.lower(), r.raw[:500]
        assert r.status, r.raw[:300]
        assert r.status < 500 or r.status == 501, r.raw[:500]   # 501: a transfer coding
        assert r.headers.get("content-type", "").startswith(("application/json",
                                                              "text/event-stream")), r.raw[:300]

    run()
    log = gateway.log()
    assert "Traceback" not in log, log[-3000:]


def test_zz_the_count(capsys):
    """Runs last in the module: says how many inputs the fuzz ran (all without a failure)."""
    if not all(RAN.values()):
        pytest.skip("the fuzz tests did not run in this session")
    with capsys.disabled():
        print(f"\nfuzz: {RAN['in-process']} in-process bodies and {RAN['raw socket']} raw "
              f"requests, 0 failures")
