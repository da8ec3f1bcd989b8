"""A fake Command Code upstream (``POST /alpha/generate``) for the gateway's tests and benchmarks.

Why it exists
-------------
The gateway relays the undocumented CLI endpoint of Command Code.  Unit tests with mocked HTTP
clients would not catch the failures users actually hit: NDJSON lines split across TCP reads,
UTF-8 characters cut in half, streams that end without ``finish``, errors inside a 200 stream,
long silences during reasoning, clients that hang up mid-stream, and requests the real server
rejects (wrong headers, unanswered tool calls, the reserved ``tool_search`` tool name...).  This
module is a *real* HTTP/1.1 server on a loopback port, running in a background thread of the test
process, that

* plays scripted NDJSON streams exactly as described in ``/work/shared/upstream-protocol.md``
  (sections 6 and 7): chunked transfer encoding, ``application/x-ndjson``, an ``lb-request-id``
  header, the body cut into tiny pieces so line and UTF-8 boundaries are split;
* records every request it receives (``requests``) and checks each ``/alpha/generate`` request
  against the envelope rules of sections 3 and 4 of the spec (``violations``);
* records client disconnects (``disconnects``) and when the first body byte left
  (``first_byte_at``), so tests can assert cancellation propagation and latency.

Choosing a scenario
-------------------
Put a marker ``[[name]]`` or ``[[name:arg]]`` in the text of the LAST ``user`` message of
``params.messages``; no marker plays ``text``.  The catalogue is ``SCENARIOS`` (see the
``_sc_*`` functions).  ``USAGE`` holds the token numbers each scenario's ``finish`` reports,
normalised, so tests can assert the gateway's usage translation without copying numbers.

Usage::

    with FakeUpstream() as fake:
        ...  # point the gateway at fake.url
        assert fake.violations == []

or from a shell (manual testing, benchmarks): ``python tests/fake_upstream.py --port 9999``.

Usage computed from the request (optional)
------------------------------------------
By default every ``finish`` reports the fixed numbers of ``USAGE``.  With
``FakeUpstream(usage_from_request=True)`` (shell: ``--usage-from-request``) the ``inputTokens``
of ``finish`` (and of ``finish-step``) is instead counted on the envelope received, with a real
byte-pair tokenizer: the Claude tokenizer (65,000 tokens) that ``anthropic`` Python SDK wheels up
to 0.38 shipped as ``anthropic/tokenizer.json``, read with Hugging Face's ``tokenizers``.  Cache
reads and writes are then 0, so the whole prompt is reported as uncached input; output numbers
stay the scenario's.  ``bench/count_tokens_accuracy.py`` measures the gateway's local
``count_tokens`` estimate against it.  Neither the tests nor the gateway need the tokenizer; this
mode loads it lazily (when the server starts) and needs, once::

    pip install tokenizers
    pip download anthropic==0.34.2 --no-deps -d ~/.cache/claude-tokenizer

(the wheel is only read, never installed; ``--tokenizer PATH`` or ``$FAKE_UPSTREAM_TOKENIZER``
may name another folder, wheel or ``tokenizer.json``).  What is counted (``reference_input_tokens``):
the envelope rendered the way Claude's prompt is laid out -- the system text; the tools as
``<functions><function>{"description", "name", "parameters"}</function>...</functions>`` (JSON
with the default ``", "`` / ``": "`` separators); each message as ``\n\nHuman: `` or
``\n\nAssistant: `` followed by its parts (text as is, reasoning in ``<thinking>``, tool calls as
``<function_calls><invoke name><parameter name>`` XML with JSON for non-string values, tool
results as ``<function_results><result><name><output>``); a final ``\n\nAssistant:``; each image
as Anthropic documents, ``ceil(w * h / 750)`` after scaling its long edge down to 1568 px,
at most 1600, read from the PNG/JPEG/GIF/WebP header.  The hidden tool-use system prompt a
provider adds (a few hundred tokens) is not counted.

Standard library only (apart from that optional mode), so it runs anywhere the tests run.
"""
from __future__ import annotations

import argparse
import base64
import glob
import json
import math
import os
import re
import signal
import socket
import struct
import sys
import threading
import time
import uuid
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

GENERATE_PATH = "/alpha/generate"

# ----------------------------------------------------------------------------------------------
# Protocol constants (spec sections 3 and 4)
# ----------------------------------------------------------------------------------------------

#: Headers a gateway may send on POST /alpha/generate (lowercase).  Anything else is a violation:
#: the gateway must not leak client headers (cookies, x-api-key, OpenAI-Beta, ...) upstream.
ALLOWED_HEADERS = frozenset({
    "host", "authorization", "content-type", "content-length", "user-agent", "accept",
    "accept-encoding", "connection", "x-command-code-version", "x-cli-environment",
    "x-session-id", "x-project-slug", "x-taste-learning",
})

BODY_REQUIRED_KEYS = frozenset({"config", "memory", "taste", "skills", "permissionMode", "params"})
BODY_OPTIONAL_KEYS = frozenset({"threadId"})
PERMISSION_MODES = ("standard", "auto-accept", "plan")

#: §4.1 ``config`` keys and their JSON types.
CONFIG_TYPES = {
    "workingDir": str, "date": str, "environment": str, "structure": list, "isGitRepo": bool,
    "currentBranch": str, "mainBranch": str, "gitStatus": str, "recentCommits": list,
}

PARAM_KEYS = frozenset({"model", "messages", "tools", "system", "max_tokens", "stream",
                        "temperature", "reasoning_effort"})
PARAM_REQUIRED_KEYS = ("model", "messages", "system", "max_tokens", "stream")
REASONING_EFFORTS = ("low", "medium", "high", "xhigh", "max")
MAX_TOKENS_LIMIT = 200000
RESERVED_TOOL_NAME = "tool_search"      # reserved server-side; the CLI sends it as search_tools

#: Exact key set of every message part, per role (§4.3).
PART_KEYS = {
    ("user", "text"): frozenset({"type", "text"}),
    ("user", "image"): frozenset({"type", "image", "mimeType"}),
    ("assistant", "text"): frozenset({"type", "text"}),
    ("assistant", "reasoning"): frozenset({"type", "text"}),
    ("assistant", "tool-call"): frozenset({"type", "toolCallId", "toolName", "input"}),
    ("tool", "tool-result"): frozenset({"type", "toolCallId", "toolName", "output"}),
}

#: RFC 4122 UUID, version 4 (version nibble 4, variant bits 10xx).
UUID4_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$", re.I)
DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
DATA_URL_RE = re.compile(r"^data:([^;,]+);base64,(.+)$", re.S)
MARKER_RE = re.compile(r"\[\[([A-Za-z0-9_]+)(?::([^\[\]]*))?\]\]")


# ----------------------------------------------------------------------------------------------
# Request validation (pure functions, usable without the server)
# ----------------------------------------------------------------------------------------------

def validate_headers(headers, body=None) -> list[str]:
    """Check the headers of a ``POST /alpha/generate`` request against spec §3.1.

    ``headers`` is a dict or a list of ``(name, value)`` pairs (pairs let duplicates be seen).
    ``body`` (the parsed JSON) is needed to check that ``x-session-id`` equals ``threadId``.
    Returns one human-readable message per problem; an empty list means the headers are valid.
    """
    pairs = list(headers.items()) if isinstance(headers, dict) else list(headers)
    seen: dict[str, list[str]] = {}
    for name, value in pairs:
        seen.setdefault(name.lower(), []).append(value)
    out: list[str] = []
    for name, values in seen.items():
        if name not in ALLOWED_HEADERS:
            out.append(f"unexpected header {name!r} (the CLI never sends it; do not forward client headers)")
        if len(values) > 1:
            out.append(f"header {name!r} sent {len(values)} times")

    def one(name):
        values = seen.get(name)
        return values[0] if values else None

    auth = one("authorization")
    if auth is None:
        out.append("missing header 'authorization' (must be 'Bearer <key>')")
    elif not auth.startswith("Bearer ") or not auth[len("Bearer "):].strip():
        out.append("header 'authorization' must be 'Bearer <non-empty key>'")

    ctype = one("content-type")
    if ctype is None:
        out.append("missing header 'content-type' (must be 'application/json')")
    else:
        media, *params = [p.strip().lower() for p in ctype.split(";")]
        if media != "application/json" or any(p not in ("charset=utf-8", "charset=\"utf-8\"") for p in params):
            out.append(f"header 'content-type' must be 'application/json', got {ctype!r}")

    ua = one("user-agent")
    if ua != "cli":
        out.append(f"header 'user-agent' must be 'cli' (non-CLI agents get 'Proxy use detected'), got {ua!r}")

    version = one("x-command-code-version")
    if version is None or not version.strip():
        out.append("missing or empty header 'x-command-code-version' (server answers 403 upgrade_required)")

    env = one("x-cli-environment")
    if env != "production":
        out.append(f"header 'x-cli-environment' must be 'production', got {env!r}")

    sid = one("x-session-id")
    if sid is not None:
        thread_id = body.get("threadId") if isinstance(body, dict) else None
        if sid != thread_id:
            out.append(f"header 'x-session-id' ({sid!r}) must equal body threadId ({thread_id!r})")
    return out


