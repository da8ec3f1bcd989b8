"""Anthropic Messages <-> canonical model.

``decode`` turns a ``/v1/messages`` body into a :class:`ChatRequest`; :class:`EventEncoder`
turns canonical events into Anthropic's exact SSE sequence (``message_start``, blocks opened,
streamed and closed one at a time and indexed by position, ``message_delta``, ``message_stop``);
:func:`message` builds the whole ``message`` object for a non-streamed call.

Usage follows Anthropic's meaning: ``input_tokens`` is only the uncached part; cache reads and
writes are reported beside it, never added twice.
"""
from __future__ import annotations

import json
import secrets

from .. import errors
from ..canonical import (CONTENT_FILTER, LENGTH, TOOL_CALLS, ChatRequest, Finish, Image, Message,
                         Reasoning, ReasoningDelta, SystemBlock, Text, TextDelta, Tool, ToolCall,
                         ToolCallEvent, ToolResult, Usage)
from ..catalog import Catalog, Model, clamp_effort, require
from ..images import from_data_url
from .fields import body_object, get, number_in, positive_int

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode

#: thinking.budget_tokens -> the effort that spends about as much (then clamped to the model's)
_BUDGET_EFFORTS = ((4096, "low"), (16384, "medium"), (32768, "high"), (65536, "xhigh"))
_STOP_REASONS = {LENGTH: "max_tokens", TOOL_CALLS: "tool_use", CONTENT_FILTER: "refusal"}


# ---- request -----------------------------------------------------------------------------------

def _cache(block: dict) -> dict | None:
    """A block's prompt-cache breakpoint, reduced to what Anthropic accepts (type and ttl)."""
    cache = block.get("cache_control")
    if not isinstance(cache, dict):
        return None
    ttl = cache.get("ttl")
    return {"type": "ephemeral", "ttl": ttl} if ttl in ("5m", "1h") else {"type": "ephemeral"}


def _image(block: dict, path: str, images) -> Image:
    source = get(block, "source", dict, path, required=True)
    kind = source.get("type")
    if kind == "base64":
        media = get(source, "media_type", str, f"{path}.source", required=True)
        data = get(source, "data", str, f"{path}.source", required=True)
        return images.load(f"data:{media};base64,{data}", f"{path}.source")
    if kind == "url":
        return images.load(get(source, "url", str, f"{path}.source", required=True), f"{path}.source.url")
    raise errors.InvalidRequest(f"'{path}.source.type' must be \"base64\" or \"url\"",
                                param=f"{path}.source.type")


def _document(block: dict, path: str) -> str:
    """A ``document`` or ``search_result`` block as the text a model can read.

    Plain-text and content documents keep their text.  A PDF (base64, URL or file) cannot reach
    a Command Code model, which reads text and images only; refusing the request would break
    every later turn of the conversation (agents send their history again), so the model is told
    in its place, and can say so."""
    title = block.get("title") if isinstance(block.get("title"), str) else ""
    if block.get("type") == "search_result":
        texts = _texts(block.get("content") or [], f"{path}.content")
        head = " ".join(x for x in (title, block.get("source")) if isinstance(x, str) and x)
        return "\n".join(([head] if head else []) + texts)
    source = get(block, "source", dict, path, required=True)
    kind = source.get("type")
    if kind == "text":
        text = get(source, "data", str, f"{path}.source", required=True)
    elif kind == "content":
        text = "\n".join(_texts(source.get("content") or [], f"{path}.source.content"))
    else:
        what = source.get("media_type") if isinstance(source.get("media_type"), str) else "document"
        return (f"[A {what} document{' (' + title + ')' if title else ''} was attached here; it "
                "cannot be shown: this model reads text and images only.]")
    return f"{title}\n{text}" if title else text


def _texts(content, path: str) -> list[str]:
    """The text of a document's or search result's ``text`` blocks (others are skipped)."""
    return [b.get("text", "") for b in _blocks(content, path) if b.get("type") == "text"]


def _blocks(content, path: str) -> list:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise errors.InvalidRequest(f"'{path}' must be a string or an array of content blocks",
                                    param=path)
    for i, block in enumerate(content):
        if not isinstance(block, dict):
            raise errors.InvalidRequest(f"'{path}[{i}]' must be an object", param=f"{path}[{i}]")
    return content


