"""The Provider API's Anthropic format (``/provider/v1/messages``, Claude models), seen as its client.

* :func:`encode` -- canonical request to a Messages body, always streamed;
* :class:`Decoder` -- its SSE events (bytes split anywhere) to canonical events.

Claude's rules differ from the canonical model's looser ones, so the encoder enforces them:
roles alternate starting with ``user``, tool results lead the user turn after the calls, thinking
blocks go back only with their signature, and extended thinking takes a token budget below
``max_tokens`` and no temperature.
"""
from __future__ import annotations

from ..canonical import (CONTENT_FILTER, LENGTH, STOP, TOOL_CALLS, ChatRequest, Finish, Image,
                         Reasoning, ReasoningDelta, Text, TextDelta, ToolCall, ToolCallEvent,
                         ToolResult, Usage)
from . import failures, wire
from .sse import EventDecoder
from .wire import count, tool_input

PATH = "/provider/v1/messages"
DEFAULT_MAX_TOKENS = 32000          # every current Claude model accepts at least this
MIN_THINKING_BUDGET = 1024
#: effort -> thinking budget (the upper end of the band the Anthropic decoder maps to that effort)
_BUDGETS = {"low": 4096, "medium": 16384, "high": 32768, "xhigh": 65536}
_STOP = {"end_turn": STOP, "stop_sequence": STOP, "pause_turn": STOP, "max_tokens": LENGTH,
         "model_context_window_exceeded": LENGTH, "tool_use": TOOL_CALLS, "refusal": CONTENT_FILTER}


# ---- request -----------------------------------------------------------------------------------

def _image(img: Image) -> dict:
    data = img.data_url.split(",", 1)[1] if "," in img.data_url else ""
    return {"type": "image", "source": {"type": "base64", "media_type": img.media_type,
                                        "data": data}}


def _cached(block: dict, cache_control: dict | None) -> dict:
    """``block`` with the client's prompt-cache breakpoint, if it set one."""
    if cache_control:
        block["cache_control"] = cache_control
    return block


def _blocks(msg) -> list[dict]:
    blocks: list[dict] = []
    for p in msg.parts:
        if isinstance(p, Text):
            blocks.append(_cached({"type": "text", "text": p.text}, p.cache_control))
        elif isinstance(p, Image):
            blocks.append(_image(p))
        elif isinstance(p, Reasoning):
            if p.signature:             # unsigned reasoning (another model's) cannot go back
                blocks.append({"type": "thinking", "thinking": p.text, "signature": p.signature})
        elif isinstance(p, ToolCall):
            blocks.append({"type": "tool_use", "id": p.id, "name": p.name, "input": p.input})
        elif isinstance(p, ToolResult):
            content: list[dict] = [{"type": "text", "text": p.content}] if p.content else []
            content += [_image(i) for i in p.images]
            block = {"type": "tool_result", "tool_use_id": p.call_id,
                     "content": content or "(empty)"}
            if p.is_error:
                block["is_error"] = True
            blocks.append(_cached(block, p.cache_control))
    return blocks


def _messages(req: ChatRequest) -> list[dict]:
    turns = ({"role": "assistant" if msg.role == "assistant" else "user",  # results: user turns
              "content": _blocks(msg)} for msg in req.messages)
    out = wire.merge_turns(t for t in turns if t["content"])
    if out and out[0]["role"] != "user":
        out.insert(0, {"role": "user", "content": [{"type": "text", "text": "(continue)"}]})
    return out


def _system(req: ChatRequest) -> list[dict]:
    system = []
    for b in req.system:
        if b.text.strip():
            system.append(_cached({"type": "text", "text": b.text}, b.cache_control))
    return system


def _thinking_allowed(messages: list[dict]) -> bool:
    """Claude refuses extended thinking when the turn it continues -- an assistant turn with
    tool calls, answered by results -- does not start with a signed thinking block (it was made
    without thinking, or by a client that kept no signatures, such as OpenAI's format)."""
    last = next((m for m in reversed(messages) if m["role"] == "assistant"), None)
    if last is None or not any(b["type"] == "tool_use" for b in last["content"]):
        return True
    return last["content"][0]["type"] in ("thinking", "redacted_thinking")


def _thinking(req: ChatRequest, messages: list[dict], max_tokens: int) -> dict | None:
    """The ``thinking`` member for ``req``'s effort: a budget below ``max_tokens``, or None."""
    if not (req.reasoning_effort and req.model.efforts and _thinking_allowed(messages)):
        return None
    budget = min(_BUDGETS.get(req.reasoning_effort, max_tokens), max_tokens - 1)
    if budget < MIN_THINKING_BUDGET:
        return None
    return {"type": "enabled", "budget_tokens": budget}


