"""The ``cli`` route: Command Code's own ``POST /alpha/generate`` (docs/protocol.md §3, §4, §6).

Three plain pieces and the route that joins them:

* :func:`encode` -- canonical request to the CLI's JSON envelope (AI SDK v6 message parts);
* :class:`Decoder` -- NDJSON bytes, split anywhere, to canonical events; a stream that ends
  without ``finish`` raises, it never turns into a quiet stop;
* :class:`CliRoute` / :class:`CliStream` -- send it with exactly the CLI's headers and iterate.

We send only what the CLI itself sends: its headers and envelope, nothing that fingerprints a
machine or imitates telemetry.
"""
from __future__ import annotations

import functools
import hashlib
import secrets
import time
import uuid

from .. import errors, keys, transport
from ..canonical import (CONTENT_FILTER, LENGTH, STOP, TOOL_CALLS, ChatRequest, Finish, Image,
                         Reasoning, ReasoningDelta, Text, TextDelta, ToolCall, ToolCallEvent,
                         ToolResult, Usage)
from . import failures, wire
from .base import UpstreamStream
from .exchange import iter_events, post_stream
from .wire import count

GENERATE_PATH = "/alpha/generate"
DEFAULT_MAX_TOKENS = 64000
MAX_TOKENS_CEILING = 200000
DEFAULT_SYSTEM = "You are a helpful assistant."
RESERVED_TOOL = "tool_search"           # reserved server-side (docs/protocol.md §4.3, invariant 4)
RESERVED_TOOL_WIRE = "search_tools"
MAX_PAUSE_TURNS = 5                     # the CLI re-posts a pause_turn at most five more times

_LENGTH_RAW = {"length", "max_tokens", "max_output_tokens", "model_context_window_exceeded",
               "context_length_exceeded", "context_window_exceeded"}
_FILTER_RAW = {"content_filter", "content-filter", "refusal", "safety", "recitation"}
_BROKEN_RAW = {"network_error", "connection_error", "upstream_error", "error", "timeout"}


# ---- request -----------------------------------------------------------------------------------

def tool_wire_names(req: ChatRequest) -> dict[str, str]:
    """Client tool name -> wire name, for the names upstream reserves (``tool_search``)."""
    names = {t.name for t in req.tools}
    names.update(p.name for m in req.messages for p in m.parts if isinstance(p, ToolCall))
    if RESERVED_TOOL not in names:
        return {}
    wire = RESERVED_TOOL_WIRE
    while wire in names:
        wire = "client_" + wire
    return {RESERVED_TOOL: wire}


def _image_part(img: Image) -> dict:
    return {"type": "image", "image": img.data_url, "mimeType": img.media_type}


def _wire_part(p, names: dict[str, str], moved: list[Image]) -> dict | None:
    """One message part in AI SDK v6 form; a tool result's images join ``moved``."""
    if isinstance(p, Text):
        return {"type": "text", "text": p.text}
    if isinstance(p, Image):
        return _image_part(p)
    if isinstance(p, Reasoning):
        return {"type": "reasoning", "text": p.text}
    if isinstance(p, ToolCall):
        return {"type": "tool-call", "toolCallId": p.id,
                "toolName": names.get(p.name, p.name), "input": p.input}
    if isinstance(p, ToolResult):
        name = p.name or "unknown"
        return {"type": "tool-result", "toolCallId": p.call_id,
                "toolName": names.get(name, name),
                "output": {"type": "error-text" if p.is_error else "text",
                           "value": wire.note_images(p.content, p.images, moved)}}
    return None


def _wire_messages(req: ChatRequest, names: dict[str, str]) -> list[dict]:
    out = []
    for msg in req.messages:
        moved: list[Image] = []         # images inside tool results go to a following user turn
        parts = [w for w in (_wire_part(p, names, moved) for p in msg.parts) if w is not None]
        out.append({"role": msg.role, "content": parts})
        if moved:
            out.append({"role": "user", "content": [_image_part(i) for i in moved]})
    # a moved-image user turn may now sit next to the user turn that followed the results
    merged = wire.merge_turns(out)
    if merged and merged[-1]["role"] == "assistant":
        raise errors.InvalidRequest("the last message must come from the user or a tool: "
                                    "Command Code's CLI route cannot continue an assistant prefill",
                                    param="messages")
    return merged


def _system(req: ChatRequest):
    blocks = [b for b in req.system if b.text.strip()]
    if not blocks:
        return DEFAULT_SYSTEM       # an empty system makes upstream inject (and bill) its own 7k prompt
    if len(blocks) == 1 and not blocks[0].cache_control:
        return blocks[0].text
    wire = []
    for b in blocks:
        block = {"type": "text", "text": b.text}
        if b.cache_control:
            block["cache_control"] = {"type": "ephemeral"}     # the only shape the CLI sends
        wire.append(block)
    return wire