def validate_body(body) -> list[str]:
    """Check a parsed ``POST /alpha/generate`` body against spec §4 (envelope, params, messages).

    Returns one human-readable message per problem; an empty list means the envelope is valid.
    """
    if not isinstance(body, dict):
        return [f"body must be a JSON object, got {type(body).__name__}"]
    out: list[str] = []
    keys = set(body)
    for k in sorted(BODY_REQUIRED_KEYS - keys):
        out.append(f"body: missing key {k!r}")
    for k in sorted(keys - BODY_REQUIRED_KEYS - BODY_OPTIONAL_KEYS):
        out.append(f"body: unexpected key {k!r}")
    for k in ("memory", "taste", "skills"):
        if k in body and body[k] is not None:
            out.append(f"body.{k} must be null, got {body[k]!r}")
    if "permissionMode" in body and body["permissionMode"] not in PERMISSION_MODES:
        out.append(f"body.permissionMode must be one of {PERMISSION_MODES}, got {body['permissionMode']!r}")
    if "threadId" in body:
        tid = body["threadId"]
        if not isinstance(tid, str) or not UUID4_RE.match(tid):
            out.append(f"body.threadId must be an RFC 4122 UUID v4 (version and variant bits), got {tid!r}")
    if "config" in body:
        out.extend(_validate_config(body["config"]))
    if "params" in body:
        out.extend(_validate_params(body["params"]))
    return out


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _validate_config(cfg) -> list[str]:
    if not isinstance(cfg, dict):
        return [f"body.config must be an object, got {type(cfg).__name__}"]
    out = []
    for k, typ in CONFIG_TYPES.items():
        if k not in cfg:
            out.append(f"body.config: missing key {k!r}")
        elif not isinstance(cfg[k], typ):
            out.append(f"body.config.{k} must be {typ.__name__}, got {type(cfg[k]).__name__}")
    for k in sorted(set(cfg) - set(CONFIG_TYPES)):
        out.append(f"body.config: unexpected key {k!r}")
    for k in ("structure", "recentCommits"):
        if isinstance(cfg.get(k), list) and not all(isinstance(x, str) for x in cfg[k]):
            out.append(f"body.config.{k} must be a list of strings")
    if isinstance(cfg.get("date"), str) and not DATE_RE.match(cfg["date"]):
        out.append(f"body.config.date must be YYYY-MM-DD, got {cfg['date']!r}")
    return out


def _validate_params(p) -> list[str]:
    if not isinstance(p, dict):
        return [f"params must be an object, got {type(p).__name__}"]
    out = []
    for k in sorted(set(p) - PARAM_KEYS):
        out.append(f"params: unexpected key {k!r} (the CLI envelope has no such field)")
    for k in PARAM_REQUIRED_KEYS:
        if k not in p:
            out.append(f"params: missing key {k!r}")
    if "model" in p and (not isinstance(p["model"], str) or not p["model"].strip()):
        out.append(f"params.model must be a non-empty string, got {p['model']!r}")
    if "stream" in p and p["stream"] is not True:
        out.append(f"params.stream must be true (else 'Proxy use detected'), got {p['stream']!r}")
    if "max_tokens" in p:
        mt = p["max_tokens"]
        if type(mt) is not int or not 1 <= mt <= MAX_TOKENS_LIMIT:
            out.append(f"params.max_tokens must be an integer in 1..{MAX_TOKENS_LIMIT}, got {mt!r}")
    if "temperature" in p and not _is_number(p["temperature"]):
        out.append(f"params.temperature must be a number, got {p['temperature']!r}")
    if "reasoning_effort" in p and p["reasoning_effort"] not in REASONING_EFFORTS:
        out.append(f"params.reasoning_effort must be one of {REASONING_EFFORTS}, got {p['reasoning_effort']!r}")
    if "tools" in p:
        out.extend(_validate_tools(p["tools"]))
    if "system" in p:
        out.extend(_validate_system(p["system"]))
    if "messages" in p:
        out.extend(validate_messages(p["messages"]))
    return out


def _validate_tools(tools) -> list[str]:
    if not isinstance(tools, list):
        return [f"params.tools must be a list, got {type(tools).__name__}"]
    out, names = [], set()
    for i, t in enumerate(tools):
        where = f"params.tools[{i}]"
        if not isinstance(t, dict):
            out.append(f"{where} must be an object")
            continue
        for k in sorted({"name", "description", "input_schema"} - set(t)):
            out.append(f"{where}: missing key {k!r}")
        for k in sorted(set(t) - {"name", "description", "input_schema", "type"}):
            out.append(f"{where}: unexpected key {k!r} (shape is {{name, description, input_schema}})")
        if "type" in t and t["type"] != "function":
            out.append(f"{where}.type, if present, must be 'function', got {t['type']!r}")
        name = t.get("name")
        if not isinstance(name, str) or not name:
            out.append(f"{where}.name must be a non-empty string")
        elif name == RESERVED_TOOL_NAME:
            out.append(f"{where}: tool name {RESERVED_TOOL_NAME!r} is reserved upstream (rename it, e.g. to search_tools)")
        elif name in names:
            out.append(f"{where}: duplicate tool name {name!r}")
        names.add(name)
        if "description" in t and not isinstance(t["description"], str):
            out.append(f"{where}.description must be a string")
        if "input_schema" in t and not isinstance(t["input_schema"], dict):
            out.append(f"{where}.input_schema must be an object (JSON Schema)")
    return out


def _validate_system(system) -> list[str]:
    if isinstance(system, str):
        return [] if system.strip() else ["params.system must be non-empty (else upstream injects its own ~7.4k-token prompt)"]
    if not isinstance(system, list) or not system:
        return ["params.system must be a non-blank string or a non-empty list of text blocks"]
    out, any_text = [], False
    for i, block in enumerate(system):
        where = f"params.system[{i}]"
        if not isinstance(block, dict):
            out.append(f"{where} must be an object")
            continue
        for k in sorted(set(block) - {"type", "text", "cache_control"}):
            out.append(f"{where}: unexpected key {k!r}")
        if block.get("type") != "text":
            out.append(f"{where}.type must be 'text', got {block.get('type')!r}")
        text = block.get("text")
        if not isinstance(text, str):
            out.append(f"{where}.text must be a string")
        elif not text:
            out.append(f"{where}.text is empty (drop empty blocks)")
        elif text.strip():
            any_text = True
        if "cache_control" in block:
            cc = block["cache_control"]
            if not isinstance(cc, dict) or cc.get("type") != "ephemeral" or set(cc) - {"type", "ttl"}:
                out.append(f"{where}.cache_control must be {{'type': 'ephemeral'}}, got {cc!r}")
    if not any_text:
        out.append("params.system has no non-blank text (else upstream injects its own prompt)")
    return out


