"""The ``cli`` route: Command Code's own ``POST /alpha/generate`` (upstream-protocol.md 3, 4, 6).

Three plain pieces and the route that joins them:

* :func:`encode` -- canonical request to the CLI's JSON envelope (AI SDK v6 message parts);
* :class:`Decoder` -- NDJSON bytes, split anywhere, to canonical events; a stream that ends
  without ``finish`` raises, it never turns into a quiet stop;
* :class:`CliRoute` / :class:`CliStream` -- send it with exactly the CLI's headers and iterate.

We send only what the CLI itself sends: its headers and envelope, nothing that fingerprints a
machine or imitates telemetry.
"""
from __future__ import annotations

import hashlib
import json
import secrets
import time
import uuid

from .. import errors, keys, transport
from ..canonical import (CONTENT_FILTER, LENGTH, STOP, TOOL_CALLS, ChatRequest, Finish, Image,
                         Reasoning, ReasoningDelta, Text, TextDelta, ToolCall, ToolCallEvent,
                         ToolResult, Usage)
from . import failures

GENERATE_PATH = "/alpha/generate"
DEFAULT_MAX_TOKENS = 64000
MAX_TOKENS_CEILING = 200000
DEFAULT_SYSTEM = "You are a helpful assistant."
RESERVED_TOOL = "tool_search"           # reserved server-side (section 4.3, invariant 4)
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


def _wire_messages(req: ChatRequest, names: dict[str, str]) -> list[dict]:
    out = []
    for msg in req.messages:
        parts: list[dict] = []
        moved: list[Image] = []         # images inside tool results go to a following user turn
        for p in msg.parts:
            if isinstance(p, Text):
                parts.append({"type": "text", "text": p.text})
            elif isinstance(p, Image):
                parts.append(_image_part(p))
            elif isinstance(p, Reasoning):
                parts.append({"type": "reasoning", "text": p.text})
            elif isinstance(p, ToolCall):
                parts.append({"type": "tool-call", "toolCallId": p.id,
                              "toolName": names.get(p.name, p.name), "input": p.input})
            elif isinstance(p, ToolResult):
                value = p.content
                for img in p.images:
                    moved.append(img)
                    value += f"\n[image {len(moved)} attached below]"
                name = p.name or "unknown"
                parts.append({"type": "tool-result", "toolCallId": p.call_id,
                              "toolName": names.get(name, name),
                              "output": {"type": "error-text" if p.is_error else "text",
                                         "value": value.strip("\n") or "(empty)"}})
        out.append({"role": msg.role, "content": parts})
        if moved:
            out.append({"role": "user", "content": [_image_part(i) for i in moved]})
    # a moved-image user turn may now sit next to the user turn that followed the results
    merged: list[dict] = []
    for m in out:
        if merged and merged[-1]["role"] == m["role"]:
            merged[-1]["content"].extend(m["content"])
        else:
            merged.append(m)
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
    """The ``/alpha/generate`` body for ``req`` (section 4.1 and 4.2)."""
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

def _int(v) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else 0


def parse_usage(u) -> Usage:
    """AI SDK v6 ``LanguageModelUsage``; any field may be missing (section 6.3)."""
    if not isinstance(u, dict):
        return Usage()
    inp = u.get("inputTokenDetails") if isinstance(u.get("inputTokenDetails"), dict) else {}
    out = u.get("outputTokenDetails") if isinstance(u.get("outputTokenDetails"), dict) else {}
    return Usage(input_tokens=_int(u.get("inputTokens")),
                 output_tokens=_int(u.get("outputTokens")),
                 cache_read_tokens=_int(inp.get("cacheReadTokens")) or _int(u.get("cachedInputTokens")),
                 cache_write_tokens=_int(inp.get("cacheWriteTokens")),
                 reasoning_tokens=_int(out.get("reasoningTokens")) or _int(u.get("reasoningTokens")))


