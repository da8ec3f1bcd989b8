"""The Provider API's OpenAI format (``/provider/v1/chat/completions``), seen as its client.

* :func:`encode` -- canonical request to a Chat Completions body, always streamed;
* :class:`Decoder` -- its SSE stream (bytes split anywhere) to canonical events.

Tool calls arrive as fragments indexed by position; they are assembled and handed on whole,
when the choice finishes, because canonical tool calls carry final arguments.  A stream that
ends without a ``finish_reason`` raises: it never turns into a quiet stop.
"""
from __future__ import annotations

import secrets

from .. import errors
from ..canonical import (CONTENT_FILTER, LENGTH, STOP, TOOL_CALLS, ChatRequest, Finish, Image,
                         Message, Reasoning, ReasoningDelta, Text, TextDelta, ToolCall,
                         ToolCallEvent, ToolResult, Usage)
from . import failures, wire
from .sse import EventDecoder
from .wire import count, dumps, tool_input

PATH = "/provider/v1/chat/completions"
_FINISH = {"stop": STOP, "length": LENGTH, "tool_calls": TOOL_CALLS, "function_call": TOOL_CALLS,
           "content_filter": CONTENT_FILTER}


# ---- request -----------------------------------------------------------------------------------

def _image(img: Image) -> dict:
    return {"type": "image_url", "image_url": {"url": img.data_url}}


def _user_content(parts: list):
    if len(parts) == 1 and isinstance(parts[0], Text):
        return parts[0].text
    return [{"type": "text", "text": p.text} if isinstance(p, Text) else _image(p) for p in parts
            if isinstance(p, (Text, Image))]


def _assistant(msg: Message) -> dict:
    text = "".join(p.text for p in msg.parts if isinstance(p, Text))
    reasoning = "".join(p.text for p in msg.parts if isinstance(p, Reasoning))
    calls = [{"id": p.id, "type": "function",
              "function": {"name": p.name, "arguments": dumps(p.input)}}
             for p in msg.parts if isinstance(p, ToolCall)]
    m: dict = {"role": "assistant", "content": text or None}
    if reasoning:
        m["reasoning_content"] = reasoning
    if calls:
        m["tool_calls"] = calls
    return m


def _tool_results(msg: Message) -> list[dict]:
    """One ``tool`` message per result; their images follow as a user turn."""
    out: list[dict] = []
    images: list[Image] = []
    for p in msg.parts:
        if isinstance(p, ToolResult):
            text = wire.note_images(p.content, p.images, images)
            out.append({"role": "tool", "tool_call_id": p.call_id,
                        "content": f"Error: {text}" if p.is_error else text})
    if images:
        out.append({"role": "user", "content": [_image(i) for i in images]})
    return out


def _messages(req: ChatRequest) -> list[dict]:
    out: list[dict] = []
    system = "\n\n".join(b.text for b in req.system if b.text.strip())
    if system:
        out.append({"role": "system", "content": system})
    for msg in req.messages:
        if msg.role == "user":
            out.append({"role": "user", "content": _user_content(msg.parts)})
        elif msg.role == "assistant":
            out.append(_assistant(msg))
        else:
            out += _tool_results(msg)
    return out


def encode(req: ChatRequest) -> dict:
    """The Chat Completions body for ``req``; usage is asked for (the API sends it anyway)."""
    body: dict = {"model": req.model.id, "messages": _messages(req), "stream": True,
                  "stream_options": {"include_usage": True}}
    if req.tools and req.tool_choice != "none":
        body["tools"] = [{"type": "function",
                          "function": {"name": t.name, "description": t.description,
                                       "parameters": t.input_schema}} for t in req.tools]
        body["tool_choice"] = req.tool_choice
    if req.max_tokens:
        body["max_tokens"] = min(req.max_tokens, req.model.max_output or req.max_tokens)
    if req.temperature is not None:
        body["temperature"] = req.temperature
    if req.reasoning_effort and req.model.efforts:
        body["reasoning_effort"] = req.reasoning_effort
    return body


# ---- response ----------------------------------------------------------------------------------

