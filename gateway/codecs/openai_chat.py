"""OpenAI Chat Completions <-> canonical model.

``decode`` turns a ``/v1/chat/completions`` body into a :class:`ChatRequest` (checking every
field it uses and naming the one that is wrong); :class:`ChunkEncoder` turns canonical events
into ``chat.completion.chunk`` SSE lines as they arrive; :func:`completion` builds the whole
``chat.completion`` object for a non-streamed call.  The stream always ends with a usage chunk
(``choices: []``), as the Provider API does, whether or not ``stream_options`` asked for it.
"""
from __future__ import annotations

import json
import secrets
import time

from .. import errors
from ..canonical import (TOOL_CALLS, ChatRequest, Finish, Message, Reasoning, ReasoningDelta,
                         SystemBlock, Text, TextDelta, Tool, ToolCall, ToolCallEvent, ToolResult,
                         Usage)
from ..catalog import Catalog, clamp_effort, require
from .fields import body_object, content_parts, get, json_arguments, number_in, positive_int

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
_ROLES = ("system", "developer", "user", "assistant", "tool")


# ---- request -----------------------------------------------------------------------------------

def _text_of(content, path: str, allow_images: bool = False, images=None) -> tuple[str, list]:
    """Text (and, where allowed, images) of a string or an array of content parts."""
    if isinstance(content, str):
        return content, []
    texts, imgs = [], []
    for p, part in content_parts(content, path):
        kind = part.get("type")
        if kind in ("text", "refusal"):
            texts.append(get(part, kind, str, p, required=True))
        elif kind == "image_url" and allow_images:
            imgs.append(_image(part, p, images))
        else:
            raise errors.InvalidRequest(f"'{p}.type' {kind!r} is not supported here", param=f"{p}.type")
    return "\n".join(texts), imgs


def _image(part: dict, path: str, images):
    ref = part.get("image_url")
    url = ref.get("url") if isinstance(ref, dict) else ref
    if not isinstance(url, str) or not url:
        raise errors.InvalidRequest(f"'{path}.image_url.url' is required", param=f"{path}.image_url.url")
    return images.load(url, f"{path}.image_url.url")


def _user_parts(content, path: str, images) -> list:
    if isinstance(content, str):
        return [Text(content)]
    parts = []
    for p, part in content_parts(content, path):
        kind = part.get("type")
        if kind == "text":
            parts.append(Text(get(part, "text", str, p, required=True)))
        elif kind == "image_url":
            parts.append(_image(part, p, images))
        elif kind in ("input_audio", "file"):
            raise errors.InvalidRequest(f"'{p}': {kind} parts are not supported by Command Code "
                                        "(text and images only)", param=f"{p}.type")
        else:
            raise errors.InvalidRequest(f"'{p}.type' {kind!r} is not a known content part type",
                                        param=f"{p}.type")
    return parts


def _arguments(call: dict, path: str) -> dict:
    fn = get(call, "function", dict, path, required=True)
    return json_arguments(fn.get("arguments"), f"{path}.function.arguments")


def _message(msg, i: int, images, system: list, out: list) -> None:
    path = f"messages[{i}]"
    if not isinstance(msg, dict):
        raise errors.InvalidRequest(f"'{path}' must be an object", param=path)
    role = get(msg, "role", str, path, required=True)
    content = msg.get("content")
    if role in ("system", "developer"):
        text, _ = _text_of(content if content is not None else "", f"{path}.content")
        system.append(SystemBlock(text))
    elif role == "user":
        if content is None:
            raise errors.InvalidRequest(f"'{path}.content' is required", param=f"{path}.content")
        out.append(Message("user", _user_parts(content, f"{path}.content", images)))
    elif role == "assistant":
        parts: list = []
        reasoning = get(msg, "reasoning_content", str, path)
        if reasoning:
            parts.append(Reasoning(reasoning))
        if content is not None:
            parts.append(Text(_text_of(content, f"{path}.content")[0]))
        for j, call in enumerate(get(msg, "tool_calls", list, path, default=[])):
            p = f"{path}.tool_calls[{j}]"
            if not isinstance(call, dict):
                raise errors.InvalidRequest(f"'{p}' must be an object", param=p)
            fn = get(call, "function", dict, p, required=True)
            parts.append(ToolCall(get(call, "id", str, p, required=True),
                                  get(fn, "name", str, f"{p}.function", required=True),
                                  _arguments(call, p)))
        out.append(Message("assistant", parts))
    elif role == "tool":
        text, imgs = _text_of(content if content is not None else "", f"{path}.content",
                              allow_images=True, images=images)
        out.append(Message("tool", [ToolResult(get(msg, "tool_call_id", str, path, required=True),
                                               text, images=imgs)]))
    else:
        raise errors.InvalidRequest(f"'{path}.role' must be one of {', '.join(_ROLES)}",
                                    param=f"{path}.role")