def _tool_result(block: dict, path: str, images) -> ToolResult:
    content = block.get("content")
    texts, imgs = [], []
    if content is not None:
        for i, part in enumerate(_blocks(content, f"{path}.content")):
            p = f"{path}.content[{i}]"
            if part.get("type") == "text":
                texts.append(get(part, "text", str, p, required=True))
            elif part.get("type") == "image":
                imgs.append(_image(part, p, images))
            elif part.get("type") in ("document", "search_result"):
                texts.append(_document(part, p))
            elif part.get("type") == "tool_reference":
                # Claude Code's ToolSearch answers with references to deferred tools; the
                # referenced tools are sent to the model (see _tools), the result says so
                texts.append(f"Tool loaded: {get(part, 'tool_name', str, p, required=True)}")
            else:
                raise errors.InvalidRequest(f"'{p}.type' must be text, image, document, "
                                            "search_result or tool_reference in a tool_result",
                                            param=f"{p}.type")
    return ToolResult(get(block, "tool_use_id", str, path, required=True), "\n".join(texts),
                      is_error=bool(block.get("is_error")), images=imgs,
                      cache_control=_cache(block))


def _user(content, path: str, images, out: list, before: list | None = None) -> None:
    """``before``: system text that precedes this turn's own text but follows its tool results."""
    results, parts = [], list(before or ())
    for i, block in enumerate(_blocks(content, path)):
        p = f"{path}[{i}]"
        kind = block.get("type")
        if kind == "text":
            parts.append(Text(get(block, "text", str, p, required=True), _cache(block)))
        elif kind == "image":
            parts.append(_image(block, p, images))
        elif kind == "tool_result":
            results.append(_tool_result(block, p, images))
        elif kind in ("document", "search_result"):
            parts.append(Text(_document(block, p), _cache(block)))
        else:
            raise errors.InvalidRequest(f"'{p}.type' {kind!r} is not supported in a user message",
                                        param=f"{p}.type")
    if results:             # results answer the previous turn, so they come before the new text
        out.append(Message("tool", results))
    if parts:
        out.append(Message("user", parts))


def _assistant(content, path: str, out: list) -> None:
    parts: list = []
    for i, block in enumerate(_blocks(content, path)):
        p = f"{path}[{i}]"
        kind = block.get("type")
        if kind == "text":
            parts.append(Text(get(block, "text", str, p, required=True)))
        elif kind == "thinking":
            parts.append(Reasoning(get(block, "thinking", str, p, default=""),
                                   get(block, "signature", str, p, default="")))
        elif kind == "tool_use":
            parts.append(ToolCall(get(block, "id", str, p, required=True),
                                  get(block, "name", str, p, required=True),
                                  get(block, "input", dict, p, default={})))
        elif kind in ("redacted_thinking", "server_tool_use", "web_search_tool_result"):
            continue        # opaque to other models, or run by the server: nothing to send back
        else:
            raise errors.InvalidRequest(f"'{p}.type' {kind!r} is not supported in an assistant "
                                        "message", param=f"{p}.type")
    out.append(Message("assistant", parts))


REMINDER_OPEN, REMINDER_CLOSE = "<system-reminder>\n", "\n</system-reminder>"


def _reminders(content, path: str) -> list[Text]:
    """A ``role: "system"`` message in ``messages`` as user text in ``<system-reminder>`` tags.

    Claude Code 2.1 (beta ``mid-conversation-system-2026-04-07``) puts system turns between the
    user and assistant turns; without that beta it sends the same text inside the next user turn
    wrapped in these tags.  No route can carry a system turn mid-conversation, so every route
    gets the form Claude Code itself falls back to, in the same place in the conversation.
    """
    out = []
    for i, block in enumerate(_blocks(content, path)):
        p = f"{path}[{i}]"
        if block.get("type") != "text":
            raise errors.InvalidRequest(f"'{p}.type' must be \"text\" in a system message",
                                        param=f"{p}.type")
        text = get(block, "text", str, p, required=True)
        if text.strip() and not text.lstrip().startswith("<system-reminder>"):
            text = REMINDER_OPEN + text + REMINDER_CLOSE
        out.append(Text(text, _cache(block)))
    return out