def thread_id(req: ChatRequest, key: str) -> str:
    """A UUID v4 that stays the same for a conversation (its key, system and first message).

    The CLI keeps one threadId per session; deriving ours from the conversation's start gives
    the same id to every turn of a conversation without the gateway keeping any state.
    """
    h = hashlib.sha256(key.encode())
    for b in req.system[:1]:
        h.update(b.text[:4000].encode())
    for m in req.messages[:1]:
        for p in m.parts:
            if isinstance(p, Text):
                h.update(p.text[:4000].encode())
    return str(uuid.UUID(bytes=h.digest()[:16], version=4))


def encode(req: ChatRequest, thread: str, names: dict[str, str] | None = None) -> dict:
    """The ``/alpha/generate`` body for ``req`` (docs/protocol.md §4.1 and §4.2)."""
    names = names if names is not None else tool_wire_names(req)
    max_tokens = min(req.max_tokens or DEFAULT_MAX_TOKENS, MAX_TOKENS_CEILING,
                     req.model.max_output or MAX_TOKENS_CEILING)
    params = {
        "model": req.model.id,
        "messages": _wire_messages(req, names),
        "tools": [] if req.tool_choice == "none" else [
            {"name": names.get(t.name, t.name), "description": t.description,
             "input_schema": t.input_schema} for t in req.tools],
        "system": _system(req),
        "max_tokens": max_tokens,
        "stream": True,
    }
    if req.temperature is not None:
        params["temperature"] = req.temperature
    if req.reasoning_effort and req.model.efforts:
        params["reasoning_effort"] = req.reasoning_effort
    return {
        "config": {"workingDir": "/", "date": time.strftime("%Y-%m-%d", time.gmtime()),
                   "environment": "linux", "structure": [], "isGitRepo": False,
                   "currentBranch": "", "mainBranch": "", "gitStatus": "", "recentCommits": []},
        "memory": None, "taste": None, "skills": None,
        "permissionMode": "standard",
        "threadId": thread,
        "params": params,
    }


# ---- response ----------------------------------------------------------------------------------

def parse_usage(u) -> Usage:
    """AI SDK v6 ``LanguageModelUsage``; any field may be missing (docs/protocol.md §6.3)."""
    if not isinstance(u, dict):
        return Usage()
    inp = u.get("inputTokenDetails") if isinstance(u.get("inputTokenDetails"), dict) else {}
    out = u.get("outputTokenDetails") if isinstance(u.get("outputTokenDetails"), dict) else {}
    return Usage(input_tokens=count(u.get("inputTokens")),
                 output_tokens=count(u.get("outputTokens")),
                 cache_read_tokens=count(inp.get("cacheReadTokens")) or count(u.get("cachedInputTokens")),
                 cache_write_tokens=count(inp.get("cacheWriteTokens")),
                 reasoning_tokens=count(out.get("reasoningTokens")) or count(u.get("reasoningTokens")))


