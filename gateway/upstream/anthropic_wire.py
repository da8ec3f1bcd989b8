"""The Provider API's Anthropic format (``/provider/v1/messages``, Claude models), seen as its client.

* :func:`encode` -- canonical request to a Messages body, always streamed;
* :class:`Decoder` -- its SSE events (bytes split anywhere) to canonical events.

Claude's rules differ from the canonical model's looser ones, so the encoder enforces them:
roles alternate starting with ``user``, tool results lead the user turn after the calls, thinking
blocks go back only with their signature, and extended thinking takes a token budget below
``max_tokens`` and no temperature.
"""
from __future__ import annotations

import json

from ..canonical import (CONTENT_FILTER, LENGTH, STOP, TOOL_CALLS, ChatRequest, Finish, Image,
                         Reasoning, ReasoningDelta, Text, TextDelta, ToolCall, ToolCallEvent,
                         ToolResult, Usage)
from . import failures
from .openai_wire import tool_input
from .sse import EventDecoder

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
    out: list[dict] = []
    for msg in req.messages:
        role = "assistant" if msg.role == "assistant" else "user"     # results travel as user turns
        blocks = _blocks(msg)
        if not blocks:
            continue
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})
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


def encode(req: ChatRequest) -> dict:
    """The Messages body for ``req``."""
    max_tokens = min(req.max_tokens or DEFAULT_MAX_TOKENS,
                     req.model.max_output or req.max_tokens or DEFAULT_MAX_TOKENS)
    body: dict = {"model": req.model.id, "max_tokens": max_tokens, "messages": _messages(req),
                  "stream": True}
    system = _system(req)
    if system:
        body["system"] = system
    thinking = False
    if req.reasoning_effort and req.model.efforts and _thinking_allowed(body["messages"]):
        budget = min(_BUDGETS.get(req.reasoning_effort, max_tokens), max_tokens - 1)
        if budget >= MIN_THINKING_BUDGET:
            body["thinking"] = {"type": "enabled", "budget_tokens": budget}
            thinking = True
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

def _int(v) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else 0


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
        self.usage = Usage()

    def _usage(self, u) -> None:
        if not isinstance(u, dict):
            return
        if "input_tokens" in u:
            self._input = _int(u.get("input_tokens")) or self._input
        self._cache_read = _int(u.get("cache_read_input_tokens")) or self._cache_read
        self._cache_write = _int(u.get("cache_creation_input_tokens")) or self._cache_write
        self._output = _int(u.get("output_tokens")) or self._output

    def _data(self, data: bytes, events: list) -> None:
        try:
            ev = json.loads(data)
        except ValueError:
            return
        if not isinstance(ev, dict):
            return
        kind = ev.get("type")
        if kind == "content_block_delta":
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
        elif kind == "content_block_start":
            block = _obj(ev.get("content_block"))
            if block.get("type") == "tool_use":
                self._tool = [str(block.get("id") or ""), str(block.get("name") or ""), []]
                if block.get("input"):
                    self._tool[2].append(json.dumps(block["input"]))
            elif block.get("type") == "text" and isinstance(block.get("text"), str) and block["text"]:
                events.append(TextDelta(block["text"]))
            elif block.get("type") == "thinking" and isinstance(block.get("thinking"), str) \
                    and block["thinking"]:
                events.append(ReasoningDelta(block["thinking"]))
        elif kind == "content_block_stop":
            if self._tool is not None:
                cid, name, parts = self._tool
                self._tool = None
                events.append(ToolCallEvent(cid, name, tool_input("".join(parts))))
        elif kind == "message_start":
            self._usage(_obj(ev.get("message")).get("usage"))
        elif kind == "message_delta":
            reason = _obj(ev.get("delta")).get("stop_reason")
            if reason:
                self._reason = reason
            self._usage(ev.get("usage"))
        elif kind == "message_stop":
            self.done = True
            self.usage = Usage(input_tokens=self._input + self._cache_read + self._cache_write,
                               output_tokens=self._output, cache_read_tokens=self._cache_read,
                               cache_write_tokens=self._cache_write)
            events.append(Finish(_STOP.get(self._reason, STOP), self.usage))
        elif kind == "error":
            raise failures.from_inband(ev.get("error"))
