"""``json_body`` (gateway/views/common.py): what every endpoint refuses before decoding a body,
in the caller's envelope, with a 400 (or 413) that names the problem -- never a 500.

In-process with the Flask test client, and over raw sockets against a real gunicorn for what
only a real server does (chunked bodies, malformed or over ``max_body_mb``).
"""
from __future__ import annotations

import io
import json

import pytest

from gateway.codecs import fields
from gateway.views import common
from tests import raw_http
from tests.conftest import start_gateway

MODEL = "deepseek/deepseek-v4-flash"
ANTHROPIC_PATHS = ("/v1/messages", "/v1/messages/count_tokens")
PATHS = ("/v1/chat/completions", "/v1/completions", "/v1/responses") + ANTHROPIC_PATHS


def valid_body(path: str, text="[[echo]] hi") -> dict:
    if path == "/v1/completions":
        return {"model": MODEL, "prompt": text}
    if path == "/v1/responses":
        return {"model": MODEL, "input": text}
    body = {"model": MODEL, "messages": [{"role": "user", "content": text}]}
    if path == "/v1/messages":
        body["max_tokens"] = 50
    return body


def raw_body(path: str, text_json: str) -> bytes:
    """A valid request whose text is the JSON string literal ``text_json``, as written."""
    return json.dumps(valid_body(path, "@@")).replace('"@@"', text_json).encode()


def message_of(path: str, resp) -> str:
    """The error message, checking the envelope of ``path``'s surface on the way."""
    body = json.loads(resp.get_data()) if hasattr(resp, "get_data") else resp.json()
    if path in ANTHROPIC_PATHS:
        assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error", body
    else:
        assert set(body["error"]) >= {"message", "type", "code", "param"}, body
        assert body["error"]["type"] == "invalid_request_error", body
    return body["error"]["message"]


def strings(value) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return [value] if isinstance(value, str) else []


def post(client, path, data: bytes):
    return client.post(path, data=data, content_type="application/json")


# -- 1. nesting ------------------------------------------------------------------------------

@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("depth", [300, 1000, 100_000])
def test_deep_nesting_is_a_400_naming_the_limit(client, fake, path, depth):
    deep = "[" * depth + "]" * depth
    for data in (deep.encode(), raw_body(path, '"x", "extra": ' + deep)):
        r = post(client, path, data)
        assert r.status_code == 400
        assert "nests deeper than 256 levels" in message_of(path, r)
    assert fake.requests == []


def test_nesting_up_to_the_limit_is_accepted_and_reaches_upstream(client, fake):
    body = valid_body("/v1/chat/completions")
    inner = {}
    schema = {"type": "object", "properties": {"a": inner}}
    for _ in range(124):        # body > tools > [0] > function > parameters > properties > a
        inner["type"], inner["properties"] = "object", {"a": {}}      # then 2 levels a time
        inner = inner["properties"]["a"]
    inner["enum"] = ["x"]
    body["tools"] = [{"type": "function", "function": {"name": "deep", "parameters": schema}}]
    assert fields._nests_deeper(body, 255) and not fields._nests_deeper(body, 256)
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.get_data()
    assert len(fake.requests) == 1


@pytest.mark.parametrize("value,limit,deeper", [
    (1, 0, False), ([], 0, True), ([], 1, False), ({"a": [{}]}, 3, False), ({"a": [{}]}, 2, True),
    ([1, [2, [3]], {"x": "[[[["}], 3, False), ([[[[]]]], 3, True),
])
def test_nests_deeper_counts_lists_and_dicts(value, limit, deeper):
    assert fields._nests_deeper(value, limit) is deeper


# -- 2. lone surrogates ----------------------------------------------------------------------

@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("text_json,code_point", [
    (r'"a\ud800b"', "D800"), (r'"a\uDFFFb"', "DFFF"), (r'"\ude00\ud83d"', "DE00"),
    (r'"\ud83d"', "D83D"), (r'"\ud83d\u0041"', "D83D"),
])
def test_a_lone_surrogate_escape_is_a_400_naming_where(client, fake, path, text_json, code_point):
    r = post(client, path, raw_body(path, text_json))
    assert r.status_code == 400
    message = message_of(path, r)
    assert f"lone UTF-16 surrogate (U+{code_point})" in message
    assert ("messages[0].content" if "messages" in path or "chat" in path else
            "prompt" if "completions" in path else "input") in message
    assert fake.requests == []


@pytest.mark.parametrize("path", PATHS)
def test_surrogates_encoded_as_utf8_bytes_cesu_are_a_400(client, fake, path):
    for raw in (b"a\xed\xa0\x80b",               # U+D800 as UTF-8 bytes
                b"\xed\xa0\xbd\xed\xb8\x80"):      # U+1F600 as a CESU-8 pair
        data = json.dumps(valid_body(path, "@@")).encode().replace(b"@@", raw)
        r = post(client, path, data)
        assert r.status_code == 400 and "lone UTF-16 surrogate" in message_of(path, r)
    assert fake.requests == []