def _system(body: dict) -> list[SystemBlock]:
    system = body.get("system")
    if system is None:
        return []
    if isinstance(system, str):
        return [SystemBlock(system)]
    blocks = []
    for i, block in enumerate(_blocks(system, "system")):
        p = f"system[{i}]"
        if block.get("type") != "text":
            raise errors.InvalidRequest(f"'{p}.type' must be \"text\"", param=f"{p}.type")
        blocks.append(SystemBlock(get(block, "text", str, p, required=True), _cache(block)))
    return blocks


def _referenced(raw) -> set[str]:
    """Names of the tools that ``tool_reference`` blocks in tool results have loaded."""
    names: set[str] = set()
    for msg in raw if isinstance(raw, list) else ():
        content = msg.get("content") if isinstance(msg, dict) else None
        for block in content if isinstance(content, list) else ():
            inner = block.get("content") if isinstance(block, dict) else None
            for part in inner if isinstance(inner, list) else ():
                if isinstance(part, dict) and part.get("type") == "tool_reference":
                    names.add(part.get("tool_name"))
    return names


def _tools(body: dict) -> list[Tool]:
    """Client tools.  A tool with ``defer_loading`` (Anthropic's tool search, which Claude Code
    uses for its rarely needed tools) is sent only once a ``tool_reference`` has loaded it, as
    Anthropic does; server tools are dropped."""
    tools = []
    loaded = None
    for i, t in enumerate(get(body, "tools", list, default=[])):
        p = f"tools[{i}]"
        if not isinstance(t, dict):
            raise errors.InvalidRequest(f"'{p}' must be an object", param=p)
        if "input_schema" not in t and t.get("type") not in (None, "custom"):
            continue        # a server tool (web search, code execution): Command Code runs none
        if t.get("defer_loading") is True:
            loaded = _referenced(body.get("messages")) if loaded is None else loaded
            if t.get("name") not in loaded:
                continue
        tools.append(Tool(get(t, "name", str, p, required=True),
                          get(t, "description", str, p, default=""),
                          get(t, "input_schema", dict, p, required=True), _cache(t)))
    return tools


def _tool_choice(body: dict) -> str:
    choice = get(body, "tool_choice", dict)
    if choice is None:
        return "auto"
    kind = choice.get("type")
    if kind in ("auto", "none"):
        return kind
    if kind in ("any", "tool"):
        return "required"       # best effort: upstream has no tool_choice
    raise errors.InvalidRequest("'tool_choice.type' must be auto, any, tool or none",
                                param="tool_choice.type")


def _effort(body: dict, model) -> str | None:
    """The reasoning effort the client asked for, clamped to one the model accepts.

    ``output_config.effort`` (Claude Code's ``--effort``: low, medium, high, xhigh, max) wins;
    ``thinking: {type: "adaptive"}`` without it is Anthropic's default effort, high;
    ``{type: "enabled", budget_tokens}`` maps by budget; ``{type: "disabled"}`` sends none.
    """
    thinking = get(body, "thinking", dict) or {}
    kind = thinking.get("type")
    if kind == "disabled":
        return None
    effort = get(get(body, "output_config", dict) or {}, "effort", str, "output_config")
    if effort is None:
        if kind == "adaptive":
            effort = "high"
        elif kind == "enabled":
            budget = get(thinking, "budget_tokens", int, "thinking", default=0)
            effort = next((e for limit, e in _BUDGET_EFFORTS if budget <= limit), "max")
        else:
            return None
    return clamp_effort(model, effort.lower())


def _messages(raw: list, images) -> list[Message]:
    """``messages`` in order; a system turn becomes reminder text in the user turn it precedes,
    placed after that turn's tool results so that every tool call stays answered first."""
    messages: list[Message] = []
    held: list[Text] = []       # system text after an assistant turn, for the next user turn
    for i, msg in enumerate(raw):
        path = f"messages[{i}]"
        if not isinstance(msg, dict):
            raise errors.InvalidRequest(f"'{path}' must be an object", param=path)
        role = get(msg, "role", str, path, required=True)
        if "content" not in msg:
            raise errors.InvalidRequest(f"'{path}.content' is required", param=f"{path}.content")
        if role == "user":
            _user(msg["content"], f"{path}.content", images, messages, held)
            held = []
        elif role == "assistant":
            if held:
                messages.append(Message("user", held))
                held = []
            _assistant(msg["content"], f"{path}.content", messages)
        elif role == "system":
            texts = _reminders(msg["content"], f"{path}.content")
            if messages and messages[-1].role == "assistant":
                held += texts
            elif texts:
                messages.append(Message("user", texts))
        else:
            raise errors.InvalidRequest(f"'{path}.role' must be \"user\", \"assistant\" or "
                                        "\"system\"", param=f"{path}.role")
    if held:
        messages.append(Message("user", held))
    return messages