def _validate_part(role: str, part, where: str) -> list[str]:
    if not isinstance(part, dict):
        return [f"{where} must be an object"]
    ptype = part.get("type")
    keys = PART_KEYS.get((role, ptype))
    if keys is None:
        allowed = sorted(t for r, t in PART_KEYS if r == role)
        return [f"{where}: part type {ptype!r} not allowed in a {role} message (allowed: {allowed})"]
    out = []
    for k in sorted(keys - set(part)):
        out.append(f"{where} ({ptype}): missing key {k!r}")
    for k in sorted(set(part) - keys):
        out.append(f"{where} ({ptype}): unexpected key {k!r}")
    if ptype in ("text", "reasoning"):
        text = part.get("text")
        if not isinstance(text, str):
            out.append(f"{where} ({ptype}).text must be a string")
        elif not text.strip():
            out.append(f"{where}: empty {ptype} part (empty parts must be removed)")
    elif ptype == "image":
        mime, image = part.get("mimeType"), part.get("image")
        if not isinstance(mime, str) or not mime.startswith("image/"):
            out.append(f"{where} (image).mimeType must be an image/* type, got {mime!r}")
        m = DATA_URL_RE.match(image) if isinstance(image, str) else None
        if m is None:
            out.append(f"{where} (image).image must be a 'data:<mime>;base64,<data>' URL")
        elif m.group(1) != mime:
            out.append(f"{where} (image): data URL type {m.group(1)!r} differs from mimeType {mime!r}")
    elif ptype in ("tool-call", "tool-result"):
        if not isinstance(part.get("toolCallId"), str) or not part.get("toolCallId"):
            out.append(f"{where} ({ptype}).toolCallId must be a non-empty string")
        name = part.get("toolName")
        if not isinstance(name, str) or not name:
            out.append(f"{where} ({ptype}).toolName must be a non-empty string")
        elif name == RESERVED_TOOL_NAME:
            out.append(f"{where} ({ptype}): tool name {RESERVED_TOOL_NAME!r} is reserved upstream (must be renamed)")
        if ptype == "tool-call" and "input" in part and not isinstance(part["input"], dict):
            out.append(f"{where} (tool-call).input must be an object, got {type(part['input']).__name__}")
        if ptype == "tool-result" and "output" in part:
            o = part["output"]
            if (not isinstance(o, dict) or set(o) != {"type", "value"}
                    or o.get("type") not in ("text", "error-text") or not isinstance(o.get("value"), str)):
                out.append(f"{where} (tool-result).output must be {{type: text|error-text, value: <string>}}, got {o!r}")
    return out


def validate_messages(messages) -> list[str]:
    """Check ``params.messages`` against the §4.3 part shapes and invariants.

    Invariants: roles user/assistant/tool; non-empty content; no empty text parts; no two
    consecutive messages with the same role; every assistant tool-call answered by a tool-result
    (same id) before the next user/assistant message and before the end of the list; no
    tool-result for an unknown (or already answered) call id; no ``tool_search`` tool name; the
    last message is a user or tool message.
    """
    if not isinstance(messages, list) or not messages:
        return ["params.messages must be a non-empty list"]
    out: list[str] = []
    calls: dict[str, str] = {}          # toolCallId -> toolName, every call seen so far
    pending: list[str] = []             # calls of the last assistant turn not answered yet
    prev_role = None
    for i, msg in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(msg, dict):
            out.append(f"{where} must be an object")
            prev_role = None
            continue
        for k in sorted(set(msg) - {"role", "content"}):
            out.append(f"{where}: unexpected key {k!r}")
        role = msg.get("role")
        if role not in ("user", "assistant", "tool"):
            out.append(f"{where}.role must be user/assistant/tool, got {role!r}")
            prev_role = role
            continue
        if role == prev_role:
            out.append(f"{where}: two consecutive {role!r} messages (merge them)")
        if role != "tool" and pending:
            out.append(f"{where} ({role}): tool call(s) {pending} not answered by a tool-result before this message "
                       f"(upstream: 'Tool result is missing for tool call ...')")
            pending = []
        content = msg.get("content")
        parts: list = []
        if isinstance(content, str):
            if role != "user":
                out.append(f"{where}: {role} content must be a list of parts, not a string")
            elif not content.strip():
                out.append(f"{where}: empty user message")
        elif isinstance(content, list):
            if not content:
                out.append(f"{where}: empty content list (empty messages must be removed)")
            parts = content
        else:
            out.append(f"{where}.content must be a list of parts")
        for j, part in enumerate(parts):
            pw = f"{where}.content[{j}]"
            out.extend(_validate_part(role, part, pw))
            if not isinstance(part, dict):
                continue
            cid, name = part.get("toolCallId"), part.get("toolName")
            if part.get("type") == "tool-call" and role == "assistant" and isinstance(cid, str):
                if cid in pending:
                    out.append(f"{pw}: duplicate toolCallId {cid!r} in one assistant message")
                else:
                    pending.append(cid)
                calls[cid] = name
            elif part.get("type") == "tool-result" and role == "tool" and isinstance(cid, str):
                if cid not in calls:
                    out.append(f"{pw}: tool-result for call id {cid!r} that never appeared in an assistant message")
                elif cid not in pending:
                    out.append(f"{pw}: tool-result for call id {cid!r} that was already answered or is not from the last assistant turn")
                else:
                    pending.remove(cid)
                    if name != calls[cid]:
                        out.append(f"{pw}: tool-result toolName {name!r} differs from the call's toolName {calls[cid]!r}")
        prev_role = role
    if pending:
        out.append(f"tool call(s) {pending} of the last assistant message are never answered by a tool-result")
    last = messages[-1]
    last_role = last.get("role") if isinstance(last, dict) else None
    if last_role not in ("user", "tool"):
        out.append(f"the last message must be a user or tool message, got {last_role!r}")
    return out


def last_user_text(body) -> str | None:
    """Text of the last ``user`` message of ``params.messages`` (text parts joined by newlines)."""
    try:
        messages = body["params"]["messages"]
    except (KeyError, TypeError):
        return None
    if not isinstance(messages, list):
        return None
    for msg in reversed(messages):
        if isinstance(msg, dict) and msg.get("role") == "user":
            content = msg.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return "\n".join(p["text"] for p in content
                                 if isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str))
            return ""
    return None


def select_scenario(body, default: str = "text") -> tuple[str, str | None]:
    """``(name, arg)`` from the first ``[[name]]`` / ``[[name:arg]]`` marker of the last user message."""
    m = MARKER_RE.search(last_user_text(body) or "")
    return (m.group(1), m.group(2)) if m else (default, None)


# ----------------------------------------------------------------------------------------------
# Scenarios
# ----------------------------------------------------------------------------------------------

def full_usage(inp: int, cache_read: int, cache_write: int, out: int, reasoning: int = 0) -> dict:
    """A complete AI SDK v6 ``totalUsage`` (§6.3); ``inputTokens`` includes cache reads and writes."""
    return {
        "inputTokens": inp,
        "inputTokenDetails": {"noCacheTokens": inp - cache_read - cache_write,
                              "cacheReadTokens": cache_read, "cacheWriteTokens": cache_write},
        "outputTokens": out,
        "outputTokenDetails": {"textTokens": out - reasoning, "reasoningTokens": reasoning},
        "totalTokens": inp + out,
    }


# Transcript usages kept byte-for-byte as in §6.4 (some fields missing on purpose: a gateway must
# default them to 0).
USAGE_A = {"inputTokens": 1200, "inputTokenDetails": {"noCacheTokens": 176, "cacheReadTokens": 1024, "cacheWriteTokens": 0},
           "outputTokens": 3, "outputTokenDetails": {"textTokens": 3, "reasoningTokens": 0}, "totalTokens": 1203}
USAGE_B = {"inputTokens": 50, "outputTokens": 20, "inputTokenDetails": {"cacheReadTokens": 0, "cacheWriteTokens": 0}}
USAGE_C = {"inputTokens": 10, "outputTokens": 30, "outputTokenDetails": {"textTokens": 1, "reasoningTokens": 29}}
USAGE_F = {"inputTokens": 900, "outputTokens": 1, "inputTokenDetails": {"cacheReadTokens": 0, "cacheWriteTokens": 800}}