def parse_usage(u: dict) -> Usage:
    """OpenAI usage: ``prompt_tokens`` already includes cached tokens, as canonical input does."""
    prompt = u.get("prompt_tokens_details") if isinstance(u.get("prompt_tokens_details"), dict) else {}
    completion = (u.get("completion_tokens_details")
                  if isinstance(u.get("completion_tokens_details"), dict) else {})
    return Usage(input_tokens=count(u.get("prompt_tokens")),
                 output_tokens=count(u.get("completion_tokens")),
                 cache_read_tokens=count(prompt.get("cached_tokens"))
                 or count(u.get("prompt_cache_hit_tokens")),        # DeepSeek's own field
                 cache_write_tokens=count(prompt.get("cache_write_tokens"))
                 or count(prompt.get("cache_creation_tokens")),
                 reasoning_tokens=count(completion.get("reasoning_tokens")))


class Decoder(EventDecoder):
    """SSE bytes in, canonical events out; ``feed`` chunks as they arrive, then ``end()``."""

    terminal = "finish_reason"

    def __init__(self):
        super().__init__()
        self._calls: dict[int, list] = {}       # index -> [id, name, argument fragments]
        self._reason: str | None = None
        self._usage: Usage | None = None
        self.usage = Usage()

    def _eof(self, events: list) -> None:
        if self._reason is not None:
            self._finish(events)            # finished, only the [DONE] line is missing

    def _data(self, data: bytes, events: list) -> None:
        if data == b"[DONE]":
            if self._reason is not None:
                self._finish(events)
            return                          # [DONE] without finish_reason: end() reports it
        obj = wire.json_object(data)
        if obj is None:
            return
        if obj.get("error"):
            raise failures.from_inband(obj["error"])
        usage = obj.get("usage")
        if isinstance(usage, dict):
            self._usage = parse_usage(usage)
        for choice in obj.get("choices") or ():
            if isinstance(choice, dict) and choice.get("index", 0) == 0:
                self._choice(choice, events)
        if self._reason is not None and self._usage is not None:
            self._finish(events)

    def _choice(self, choice: dict, events: list) -> None:
        delta = choice.get("delta")
        if isinstance(delta, dict):
            self._delta(delta, events)
        reason = choice.get("finish_reason")
        if reason and self._reason is None:
            self._reason = str(reason)
            self._flush_calls(events)

    def _delta(self, delta: dict, events: list) -> None:
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            events.append(ReasoningDelta(reasoning))    # before the answer text of the same delta
        text = delta.get("content")
        if isinstance(text, str) and text:
            events.append(TextDelta(text))
        for call in delta.get("tool_calls") or ():
            if isinstance(call, dict):
                self._call_fragment(call)

    def _call_fragment(self, call: dict) -> None:
        """Add one fragment to the call at its index (id, name and arguments may each be
        missing from any fragment)."""
        index = call.get("index", len(self._calls))
        entry = self._calls.setdefault(index, [None, "", []])
        if call.get("id"):
            entry[0] = call["id"]
        fn = call.get("function")
        if isinstance(fn, dict):
            if fn.get("name") and not entry[1]:     # sent once (some servers repeat it)
                entry[1] = fn["name"]
            if isinstance(fn.get("arguments"), str):
                entry[2].append(fn["arguments"])
            elif isinstance(fn.get("arguments"), dict):
                entry[2] = [dumps(fn["arguments"])]

    def _flush_calls(self, events: list) -> None:
        for index in sorted(self._calls):
            cid, name, args = self._calls[index]
            events.append(ToolCallEvent(cid or "call_" + secrets.token_hex(8), name,
                                        tool_input("".join(args))))
        self._calls.clear()

    def _finish(self, events: list) -> None:
        self._flush_calls(events)
        self.done = True
        reason = self._reason or "stop"
        if reason == "error":
            raise errors.UpstreamError("the model call failed upstream (finish reason error)",
                                       code="upstream_finish_error")
        self.usage = self._usage or Usage()
        events.append(Finish(_FINISH.get(reason, STOP), self.usage))