class _CountedImages:
    """Images for count_tokens: inline ones are read for their size, URLs are never fetched
    (counted at the largest size an image can cost)."""

    @staticmethod
    def load(url: str, param: str) -> Image:
        if url.startswith("data:"):
            return from_data_url(url, param)
        return Image(url, "image/*")


def decode_for_count(body, catalog: Catalog) -> ChatRequest:
    """A ``count_tokens`` body as a canonical request: the same fields as ``/v1/messages``
    without ``max_tokens``; any model id (an unknown one is counted like any other), images on
    any model, nothing fetched."""
    body = body_object(body)
    asked = get(body, "model", str, required=True)
    model = catalog.resolve(asked) or Model(asked, None, (), 200000, None, None)
    return _decode(body, asked, model, _CountedImages, max_tokens=1)


def decode(body, catalog: Catalog, images) -> ChatRequest:
    """A Messages request body as a canonical request (nothing normalised yet)."""
    body = body_object(body)
    asked = get(body, "model", str, required=True)
    model = require(catalog, asked)
    return _decode(body, asked, model, images,
                   positive_int(get(body, "max_tokens", int, required=True), "max_tokens"))


def _decode(body: dict, asked: str, model: Model, images, max_tokens: int) -> ChatRequest:
    raw = get(body, "messages", list, required=True)
    if not raw:
        raise errors.InvalidRequest("'messages' must not be empty", param="messages")
    messages = _messages(raw, images)
    return ChatRequest(
        model=model, requested_model=asked, messages=messages, system=_system(body),
        tools=_tools(body), tool_choice=_tool_choice(body),
        max_tokens=max_tokens,
        temperature=number_in(get(body, "temperature", (int, float)), 0, 1, "temperature"),
        reasoning_effort=_effort(body, model), stream=bool(get(body, "stream", bool, default=False)))


# ---- response ----------------------------------------------------------------------------------

def usage_object(u: Usage) -> dict:
    return {"input_tokens": u.uncached_input_tokens, "output_tokens": u.output_tokens,
            "cache_read_input_tokens": u.cache_read_tokens,
            "cache_creation_input_tokens": u.cache_write_tokens}


def stop_reason(finish: Finish, saw_tool: bool) -> str:
    if saw_tool and finish.reason in ("stop", TOOL_CALLS):
        return "tool_use"
    return _STOP_REASONS.get(finish.reason, "end_turn")


def new_id() -> str:
    return "msg_" + secrets.token_hex(12)


def _sse(kind: str, data: dict) -> str:
    return f"event: {kind}\ndata: {_dumps(data)}\n\n"