def test_a_lone_surrogate_in_a_key_or_deep_inside_is_found(client, fake):
    body = raw_body("/v1/chat/completions", '"hi"').replace(b'"model"', b'"metadata": {"k": [1, '
                                                               b'{"\\udc00": 2}]}, "model"')
    r = post(client, "/v1/chat/completions", body)
    assert r.status_code == 400
    assert "at metadata.k[1].\ufffd" in message_of("/v1/chat/completions", r)
    assert r.json["error"]["param"] == "metadata.k[1].\ufffd"


def test_a_utf16_body_with_a_lone_surrogate_is_a_400(client, fake):
    text = json.dumps(valid_body("/v1/chat/completions", "@@")).replace('"@@"', '"x\\ud800"')
    data = json.loads(text)                          # keeps the lone surrogate
    encoded = json.dumps(data, ensure_ascii=False).encode("utf-16-le", "surrogatepass")
    r = post(client, "/v1/chat/completions", encoded)
    assert r.status_code == 400 and "lone UTF-16 surrogate" in r.json["error"]["message"]


@pytest.mark.parametrize("path", PATHS)
def test_a_surrogate_pair_escape_is_one_character_and_accepted(client, fake, path):
    r = post(client, path, raw_body(path, r'"[[echo]] a\ud83d\ude00b \\ud800"'))
    assert r.status_code == 200, r.get_data()
    if path != "/v1/messages/count_tokens":
        assert "a\U0001F600b \\ud800" in strings(r.json)


# -- 3. NaN and Infinity ---------------------------------------------------------------------

@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity", "1e999", "-1E400"])
def test_nan_and_infinity_are_refused(client, fake, path, constant):
    body = raw_body(path, '"hi"').replace(b'"model"', b'"metadata": {"x": %s}, "model"'
                                          % constant.encode())
    r = post(client, path, body)
    assert r.status_code == 400
    message = message_of(path, r)
    assert constant in message and ("not valid JSON" in message or "too large" in message)
    assert fake.requests == []


def test_ordinary_floats_still_parse(client, fake):
    body = valid_body("/v1/chat/completions")
    body.update(temperature=0.7, top_p=1e-3)
    assert client.post("/v1/chat/completions", json=body).status_code == 200


# -- 4 and 5 in-process: a body reader that fails, a chunked body over the limit ---------------

class _BrokenInput(io.BytesIO):
    """A server's input stream that fails as gunicorn's does on a malformed chunk."""

    def read(self, *_):
        from gunicorn.http.errors import InvalidChunkSize
        raise InvalidChunkSize(b"zz")

    readinto = readline = read


@pytest.mark.parametrize("path", PATHS)
def test_a_body_the_server_cannot_read_is_a_400(client, fake, path):
    r = client.post(path, input_stream=_BrokenInput(), content_type="application/json",
                    environ_overrides={"wsgi.input_terminated": True})
    assert r.status_code == 400
    assert "could not be read (Invalid chunk size: b'zz')" in message_of(path, r)


def _unterminated(client, data: bytes, path="/v1/chat/completions"):
    """A request as a server passes a chunked one: no Content-Length, the input terminated."""
    return client.post(path, input_stream=io.BytesIO(data), content_type="application/json",
                       environ_overrides={"wsgi.input_terminated": True})


def test_a_body_without_length_over_the_limit_is_a_413(fake, tmp_path):
    from tests.test_app import make
    c = make(fake, tmp_path, max_body_mb=0.01)
    limit = int(0.01 * 1024 * 1024)
    r = _unterminated(c, b" " * limit + b"{}")
    assert r.status_code == 413 and r.json["error"]["code"] == "request_too_large"
    r = _unterminated(c, b" " * limit + b"{}", path="/v1/messages")
    assert r.status_code == 413 and r.json["error"]["type"] == "request_too_large"
    body = json.dumps(valid_body("/v1/chat/completions")).encode()
    r = _unterminated(c, body + b" " * (limit - len(body)))      # exactly the limit: fine
    assert r.status_code == 200, r.get_data()


# -- 4 and 5 over a real gunicorn ------------------------------------------------------------

@pytest.fixture(scope="module")
def small_gateway(fake_server, tmp_path_factory):
    server = start_gateway(fake_server, tmp_path_factory, "small-body", max_body_mb=0.01)
    yield server
    server.stop()
    assert "Traceback" not in server.log(), server.log()


LIMIT = int(0.01 * 1024 * 1024)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("chunks,what", [
    ([b"zz\r\nabc\r\n", raw_http.LAST_CHUNK], "Invalid chunk size"),
    ([b"3\r\nabcXY", raw_http.LAST_CHUNK], "chunk terminator"),
    ([b"-5\r\nabc\r\n", raw_http.LAST_CHUNK], "Invalid chunk size"),
    ([b"3;a=\x01\r\nabc\r\n", raw_http.LAST_CHUNK], "chunk"),
    ([b"\r\nabc\r\n", raw_http.LAST_CHUNK], "Invalid chunk size"),
    ([b"3\r\nabc\r\n0\r\nno colon here\r\n\r\n"], "header"),
    ([b"f" * 20000], "chunk size"),
])
def test_a_malformed_chunked_body_is_a_400_in_the_envelope(small_gateway, fake, path, chunks,
                                                           what):
    r = raw_http.exchange(small_gateway.port, raw_http.post(path, b"", chunks=chunks))
    assert r.status == 400, r.raw
    assert r.headers["content-type"] == "application/json"
    assert what.lower() in message_of(path, r).lower()
    assert fake.requests == []