def _tool_input(value) -> dict:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    return value if isinstance(value, dict) else {}


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
        try:
            ev = json.loads(line)
        except ValueError:
            return
        if not isinstance(ev, dict):
            return
        kind = ev.get("type")
        if kind == "text-delta":
            text = ev.get("text", ev.get("delta"))
            if isinstance(text, str) and text:
                events.append(TextDelta(text))
        elif kind == "reasoning-delta":
            text = ev.get("text", ev.get("delta"))
            if isinstance(text, str) and text:
                events.append(ReasoningDelta(text))
        elif kind == "tool-call":
            if ev.get("providerExecuted"):
                return                  # run by the server itself, not the client's to answer
            name = str(ev.get("toolName") or "")
            self._tool_calls += 1
            events.append(ToolCallEvent(str(ev.get("toolCallId") or "call_" + secrets.token_hex(8)),
                                        self._back.get(name, name),
                                        _tool_input(ev["input"] if "input" in ev else ev.get("args"))))
        elif kind == "finish":
            self._finish(ev, events)
        elif kind == "finish-step":
            self._step_usage.add(parse_usage(ev.get("usage")))
        elif kind == "provider-metadata":
            meta = ev.get("providerMetadata")
            try:
                self._cache_write_1h += _int(meta["anthropic"]["usage"]["cache_creation"]
                                             ["ephemeral_1h_input_tokens"])
            except (KeyError, TypeError):
                pass
        elif kind == "error":
            raise failures.from_inband(ev.get("error"))
        elif kind == "abort":
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
        if finish == "length" or raw in _LENGTH_RAW:
            reason = LENGTH
        elif finish == "content-filter" or raw in _FILTER_RAW:
            reason = CONTENT_FILTER
        elif finish == "tool-calls" or self._tool_calls:
            reason = TOOL_CALLS
        else:
            reason = STOP
        events.append(Finish(reason, self._total(usage)))


# ---- route -------------------------------------------------------------------------------------

class CliRoute:
    """Sends canonical requests over ``/alpha/generate`` with the CLI's headers."""

    def __init__(self, cfg: dict, transport_: transport.Transport):
        cc = cfg["commandcode"]
        self.api_key = cc["api_key"]
        self.url = cc["base_url"] + GENERATE_PATH
        self.transport = transport_
        self._headers = {           # built once; only x-session-id changes per request
            "Content-Type": "application/json",
            "User-Agent": "cli",
            "x-command-code-version": cc["cli_version"],
            "x-cli-environment": "production",
            "x-project-slug": "root",
            "x-taste-learning": "false",
        }

    def open(self, req: ChatRequest, api_key: str | None = None) -> "CliStream":
        key = keys.require(api_key or self.api_key)
        names = tool_wire_names(req)
        thread = thread_id(req, key)
        body = json.dumps(encode(req, thread, names), ensure_ascii=False,
                          separators=(",", ":")).encode()
        headers = dict(self._headers, Authorization=f"Bearer {key}")
        headers["x-session-id"] = thread
        return CliStream(self, body, headers, names)


class CliStream:
    """One upstream call, iterated as lists of canonical events, one list per network read.

    Re-posts the identical request on ``pause_turn`` (as the CLI does) and sums the usage.
    ``abort()`` may be called from another thread to stop at once.
    """

    def __init__(self, route: CliRoute, body: bytes, headers: dict, names: dict[str, str]):
        self._route = route
        self._body = body
        self._headers = headers
        self._names = names
        self._resp = None
        self._aborted = False

    def __iter__(self):
        carry = None
        for _ in range(MAX_PAUSE_TURNS + 1):
            resp = self._route.transport.post_stream(self._route.url, self._headers, self._body)
            self._resp = resp
            if self._aborted:
                transport.abort(resp)
                return
            decoder = Decoder(self._names, carry)
            yield from transport.iter_events(resp, decoder)
            if not decoder.paused:
                return
            carry = decoder.usage
        raise errors.UpstreamError("Command Code paused the turn more than "
                                   f"{MAX_PAUSE_TURNS} times", code="upstream_pause_limit")

    def abort(self) -> None:
        self._aborted = True
        if self._resp is not None:
            transport.abort(self._resp)