_TOTAL_USAGE = {
    "text": USAGE_A, "fast": USAGE_A, "silence": USAGE_A,
    "echo": full_usage(1300, 1000, 0, 5),
    "unicode": full_usage(1400, 1100, 0, 11),
    "reasoning": USAGE_C,
    "tool_call": USAGE_B,
    "parallel_tools": full_usage(2100, 2048, 0, 42),
    "tool_search": full_usage(2200, 0, 0, 12),
    "string_input": full_usage(2300, 0, 0, 14),
    "server_tool": full_usage(3100, 0, 0, 25),
    "cache": USAGE_F,
    "length": full_usage(1500, 1024, 0, 64),
    "raw_truncation": full_usage(1600, 0, 0, 65),
    "content_filter": full_usage(1700, 512, 0, 2),
    "finish_error": full_usage(1800, 0, 0, 7),
    "pause_turn_1": full_usage(1000, 900, 0, 4),
    "pause_turn_2": full_usage(1010, 1000, 0, 3),
    "late_events": full_usage(1900, 1024, 0, 6),
    "garbage": full_usage(2000, 0, 0, 2),
    "reasoning_silence": full_usage(2500, 0, 0, 40, 37),
    "slow": full_usage(2600, 0, 0, 20),
    "endless": full_usage(2700, 0, 0, 99),
    "image": full_usage(2800, 0, 0, 2),
}


def _normalise(u: dict) -> dict:
    ind, outd = u.get("inputTokenDetails") or {}, u.get("outputTokenDetails") or {}
    inp, out = u.get("inputTokens", 0), u.get("outputTokens", 0)
    return {"input": inp, "cache_read": ind.get("cacheReadTokens", 0), "cache_write": ind.get("cacheWriteTokens", 0),
            "output": out, "reasoning": outd.get("reasoningTokens", 0), "total": u.get("totalTokens", inp + out)}


#: Normalised usage reported by each scenario's ``finish``: keys input (includes cache reads and
#: writes, as upstream), cache_read, cache_write, output, reasoning, total.  ``pause_turn`` is the
#: sum of its two requests.  ``cache`` additionally reports 500 one-hour cache-write tokens in its
#: provider-metadata event.  ``slow``/``endless`` report fixed numbers whatever their length.
USAGE: dict[str, dict] = {k: _normalise(v) for k, v in _TOTAL_USAGE.items() if not k.startswith("pause_turn")}
_PAUSE_1, _PAUSE_2 = _normalise(_TOTAL_USAGE["pause_turn_1"]), _normalise(_TOTAL_USAGE["pause_turn_2"])
USAGE["pause_turn"] = {k: _PAUSE_1[k] + _PAUSE_2[k] for k in _PAUSE_1}


class Plan:
    """What to send for one request: either an HTTP error, or a 200 NDJSON stream.

    ``steps`` is an iterable of: a dict (one NDJSON event), a str (raw bytes of the body, written
    as is: used for garbage lines), ``("sleep", seconds)`` (flushes what is pending, then sends
    nothing for that long) or ``("cut",)`` (drop the connection without ending the chunked body).
    ``mode`` "split" cuts the body into ``chunk_size``-byte HTTP chunks with 1 ms pauses; "lines"
    sends each step as one chunk with no pause.
    """

    def __init__(self, steps=(), *, mode="split", chunk_size=None, status=200, body=None,
                 content_type="application/json"):
        self.steps, self.mode, self.chunk_size = steps, mode, chunk_size
        self.status, self.body, self.content_type = status, body, content_type


class ScenarioError(ValueError):
    """Unknown scenario name or bad argument: answered with 400 and recorded as a violation."""


def _finish(usage, reason="stop", raw="stop", **extra):
    return {"type": "finish", "finishReason": reason, "rawFinishReason": raw, "totalUsage": usage, **extra}


def _finish_step(usage, reason="stop", raw="stop"):
    return {"type": "finish-step", "finishReason": reason, "rawFinishReason": raw,
            "usage": {"inputTokens": usage.get("inputTokens", 0), "outputTokens": usage.get("outputTokens", 0)}}


def _text_body(texts, tid="0"):
    return ([{"type": "text-start", "id": tid}]
            + [{"type": "text-delta", "id": tid, "text": t} for t in texts]
            + [{"type": "text-end", "id": tid}])


def _text_answer(texts, usage, reason="stop", raw="stop", tid="0"):
    """start, start-step, text-start, text-deltas, text-end, finish-step, finish (transcript A shape)."""
    return ([{"type": "start"}, {"type": "start-step", "request": {}, "warnings": []}]
            + _text_body(texts, tid) + [_finish_step(usage, reason, raw), _finish(usage, reason, raw)])


def _float_arg(arg, default):
    if arg in (None, ""):
        return default
    try:
        value = float(arg)
    except ValueError:
        raise ScenarioError(f"argument {arg!r} is not a number") from None
    if value < 0:
        raise ScenarioError(f"argument {arg!r} must be >= 0")
    return value


def _sc_text(ctx):
    """§6.4 transcript A: "Hello" + " world"."""
    return Plan(_text_answer(["Hello", " world"], USAGE_A))


def _sc_fast(ctx):
    """Transcript A, each line one HTTP chunk, no pauses (for benchmarks)."""
    return Plan(_text_answer(["Hello", " world"], USAGE_A), mode="lines")


def _sc_echo(ctx):
    """Echo the last user message's text, markers removed and stripped: shows what reached upstream."""
    text = MARKER_RE.sub("", ctx.user_text or "").strip()
    return Plan(_text_answer([text], _TOTAL_USAGE["echo"]))


UNICODE_TEXT = "héllo wörld — 你好 🌍🚀"


def _sc_unicode(ctx):
    """Multi-byte text over several deltas, sent in 3-byte chunks so UTF-8 sequences are cut."""
    parts = ["hé", "llo w", "örld — ", "你", "好 ", "🌍🚀"]
    assert "".join(parts) == UNICODE_TEXT
    return Plan(_text_answer(parts, _TOTAL_USAGE["unicode"]), chunk_size=3)


def _sc_reasoning(ctx):
    """§6.4 transcript C (reasoning-end arrives after text-start)."""
    return Plan([
        {"type": "start"},
        {"type": "reasoning-start", "id": "r0"},
        {"type": "reasoning-delta", "id": "r0", "text": "Let me think."},
        {"type": "text-start", "id": "t0"},
        {"type": "reasoning-end", "id": "r0"},
        {"type": "text-delta", "id": "t0", "text": "4"},
        {"type": "text-end", "id": "t0"},
        _finish(USAGE_C, systemPromptTokens=7),
    ])


def _sc_tool_call(ctx):
    """§6.4 transcript B: read_file {"file_path": "a.txt"}, finish tool-calls."""
    return Plan([
        {"type": "start"},
        {"type": "tool-input-start", "id": "call_1", "toolName": "read_file"},
        {"type": "tool-input-delta", "id": "call_1", "delta": "{\"file_path\":"},
        {"type": "tool-input-delta", "id": "call_1", "delta": "\"a.txt\"}"},
        {"type": "tool-input-end", "id": "call_1"},
        {"type": "tool-call", "toolCallId": "call_1", "toolName": "read_file", "input": {"file_path": "a.txt"}},
        _finish(USAGE_B, "tool-calls", "tool_calls"),
    ])