class EventEncoder:
    """Canonical events -> Anthropic SSE events, as UTF-8 bytes.

    Blocks are opened lazily and closed before the next one opens, so their indexes are their
    positions in the final ``content`` array, as the SDK's accumulator expects.
    """

    def __init__(self, model: str, message_id: str | None = None, on_done=None):
        self.id = message_id or new_id()
        self._model = model
        self._on_done = on_done             # called with the whole message before message_stop
        self._events: list | None = [] if on_done else None
        self._start = _sse("message_start", {"type": "message_start", "message": {
            "id": self.id, "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0}}})
        self._index = -1
        self._open: str | None = None       # "text" | "thinking" | None
        self._signed = False                # the open thinking block got its signature
        self._saw_tool = False

    def _begin(self) -> str:
        out, self._start = self._start, ""
        return out

    def _close(self) -> str:
        if self._open is None:
            return ""
        out = ""
        if self._open == "thinking" and not self._signed:
            out = _sse("content_block_delta", {"type": "content_block_delta", "index": self._index,
                                               "delta": {"type": "signature_delta", "signature": ""}})
        self._open = None
        return out + _sse("content_block_stop", {"type": "content_block_stop", "index": self._index})

    def _open_block(self, block: dict) -> str:
        out = self._close()
        self._index += 1
        self._open = block["type"]
        self._signed = False
        return out + _sse("content_block_start", {"type": "content_block_start",
                                                  "index": self._index, "content_block": block})

    def _delta(self, kind: str, block: dict, delta: dict) -> str:
        out = self._open_block(block) if self._open != kind else ""
        return out + _sse("content_block_delta", {"type": "content_block_delta",
                                                  "index": self._index, "delta": delta})

    def event(self, ev) -> bytes:
        out = self._begin()
        if self._events is not None:
            self._events.append(ev)
        if type(ev) is TextDelta:
            out += self._delta("text", {"type": "text", "text": ""},
                               {"type": "text_delta", "text": ev.text})
        elif type(ev) is ReasoningDelta:
            if ev.text:
                out += self._delta("thinking", {"type": "thinking", "thinking": "", "signature": ""},
                                   {"type": "thinking_delta", "thinking": ev.text})
            if ev.signature and self._open == "thinking":
                self._signed = True
                out += _sse("content_block_delta", {"type": "content_block_delta",
                                                    "index": self._index,
                                                    "delta": {"type": "signature_delta",
                                                              "signature": ev.signature}})
        elif type(ev) is ToolCallEvent:
            self._saw_tool = True
            out += self._open_block({"type": "tool_use", "id": ev.id, "name": ev.name, "input": {}})
            out += _sse("content_block_delta", {"type": "content_block_delta", "index": self._index,
                                                "delta": {"type": "input_json_delta",
                                                          "partial_json": _dumps(ev.input)}})
            self._open = "tool_use"
            out += self._close()
        elif type(ev) is Finish:
            if self._on_done is not None:
                self._on_done(message(self._events, self._model, self.id))
            out += self._close()
            out += _sse("message_delta", {"type": "message_delta",
                                          "delta": {"stop_reason": stop_reason(ev, self._saw_tool),
                                                    "stop_sequence": None},
                                          "usage": usage_object(ev.usage)})
            out += _sse("message_stop", {"type": "message_stop"})
        return out.encode()

    def heartbeat(self) -> bytes:
        return (self._begin() + 'event: ping\ndata: {"type":"ping"}\n\n').encode()

    def error(self, err: errors.GatewayError) -> bytes:
        return (self._begin() + _sse("error", error_body(err))).encode()


def error_body(err: errors.GatewayError) -> dict:
    """Anthropic's error envelope, ``{"type": "error", "error": {type, message[, details]}}``:
    the body of every error response on ``/v1/messages*`` and the data of the stream's ``error``
    event.  ``details`` carries what the SDKs' thread runners read (``error_code``)."""
    body = {"type": err.anthropic_type, "message": err.message}
    if err.details:
        body["details"] = err.details
    return {"type": "error", "error": body}


def message(events, model: str, message_id: str | None = None) -> dict:
    """The whole ``message`` object from a finished stream of canonical events."""
    content: list[dict] = []
    finish = None
    saw_tool = False
    for ev in events:
        last = content[-1] if content else None
        if type(ev) is TextDelta:
            if last and last["type"] == "text":
                last["text"] += ev.text
            else:
                content.append({"type": "text", "text": ev.text})
        elif type(ev) is ReasoningDelta:
            if last and last["type"] == "thinking" and not last["signature"]:
                last["thinking"] += ev.text
                last["signature"] = ev.signature
            elif ev.text:
                content.append({"type": "thinking", "thinking": ev.text, "signature": ev.signature})
        elif type(ev) is ToolCallEvent:
            saw_tool = True
            content.append({"type": "tool_use", "id": ev.id, "name": ev.name, "input": ev.input})
        elif type(ev) is Finish:
            finish = ev
    finish = finish or Finish("stop", Usage())
    return {"id": message_id or new_id(), "type": "message", "role": "assistant", "model": model,
            "content": content, "stop_reason": stop_reason(finish, saw_tool),
            "stop_sequence": None, "usage": usage_object(finish.usage)}