class Decoder:
    """NDJSON bytes in, canonical events out.  Feed it chunks as they arrive, then call ``end()``.

    Lines are split on ``\\n`` as bytes before decoding, so a chunk boundary inside a line or
    inside a UTF-8 character costs nothing.  Blank and unparsable lines are skipped like the CLI
    does; a ``data:`` prefix and ``[DONE]`` are tolerated.  After ``finish`` (or ``abort``) the
    decoder is ``done`` and ignores whatever follows.
    """

    def __init__(self, names: dict[str, str] | None = None, carry: Usage | None = None):
        self._buf = b""
        self._back = {v: k for k, v in (names or {}).items()}
        self._carry = carry
        self._step_usage = Usage()
        self._cache_write_1h = 0
        self._tool_calls = 0
        self.done = False
        self.paused = False         # finished with pause_turn: the caller must re-post
        self.usage = Usage()

    def feed(self, chunk: bytes) -> list:
        if self.done:
            return []
        self._buf += chunk
        if b"\n" not in chunk:
            return []
        *lines, self._buf = self._buf.split(b"\n")
        events: list = []
        for line in lines:
            self._line(line, events)
            if self.done:
                break
        return events

    def end(self) -> list:
        """The stream hit EOF: flush a last unterminated line, then insist on a terminal event."""
        events: list = []
        if not self.done and self._buf.strip():
            self._line(self._buf, events)
        self._buf = b""
        if not self.done:
            raise errors.UpstreamError(
                "Command Code ended the stream before it finished (no finish event): the answer "
                "is incomplete", code="upstream_truncated")
        return events

    def _line(self, line: bytes, events: list) -> None:
        line = line.strip()
        if not line:
            return
        if line.startswith(b"data:"):
            line = line[5:].strip()
            if line == b"[DONE]":
                return
        ev = wire.json_object(line)
        kind = ev.get("type") if ev is not None else None
        handle = self._EVENTS.get(kind) if isinstance(kind, str) else None
        if handle is not None:
            handle(self, ev, events)

    def _text(self, ev: dict, events: list) -> None:
        text = ev.get("text", ev.get("delta"))
        if isinstance(text, str) and text:
            events.append(TextDelta(text))

    def _reasoning(self, ev: dict, events: list) -> None:
        text = ev.get("text", ev.get("delta"))
        if isinstance(text, str) and text:
            events.append(ReasoningDelta(text))

    def _tool_call(self, ev: dict, events: list) -> None:
        if ev.get("providerExecuted"):
            return                  # run by the server itself, not the client's to answer
        name = str(ev.get("toolName") or "")
        self._tool_calls += 1
        events.append(ToolCallEvent(str(ev.get("toolCallId") or "call_" + secrets.token_hex(8)),
                                    self._back.get(name, name),
                                    wire.tool_input(ev["input"] if "input" in ev else ev.get("args"),
                                                    lone_item=True)))

    def _step(self, ev: dict, events: list) -> None:
        self._step_usage.add(parse_usage(ev.get("usage")))

    def _metadata(self, ev: dict, events: list) -> None:
        meta = ev.get("providerMetadata")
        try:
            self._cache_write_1h += count(meta["anthropic"]["usage"]["cache_creation"]
                                         ["ephemeral_1h_input_tokens"])
        except (KeyError, TypeError):
            pass

    def _error(self, ev: dict, events: list) -> None:
        raise failures.from_inband(ev.get("error"))

    def _abort(self, ev: dict, events: list) -> None:
        self.done = True
        events.append(Finish(STOP, self._total(Usage())))

    def _total(self, usage: Usage) -> Usage:
        usage.cache_write_tokens = max(usage.cache_write_tokens, self._cache_write_1h)
        if self._carry is not None:
            usage.add(self._carry)
        self.usage = usage
        return usage

    def _finish(self, ev: dict, events: list) -> None:
        self.done = True
        total = ev.get("totalUsage") or ev.get("usage")
        usage = parse_usage(total) if isinstance(total, dict) else self._step_usage
        finish = str(ev.get("finishReason") or "").lower()
        raw = str(ev.get("rawFinishReason") or "").lower()
        if raw == "pause_turn":
            self.paused = True
            self._total(usage)
            return
        if finish == "error" or raw in _BROKEN_RAW:
            raise errors.UpstreamError(
                f"the model call failed upstream (finish reason {raw or finish})",
                code="upstream_finish_error")
        events.append(Finish(self._reason(finish, raw), self._total(usage)))

    def _reason(self, finish: str, raw: str) -> str:
        """The canonical finish reason: the raw (provider's) reason refines the AI SDK's."""
        if finish == "length" or raw in _LENGTH_RAW:
            return LENGTH
        if finish == "content-filter" or raw in _FILTER_RAW:
            return CONTENT_FILTER
        if finish == "tool-calls" or self._tool_calls:
            return TOOL_CALLS
        return STOP

    #: the NDJSON event types that matter (docs/protocol.md §6); every other type is skipped
    _EVENTS = {"text-delta": _text, "reasoning-delta": _reasoning, "tool-call": _tool_call,
               "finish": _finish, "finish-step": _step, "provider-metadata": _metadata,
               "error": _error, "abort": _abort}


# ---- route -------------------------------------------------------------------------------------

def cli_headers(cli_version: str) -> dict[str, str]:
    """The headers the CLI sends on every call to Command Code (its account endpoints get just
    these; ``/alpha/generate`` a few more): one copy, so the two cannot drift apart."""
    return {"Content-Type": "application/json", "User-Agent": "cli",
            "x-command-code-version": cli_version, "x-cli-environment": "production"}


class CliRoute:
    """Sends canonical requests over ``/alpha/generate`` with the CLI's headers."""

    def __init__(self, transport_: transport.Transport, base_url: str, cli_version: str):
        self.url = base_url + GENERATE_PATH
        self.transport = transport_
        self._headers = {**cli_headers(cli_version),    # built once; only x-session-id changes
                         "x-project-slug": "root", "x-taste-learning": "false"}

    def open(self, req: ChatRequest, key: str) -> "CliStream":
        key = keys.require(key)
        names = tool_wire_names(req)
        thread = thread_id(req, key)
        body = wire.body(encode(req, thread, names))
        headers = dict(self._headers, Authorization=f"Bearer {key}")
        headers["x-session-id"] = thread
        return CliStream(self, body, headers, names)


class CliStream(UpstreamStream):
    """One upstream call, iterated as lists of canonical events, one list per network read.

    Re-posts the identical request on ``pause_turn`` (as the CLI does) and sums the usage.
    ``abort()`` may be called from another thread to stop at once.
    """

    route_name = "cli"

    def __init__(self, route: CliRoute, body: bytes, headers: dict, names: dict[str, str]):
        super().__init__()
        self._route = route
        self._body = body
        self._headers = headers
        self._names = names

    def __iter__(self):
        carry = None
        for _ in range(MAX_PAUSE_TURNS + 1):
            resp = post_stream(self._route.transport, self._route.url, self._headers, self._body)
            if not self._hold(functools.partial(transport.abort, resp)):
                return
            decoder = Decoder(self._names, carry)
            yield from iter_events(resp, decoder)
            if not decoder.paused:
                return
            carry = decoder.usage
        raise errors.UpstreamError("Command Code paused the turn more than "
                                   f"{MAX_PAUSE_TURNS} times", code="upstream_pause_limit")