def _sc_parallel_tools(ctx):
    """Text "Checking." then two get_weather calls (call_a Paris, call_b Tokyo)."""
    u = _TOTAL_USAGE["parallel_tools"]
    return Plan([{"type": "start"}, {"type": "start-step", "request": {}, "warnings": []}]
                + _text_body(["Checking."]) + [
        {"type": "tool-input-start", "id": "call_a", "toolName": "get_weather"},
        {"type": "tool-input-delta", "id": "call_a", "delta": "{\"city\":\"Paris\"}"},
        {"type": "tool-input-end", "id": "call_a"},
        {"type": "tool-call", "toolCallId": "call_a", "toolName": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool-input-start", "id": "call_b", "toolName": "get_weather"},
        {"type": "tool-input-delta", "id": "call_b", "delta": "{\"city\":\"Tokyo\"}"},
        {"type": "tool-input-end", "id": "call_b"},
        {"type": "tool-call", "toolCallId": "call_b", "toolName": "get_weather", "input": {"city": "Tokyo"}},
        _finish_step(u, "tool-calls", "tool_use"),
        _finish(u, "tool-calls", "tool_use"),
    ])


def _sc_tool_search(ctx):
    """A call to ``search_tools`` (wire name of the client's reserved ``tool_search``): map it back."""
    u = _TOTAL_USAGE["tool_search"]
    return Plan([
        {"type": "start"},
        {"type": "tool-call", "toolCallId": "call_ts", "toolName": "search_tools", "input": {"query": "x"}},
        _finish(u, "tool-calls", "tool_use"),
    ])


def _sc_string_input(ctx):
    """Older servers: ``input`` as a JSON string, and ``args`` instead of ``input``."""
    u = _TOTAL_USAGE["string_input"]
    return Plan([
        {"type": "start"},
        {"type": "tool-call", "toolCallId": "call_s1", "toolName": "read_file", "input": "{\"a\":1}"},
        {"type": "tool-call", "toolCallId": "call_s2", "toolName": "read_file", "args": {"b": 2}},
        _finish(u, "tool-calls", "tool_calls"),
    ])


def _sc_server_tool(ctx):
    """§6.4 transcript E (provider-executed web_search; must not surface as a client tool call)."""
    return Plan([
        {"type": "start"},
        {"type": "tool-call", "toolCallId": "srv_1", "toolName": "web_search", "input": {"query": "x"},
         "providerExecuted": True},
        {"type": "tool-result", "toolCallId": "srv_1", "toolName": "web_search",
         "output": {"type": "json", "value": [{"url": "u"}]}, "providerExecuted": True},
        {"type": "text-delta", "text": "done"},
        {"type": "finish", "finishReason": "stop", "totalUsage": _TOTAL_USAGE["server_tool"]},
    ])


def _sc_cache(ctx):
    """Text "cached" then §6.4 transcript F (provider-metadata with 1h cache writes, cacheWriteTokens 800)."""
    return Plan([
        {"type": "start"},
        {"type": "text-delta", "id": "0", "text": "cached"},
        {"type": "provider-metadata",
         "providerMetadata": {"anthropic": {"usage": {"cache_creation": {"ephemeral_1h_input_tokens": 500}}}}},
        {"type": "finish", "finishReason": "stop", "totalUsage": USAGE_F},
    ])


def _sc_length(ctx):
    return Plan(_text_answer(["This answer was cut"], _TOTAL_USAGE["length"], "length", "max_tokens"))


def _sc_raw_truncation(ctx):
    """finishReason "other" hiding a truncation in rawFinishReason: must not look like a clean stop."""
    return Plan(_text_answer(["Truncated answ"], _TOTAL_USAGE["raw_truncation"], "other", "max_output_tokens"))


def _sc_content_filter(ctx):
    return Plan([{"type": "start"}, _finish(_TOTAL_USAGE["content_filter"], "content-filter", "content_filter")])


def _sc_finish_error(ctx):
    return Plan(_text_answer(["Some text"], _TOTAL_USAGE["finish_error"], "error", "network_error"))


def _sc_abort(ctx):
    return Plan([{"type": "start"}] + _text_body(["partial"])[:2] + [{"type": "abort", "reason": "user"}])


def _sc_pause_turn(ctx):
    """First request: "Part one. " + pause_turn; the identical request again: "Part two." + stop.

    Alternates per threadId; a continuation whose params differ from the first request is a
    violation (the CLI re-posts the identical request).
    """
    part = ctx.fake._pause_turn_step(ctx)
    if part == 1:
        return Plan(_text_answer(["Part one. "], _TOTAL_USAGE["pause_turn_1"], "other", "pause_turn"))
    return Plan(_text_answer(["Part two."], _TOTAL_USAGE["pause_turn_2"]))


def _sc_late_events(ctx):
    """A normal answer, then lines after ``finish`` that must be ignored."""
    return Plan(_text_answer(["Done."], _TOTAL_USAGE["late_events"])
                + [{"type": "text-delta", "id": "0", "text": "IGNORED"}])


def _sc_garbage(ctx):
    """Answer "ok" with blank, whitespace-only, non-JSON, CRLF, ``data:``-prefixed and ``data: [DONE]`` lines.

    The "k" delta arrives ``data:``-prefixed, so a gateway that does not strip the prefix answers
    "o" only; ``data: [DONE]`` comes before ``finish``, so it must be skipped, not taken as the end.
    """
    u = _TOTAL_USAGE["garbage"]
    k = json.dumps({"type": "text-delta", "id": "0", "text": "k"})
    return Plan([
        "\n",
        {"type": "start"},
        "   \t \n",
        {"type": "text-start", "id": "0"},
        "not json\n",
        "\n\n",
        json.dumps({"type": "text-delta", "id": "0", "text": "o"}) + "  \r\n",
        f"data: {k}\n",
        "data: [DONE]\n",
        {"type": "text-end", "id": "0"},
        " \n",
        _finish(u),
        "\n",
    ])


_ERROR_FIRST = {
    None: {"message": "Insufficient credits", "statusCode": 400, "isRetryable": False},
    "string": "Upstream overloaded",
    "402": {"type": "server_error", "message": "Insufficient Balance", "statusCode": 402},
    "429": {"message": '429 {"error":{"type":"rate_limit_error","message":"slow down"}}'},
    "model": {"message": "MODEL_NOT_IN_PLAN: claude-opus-5 is not included in your plan", "statusCode": 403},
}


def _sc_error_first(ctx):
    """200 then an in-band ``error`` as the first decisive line (§6.4 D); variants by arg."""
    key = ctx.arg or None
    if key not in _ERROR_FIRST:
        raise ScenarioError(f"error_first argument must be one of {[k for k in _ERROR_FIRST if k]}, got {ctx.arg!r}")
    return Plan([{"type": "start"}, {"type": "error", "error": _ERROR_FIRST[key]}])


def _sc_error_after_text(ctx):
    return Plan([{"type": "start"}] + _text_body(["Hello"])[:2]
                + [{"type": "error", "error": {"message": "Upstream overloaded", "statusCode": 529}}])


def _sc_truncated(ctx):
    """Text "Hel" and no finish.  Arg ``abrupt``: also drop the connection mid chunked body."""
    if ctx.arg not in (None, "", "abrupt"):
        raise ScenarioError(f"truncated argument must be 'abrupt' or nothing, got {ctx.arg!r}")
    steps = [{"type": "start"}] + _text_body(["Hel"])[:2]
    return Plan(steps + [("cut",)] if ctx.arg == "abrupt" else steps)


def _sc_truncated_empty(ctx):
    return Plan([{"type": "start"}])


def _sc_silence(ctx):
    """N seconds (default 3) with no body byte at all, then transcript A."""
    return Plan([("sleep", _float_arg(ctx.arg, 3.0))] + _text_answer(["Hello", " world"], USAGE_A))


def _sc_reasoning_silence(ctx):
    """reasoning-delta "hmm", N seconds (default 3) of silence, then text + finish."""
    seconds = _float_arg(ctx.arg, 3.0)
    return Plan([
        {"type": "start"},
        {"type": "reasoning-start", "id": "r0"},
        {"type": "reasoning-delta", "id": "r0", "text": "hmm"},
        ("sleep", seconds),
        {"type": "reasoning-end", "id": "r0"},
        *_text_body(["Answer after thinking."], "t0"),
        _finish(_TOTAL_USAGE["reasoning_silence"]),
    ])


def _sc_slow(ctx):
    """N (default 20) text-deltas "tok{i} " 100 ms apart."""
    n = int(_float_arg(ctx.arg, 20))
    steps = [{"type": "start"}, {"type": "text-start", "id": "0"}]
    for i in range(n):
        if i:
            steps.append(("sleep", 0.1))
        steps.append({"type": "text-delta", "id": "0", "text": f"tok{i} "})
    return Plan(steps + [{"type": "text-end", "id": "0"}, _finish(_TOTAL_USAGE["slow"])])


def _sc_endless(ctx):
    """A text-delta every 100 ms for up to N seconds (default 60); ends at once if the client leaves."""
    limit = _float_arg(ctx.arg, 60.0)

    def steps():
        yield {"type": "start"}
        yield {"type": "text-start", "id": "0"}
        deadline, i = time.monotonic() + limit, 0
        while time.monotonic() < deadline:
            yield {"type": "text-delta", "id": "0", "text": f"tick{i} "}
            yield ("sleep", 0.1)
            i += 1
        yield {"type": "text-end", "id": "0"}
        yield _finish(_TOTAL_USAGE["endless"])

    return Plan(steps())


def _sc_image(ctx):
    """Reports how many ``image`` parts the request's messages contained, e.g. "images=2"."""
    count = 0
    for msg in (ctx.params.get("messages") or []) if isinstance(ctx.params, dict) else []:
        content = msg.get("content") if isinstance(msg, dict) else None
        if isinstance(content, list):
            count += sum(1 for p in content if isinstance(p, dict) and p.get("type") == "image")
    return Plan(_text_answer([f"images={count}"], _TOTAL_USAGE["image"]))


def _http_error(status, code, message, **extra):
    err = {"code": code, "status": status, "message": message, **extra}
    err.setdefault("docs", "https://commandcode.ai/docs")
    return Plan(status=status, body=json.dumps({"success": False, "error": err}).encode())


def _model(ctx):
    model = ctx.params.get("model") if isinstance(ctx.params, dict) else None
    return model if isinstance(model, str) and model else "claude-opus-5"


HTTP_ERRORS = {
    "http_401": lambda ctx: _http_error(401, "UNAUTHORIZED", "Invalid 'Authorization' header"),
    "http_400_credits": lambda ctx: _http_error(400, "INSUFFICIENT_CREDITS", "Insufficient credits"),
    "http_402": lambda ctx: _http_error(402, "PAYMENT_REQUIRED", "Insufficient Balance"),
    "http_403_model": lambda ctx: _http_error(
        403, "MODEL_NOT_IN_PLAN", f"MODEL_NOT_IN_PLAN: {_model(ctx)} is not included in your plan. Upgrade to use it."),
    "http_403_upgrade": lambda ctx: _http_error(
        403, "upgrade_required", "This version of Command Code is no longer supported. Please upgrade."),
    "http_403_premium": lambda ctx: _http_error(
        403, "FORBIDDEN", "PREMIUM_CREDITS_EXHAUSTED: You have used all premium credits of your plan."),
    "http_429_window": lambda ctx: _http_error(
        429, "RATE_LIMITED", "You've reached your 5-hour usage limit. Resets in 2m.", type="rate_limit_error",
        rateLimit={"window": "fiveHour", "reset": int(time.time()) + 120}),
    "http_429_throttle": lambda ctx: _http_error(429, "RATE_LIMITED", "Rate-limited by the upstream"),
    "http_500": lambda ctx: _http_error(500, "INTERNAL_SERVER_ERROR", "Internal server error"),
    "http_502_html": lambda ctx: Plan(status=502, body=b"<html><body>Bad gateway</body></html>",
                                      content_type="text/html"),
    "http_529": lambda ctx: _http_error(529, "OVERLOADED", "Overloaded", type="overloaded_error"),
    "http_400_validation": lambda ctx: _http_error(400, "BAD_REQUEST", "Too big: expected number to be <=200000"),
}

#: Every scenario name -> builder(ctx) -> Plan.
SCENARIOS = {
    "text": _sc_text, "fast": _sc_fast, "echo": _sc_echo, "unicode": _sc_unicode,
    "reasoning": _sc_reasoning, "tool_call": _sc_tool_call, "parallel_tools": _sc_parallel_tools,
    "tool_search": _sc_tool_search, "string_input": _sc_string_input, "server_tool": _sc_server_tool,
    "cache": _sc_cache, "length": _sc_length, "raw_truncation": _sc_raw_truncation,
    "content_filter": _sc_content_filter, "finish_error": _sc_finish_error, "abort": _sc_abort,
    "pause_turn": _sc_pause_turn, "late_events": _sc_late_events, "garbage": _sc_garbage,
    "error_first": _sc_error_first, "error_after_text": _sc_error_after_text,
    "truncated": _sc_truncated, "truncated_empty": _sc_truncated_empty, "silence": _sc_silence,
    "reasoning_silence": _sc_reasoning_silence, "slow": _sc_slow, "endless": _sc_endless,
    "image": _sc_image, **HTTP_ERRORS,
}

_REASONS = {402: "Payment Required", 429: "Too Many Requests", 529: "Site Overloaded"}


# ----------------------------------------------------------------------------------------------
# Usage computed from the request (optional mode, see the module docstring)
# ----------------------------------------------------------------------------------------------

TOKENIZER_ENV = "FAKE_UPSTREAM_TOKENIZER"
TOKENIZER_DIR = os.path.join("~", ".cache", "claude-tokenizer")
TOKENIZER_INSTALL = ("pip install tokenizers && "
                     "pip download anthropic==0.34.2 --no-deps -d ~/.cache/claude-tokenizer")
IMAGE_MAX_EDGE = 1568
IMAGE_MAX_TOKENS = 1600


def _tokenizer_json(path: str) -> str:
    """The text of Claude's ``tokenizer.json`` from a file, an ``anthropic`` wheel or a folder."""
    path = os.path.expanduser(path)
    if os.path.isdir(path):
        for candidate in ([os.path.join(path, "tokenizer.json"),
                           os.path.join(path, "anthropic", "tokenizer.json")]
                          + sorted(glob.glob(os.path.join(path, "anthropic-*.whl")), reverse=True)):
            if os.path.isfile(candidate):
                return _tokenizer_json(candidate)
        raise FileNotFoundError(f"no tokenizer.json or anthropic-*.whl in {path}")
    if path.endswith(".whl"):
        with zipfile.ZipFile(path) as wheel:
            try:
                return wheel.read("anthropic/tokenizer.json").decode("utf-8")
            except KeyError:
                raise FileNotFoundError(f"{path} has no anthropic/tokenizer.json "
                                        "(anthropic wheels after 0.38 dropped it)") from None
    with open(path, encoding="utf-8") as f:
        return f.read()


def load_reference_tokenizer(path: str | None = None):
    """``count(text) -> int`` with Claude's byte-pair tokenizer; imports ``tokenizers`` only now.

    ``path``: a ``tokenizer.json``, an ``anthropic`` wheel holding one (<= 0.38) or a folder with
    either; default ``$FAKE_UPSTREAM_TOKENIZER``, else ``~/.cache/claude-tokenizer``.
    """
    path = path or os.environ.get(TOKENIZER_ENV) or TOKENIZER_DIR
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise RuntimeError(f"usage-from-request needs the 'tokenizers' package: {TOKENIZER_INSTALL}") from None
    try:
        raw = _tokenizer_json(path)
    except OSError as e:
        raise RuntimeError(f"usage-from-request needs Claude's tokenizer.json ({e}): {TOKENIZER_INSTALL}") from None
    tok = Tokenizer.from_str(raw)
    return lambda text: len(tok.encode(text, add_special_tokens=False).ids) if text else 0


def image_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from a PNG, GIF, JPEG or WebP header; None if unrecognised."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        return struct.unpack("<HH", data[6:10])
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP" and len(data) >= 30:
        kind = data[12:16]
        if kind == b"VP8X":
            return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
        if kind == b"VP8L":
            bits = int.from_bytes(data[21:25], "little")
            return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
        if kind == b"VP8 ":
            w, h = struct.unpack("<HH", data[26:30])
            return w & 0x3FFF, h & 0x3FFF
    if data[:2] == b"\xff\xd8":
        i = 2
        while i + 9 < len(data):
            if data[i] != 0xFF:
                i += 1
                continue
            marker = data[i + 1]
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                h, w = struct.unpack(">HH", data[i + 5:i + 9])
                return w, h
            i += 2 + struct.unpack(">H", data[i + 2:i + 4])[0]
    return None


def reference_image_tokens(data_url) -> int:
    """Anthropic's documented image cost: ``w * h / 750`` after fitting the long edge in 1568 px."""
    m = DATA_URL_RE.match(data_url) if isinstance(data_url, str) else None
    try:
        size = image_size(base64.b64decode(m.group(2))) if m else None
    except ValueError:
        size = None
    if not size or not all(size):
        return IMAGE_MAX_TOKENS
    w, h = size
    scale = min(1.0, IMAGE_MAX_EDGE / max(w, h))
    return max(1, min(IMAGE_MAX_TOKENS, math.ceil((w * scale) * (h * scale) / 750)))


def _render_part(part) -> tuple[str, int]:
    """(text, image tokens) of one message part, laid out as in Claude's prompt."""
    if not isinstance(part, dict):
        return "", 0
    kind = part.get("type")
    if kind == "text":
        return str(part.get("text", "")), 0
    if kind == "reasoning":
        return f"<thinking>\n{part.get('text', '')}\n</thinking>", 0
    if kind == "image":
        return "", reference_image_tokens(part.get("image"))
    if kind == "tool-call":
        args = part.get("input") if isinstance(part.get("input"), dict) else {}
        params = "".join(f'<parameter name="{k}">{v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)}'
                         f"</parameter>\n" for k, v in args.items())
        return (f'<function_calls>\n<invoke name="{part.get("toolName", "")}">\n{params}'
                "</invoke>\n</function_calls>"), 0
    if kind == "tool-result":
        out = part.get("output") if isinstance(part.get("output"), dict) else {}
        tag = "error" if out.get("type") == "error-text" else "output"
        return (f"<function_results>\n<result>\n<name>{part.get('toolName', '')}</name>\n"
                f"<{tag}>{out.get('value', '')}</{tag}>\n</result>\n</function_results>"), 0
    return "", 0


def render_prompt(params) -> tuple[str, int]:
    """``params`` (the envelope's) as Claude's prompt text, plus the image tokens beside it."""
    params = params if isinstance(params, dict) else {}
    system = params.get("system")
    if isinstance(system, list):
        system = "\n\n".join(b.get("text", "") for b in system if isinstance(b, dict))
    chunks = [system if isinstance(system, str) else ""]
    tools = [t for t in params.get("tools") or [] if isinstance(t, dict)]
    if tools:
        chunks.append("\n\n<functions>")
        for t in tools:
            spec = {"description": t.get("description", ""), "name": t.get("name", ""),
                    "parameters": t.get("input_schema", {})}
            chunks.append(f"\n<function>{json.dumps(spec, ensure_ascii=False)}</function>")
        chunks.append("\n</functions>")
    images = 0
    for msg in params.get("messages") or []:
        if not isinstance(msg, dict):
            continue
        chunks.append("\n\nAssistant: " if msg.get("role") == "assistant" else "\n\nHuman: ")
        content = msg.get("content")
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else content or []
        texts = []
        for part in parts if isinstance(parts, list) else []:
            text, n = _render_part(part)
            images += n
            if text:
                texts.append(text)
        chunks.append("\n\n".join(texts))
    chunks.append("\n\nAssistant:")
    return "".join(chunks), images


def reference_input_tokens(params, count) -> int:
    """Input tokens of ``params`` with ``count(text) -> int`` (see ``load_reference_tokenizer``)."""
    text, images = render_prompt(params)
    return count(text) + images


def _with_input_tokens(steps, input_tokens: int):
    """``steps`` with ``inputTokens`` of ``finish``/``finish-step`` replaced (no cache)."""
    for step in steps:
        if isinstance(step, dict) and step.get("type") == "finish" and isinstance(step.get("totalUsage"), dict):
            u = step["totalUsage"]
            out = u.get("outputTokens", 0)
            reasoning = (u.get("outputTokenDetails") or {}).get("reasoningTokens", 0)
            step = {**step, "totalUsage": full_usage(input_tokens, 0, 0, out, reasoning)}
        elif isinstance(step, dict) and step.get("type") == "finish-step" and isinstance(step.get("usage"), dict):
            step = {**step, "usage": {**step["usage"], "inputTokens": input_tokens}}
        yield step


# ----------------------------------------------------------------------------------------------
# Server
# ----------------------------------------------------------------------------------------------

class _ClientGone(Exception):
    """The client closed the connection while we were writing."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    fake: "FakeUpstream"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeCommandCode/1.0"
    sys_version = ""

    def setup(self):
        super().setup()
        try:  # small chunks must leave at once, not wait for Nagle
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass

    def log_message(self, format, *args):  # noqa: A002 - silence the default stderr log
        pass

    def _dispatch(self):
        try:
            self.server.fake._handle(self)
        except Exception as e:  # noqa: BLE001 - a bug in the fake must show up as a violation, not a hang
            self.close_connection = True
            with self.server.fake._lock:
                self.server.fake.violations.append(f"fake upstream internal error: {e!r}")
            try:
                self.send_error(500)
            except OSError:
                pass

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _dispatch


class FakeUpstream:
    """Fake ``POST /alpha/generate`` server; see the module docstring.

    ``chunk_size``: bytes per HTTP chunk in split mode.  ``strict``: validate requests (§3/§4)
    and record problems in ``violations``; non-strict mode only plays scenarios.
    ``usage_from_request``: report ``inputTokens`` counted on each request with Claude's
    tokenizer (found at ``tokenizer``, see ``load_reference_tokenizer``) instead of the fixed
    ``USAGE``; the count is also recorded as ``requests[i]["input_tokens"]``.
    """

    def __init__(self, host="127.0.0.1", port=0, chunk_size=7, strict=True,
                 usage_from_request=False, tokenizer=None):
        self.host, self.port, self.chunk_size, self.strict = host, port, chunk_size, strict
        self.usage_from_request, self.tokenizer_path = usage_from_request, tokenizer
        self._count = None                   # count(text) -> int, loaded by start() in that mode
        self.default_scenario = "text"      # played when the last user message has no marker
        self.log = None                      # optional callable(str) for main(): live request/violation log
        self.requests: list[dict] = []
        self.violations: list[str] = []
        self.disconnects: list[str] = []
        self.first_byte_at: list[float] = []
        self._lock = threading.Lock()
        self._pause: dict[str, tuple[int, str]] = {}
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> "FakeUpstream":
        if self._server is not None:
            return self
        if self.usage_from_request and self._count is None:
            self._count = load_reference_tokenizer(self.tokenizer_path)
        self._stopping.clear()
        server = _Server((self.host, self.port), _Handler)
        server.fake = self
        self._server = server
        self.port = server.server_address[1]
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"fake-upstream-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()            # ends running streams (sleeps wake up, endless stops)
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "FakeUpstream":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeUpstream is not started")
        return f"http://{self.host}:{self.port}"

    def reset(self) -> None:
        """Forget recorded requests, violations, disconnects, first-byte times and pause_turn state."""
        with self._lock:
            del self.requests[:]
            del self.violations[:]
            del self.disconnects[:]
            del self.first_byte_at[:]
            self._pause.clear()

    def wait_for_disconnect(self, scenario: str | None = None, timeout: float = 5.0) -> bool:
        """Wait until a disconnect (of ``scenario`` if given) is recorded; True if it was.

        Disconnects are noticed asynchronously (on the next write after the client left), so
        tests should wait for them rather than check immediately.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if (scenario in self.disconnects) if scenario else self.disconnects:
                    return True
            time.sleep(0.01)
        return False

    # -- request handling -----------------------------------------------------------------------

    def _emit(self, message: str) -> None:
        if self.log is not None:
            try:
                self.log(message)
            except Exception:  # noqa: BLE001 - logging must never break a response
                pass

    def _violate(self, index: int, scenario, problems) -> None:
        if not problems:
            return
        messages = [f"request #{index} ({scenario}): {p}" for p in problems]
        with self._lock:
            self.violations.extend(messages)
        for m in messages:
            self._emit("VIOLATION " + m)

    @staticmethod
    def _read_body(h) -> bytes:
        length = h.headers.get("Content-Length")
        if length is not None:
            return h.rfile.read(int(length))
        if "chunked" in (h.headers.get("Transfer-Encoding") or "").lower():
            data = bytearray()
            while True:
                size = int(h.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while h.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(data)
                data += h.rfile.read(size)
                h.rfile.readline()
        return b""

    def _handle(self, h) -> None:
        received_at = time.monotonic()
        path = h.path.split("?", 1)[0]
        pairs = [(k.lower(), v) for k, v in h.headers.items()]
        headers: dict[str, str] = {}
        for k, v in pairs:
            headers[k] = f"{headers[k]}, {v}" if k in headers else v
        try:
            raw = self._read_body(h)
        except (ValueError, OSError):
            h.close_connection = True
            return
        body, parse_error = None, None
        if raw:
            try:
                body = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as e:
                parse_error = f"body is not valid UTF-8 JSON: {e}"

        is_generate = h.command == "POST" and path == GENERATE_PATH
        name, arg = select_scenario(body, self.default_scenario) if is_generate else (None, None)
        record = {"method": h.command, "path": path, "headers": headers, "body": body, "scenario": name,
                  "scenario_arg": arg, "received_at": received_at}
        with self._lock:
            self.requests.append(record)
            index = len(self.requests) - 1
        self._emit(f"{h.command} {h.path} scenario={name}{':' + arg if arg else ''}")

        if not is_generate:
            self._send_json(h, 404, {"success": False, "error": {
                "code": "NOT_FOUND", "status": 404, "message": f"fake upstream: no route {h.command} {path}"}},
                record_first_byte=False)
            return
        if self.strict:
            problems = [parse_error] if parse_error else []
            problems += validate_headers(pairs, body)
            if not parse_error:
                problems += validate_body(body)
            self._violate(index, name, problems)
        elif parse_error:
            self._violate(index, name, [parse_error])
        if parse_error:
            self._send_json(h, 400, {"success": False, "error": {
                "code": "BAD_REQUEST", "status": 400, "message": "Invalid JSON body"}})
            return

        builder = SCENARIOS.get(name)
        params = body.get("params") if isinstance(body, dict) else None
        ctx = SimpleNamespace(fake=self, body=body, params=params if isinstance(params, dict) else {},
                              arg=arg, name=name, user_text=last_user_text(body),
                              thread_id=body.get("threadId") if isinstance(body, dict) else None,
                              index=index)
        try:
            if builder is None:
                raise ScenarioError(f"unknown scenario {name!r} (known: {', '.join(sorted(SCENARIOS))})")
            plan = builder(ctx)
        except ScenarioError as e:
            self._violate(index, name, [f"bad scenario marker: {e}"])
            self._send_json(h, 400, {"success": False, "error": {
                "code": "UNKNOWN_SCENARIO", "status": 400, "message": f"fake upstream: {e}"}})
            return

        if self.usage_from_request and plan.status == 200:
            n = reference_input_tokens(ctx.params, self._count)
            record["input_tokens"] = n
            plan.steps = _with_input_tokens(plan.steps, n)
        if plan.status != 200:
            self._send_raw(h, plan.status, plan.body or b"", plan.content_type)
        else:
            self._play(h, name, plan)

    def _pause_turn_step(self, ctx) -> int:
        """1 for the first request of a threadId, 2 for its identical re-post; alternates."""
        key = ctx.thread_id if isinstance(ctx.thread_id, str) else ""
        params = json.dumps(ctx.params, sort_keys=True)
        with self._lock:
            count, first_params = self._pause.get(key, (0, None))
            self._pause[key] = (count + 1, params if count % 2 == 0 else first_params)
        if count % 2 == 1:
            if params != first_params:
                self._violate(ctx.index, ctx.name, ["pause_turn continuation is not identical to the first request"])
            return 2
        return 1

    # -- writing --------------------------------------------------------------------------------

    def _send_json(self, h, status, obj, record_first_byte=True):
        self._send_raw(h, status, json.dumps(obj).encode(), "application/json", record_first_byte)

    def _send_raw(self, h, status, data: bytes, content_type: str, record_first_byte=True):
        try:
            h.send_response(status, _REASONS.get(status))
            h.send_header("Content-Type", content_type)
            h.send_header("Content-Length", str(len(data)))
            h.send_header("lb-request-id", str(uuid.uuid4()))
            h.end_headers()
            h.wfile.write(data)
            h.wfile.flush()
            if record_first_byte:
                with self._lock:
                    self.first_byte_at.append(time.monotonic())
        except OSError:
            h.close_connection = True

    def _play(self, h, name: str, plan: Plan) -> None:
        """Send ``plan.steps`` as a chunked NDJSON body; record first byte and disconnects."""
        chunk_size = max(1, plan.chunk_size or self.chunk_size)
        split = plan.mode == "split"
        pending = bytearray()
        first = [True]

        def chunk(data: bytes):
            if not data:
                return
            try:
                h.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                h.wfile.flush()
            except OSError as e:  # BrokenPipe, ConnectionReset, ConnectionAborted...
                raise _ClientGone from e
            if first[0]:
                first[0] = False
                with self._lock:
                    self.first_byte_at.append(time.monotonic())

        def drain(all_of_it: bool):
            while len(pending) >= chunk_size or (all_of_it and pending):
                piece = bytes(pending[:chunk_size])
                del pending[:chunk_size]
                chunk(piece)
                time.sleep(0.001)   # so pieces arrive in separate reads

        try:
            try:
                h.send_response(200)
                h.send_header("Content-Type", "application/x-ndjson")
                h.send_header("Transfer-Encoding", "chunked")
                h.send_header("Cache-Control", "no-cache")
                h.send_header("lb-request-id", str(uuid.uuid4()))
                h.end_headers()
            except OSError as e:
                raise _ClientGone from e
            for step in plan.steps:
                if self._stopping.is_set():
                    h.close_connection = True
                    return
                if isinstance(step, tuple):
                    if split:
                        drain(True)
                    if step[0] == "sleep":
                        if self._stopping.wait(float(step[1])):
                            h.close_connection = True
                            return
                    elif step[0] == "cut":
                        h.close_connection = True
                        try:
                            h.connection.shutdown(socket.SHUT_RDWR)
                        except OSError:
                            pass
                        return
                    continue
                data = (step if isinstance(step, str)
                        else json.dumps(step, ensure_ascii=False) + "\n").encode("utf-8")
                if split:
                    pending += data
                    drain(False)
                else:
                    chunk(data)
            if split:
                drain(True)
            try:
                h.wfile.write(b"0\r\n\r\n")
                h.wfile.flush()
            except OSError as e:
                raise _ClientGone from e
        except _ClientGone:
            h.close_connection = True
            with self._lock:
                self.disconnects.append(name)
            self._emit(f"DISCONNECT client left during scenario {name}")


def main(argv=None) -> None:
    """Run the fake in the foreground: ``python tests/fake_upstream.py --port 9999``."""
    ap = argparse.ArgumentParser(description="Fake Command Code upstream (POST /alpha/generate).")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9999)
    ap.add_argument("--chunk-size", type=int, default=7, help="bytes per HTTP chunk (default 7)")
    ap.add_argument("--no-strict", action="store_true", help="do not validate requests")
    ap.add_argument("--default-scenario", default="text", choices=sorted(SCENARIOS),
                    help="scenario played when no [[marker]] is present (e.g. fast for benchmarks)")
    ap.add_argument("--quiet", action="store_true", help="do not log requests and violations")
    ap.add_argument("--usage-from-request", action="store_true",
                    help="report inputTokens counted on each request with Claude's tokenizer "
                         f"(needs: {TOKENIZER_INSTALL})")
    ap.add_argument("--tokenizer", metavar="PATH",
                    help=f"tokenizer.json, anthropic wheel or folder (default ${TOKENIZER_ENV} "
                         f"or {TOKENIZER_DIR})")
    args = ap.parse_args(argv)
    fake = FakeUpstream(args.host, args.port, args.chunk_size, strict=not args.no_strict,
                        usage_from_request=args.usage_from_request, tokenizer=args.tokenizer)
    fake.default_scenario = args.default_scenario
    if not args.quiet:
        fake.log = lambda m: print(m, file=sys.stderr, flush=True)

    def _terminate(signum, frame):  # make `kill PID` as clean as Ctrl-C (summary printed)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    try:
        fake.start()
    except RuntimeError as e:           # usage-from-request without its tokenizer
        sys.exit(f"fake upstream: {e}")
    print(f"fake Command Code upstream listening on {fake.url} (Ctrl-C to stop)", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()
        print(f"{len(fake.requests)} requests, {len(fake.violations)} violations, "
              f"{len(fake.disconnects)} disconnects", flush=True)


if __name__ == "__main__":
    main()