def _tools(body: dict) -> list[Tool]:
    tools = []
    for i, t in enumerate(get(body, "tools", list, default=[])):
        p = f"tools[{i}]"
        if not isinstance(t, dict) or t.get("type", "function") != "function":
            raise errors.InvalidRequest(f"'{p}' must be a function tool "
                                        "({\"type\": \"function\", \"function\": {...}})", param=p)
        fn = get(t, "function", dict, p, required=True)
        tools.append(Tool(get(fn, "name", str, f"{p}.function", required=True),
                          get(fn, "description", str, f"{p}.function", default=""),
                          get(fn, "parameters", dict, f"{p}.function",
                              default={"type": "object", "properties": {}})))
    return tools


def tool_choice(body: dict) -> str:
    """OpenAI's ``tool_choice`` (Chat Completions and Responses alike) as the canonical one."""
    choice = body.get("tool_choice")
    if choice is None or choice == "auto":
        return "auto"
    if choice in ("none", "required"):
        return choice
    if isinstance(choice, dict):
        return "required"       # a named tool: best effort, upstream has no tool_choice
    raise errors.InvalidRequest("'tool_choice' must be \"none\", \"auto\", \"required\" or a "
                                "tool object", param="tool_choice")


def _effort(body: dict, model) -> str | None:
    effort = get(body, "reasoning_effort", str)
    if effort is None:
        effort = get(get(body, "reasoning", dict, default={}), "effort", str, "reasoning")
    if effort is None:
        return None
    if effort not in EFFORTS:
        raise errors.InvalidRequest(f"'reasoning_effort' must be one of {', '.join(EFFORTS)}",
                                    param="reasoning_effort")
    if effort == "none":
        return None
    return clamp_effort(model, effort)


def decode(body, catalog: Catalog, images) -> ChatRequest:
    """A Chat Completions request body as a canonical request (nothing normalised yet)."""
    body = body_object(body)
    model = require(catalog, get(body, "model", str, required=True))
    raw_messages = get(body, "messages", list, required=True)
    if not raw_messages:
        raise errors.InvalidRequest("'messages' must not be empty", param="messages")
    n = get(body, "n", int)
    if n is not None and n != 1:
        raise errors.InvalidRequest("'n' must be 1: Command Code returns one choice per request",
                                    param="n")
    system: list[SystemBlock] = []
    messages: list[Message] = []
    for i, msg in enumerate(raw_messages):
        _message(msg, i, images, system, messages)
    max_tokens = get(body, "max_completion_tokens", int)
    if max_tokens is None:
        max_tokens = get(body, "max_tokens", int)
    positive_int(max_tokens, "max_tokens")
    return ChatRequest(
        model=model, requested_model=body["model"], messages=messages, system=system,
        tools=_tools(body), tool_choice=tool_choice(body), max_tokens=max_tokens,
        temperature=number_in(get(body, "temperature", (int, float)), 0, 2, "temperature"),
        reasoning_effort=_effort(body, model), stream=bool(get(body, "stream", bool, default=False)))


# ---- response ----------------------------------------------------------------------------------

def usage_object(u: Usage) -> dict:
    return {"prompt_tokens": u.input_tokens, "completion_tokens": u.output_tokens,
            "total_tokens": u.input_tokens + u.output_tokens,
            "prompt_tokens_details": {"cached_tokens": u.cache_read_tokens,
                                      "cache_write_tokens": u.cache_write_tokens},
            "completion_tokens_details": {"reasoning_tokens": u.reasoning_tokens}}


def new_id() -> str:
    return "chatcmpl-" + secrets.token_hex(12)