def encode(req: ChatRequest) -> dict:
    """The Messages body for ``req``."""
    max_tokens = min(req.max_tokens or DEFAULT_MAX_TOKENS,
                     req.model.max_output or req.max_tokens or DEFAULT_MAX_TOKENS)
    body: dict = {"model": req.model.id, "max_tokens": max_tokens, "messages": _messages(req),
                  "stream": True}
    system = _system(req)
    if system:
        body["system"] = system
    thinking = _thinking(req, body["messages"], max_tokens)
    if thinking:
        body["thinking"] = thinking
    if req.tools and req.tool_choice != "none":
        body["tools"] = [_cached({"name": t.name, "description": t.description,
                                  "input_schema": t.input_schema}, t.cache_control)
                         for t in req.tools]
        # with extended thinking Claude accepts only auto (or none) as tool_choice
        body["tool_choice"] = {"type": "any" if req.tool_choice == "required" and not thinking
                               else "auto"}
    if req.temperature is not None and not thinking:
        body["temperature"] = min(req.temperature, 1.0)
    return body


# ---- response ----------------------------------------------------------------------------------

def _obj(v) -> dict:
    return v if isinstance(v, dict) else {}


class Decoder(EventDecoder):
    """SSE bytes in, canonical events out; ``feed`` chunks as they arrive, then ``end()``.

    Claude reports ``input_tokens`` without the cached part; canonical input includes cache
    reads and writes, so they are added here (and taken out again by the Anthropic encoder).
    """

    terminal = "message_stop"

    def __init__(self):
        super().__init__()
        self._tool: list | None = None          # [id, name, json fragments] of the open tool_use
        self._input = self._cache_read = self._cache_write = self._output = 0
        self._reason = "end_turn"
        self.usage = Usage()                    # the total, once message_stop arrived

    def _usage(self, u) -> None:
        if not isinstance(u, dict):
            return
        if "input_tokens" in u:
            self._input = count(u.get("input_tokens")) or self._input
        self._cache_read = count(u.get("cache_read_input_tokens")) or self._cache_read
        self._cache_write = count(u.get("cache_creation_input_tokens")) or self._cache_write
        self._output = count(u.get("output_tokens")) or self._output

    def _data(self, data: bytes, events: list) -> None:
        ev = wire.json_object(data)
        kind = ev.get("type") if ev is not None else None
        handle = self._EVENTS.get(kind) if isinstance(kind, str) else None
        if handle is not None:
            handle(self, ev, events)

    def _block_delta(self, ev: dict, events: list) -> None:
        delta = _obj(ev.get("delta"))
        dtype = delta.get("type")
        if dtype == "text_delta" and delta.get("text"):
            events.append(TextDelta(delta["text"]))
        elif dtype == "thinking_delta" and delta.get("thinking"):
            events.append(ReasoningDelta(delta["thinking"]))
        elif dtype == "signature_delta" and delta.get("signature"):
            events.append(ReasoningDelta("", delta["signature"]))
        elif dtype == "input_json_delta" and self._tool is not None:
            self._tool[2].append(delta.get("partial_json") or "")

    def _block_start(self, ev: dict, events: list) -> None:
        block = _obj(ev.get("content_block"))
        btype = block.get("type")
        if btype == "tool_use":
            self._tool = [str(block.get("id") or ""), str(block.get("name") or ""), []]
            if block.get("input"):
                self._tool[2].append(wire.dumps(block["input"]))
        elif btype == "text" and isinstance(block.get("text"), str) and block["text"]:
            events.append(TextDelta(block["text"]))
        elif btype == "thinking" and isinstance(block.get("thinking"), str) and block["thinking"]:
            events.append(ReasoningDelta(block["thinking"]))

    def _block_stop(self, ev: dict, events: list) -> None:
        if self._tool is not None:
            cid, name, parts = self._tool
            self._tool = None
            events.append(ToolCallEvent(cid, name, tool_input("".join(parts))))

    def _message_start(self, ev: dict, events: list) -> None:
        self._usage(_obj(ev.get("message")).get("usage"))

    def _message_delta(self, ev: dict, events: list) -> None:
        reason = _obj(ev.get("delta")).get("stop_reason")
        if reason:
            self._reason = reason
        self._usage(ev.get("usage"))

    def _message_stop(self, ev: dict, events: list) -> None:
        self.done = True
        self.usage = Usage(input_tokens=self._input + self._cache_read + self._cache_write,
                           output_tokens=self._output, cache_read_tokens=self._cache_read,
                           cache_write_tokens=self._cache_write)
        events.append(Finish(_STOP.get(self._reason, STOP), self.usage))

    def _error(self, ev: dict, events: list) -> None:
        raise failures.from_inband(ev.get("error"))

    #: the Messages stream's event types that matter; ``ping`` and unknown ones are skipped
    _EVENTS = {"content_block_delta": _block_delta, "content_block_start": _block_start,
               "content_block_stop": _block_stop, "message_start": _message_start,
               "message_delta": _message_delta, "message_stop": _message_stop, "error": _error}