def test_a_chunked_body_that_stops_short_is_a_400(small_gateway, fake):
    data = raw_http.post("/v1/chat/completions", b"", chunks=[b"10\r\n{\"model\""])
    r = raw_http.exchange(small_gateway.port, data, half_close=True)
    assert r.status == 400 and "ended before it was complete" in r.json()["error"]["message"]


@pytest.mark.parametrize("path", PATHS)
def test_a_chunked_body_over_max_body_mb_is_a_413(small_gateway, fake, path):
    body = raw_body(path, json.dumps("x" * (LIMIT + 100)))
    for pieces in ([body], [body[i:i + 4000] for i in range(0, len(body), 4000)]):
        data = raw_http.post(path, b"", chunks=[raw_http.chunk(p) for p in pieces]
                             + [raw_http.LAST_CHUNK])
        r = raw_http.exchange(small_gateway.port, data)
        assert r.status == 413, r.raw[:300]
        error = r.json()["error"]
        assert error["type"] == ("request_too_large" if path in ANTHROPIC_PATHS
                                 else "invalid_request_error")
        assert "max_body_mb" in error["message"]
    r = raw_http.exchange(small_gateway.port, raw_http.post(path, body))      # Content-Length
    assert r.status == 413
    assert fake.requests == []


def test_a_chunked_body_within_the_limit_works(small_gateway, fake):
    body = raw_body("/v1/chat/completions", json.dumps("[[echo]] " + "y" * 100))
    data = raw_http.post("/v1/chat/completions", b"", chunks=[
        raw_http.chunk(body[:10]), raw_http.chunk(body[10:]), raw_http.LAST_CHUNK])
    r = raw_http.exchange(small_gateway.port, data)
    assert r.status == 200, r.raw
    assert r.json()["choices"][0]["message"]["content"] == "y" * 100


# -- the same checks on JSON inside strings (found by tests/test_fuzz.py) -------------------

BAD_JSON_TEXTS = ['{"a": "\\ud800"}', '{"a": NaN}', '{"a": 1e999}', "[" * 5000 + "]" * 5000,
                  '{"a":' * 300 + "1" + "}" * 300]


@pytest.mark.parametrize("arguments", BAD_JSON_TEXTS)
def test_tool_call_arguments_no_upstream_could_take_count_as_broken(client, fake, arguments):
    """Before: a lone surrogate or deep arrays there were a 500, NaN and 1e999 went upstream."""
    call = {"id": "call_1", "type": "function", "function": {"name": "get", "arguments": arguments}}
    chat = {"model": MODEL, "messages": [
        {"role": "user", "content": "hi"}, {"role": "assistant", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "42"}]}
    responses = {"model": MODEL, "input": [
        {"type": "function_call", "call_id": "c1", "name": "get", "arguments": arguments},
        {"type": "function_call_output", "call_id": "c1", "output": "42"}]}
    for path, body in (("/v1/chat/completions", chat), ("/v1/responses", responses)):
        r = client.post(path, json=body)
        assert r.status_code == 200, r.get_data()
        sent = fake.requests[-1]["body"]["params"]["messages"]
        calls = [p for m in sent for p in m["content"] if p.get("type") == "tool-call"]
        assert [c["input"] for c in calls] == [{}]


@pytest.mark.parametrize("inner", [b'{"t": "\\ud800", "s": ""}', b'{"t": "a\xed\xa0\x80"}',
                                   b"[" * 5000 + b"]" * 5000, b'{"t": NaN}'])
def test_an_encrypted_content_no_upstream_could_take_is_not_ours(client, fake, inner):
    """Before: a lone surrogate or deep arrays in our reasoning token were a 500."""
    import base64
    item = {"type": "reasoning", "summary": [{"type": "summary_text", "text": "the summary"}],
            "encrypted_content": "ccgw1." + base64.urlsafe_b64encode(inner).decode()}
    r = client.post("/v1/responses", json={"model": MODEL, "input": [
        {"role": "user", "content": "hi"}, item, {"role": "user", "content": "go on"}]})
    assert r.status_code == 200, r.get_data()
    assert "the summary" in json.dumps(fake.requests[-1]["body"]["params"]["messages"])


def test_parse_json_names_what_it_parses():
    with pytest.raises(Exception) as info:
        fields.parse_json('{"x": NaN}', "'tools[0].arguments'")
    assert str(info.value).startswith("'tools[0].arguments' contains NaN")
    assert fields.parse_json('{"a": "\\ud83d\\ude00"}') == {"a": "\U0001F600"}