def stream_end(base: str, usage: Usage) -> bytes:
    """After the finish chunk: the usage chunk (``choices: []``, ``base`` holding the fields
    every chunk of the stream repeats) and ``[DONE]`` -- the same for chat and legacy streams."""
    return ("data: " + base + '"choices":[],"usage":' + _dumps(usage_object(usage))
            + "}\n\ndata: [DONE]\n\n").encode()


def error_body(err: errors.GatewayError) -> dict:
    """OpenAI's error envelope, ``{"error": {message, type, code, param}}``.

    The one the OpenAI SDKs parse into their ``APIError``: used by Chat Completions, legacy
    Completions, ``/v1/models``, ``/usage`` and every request no other surface claims, and the
    base the Responses surface adds Codex's fields to."""
    return {"error": {"message": err.message, "type": err.openai_type, "code": err.code,
                      "param": err.param}}


def stream_error(err: errors.GatewayError) -> bytes:
    """A failure after the stream started: an error chunk (the SDKs raise it), then [DONE]."""
    return ("data: " + _dumps(error_body(err)) + "\n\ndata: [DONE]\n\n").encode()


class ChunkEncoder:
    """Canonical events -> ``data: {chat.completion.chunk}`` lines, as UTF-8 bytes.

    Everything around the delta is fixed for the stream, so it is formatted once and each event
    costs one small ``json`` encode of its delta.
    """

    def __init__(self, model: str, completion_id: str | None = None, created: int | None = None):
        self.id = completion_id or new_id()
        self.created = created or int(time.time())
        self._base = ('{"id":"%s","object":"chat.completion.chunk","created":%d,"model":%s,'
                      % (self.id, self.created, _dumps(model)))
        self._head = "data: " + self._base + '"choices":[{"index":0,"delta":'
        self._role_sent = False
        self._tools = 0

    def _chunk(self, delta: dict, finish: str | None = None) -> bytes:
        if not self._role_sent:
            delta = {"role": "assistant", **delta}
            self._role_sent = True
        tail = ',"finish_reason":null}]}\n\n' if finish is None else \
            ',"finish_reason":"%s"}]}\n\n' % finish
        return (self._head + _dumps(delta) + tail).encode()

    def event(self, ev) -> bytes:
        if type(ev) is TextDelta:
            return self._chunk({"content": ev.text})
        if type(ev) is ReasoningDelta:
            return self._chunk({"reasoning_content": ev.text}) if ev.text else b""
        if type(ev) is ToolCallEvent:
            index, self._tools = self._tools, self._tools + 1
            return self._chunk({"tool_calls": [{"index": index, "id": ev.id, "type": "function",
                                                "function": {"name": ev.name,
                                                             "arguments": _dumps(ev.input)}}]})
        if type(ev) is Finish:
            reason = TOOL_CALLS if self._tools and ev.reason == "stop" else ev.reason
            content = {} if self._role_sent else {"content": ""}
            return self._chunk(content, reason) + stream_end(self._base, ev.usage)
        return b""

    @staticmethod
    def heartbeat() -> bytes:
        return b": keep-alive\n\n"

    error = staticmethod(stream_error)


def completion(events, model: str) -> dict:
    """The whole ``chat.completion`` object from a finished stream of canonical events."""
    text, reasoning, calls = [], [], []
    finish = None
    for ev in events:
        if type(ev) is TextDelta:
            text.append(ev.text)
        elif type(ev) is ReasoningDelta and ev.text:
            reasoning.append(ev.text)
        elif type(ev) is ToolCallEvent:
            calls.append({"id": ev.id, "type": "function",
                          "function": {"name": ev.name, "arguments": _dumps(ev.input)}})
        elif type(ev) is Finish:
            finish = ev
    message: dict = {"role": "assistant", "content": "".join(text) if text or not calls else None}
    if reasoning:
        message["reasoning_content"] = "".join(reasoning)
    if calls:
        message["tool_calls"] = calls
    reason = finish.reason if finish else "stop"
    if calls and reason == "stop":
        reason = TOOL_CALLS
    return {"id": new_id(), "object": "chat.completion", "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": reason,
                         "logprobs": None}],
            "usage": usage_object(finish.usage if finish else Usage())}
