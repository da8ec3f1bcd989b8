"""A fake Command Code upstream (``POST /alpha/generate``, the Provider API, the account routes)
for the gateway's tests and benchmarks.

Why it exists
-------------
The gateway relays the undocumented CLI endpoint of Command Code.  Unit tests with mocked HTTP
clients would not catch the failures users actually hit: NDJSON lines split across TCP reads,
UTF-8 characters cut in half, streams that end without ``finish``, errors inside a 200 stream,
long silences during reasoning, clients that hang up mid-stream, and requests the real server
rejects (wrong headers, unanswered tool calls, the reserved ``tool_search`` tool name...).  This
module is a *real* HTTP/1.1 server on a loopback port, running in a background thread of the test
process, that

* plays scripted NDJSON streams exactly as described in ``docs/protocol.md``
  (§6 and §7): chunked transfer encoding, ``application/x-ndjson``, an ``lb-request-id``
  header, the body cut into tiny pieces so line and UTF-8 boundaries are split;
* records every request it receives (``requests``) and checks each ``/alpha/generate`` request
  against the envelope rules of docs/protocol.md §3 and §4 (``violations``);
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

Keys and plans
--------------
The gateway decides between the CLI route and the Provider API by the key's plan, and shows
plans and credits to its users, so the fake knows plans per key.  ``fake.plans`` maps an
upstream key to a Command Code plan id; it starts as ``DEFAULT_PLANS`` (``GO_KEY`` ->
``individual-go``, ``MAX_KEY`` -> ``individual-max``); any other key starting with ``user_``
(``PRO_KEY`` for instance) is ``individual-pro``.  A key that is missing, does not start with
``user_`` or contains ``invalid`` is answered 401 on the account and Provider API routes.
``POST /alpha/generate`` checks no key (its tests predate plans).  ``reset()`` restores
``plans`` and every toggle and counter below.

Account routes (docs/protocol.md §9)
------------------------------------
``GET /alpha/whoami`` (``orgLimits`` only with ``?limits=1``), ``GET /alpha/billing/credits``
(``credits.planId`` = the key's plan, ``windowLimits`` resetting about 2 h and 5 days from now,
in epoch milliseconds), ``GET /alpha/billing/subscriptions`` (the key's plan, ``active``, the
current calendar month) and ``GET /alpha/usage/summary`` answer the docs/protocol.md §9 bodies.  The key
must come as ``Authorization: Bearer`` (strict mode: a violation otherwise); a bad key gets 401
with the CLI error body ``{"success": false, "error": {"code", "status", "message"}}``.
Toggles: ``fake.credits[key] = {...}`` replaces the credits body of that key;
``fake.billing_status = 500`` (any non-200) makes the four routes answer that status with a CLI
error body (after the key check).

Provider API (docs/protocol.md §11)
-----------------------------------
``GET /provider/v1/models`` answers ``{"object": "list", "data": PROVIDER_MODELS}`` without auth
(``PROVIDER_MODELS`` holds ``NEW_PROVIDER_MODEL``, a model the gateway's shipped catalog does not
know, so discovery can be tested); ``fake.models_status = 503`` makes it fail with an OpenAI
error envelope; ``fake.models_calls`` counts the calls.

``POST /provider/v1/chat/completions`` (OpenAI Chat Completions) and ``POST /provider/v1/messages``
(Anthropic Messages) behave as the real API:

* auth: ``Authorization: Bearer <key>``, and on ``/messages`` also ``x-api-key: <key>``; a bad
  key gets 401, a Go-plan key ``403 upgrade_required`` (``UPGRADE_REQUIRED_MESSAGE``), each in the
  route's error envelope: ``{"error": {"message", "type", "code", "param": null}}`` on chat,
  ``{"type": "error", "error": {"type", "message"}}`` on messages (types by status in
  ``provider_error_type``);
* routing: a ``claude*`` model on chat, or any other model on messages, gets 400
  ``invalid_request_error`` naming the right endpoint, and is a violation;
* strict mode checks each request (``validate_provider_headers``, ``validate_chat_body``,
  ``validate_messages_body``: the OpenAI / Anthropic schemas as the real API enforces them, tool
  call / result pairing, thinking budget, no CLI headers) and records problems in
  ``violations``; the scenario is played anyway, as on ``/alpha/generate``;
* the scenario comes from the same ``[[name:arg]]`` marker, found in the last user message
  (chat: its string or text parts; messages: its text blocks -- a user message holding only
  ``tool_result`` blocks is skipped, because on the CLI route it is a ``tool`` message, so one
  conversation plays the same scenario on every route).  The ``SCENARIOS`` plan is translated
  step by step into the route's SSE (``text/event-stream``, chunked, split like the NDJSON so
  SSE lines and UTF-8 characters are cut -- ``sse_chunk_size`` pieces, 32 bytes by default,
  and every multi-byte character cut after its first byte; ``fast`` sends one chunk per step;
  sleeps, cuts, disconnects and first bytes as on ``/alpha/generate``):

  - chat: ``chat.completion.chunk`` lines, ``role`` in the first delta, ``content`` and
    ``reasoning_content`` deltas, tool calls as ``delta.tool_calls`` (id and name first, then
    the arguments in pieces), a ``finish_reason`` chunk (stop, length, tool_calls,
    content_filter; ``other`` is ``length`` when the raw reason is a token limit, else
    ``stop``; ``abort`` is ``stop``), a usage chunk (``choices: []``, prompt / completion /
    total tokens, ``prompt_tokens_details.cached_tokens`` and ``cache_write_tokens``,
    ``completion_tokens_details.reasoning_tokens``: the ``USAGE`` numbers), then ``[DONE]``;
  - messages: ``message_start`` (usage with ``input_tokens`` net of cache reads and writes,
    the cache numbers, ``output_tokens: 1``), ``ping``, text / ``thinking`` (closed by a
    ``signature_delta``) / ``tool_use`` (``input_json_delta`` pieces) blocks indexed by
    position, ``message_delta`` (``stop_reason`` end_turn, max_tokens, tool_use, refusal;
    ``usage.output_tokens``) and ``message_stop``;
  - an in-band ``error`` step, or a ``finish`` whose reason is ``error`` (or whose raw reason is
    a network error), becomes ``data: {"error": {...}}`` (chat, with the status in
    ``error.status``) or ``event: error`` (messages) and ends the stream; a plan without
    ``finish`` ends with neither ``finish_reason`` / ``[DONE]`` nor ``message_stop``; steps with
    no SSE equivalent are dropped, garbage lines become SSE comments, events after the end are
    dropped; ``pause_turn`` plays both parts as one answer with a normal stop (its ``USAGE``
    still holds); ``image`` counts ``image_url`` parts / ``image`` blocks;
  - ``HTTP_ERRORS`` scenarios answer the same status in the route's envelope, the chat
    ``code`` being the CLI code lowercased (``model_not_in_plan``...), the message kept;
    ``http_502_html`` stays HTML.

``usage_from_request`` applies to ``/alpha/generate`` only.

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
# Protocol constants (docs/protocol.md §3 and §4)
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

#: docs/protocol.md §4.1 ``config`` keys and their JSON types.
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

#: Exact key set of every message part, per role (docs/protocol.md §4.3).
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
# Keys, plans, account routes and the Provider API (docs/protocol.md §9 and §11)
# ----------------------------------------------------------------------------------------------

WHOAMI_PATH = "/alpha/whoami"
CREDITS_PATH = "/alpha/billing/credits"
SUBSCRIPTIONS_PATH = "/alpha/billing/subscriptions"
USAGE_SUMMARY_PATH = "/alpha/usage/summary"
ACCOUNT_PATHS = (WHOAMI_PATH, CREDITS_PATH, SUBSCRIPTIONS_PATH, USAGE_SUMMARY_PATH)
PROVIDER_PREFIX = "/provider/v1"
PROVIDER_MODELS_PATH = PROVIDER_PREFIX + "/models"
CHAT_PATH = PROVIDER_PREFIX + "/chat/completions"
MESSAGES_PATH = PROVIDER_PREFIX + "/messages"

#: Upstream keys with a known plan (any other ``user_...`` key is ``DEFAULT_PLAN``).
GO_KEY = "user_go_key_0123456789"
PRO_KEY = "user_pro_key_0123456789"
MAX_KEY = "user_max_key_0123456789"
DEFAULT_PLANS = {GO_KEY: "individual-go", MAX_KEY: "individual-max"}
DEFAULT_PLAN = "individual-pro"
#: Plans the Provider API refuses with 403 upgrade_required (docs/protocol.md §11.1: "every plan except Go").
NO_PROVIDER_PLANS = frozenset({"individual-go"})
UPGRADE_REQUIRED_MESSAGE = ("upgrade_required: the Go plan does not include API access; "
                            "upgrade to Pro to use the Provider API")

#: A model of the Provider API's list that the gateway's shipped catalog does not know.
NEW_PROVIDER_MODEL = "newlab/nova-2"
#: ``GET /provider/v1/models`` ``data`` (docs/protocol.md §11.3).
PROVIDER_MODELS = [
    {"id": "deepseek/deepseek-v4-flash", "name": "DeepSeek V4 Flash", "context_length": 1000000,
     "max_output_tokens": 384000, "supported_endpoints": ["/v1/chat/completions", "/v1/responses"]},
    {"id": "claude-sonnet-5", "name": "Claude Sonnet 5", "context_length": 1000000,
     "supported_endpoints": ["/v1/messages"]},
    {"id": "gpt-5.4", "name": "GPT-5.4", "context_length": 400000, "max_output_tokens": 128000,
     "supported_endpoints": ["/v1/chat/completions", "/v1/responses"]},
    {"id": NEW_PROVIDER_MODEL, "name": "Nova 2", "context_length": 500000, "max_output_tokens": 65536,
     "supported_endpoints": ["/v1/chat/completions", "/v1/responses"]},
]

#: Headers only the CLI sends: the official API is not the CLI, a gateway must not send them there.
CLI_ONLY_HEADERS = ("x-command-code-version", "x-cli-environment", "x-session-id", "x-project-slug",
                    "x-taste-learning")

#: Top-level keys of a Chat Completions body the gateway may send.
CHAT_KEYS = frozenset({"model", "messages", "stream", "stream_options", "max_tokens",
                       "max_completion_tokens", "temperature", "top_p", "tools", "tool_choice",
                       "reasoning_effort", "stop", "user"})
CHAT_MESSAGE_KEYS = {
    "system": frozenset({"role", "content", "name"}),
    "user": frozenset({"role", "content", "name"}),
    "assistant": frozenset({"role", "content", "reasoning_content", "tool_calls", "name"}),
    "tool": frozenset({"role", "content", "tool_call_id"}),
}
#: Top-level keys of a Messages body the gateway may send.
MESSAGES_KEYS = frozenset({"model", "max_tokens", "messages", "system", "tools", "tool_choice",
                           "thinking", "temperature", "top_p", "top_k", "stop_sequences", "stream",
                           "metadata"})
MIN_THINKING_BUDGET = 1024
MAX_CACHE_BREAKPOINTS = 4               # Anthropic: "A maximum of 4 blocks with cache_control"
IMAGE_MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
TOOL_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


# ----------------------------------------------------------------------------------------------
# Request validation (pure functions, usable without the server)
# ----------------------------------------------------------------------------------------------

def validate_headers(headers, body=None) -> list[str]:
    """Check the headers of a ``POST /alpha/generate`` request against docs/protocol.md §3.1.

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
    """Check a parsed ``POST /alpha/generate`` body against docs/protocol.md §4 (envelope, params, messages).

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
    """Check ``params.messages`` against the docs/protocol.md §4.3 part shapes and invariants.

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
    """A complete AI SDK v6 ``totalUsage`` (docs/protocol.md §6.3); ``inputTokens`` includes cache reads and writes."""
    return {
        "inputTokens": inp,
        "inputTokenDetails": {"noCacheTokens": inp - cache_read - cache_write,
                              "cacheReadTokens": cache_read, "cacheWriteTokens": cache_write},
        "outputTokens": out,
        "outputTokenDetails": {"textTokens": out - reasoning, "reasoningTokens": reasoning},
        "totalTokens": inp + out,
    }


# Transcript usages kept byte-for-byte as in docs/protocol.md §6.4 (some fields missing on purpose: a gateway must
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
    "call": full_usage(3300, 0, 0, 17),
    "call_answer": full_usage(3400, 3000, 0, 9),
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
    """docs/protocol.md §6.4 transcript A: "Hello" + " world"."""
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
    """docs/protocol.md §6.4 transcript C (reasoning-end arrives after text-start)."""
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
    """docs/protocol.md §6.4 transcript B: read_file {"file_path": "a.txt"}, finish tool-calls."""
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
    """docs/protocol.md §6.4 transcript E (provider-executed web_search; must not surface as a client tool call)."""
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
    """Text "cached" then docs/protocol.md §6.4 transcript F (provider-metadata with 1h cache writes, cacheWriteTokens 800)."""
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
    violation (the CLI re-posts the identical request).  The Provider API has no pause_turn for
    the gateway to resume: there both parts come as one answer with a normal stop, reporting the
    two requests' usage summed, so ``USAGE["pause_turn"]`` holds on every route.
    """
    if getattr(ctx, "route", "generate") != "generate":
        one, two = _TOTAL_USAGE["pause_turn_1"], _TOTAL_USAGE["pause_turn_2"]
        n1, n2 = _normalise(one), _normalise(two)
        usage = full_usage(n1["input"] + n2["input"], n1["cache_read"] + n2["cache_read"],
                           n1["cache_write"] + n2["cache_write"], n1["output"] + n2["output"])
        return Plan(_text_answer(["Part one. ", "Part two."], usage))
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
    """200 then an in-band ``error`` as the first decisive line (docs/protocol.md §6.4 D); variants by arg."""
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


def tool_results_after_last_call(body, route: str = "generate") -> list[str] | None:
    """The text of the tool results that follow the last assistant message, in order; None when
    no assistant message precedes them (the conversation has not called a tool yet).

    One reading per wire: ``tool`` messages with ``tool-result`` parts (``/alpha/generate``),
    ``tool`` messages (Provider chat), ``tool_result`` blocks in user messages (Provider messages).
    """
    messages = (body.get("params") or {}).get("messages") if route == "generate" else body.get("messages")
    if not isinstance(messages, list):
        return None
    last = max((i for i, m in enumerate(messages) if isinstance(m, dict) and m.get("role") == "assistant"),
               default=None)
    if last is None:
        return None
    out = []

    def text_of(content) -> str:
        if isinstance(content, str):
            return content
        if isinstance(content, dict) and isinstance(content.get("value"), str):       # CLI output
            return content["value"]
        if isinstance(content, list):
            return "\n".join(text_of(c.get("text", c.get("output"))) if isinstance(c, dict) else ""
                             for c in content)
        return ""

    for msg in messages[last + 1:]:
        role, content = msg.get("role"), msg.get("content")
        if route == "generate" and role == "tool" and isinstance(content, list):
            out += [text_of(p.get("output")) for p in content if isinstance(p, dict) and p.get("type") == "tool-result"]
        elif route == "chat" and role == "tool":
            out.append(text_of(content))
        elif route == "messages" and role == "user" and isinstance(content, list):
            out += [text_of(b.get("content")) for b in content if isinstance(b, dict) and b.get("type") == "tool_result"]
    return out


CALL_ANSWER_PREFIX = "The tool said: "


def _sc_call(ctx):
    """A client-run tool round trip: ``[[call:NAME]]`` or ``[[call:NAME={json input}]]``.

    While the conversation has no tool result after its last assistant turn, the model calls
    tool NAME (id ``call_rt``) with that input and finishes with tool-calls; once the client has
    sent the result back, it answers ``CALL_ANSWER_PREFIX`` + the results' text, so a real agent
    (Claude Code, an SDK tool runner) ends its loop after exactly one call.
    """
    name, _, raw = (ctx.arg or "").partition("=")
    if not name:
        raise ScenarioError("call needs a tool name: [[call:NAME]] or [[call:NAME={json}]]")
    try:
        tool_input = json.loads(raw) if raw else {}
    except ValueError:
        raise ScenarioError(f"call input {raw!r} is not JSON") from None
    results = tool_results_after_last_call(ctx.body, getattr(ctx, "route", "generate"))
    if results:
        return Plan(_text_answer([CALL_ANSWER_PREFIX, " | ".join(results)], _TOTAL_USAGE["call_answer"]))
    args = json.dumps(tool_input)
    return Plan([
        {"type": "start"},
        {"type": "tool-input-start", "id": "call_rt", "toolName": name},
        {"type": "tool-input-delta", "id": "call_rt", "delta": args[:len(args) // 2]},
        {"type": "tool-input-delta", "id": "call_rt", "delta": args[len(args) // 2:]},
        {"type": "tool-input-end", "id": "call_rt"},
        {"type": "tool-call", "toolCallId": "call_rt", "toolName": name, "input": tool_input},
        _finish(_TOTAL_USAGE["call"], "tool-calls", "tool_calls"),
    ])


def _sc_image(ctx):
    """Reports how many images the request's messages contained, e.g. "images=2".

    ``ctx.image_count`` is counted by the route (``image`` parts on ``/alpha/generate``,
    ``image_url`` parts or ``image`` blocks on the Provider API).
    """
    count = getattr(ctx, "image_count", None)
    if count is None:
        count = cli_image_count(ctx.params)
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
    "image": _sc_image, "call": _sc_call, **HTTP_ERRORS,
}

_REASONS = {402: "Payment Required", 429: "Too Many Requests", 529: "Site Overloaded"}


# ----------------------------------------------------------------------------------------------
# Provider API: request validation (pure functions, usable without the server)
# ----------------------------------------------------------------------------------------------

def is_claude_model(model) -> bool:
    """Claude ids are served only by ``/messages``; every other id only by ``/chat/completions``."""
    return isinstance(model, str) and model.startswith("claude")


def wrong_endpoint_message(route: str, model: str) -> str:
    """The 400 message for a model sent to the other endpoint: it names the right one (docs/protocol.md §11.1)."""
    if route == "chat":
        return (f"model {model!r} is a Claude model: it is served by /v1/messages (Anthropic "
                "Messages format), not /v1/chat/completions")
    return (f"model {model!r} is not a Claude model: it is served by /v1/chat/completions (OpenAI "
            "format), not /v1/messages")


def validate_provider_headers(headers) -> list[str]:
    """Check the headers of a Provider API call: none of the CLI's own headers (docs/protocol.md §11.1).

    ``headers`` is a dict or a list of ``(name, value)`` pairs.  Only the CLI-only headers are
    checked: a gateway talking to the documented API must look like an API client, not the CLI.
    """
    pairs = list(headers.items()) if isinstance(headers, dict) else list(headers)
    names = {name.lower() for name, _ in pairs}
    return [f"header {name!r} is a CLI header: the Provider API is not the CLI, do not send it"
            for name in CLI_ONLY_HEADERS if name in names]


def _is_int(x) -> bool:
    return type(x) is int


def _check_keys(obj: dict, allowed, where: str) -> list[str]:
    return [f"{where}: unexpected key {k!r}" for k in sorted(set(obj) - set(allowed))]


def _check_number(body: dict, key: str, lo, hi, where: str) -> list[str]:
    if key in body and (not _is_number(body[key]) or not lo <= body[key] <= hi):
        return [f"{where}.{key} must be a number in {lo}..{hi}, got {body[key]!r}"]
    return []


def _check_positive_int(body: dict, key: str, where: str) -> list[str]:
    if key in body and (not _is_int(body[key]) or body[key] < 1):
        return [f"{where}.{key} must be a positive integer, got {body[key]!r}"]
    return []


def validate_chat_body(body) -> list[str]:
    """Check a ``/provider/v1/chat/completions`` body against the Chat Completions schema.

    These are the rules the real API enforces (or that its OpenAI schema implies) and that a
    gateway encoding canonical requests can break: known top-level keys only; a non-Claude
    ``model``; ``stream: true``; token limits, temperature, effort in range; ``tools`` /
    ``tool_choice`` shapes; and the message rules of ``_validate_chat_messages``.
    Returns one message per problem; an empty list means the body is valid.
    """
    if not isinstance(body, dict):
        return [f"chat: body must be a JSON object, got {type(body).__name__}"]
    out = _check_keys(body, CHAT_KEYS, "chat")
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        out.append(f"chat.model must be a non-empty string, got {model!r}")
    elif is_claude_model(model):
        out.append(f"chat: wrong endpoint: {wrong_endpoint_message('chat', model)}")
    if body.get("stream") is not True:
        out.append(f"chat.stream must be true (the gateway always streams), got {body.get('stream')!r}")
    if "stream_options" in body:
        so = body["stream_options"]
        if not isinstance(so, dict) or set(so) - {"include_usage"} or \
                not isinstance(so.get("include_usage", True), bool):
            out.append(f"chat.stream_options must be {{include_usage: bool}}, got {so!r}")
    for key in ("max_tokens", "max_completion_tokens"):
        out += _check_positive_int(body, key, "chat")
    out += _check_number(body, "temperature", 0, 2, "chat")
    out += _check_number(body, "top_p", 0, 1, "chat")
    if "reasoning_effort" in body and body["reasoning_effort"] not in REASONING_EFFORTS:
        out.append(f"chat.reasoning_effort must be one of {REASONING_EFFORTS}, got {body['reasoning_effort']!r}")
    if "stop" in body:
        stop = body["stop"]
        if not (isinstance(stop, str) or (isinstance(stop, list) and all(isinstance(x, str) for x in stop))):
            out.append(f"chat.stop must be a string or a list of strings, got {stop!r}")
    if "user" in body and not isinstance(body["user"], str):
        out.append("chat.user must be a string")
    names = []
    if "tools" in body:
        tool_problems, names = _validate_chat_tools(body["tools"])
        out += tool_problems
    if "tool_choice" in body:
        out += _validate_chat_tool_choice(body["tool_choice"], names, "tools" in body)
    out += _validate_chat_messages(body.get("messages"))
    return out


def _validate_chat_tools(tools) -> tuple[list[str], list[str]]:
    if not isinstance(tools, list):
        return [f"chat.tools must be a list, got {type(tools).__name__}"], []
    out, names = [], []
    for i, t in enumerate(tools):
        where = f"chat.tools[{i}]"
        if not isinstance(t, dict):
            out.append(f"{where} must be an object")
            continue
        out += _check_keys(t, ("type", "function"), where)
        if t.get("type") != "function":
            out.append(f"{where}.type must be 'function', got {t.get('type')!r}")
        fn = t.get("function")
        if not isinstance(fn, dict):
            out.append(f"{where}.function must be an object {{name, description?, parameters}}")
            continue
        out += _check_keys(fn, ("name", "description", "parameters", "strict"), f"{where}.function")
        name = fn.get("name")
        if not isinstance(name, str) or not TOOL_NAME_RE.match(name):
            out.append(f"{where}.function.name must match {TOOL_NAME_RE.pattern}, got {name!r}")
        elif name in names:
            out.append(f"{where}: duplicate tool name {name!r}")
        names.append(name)
        if "description" in fn and not isinstance(fn["description"], str):
            out.append(f"{where}.function.description must be a string")
        if not isinstance(fn.get("parameters"), dict):
            out.append(f"{where}.function.parameters must be an object (JSON Schema)")
        if "strict" in fn and not isinstance(fn["strict"], bool):
            out.append(f"{where}.function.strict must be a boolean")
    return out, names


def _validate_chat_tool_choice(choice, names, has_tools) -> list[str]:
    if choice in ("auto", "none", "required"):
        if choice != "none" and not has_tools:
            return [f"chat.tool_choice {choice!r} without tools (the API rejects it)"]
        return []
    if isinstance(choice, dict) and choice.get("type") == "function" and set(choice) == {"type", "function"} \
            and isinstance(choice["function"], dict) and set(choice["function"]) == {"name"}:
        if choice["function"]["name"] not in names:
            return [f"chat.tool_choice names {choice['function']['name']!r}, which is not in tools"]
        return []
    return [f"chat.tool_choice must be auto|none|required or {{type: function, function: {{name}}}}, got {choice!r}"]


def _chat_text_parts(content, where) -> list[str]:
    """Problems of a content list that may hold only text parts (system, tool)."""
    if not isinstance(content, list) or not content:
        return [f"{where} must be a non-empty string or a non-empty list of text parts"]
    out = []
    for j, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") != "text" or set(part) != {"type", "text"} \
                or not isinstance(part.get("text"), str):
            out.append(f"{where}[{j}] must be {{type: text, text: <string>}}, got {part!r}")
    return out


def _chat_user_content(content, where) -> list[str]:
    if isinstance(content, str):
        return [] if content.strip() else [f"{where}: empty user message"]
    if not isinstance(content, list) or not content:
        return [f"{where} must be a string or a non-empty list of text / image_url parts"]
    out = []
    for j, part in enumerate(content):
        pw = f"{where}[{j}]"
        ptype = part.get("type") if isinstance(part, dict) else None
        if ptype == "text":
            out += _check_keys(part, ("type", "text"), pw)
            if not isinstance(part.get("text"), str):
                out.append(f"{pw} (text).text must be a string")
        elif ptype == "image_url":
            out += _check_keys(part, ("type", "image_url"), pw)
            image = part.get("image_url")
            if not isinstance(image, dict) or set(image) - {"url", "detail"}:
                out.append(f"{pw} (image_url).image_url must be {{url, detail?}}, got {image!r}")
            elif not isinstance(image.get("url"), str) or not DATA_URL_RE.match(image["url"]):
                out.append(f"{pw} (image_url).image_url.url must be a 'data:<mime>;base64,<data>' URL")
        else:
            out.append(f"{pw}: part type {ptype!r} not allowed (text and image_url only; "
                       "the Provider API rejects audio and files)")
    return out


def _chat_tool_calls(calls, where) -> tuple[list[str], list[str]]:
    """(problems, ids) of an assistant message's ``tool_calls``."""
    if not isinstance(calls, list) or not calls:
        return [f"{where}.tool_calls must be a non-empty list"], []
    out, ids = [], []
    for k, call in enumerate(calls):
        cw = f"{where}.tool_calls[{k}]"
        if not isinstance(call, dict):
            out.append(f"{cw} must be an object")
            continue
        out += _check_keys(call, ("id", "type", "function"), cw)
        cid = call.get("id")
        if not isinstance(cid, str) or not cid:
            out.append(f"{cw}.id must be a non-empty string")
        elif cid in ids:
            out.append(f"{cw}: duplicate tool call id {cid!r}")
        else:
            ids.append(cid)
        if call.get("type") != "function":
            out.append(f"{cw}.type must be 'function', got {call.get('type')!r}")
        fn = call.get("function")
        if not isinstance(fn, dict) or set(fn) != {"name", "arguments"}:
            out.append(f"{cw}.function must be {{name, arguments}}, got {fn!r}")
            continue
        if not isinstance(fn["name"], str) or not fn["name"]:
            out.append(f"{cw}.function.name must be a non-empty string")
        args = fn["arguments"]
        try:
            parsed = json.loads(args) if isinstance(args, str) else None
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            out.append(f"{cw}.function.arguments must be a JSON string of an object, got {args!r}")
    return out, ids


def _validate_chat_messages(messages) -> list[str]:
    """Chat messages: roles, content shapes, and tool call / tool message pairing.

    Every assistant message with ``tool_calls`` must be followed at once by one ``tool``
    message per call id (any order), before any other role; a ``tool`` message anywhere else,
    or answering an unknown or already answered id, is a problem.
    """
    if not isinstance(messages, list) or not messages:
        return ["chat.messages must be a non-empty list"]
    out: list[str] = []
    open_ids: list[str] | None = None       # None: not right after an assistant with tool_calls
    for i, msg in enumerate(messages):
        where = f"chat.messages[{i}]"
        if not isinstance(msg, dict):
            out.append(f"{where} must be an object")
            continue
        role = msg.get("role")
        if role not in CHAT_MESSAGE_KEYS:
            out.append(f"{where}.role must be system|user|assistant|tool, got {role!r}")
            continue
        out += _check_keys(msg, CHAT_MESSAGE_KEYS[role], where)
        if role != "tool" and open_ids:
            out.append(f"{where} ({role}): tool call(s) {open_ids} not answered by tool messages "
                       "right after the assistant message that made them")
        if role != "tool":
            open_ids = None
        content = msg.get("content")
        if role == "system":
            if not (isinstance(content, str) and content.strip()):
                out += _chat_text_parts(content, f"{where}.content")
        elif role == "user":
            out += _chat_user_content(content, f"{where}.content")
        elif role == "assistant":
            if content is not None and not isinstance(content, str):
                out.append(f"{where}.content must be a string or null, got {type(content).__name__}")
            if "reasoning_content" in msg and not isinstance(msg["reasoning_content"], str):
                out.append(f"{where}.reasoning_content must be a string")
            if "tool_calls" in msg:
                problems, ids = _chat_tool_calls(msg["tool_calls"], where)
                out += problems
                open_ids = ids
            elif not content:
                out.append(f"{where}: assistant message with neither content nor tool_calls")
        else:   # tool
            cid = msg.get("tool_call_id")
            if not isinstance(cid, str) or not cid:
                out.append(f"{where}.tool_call_id must be a non-empty string")
            elif open_ids is None:
                out.append(f"{where}: tool message {cid!r} not right after an assistant message with tool_calls")
            elif cid not in open_ids:
                out.append(f"{where}: tool message answers {cid!r}, which is not an open call "
                           "of the preceding assistant message (unknown or answered twice)")
            else:
                open_ids.remove(cid)
            if not isinstance(content, str):
                out += _chat_text_parts(content, f"{where}.content")
    if open_ids:
        out.append(f"tool call(s) {open_ids} of the last assistant message are never answered")
    return out


def _cache_control(block, where) -> list[str]:
    if "cache_control" not in block:
        return []
    cc = block["cache_control"]
    if not isinstance(cc, dict) or cc.get("type") != "ephemeral" or set(cc) - {"type", "ttl"} \
            or cc.get("ttl", "5m") not in ("5m", "1h"):
        return [f"{where}.cache_control must be {{type: ephemeral, ttl?: 5m|1h}}, got {cc!r}"]
    return []


def _anthropic_text(block, where) -> list[str]:
    out = _check_keys(block, ("type", "text", "cache_control"), where) + _cache_control(block, where)
    text = block.get("text")
    if not isinstance(text, str):
        out.append(f"{where} (text).text must be a string")
    elif not text.strip():
        out.append(f"{where}: empty text block (the API rejects it: text must be non-empty)")
    return out


def _anthropic_image(block, where) -> list[str]:
    out = _check_keys(block, ("type", "source", "cache_control"), where) + _cache_control(block, where)
    src = block.get("source")
    if not isinstance(src, dict) or set(src) != {"type", "media_type", "data"} or src.get("type") != "base64":
        out.append(f"{where} (image).source must be {{type: base64, media_type, data}}, got {src!r}")
    elif src["media_type"] not in IMAGE_MEDIA_TYPES or not isinstance(src["data"], str) or not src["data"]:
        out.append(f"{where} (image): media_type must be one of {IMAGE_MEDIA_TYPES} and data non-empty base64")
    elif src["data"].startswith("data:"):
        out.append(f"{where} (image).source.data must be bare base64, not a data: URL")
    return out


def _anthropic_user_block(block, where) -> list[str]:
    btype = block.get("type")
    if btype == "text":
        return _anthropic_text(block, where)
    if btype == "image":
        return _anthropic_image(block, where)
    if btype == "tool_result":
        out = _check_keys(block, ("type", "tool_use_id", "content", "is_error", "cache_control"), where)
        out += _cache_control(block, where)
        if not isinstance(block.get("tool_use_id"), str) or not block["tool_use_id"]:
            out.append(f"{where} (tool_result).tool_use_id must be a non-empty string")
        if "is_error" in block and not isinstance(block["is_error"], bool):
            out.append(f"{where} (tool_result).is_error must be a boolean")
        content = block.get("content")
        if isinstance(content, list):
            for k, inner in enumerate(content):
                iw = f"{where}.content[{k}]"
                itype = inner.get("type") if isinstance(inner, dict) else None
                if itype == "text":
                    out += _anthropic_text(inner, iw)
                elif itype == "image":
                    out += _anthropic_image(inner, iw)
                else:
                    out.append(f"{iw}: tool_result content blocks must be text or image, got {itype!r}")
        elif "content" in block and not isinstance(content, str):
            out.append(f"{where} (tool_result).content must be a string or a list of text / image blocks")
        return out
    return [f"{where}: block type {btype!r} not allowed in a user message (text, image, tool_result)"]


def _anthropic_assistant_block(block, where) -> list[str]:
    btype = block.get("type")
    if btype == "text":
        return _anthropic_text(block, where)
    if btype == "thinking":
        out = _check_keys(block, ("type", "thinking", "signature"), where)
        if not isinstance(block.get("thinking"), str):
            out.append(f"{where} (thinking).thinking must be a string")
        if not isinstance(block.get("signature"), str) or not block["signature"]:
            out.append(f"{where} (thinking) needs its non-empty signature (unsigned thinking cannot go back)")
        return out
    if btype == "redacted_thinking":
        out = _check_keys(block, ("type", "data"), where)
        if not isinstance(block.get("data"), str) or not block["data"]:
            out.append(f"{where} (redacted_thinking).data must be a non-empty string")
        return out
    if btype == "tool_use":
        out = _check_keys(block, ("type", "id", "name", "input", "cache_control"), where)
        out += _cache_control(block, where)
        for k in ("id", "name"):
            if not isinstance(block.get(k), str) or not block[k]:
                out.append(f"{where} (tool_use).{k} must be a non-empty string")
        if not isinstance(block.get("input"), dict):
            out.append(f"{where} (tool_use).input must be an object, got {block.get('input')!r}")
        return out
    return [f"{where}: block type {btype!r} not allowed in an assistant message "
            "(text, thinking, redacted_thinking, tool_use)"]


def validate_messages_body(body) -> list[str]:
    """Check a ``/provider/v1/messages`` body against the Anthropic Messages schema.

    Known top-level keys only; a Claude ``model``; ``max_tokens`` required; ``stream: true``;
    ``system``, ``tools``, ``tool_choice`` shapes; ``thinking`` enabled (budget >= 1024 and
    below ``max_tokens``, temperature absent or 1) or disabled; at most 4 ``cache_control``
    breakpoints; and the message rules of ``_validate_anthropic_messages``.
    Returns one message per problem; an empty list means the body is valid.
    """
    if not isinstance(body, dict):
        return [f"messages: body must be a JSON object, got {type(body).__name__}"]
    out = _check_keys(body, MESSAGES_KEYS, "messages")
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        out.append(f"messages.model must be a non-empty string, got {model!r}")
    elif not is_claude_model(model):
        out.append(f"messages: wrong endpoint: {wrong_endpoint_message('messages', model)}")
    max_tokens = body.get("max_tokens")
    if not _is_int(max_tokens) or max_tokens < 1:
        out.append(f"messages.max_tokens is required, a positive integer, got {max_tokens!r}")
    if body.get("stream") is not True:
        out.append(f"messages.stream must be true (the gateway always streams), got {body.get('stream')!r}")
    out += _check_number(body, "temperature", 0, 1, "messages")
    out += _check_number(body, "top_p", 0, 1, "messages")
    out += _check_positive_int(body, "top_k", "messages")
    if "stop_sequences" in body and not (isinstance(body["stop_sequences"], list)
                                         and all(isinstance(x, str) for x in body["stop_sequences"])):
        out.append("messages.stop_sequences must be a list of strings")
    if "metadata" in body and (not isinstance(body["metadata"], dict) or set(body["metadata"]) - {"user_id"}):
        out.append(f"messages.metadata must be {{user_id?}}, got {body['metadata']!r}")
    if "thinking" in body:
        out += _validate_thinking(body["thinking"], max_tokens, body)
    if "system" in body:
        out += _validate_anthropic_system(body["system"])
    names = []
    if "tools" in body:
        tool_problems, names = _validate_anthropic_tools(body["tools"])
        out += tool_problems
    if "tool_choice" in body:
        out += _validate_anthropic_tool_choice(body["tool_choice"], names, "tools" in body)
    out += _validate_anthropic_messages(body.get("messages"))
    breakpoints = _count_cache_control(body.get("system")) + _count_cache_control(body.get("tools")) \
        + _count_cache_control(body.get("messages"))
    if breakpoints > MAX_CACHE_BREAKPOINTS:
        out.append(f"messages: {breakpoints} blocks with cache_control (the API allows at most {MAX_CACHE_BREAKPOINTS})")
    return out


def _count_cache_control(value) -> int:
    if isinstance(value, list):
        return sum(_count_cache_control(v) for v in value)
    if isinstance(value, dict):
        return ("cache_control" in value) + sum(_count_cache_control(v) for k, v in value.items()
                                                 if k in ("content",))
    return 0


def _validate_thinking(thinking, max_tokens, body) -> list[str]:
    if thinking == {"type": "disabled"}:
        return []
    if not isinstance(thinking, dict) or thinking.get("type") != "enabled" or set(thinking) != {"type", "budget_tokens"}:
        return [f"messages.thinking must be {{type: enabled, budget_tokens}} or {{type: disabled}}, got {thinking!r}"]
    out = []
    budget = thinking["budget_tokens"]
    if not _is_int(budget) or budget < MIN_THINKING_BUDGET:
        out.append(f"messages.thinking.budget_tokens must be an integer >= {MIN_THINKING_BUDGET}, got {budget!r}")
    elif _is_int(max_tokens) and budget >= max_tokens:
        out.append(f"messages.thinking.budget_tokens ({budget}) must be below max_tokens ({max_tokens})")
    if "temperature" in body and body["temperature"] != 1:
        out.append(f"messages.temperature must be absent or 1 when thinking is enabled, got {body['temperature']!r}")
    return out


def _validate_anthropic_system(system) -> list[str]:
    if isinstance(system, str):
        return []
    if not isinstance(system, list):
        return [f"messages.system must be a string or a list of text blocks, got {type(system).__name__}"]
    out = []
    for i, block in enumerate(system):
        where = f"messages.system[{i}]"
        if not isinstance(block, dict) or block.get("type") != "text":
            out.append(f"{where} must be {{type: text, text, cache_control?}}, got {block!r}")
        else:
            out += _anthropic_text(block, where)
    return out


def _validate_anthropic_tools(tools) -> tuple[list[str], list[str]]:
    if not isinstance(tools, list):
        return [f"messages.tools must be a list, got {type(tools).__name__}"], []
    out, names = [], []
    for i, t in enumerate(tools):
        where = f"messages.tools[{i}]"
        if not isinstance(t, dict):
            out.append(f"{where} must be an object")
            continue
        out += _check_keys(t, ("name", "description", "input_schema", "cache_control"), where)
        out += _cache_control(t, where)
        name = t.get("name")
        if not isinstance(name, str) or not TOOL_NAME_RE.match(name):
            out.append(f"{where}.name must match {TOOL_NAME_RE.pattern}, got {name!r}")
        elif name in names:
            out.append(f"{where}: duplicate tool name {name!r}")
        names.append(name)
        if "description" in t and not isinstance(t["description"], str):
            out.append(f"{where}.description must be a string")
        if not isinstance(t.get("input_schema"), dict):
            out.append(f"{where}.input_schema must be an object (JSON Schema)")
    return out, names


def _validate_anthropic_tool_choice(choice, names, has_tools) -> list[str]:
    kinds = ("auto", "any", "none", "tool")
    if not isinstance(choice, dict) or choice.get("type") not in kinds:
        return [f"messages.tool_choice must be {{type: auto|any|none|tool}}, got {choice!r}"]
    out = _check_keys(choice, ("type", "name", "disable_parallel_tool_use"), "messages.tool_choice")
    if choice["type"] == "tool" and choice.get("name") not in names:
        out.append(f"messages.tool_choice names {choice.get('name')!r}, which is not in tools")
    if choice["type"] != "tool" and "name" in choice:
        out.append("messages.tool_choice.name is only for type tool")
    if choice["type"] != "none" and not has_tools:
        out.append(f"messages.tool_choice {choice['type']!r} without tools (the API rejects it)")
    return out


def _validate_anthropic_messages(messages) -> list[str]:
    """Messages: first role user, strict user/assistant alternation, block shapes, tool pairing.

    Every ``tool_use`` of an assistant turn must be answered by a ``tool_result`` in the very
    next user message, whose ``tool_result`` blocks come before any other block; a result for
    an id that is not an open call of the previous turn is a problem.
    """
    if not isinstance(messages, list) or not messages:
        return ["messages.messages must be a non-empty list"]
    out: list[str] = []
    pending: list[str] = []             # tool_use ids of the previous assistant turn
    prev_role = None
    for i, msg in enumerate(messages):
        where = f"messages.messages[{i}]"
        if not isinstance(msg, dict):
            out.append(f"{where} must be an object")
            continue
        out += _check_keys(msg, ("role", "content"), where)
        role = msg.get("role")
        if role not in ("user", "assistant"):
            out.append(f"{where}.role must be user or assistant, got {role!r}")
            continue
        if prev_role is None and role != "user":
            out.append(f"{where}: the first message must be a user message")
        if role == prev_role:
            out.append(f"{where}: two consecutive {role!r} messages (roles must alternate)")
        content = msg.get("content")
        blocks: list = []
        if isinstance(content, str):
            if not content.strip():
                out.append(f"{where}: empty {role} message")
        elif isinstance(content, list) and content:
            blocks = content
        else:
            out.append(f"{where}.content must be a non-empty string or a non-empty list of blocks")
        check = _anthropic_user_block if role == "user" else _anthropic_assistant_block
        answered_pending, other_seen = list(pending), False
        new_calls: list[str] = []
        for j, block in enumerate(blocks):
            bw = f"{where}.content[{j}]"
            if not isinstance(block, dict):
                out.append(f"{bw} must be an object")
                continue
            out += check(block, bw)
            btype = block.get("type")
            if role == "user" and btype == "tool_result":
                tid = block.get("tool_use_id")
                if other_seen:
                    out.append(f"{bw}: tool_result after another block (tool_result blocks must come first)")
                if tid in answered_pending:
                    answered_pending.remove(tid)
                else:
                    out.append(f"{bw}: tool_result for {tid!r}, which is not an open tool_use of the previous "
                               "assistant message (unknown or answered twice)")
            elif role == "assistant" and btype == "tool_use":
                if block.get("id") in new_calls:
                    out.append(f"{bw}: duplicate tool_use id {block.get('id')!r}")
                new_calls.append(block.get("id"))
            else:
                other_seen = True
        if pending and (role != "user" or answered_pending):
            missing = answered_pending if role == "user" else pending
            out.append(f"{where}: tool_use id(s) {missing} of the previous assistant message not answered by a "
                       "tool_result in this message")
        pending = new_calls if role == "assistant" else []
        prev_role = role
    if pending:
        out.append(f"tool_use id(s) {pending} of the last assistant message are never answered")
    return out


# ----------------------------------------------------------------------------------------------
# Provider API: scenario selection, error envelopes, account bodies
# ----------------------------------------------------------------------------------------------

def provider_user_text(route: str, body) -> str | None:
    """Text of the last user message of a Provider API body (chat or messages), or None.

    Chat: its string content or text parts.  Messages: its text blocks; a user message made
    only of ``tool_result`` blocks is skipped (the CLI route carries it as a ``tool`` message).
    """
    messages = body.get("messages") if isinstance(body, dict) else None
    if not isinstance(messages, list):
        return None
    for msg in reversed(messages):
        if not isinstance(msg, dict) or msg.get("role") != "user":
            continue
        content = msg.get("content")
        if isinstance(content, str):
            return content
        if not isinstance(content, list):
            return ""
        blocks = [b for b in content if isinstance(b, dict)]
        if route == "messages" and blocks and all(b.get("type") == "tool_result" for b in blocks):
            continue
        return "\n".join(b["text"] for b in blocks if b.get("type") == "text" and isinstance(b.get("text"), str))
    return None


def select_provider_scenario(route: str, body, default: str = "text") -> tuple[str, str | None]:
    """``(name, arg)`` from the first marker of the last user message of a Provider API body."""
    m = MARKER_RE.search(provider_user_text(route, body) or "")
    return (m.group(1), m.group(2)) if m else (default, None)


def cli_image_count(params) -> int:
    """``image`` parts in the messages of an ``/alpha/generate`` envelope's ``params``."""
    count = 0
    for msg in (params.get("messages") or []) if isinstance(params, dict) else []:
        content = msg.get("content") if isinstance(msg, dict) else None
        if isinstance(content, list):
            count += sum(1 for p in content if isinstance(p, dict) and p.get("type") == "image")
    return count


def provider_image_count(route: str, body) -> int:
    """Images in a Provider API body: ``image_url`` parts (chat), ``image`` blocks at any depth (messages)."""
    kind = "image_url" if route == "chat" else "image"

    def count(value) -> int:
        if isinstance(value, list):
            return sum(count(v) for v in value)
        if isinstance(value, dict):
            return (value.get("type") == kind) + count(value.get("content"))
        return 0

    messages = body.get("messages") if isinstance(body, dict) else None
    return count(messages) if isinstance(messages, list) else 0


def provider_error_type(status: int, route: str) -> str:
    """The error ``type`` of a Provider API error of ``status`` (docs/protocol.md §11.4)."""
    if status == 529:
        return "overloaded_error"
    if status >= 500:
        return "server_error" if route == "chat" else "api_error"
    return {401: "authentication_error", 403: "permission_error", 404: "not_found_error",
            429: "rate_limit_error"}.get(status, "invalid_request_error")


def provider_error_body(route: str, status: int, message: str, code: str | None = None) -> dict:
    """The route's error envelope: OpenAI's on chat (and models), Anthropic's on messages."""
    etype = provider_error_type(status, route)
    if route == "messages":
        return {"type": "error", "error": {"type": etype, "message": message}}
    return {"error": {"message": message, "type": etype, "code": code or etype, "param": None}}


_CODE_PREFIX_RE = re.compile(r"^\s*([A-Z][A-Z0-9_]{2,}):")


def provider_error_code(status: int, message: str, cli_code: str | None = None) -> str:
    """A chat ``code``: the CLI code lowercased, else a ``CODE:`` message prefix, else by content."""
    if isinstance(cli_code, str) and cli_code:
        return cli_code.lower()
    m = _CODE_PREFIX_RE.match(message or "")
    if m:
        return m.group(1).lower()
    low = (message or "").lower()
    if "insufficient credits" in low:
        return "insufficient_credits"
    if "insufficient balance" in low:
        return "insufficient_balance"
    return provider_error_type(status, "chat")


_STATUS_PREFIX_RE = re.compile(r"^\s*(\d{3})\b")


def inband_error(err) -> tuple[int, str]:
    """``(status, message)`` of a CLI in-band ``error`` value (docs/protocol.md §7.2): ``statusCode``, else a
    status leading the message, else 500."""
    if isinstance(err, str):
        return 500, err
    if not isinstance(err, dict):
        return 500, json.dumps(err)
    message = err.get("message") if isinstance(err.get("message"), str) else json.dumps(err)
    status = err.get("statusCode", err.get("status"))
    if not _is_int(status):
        m = _STATUS_PREFIX_RE.match(message)
        status = int(m.group(1)) if m else 500
    return status, message


_CLI_ERROR_CODES = {400: "BAD_REQUEST", 401: "UNAUTHORIZED", 402: "PAYMENT_REQUIRED", 403: "FORBIDDEN",
                    404: "NOT_FOUND", 429: "RATE_LIMITED", 500: "INTERNAL_SERVER_ERROR",
                    502: "BAD_GATEWAY", 503: "SERVICE_UNAVAILABLE", 529: "OVERLOADED"}


def cli_error_body(status: int, message: str, code: str | None = None) -> dict:
    """The CLI routes' error body (docs/protocol.md §7.1)."""
    return {"success": False, "error": {"code": code or _CLI_ERROR_CODES.get(status, "ERROR"),
                                        "status": status, "message": message}}


def credits_body(plan: str, now: float | None = None) -> dict:
    """``GET /alpha/billing/credits`` (docs/protocol.md §9.2) for a key on ``plan``; windows reset in ~2 h / ~5 days."""
    now_ms = int((time.time() if now is None else now) * 1000)
    return {
        "credits": {"monthlyCredits": 7.42, "purchasedCredits": 0, "freeCredits": 0, "planId": plan,
                    "belowThreshold": False, "creditThreshold": 1},
        "windowLimits": {
            "limited": True,
            "exceeded": None,
            "fiveHour": {"used": 0.8, "cap": 2.0, "exceeded": False, "resetAt": now_ms + 2 * 3600 * 1000},
            "weekly": {"used": 3.1, "cap": 5.0, "exceeded": False, "resetAt": now_ms + 5 * 86400 * 1000},
        },
    }


def whoami_body(with_limits: bool) -> dict:
    """``GET /alpha/whoami`` (docs/protocol.md §9.1); ``orgLimits`` only for ``?limits=1``."""
    body = {"success": True,
            "user": {"id": "usr_123", "name": "Ada Lovelace", "email": "ada@example.com", "userName": "ada"},
            "org": None}
    if with_limits:
        body["orgLimits"] = [
            {"scope": "org", "spent": 12.5, "limit": 50, "resetInterval": "monthly",
             "resetAt": "2026-10-01T00:00:00.000Z", "exceeded": False},
            {"scope": "model", "model": "claude-sonnet-5", "modelLabel": "Claude Sonnet 5", "spent": 3,
             "limit": 10, "resetInterval": "daily", "resetAt": "2026-09-24T00:00:00.000Z", "exceeded": False},
        ]
    return body


def subscriptions_body(plan: str, now: float | None = None) -> dict:
    """``GET /alpha/billing/subscriptions`` (docs/protocol.md §9.3): ``plan``, active, the current calendar month."""
    t = time.gmtime(time.time() if now is None else now)
    year, month = (t.tm_year + 1, 1) if t.tm_mon == 12 else (t.tm_year, t.tm_mon + 1)
    return {"success": True,
            "data": {"planId": plan, "status": "active",
                     "currentPeriodStart": f"{t.tm_year:04d}-{t.tm_mon:02d}-01T00:00:00.000Z",
                     "currentPeriodEnd": f"{year:04d}-{month:02d}-01T00:00:00.000Z",
                     "cancelAtPeriodEnd": False}}


#: ``GET /alpha/usage/summary`` (docs/protocol.md §9.4).
USAGE_SUMMARY = {"totalCount": 1234, "totalCost": 4.56, "periodBasis": "billing-period",
                 "averageCost": 0.0037, "successRate": 0.99, "completedCount": 1220, "failedCount": 14,
                 "totalTokensIn": 9800000, "totalTokensOut": 310000, "totalCredits": 4.56}


# ----------------------------------------------------------------------------------------------
# Provider API: AI-SDK steps -> SSE
# ----------------------------------------------------------------------------------------------

_LIMIT_RAW_REASONS = ("max_tokens", "max_output_tokens", "length", "model_context_window_exceeded")


def _finish_kind(step) -> str:
    """A ``finish`` step as stop | length | tool-calls | content-filter | error."""
    reason, raw = step.get("finishReason"), step.get("rawFinishReason")
    if reason == "error" or (isinstance(raw, str) and "network" in raw.lower()):
        return "error"
    if reason in ("stop", "length", "tool-calls", "content-filter"):
        return reason
    return "length" if raw in _LIMIT_RAW_REASONS else "stop"


def _tool_arguments(step) -> str:
    """A ``tool-call`` step's input as a JSON string (older servers: a string, or ``args``)."""
    value = step.get("input", step.get("args"))
    if isinstance(value, str):
        return value
    return json.dumps(value if value is not None else {}, ensure_ascii=False, separators=(",", ":"))


def _pieces(text: str, n: int = 3) -> list[str]:
    """``text`` cut into up to ``n`` non-empty pieces (two at least when it has two characters)."""
    size = max(1, -(-len(text) // n))
    return [text[i:i + size] for i in range(0, len(text), size)] or [""]


def _usage_numbers(usage) -> dict:
    u = usage if isinstance(usage, dict) else {}
    ind, outd = u.get("inputTokenDetails") or {}, u.get("outputTokenDetails") or {}
    inp, out = u.get("inputTokens", 0), u.get("outputTokens", 0)
    return {"input": inp, "output": out, "total": u.get("totalTokens", inp + out),
            "cache_read": ind.get("cacheReadTokens", 0), "cache_write": ind.get("cacheWriteTokens", 0),
            "reasoning": outd.get("reasoningTokens", 0)}


def _as_event(step):
    """A garbage string step as the AI-SDK event it carries (``data:`` prefix allowed), else None."""
    text = step.strip()
    if text.startswith("data:"):
        text = text[5:].strip()
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) and "type" in value else None


class _SSE:
    """Shared part of the two translators: ``encode(step) -> str`` (SSE text, maybe empty).

    Once the stream ended (finish, abort, error) later steps are dropped, as the real API sends
    nothing after its end.  Garbage string steps carrying no event become SSE comments, which
    clients must skip.
    """

    def __init__(self, model: str):
        self.model = model
        self.ended = False

    def encode(self, step) -> str:
        if self.ended:
            return ""
        if isinstance(step, str):
            event = _as_event(step)
            if event is None:     # a stray "data: [DONE]" too: as a comment it cannot end the stream
                text = " ".join(step.split())
                return f": {text}\n\n" if text else ":\n\n"
            step = event
        if not isinstance(step, dict):
            return ""
        return self.step(step)

    def step(self, step: dict) -> str:   # pragma: no cover - overridden
        raise NotImplementedError


class _ChatSSE(_SSE):
    """AI-SDK steps as OpenAI ``chat.completion.chunk`` SSE (``data: {...}`` lines, ``[DONE]``)."""

    FINISH = {"stop": "stop", "length": "length", "tool-calls": "tool_calls", "content-filter": "content_filter"}

    def __init__(self, model: str):
        super().__init__(model)
        self.id = "chatcmpl-" + uuid.uuid4().hex[:24]
        self.created = int(time.time())
        self.role_sent = False
        self.tools = 0

    @staticmethod
    def _data(obj) -> str:
        return "data: " + json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n\n"

    def _chunk(self, delta: dict, finish_reason=None) -> str:
        if not self.role_sent:
            delta = {"role": "assistant", **delta}
            self.role_sent = True
        return self._data({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                           "model": self.model,
                           "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]})

    def _error(self, status: int, message: str) -> str:
        self.ended = True
        return self._data({"error": {"message": message, "type": provider_error_type(status, "chat"),
                                     "code": provider_error_code(status, message), "status": status}})

    def _finish(self, reason: str, usage) -> str:
        self.ended = True
        out = "" if self.role_sent else self._chunk({"content": ""})
        out += self._chunk({}, reason)
        if usage is not None:
            n = _usage_numbers(usage)
            out += self._data({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                               "model": self.model, "choices": [], "usage": {
                                   "prompt_tokens": n["input"], "completion_tokens": n["output"],
                                   "total_tokens": n["total"],
                                   "prompt_tokens_details": {"cached_tokens": n["cache_read"],
                                                             "cache_write_tokens": n["cache_write"]},
                                   "completion_tokens_details": {"reasoning_tokens": n["reasoning"]}}})
        return out + "data: [DONE]\n\n"

    def step(self, step: dict) -> str:
        kind = step.get("type")
        if kind == "text-delta" and step.get("text"):
            return self._chunk({"content": step["text"]})
        if kind == "reasoning-delta" and step.get("text"):
            return self._chunk({"reasoning_content": step["text"]})
        if kind == "tool-call" and not step.get("providerExecuted"):
            index, self.tools = self.tools, self.tools + 1
            out = self._chunk({"tool_calls": [{"index": index, "id": step.get("toolCallId"), "type": "function",
                                               "function": {"name": step.get("toolName"), "arguments": ""}}]})
            for piece in _pieces(_tool_arguments(step)):
                out += self._chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
            return out
        if kind == "finish":
            finish = _finish_kind(step)
            if finish == "error":
                return self._error(502, f"the model provider's stream failed ({step.get('rawFinishReason')})")
            return self._finish(self.FINISH[finish], step.get("totalUsage") or {})
        if kind == "abort":
            return self._finish("stop", None)
        if kind == "error":
            return self._error(*inband_error(step.get("error")))
        return ""


class _MessagesSSE(_SSE):
    """AI-SDK steps as Anthropic Messages SSE (``event: X`` / ``data: {...}`` pairs).

    ``usage`` (the plan's ``finish`` totalUsage, looked up ahead) fills ``message_start``, as
    the real API reports input tokens there; ``cache_1h`` the one-hour share of cache writes.
    """

    STOP = {"stop": "end_turn", "length": "max_tokens", "tool-calls": "tool_use", "content-filter": "refusal"}

    def __init__(self, model: str, usage=None, cache_1h: int = 0):
        super().__init__(model)
        self.usage, self.cache_1h = usage or {}, cache_1h
        self.started = False
        self.block: str | None = None           # type of the open content block
        self.index = -1
        self.thinking = ""

    @staticmethod
    def _event(name: str, obj) -> str:
        return f"event: {name}\ndata: " + json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n\n"

    def _start(self) -> str:
        if self.started:
            return ""
        self.started = True
        n = _usage_numbers(self.usage)
        usage = {"input_tokens": n["input"] - n["cache_read"] - n["cache_write"],
                 "cache_read_input_tokens": n["cache_read"], "cache_creation_input_tokens": n["cache_write"],
                 "output_tokens": 1}
        if self.cache_1h:
            usage["cache_creation"] = {"ephemeral_5m_input_tokens": max(0, n["cache_write"] - self.cache_1h),
                                       "ephemeral_1h_input_tokens": self.cache_1h}
        message = {"id": "msg_" + uuid.uuid4().hex[:24], "type": "message", "role": "assistant",
                   "model": self.model, "content": [], "stop_reason": None, "stop_sequence": None,
                   "usage": usage}
        return (self._event("message_start", {"type": "message_start", "message": message})
                + self._event("ping", {"type": "ping"}))

    def _close(self) -> str:
        if self.block is None:
            return ""
        out = ""
        if self.block == "thinking":
            signature = base64.b64encode(("fake-signature:" + self.thinking).encode()).decode()[:88]
            out += self._event("content_block_delta", {"type": "content_block_delta", "index": self.index,
                                                       "delta": {"type": "signature_delta", "signature": signature}})
            self.thinking = ""
        self.block = None
        return out + self._event("content_block_stop", {"type": "content_block_stop", "index": self.index})

    def _open(self, kind: str, block: dict) -> str:
        out = self._close()
        self.block, self.index = kind, self.index + 1
        return out + self._event("content_block_start", {"type": "content_block_start", "index": self.index,
                                                         "content_block": block})

    def _delta(self, delta: dict) -> str:
        return self._event("content_block_delta", {"type": "content_block_delta", "index": self.index,
                                                   "delta": delta})

    def _error(self, status: int, message: str) -> str:
        self.ended = True
        return self._event("error", {"type": "error", "error": {
            "type": provider_error_type(status, "messages"), "message": message}})

    def _stop(self, reason: str, output_tokens: int) -> str:
        self.ended = True
        return (self._close()
                + self._event("message_delta", {"type": "message_delta",
                                                "delta": {"stop_reason": reason, "stop_sequence": None},
                                                "usage": {"output_tokens": output_tokens}})
                + self._event("message_stop", {"type": "message_stop"}))

    def step(self, step: dict) -> str:
        kind = step.get("type")
        out = self._start()
        if kind == "text-delta" and step.get("text"):
            if self.block != "text":
                out += self._open("text", {"type": "text", "text": ""})
            return out + self._delta({"type": "text_delta", "text": step["text"]})
        if kind == "reasoning-delta" and step.get("text"):
            if self.block != "thinking":
                out += self._open("thinking", {"type": "thinking", "thinking": "", "signature": ""})
            self.thinking += step["text"]
            return out + self._delta({"type": "thinking_delta", "thinking": step["text"]})
        if (kind == "text-end" and self.block == "text") or (kind == "reasoning-end" and self.block == "thinking"):
            return out + self._close()
        if kind == "tool-call" and not step.get("providerExecuted"):
            out += self._open("tool_use", {"type": "tool_use", "id": step.get("toolCallId"),
                                           "name": step.get("toolName"), "input": {}})
            for piece in _pieces(_tool_arguments(step)):
                out += self._delta({"type": "input_json_delta", "partial_json": piece})
            return out + self._close()
        if kind == "finish":
            finish = _finish_kind(step)
            if finish == "error":
                return out + self._error(502, f"the model provider's stream failed ({step.get('rawFinishReason')})")
            return out + self._stop(self.STOP[finish], _usage_numbers(step.get("totalUsage"))["output"])
        if kind == "abort":
            return out + self._stop("end_turn", 0)
        if kind == "error":
            return out + self._error(*inband_error(step.get("error")))
        return out


def _lookahead(steps) -> tuple[dict, int]:
    """(finish totalUsage, 1h cache-write tokens) of a plan given as a list; ({}, 0) for a generator."""
    usage, cache_1h = {}, 0
    if isinstance(steps, (list, tuple)):
        for step in steps:
            if isinstance(step, dict) and step.get("type") == "finish" and isinstance(step.get("totalUsage"), dict):
                usage = step["totalUsage"]
            elif isinstance(step, dict) and step.get("type") == "provider-metadata":
                meta = ((step.get("providerMetadata") or {}).get("anthropic") or {}).get("usage") or {}
                cache_1h = (meta.get("cache_creation") or {}).get("ephemeral_1h_input_tokens", 0) or 0
    return usage, cache_1h


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

def _ndjson(step) -> str:
    """A CLI-route step as body text: a dict as one NDJSON line, a str (garbage) as is."""
    return step if isinstance(step, str) else json.dumps(step, ensure_ascii=False) + "\n"


class _ClientGone(Exception):
    """The client closed the connection while we were writing."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    fake: "FakeUpstream"

    def handle_error(self, request, client_address):
        """A client resetting its (idle keep-alive) connection is normal: no traceback on stderr."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


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
    """Fake Command Code server (``/alpha/generate``, account routes, Provider API); see the module docstring.

    ``chunk_size``: bytes per HTTP chunk in split mode; ``sse_chunk_size`` the same for the
    Provider API's SSE, where every multi-byte UTF-8 character is also cut after its first byte
    (the SSE is several times bigger than the NDJSON: bigger pieces keep the tests fast while
    still cutting every line and character; a plan's own ``chunk_size``, e.g. ``unicode``'s 3
    bytes, applies to the NDJSON only).  ``strict``: validate requests (docs/protocol.md §3/§4)
    and record problems in ``violations``; non-strict mode only plays scenarios.
    ``usage_from_request``: report ``inputTokens`` counted on each request with Claude's
    tokenizer (found at ``tokenizer``, see ``load_reference_tokenizer``) instead of the fixed
    ``USAGE``; the count is also recorded as ``requests[i]["input_tokens"]``.

    Keys, account and Provider API routes (see the module docstring): ``plans`` (key -> plan
    id), ``credits`` (key -> credits body override), ``billing_status`` and ``models_status``
    (non-200 makes those routes fail), ``models_calls`` (``GET /provider/v1/models`` count).
    """

    def __init__(self, host="127.0.0.1", port=0, chunk_size=7, strict=True,
                 usage_from_request=False, tokenizer=None, sse_chunk_size=32):
        self.host, self.port, self.chunk_size, self.strict = host, port, chunk_size, strict
        self.sse_chunk_size = sse_chunk_size
        self.usage_from_request, self.tokenizer_path = usage_from_request, tokenizer
        self._count = None                   # count(text) -> int, loaded by start() in that mode
        self.default_scenario = "text"      # played when the last user message has no marker
        self.log = None                      # optional callable(str) for main(): live request/violation log
        self.requests: list[dict] = []
        self.violations: list[str] = []
        self.disconnects: list[str] = []
        self.first_byte_at: list[float] = []
        self.plans: dict[str, str] = dict(DEFAULT_PLANS)     # upstream key -> plan id
        self.credits: dict[str, dict] = {}                   # key -> credits body replacing the default
        self.billing_status = 200                            # non-200: account routes fail with it
        self.models_status = 200                             # non-200: GET /provider/v1/models fails with it
        self.models_calls = 0
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
        """Forget recorded requests, violations, disconnects, first-byte times and pause_turn state;
        restore ``plans`` to ``DEFAULT_PLANS`` and the account / Provider API toggles and counters."""
        with self._lock:
            del self.requests[:]
            del self.violations[:]
            del self.disconnects[:]
            del self.first_byte_at[:]
            self._pause.clear()
            self.plans.clear()
            self.plans.update(DEFAULT_PLANS)
            self.credits.clear()
            self.billing_status = 200
            self.models_status = 200
            self.models_calls = 0

    def plan_of(self, key) -> str | None:
        """The plan id of upstream ``key``, or None when the key is rejected (401)."""
        if not isinstance(key, str) or not key.startswith("user_") or "invalid" in key:
            return None
        return self.plans.get(key, DEFAULT_PLAN)

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

    #: (method, path) -> name of the method answering it.
    _ROUTES = {
        ("POST", GENERATE_PATH): "_route_generate",
        **{("GET", path): "_route_account" for path in ACCOUNT_PATHS},
        ("GET", PROVIDER_MODELS_PATH): "_route_models",
        ("POST", CHAT_PATH): "_route_chat",
        ("POST", MESSAGES_PATH): "_route_messages",
    }

    def _handle(self, h) -> None:
        """Read and record the request, then dispatch it to its route's method."""
        received_at = time.monotonic()
        path, _, query = h.path.partition("?")
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

        route = self._ROUTES.get((h.command, path))
        if route == "_route_generate":
            name, arg = select_scenario(body, self.default_scenario)
        elif route in ("_route_chat", "_route_messages"):
            name, arg = select_provider_scenario("chat" if route == "_route_chat" else "messages", body,
                                                 self.default_scenario)
        else:
            name, arg = None, None
        record = {"method": h.command, "path": path, "headers": headers, "body": body, "scenario": name,
                  "scenario_arg": arg, "received_at": received_at}
        with self._lock:
            self.requests.append(record)
            index = len(self.requests) - 1
        self._emit(f"{h.command} {h.path} scenario={name}{':' + arg if arg else ''}")
        req = SimpleNamespace(index=index, record=record, path=path, query=query, pairs=pairs,
                              headers=headers, body=body, parse_error=parse_error, name=name, arg=arg)
        if route is None:
            self._route_unknown(h, req)
        else:
            getattr(self, route)(h, req)

    def _route_unknown(self, h, req) -> None:
        message = f"fake upstream: no route {h.command} {req.path}"
        if req.path.startswith(PROVIDER_PREFIX + "/"):
            self._send_json(h, 404, provider_error_body("chat", 404, message, "not_found"),
                            record_first_byte=False)
        else:
            self._send_json(h, 404, cli_error_body(404, message), record_first_byte=False)

    def _build_plan(self, ctx):
        """``(plan, None)``, or ``(None, error)`` for an unknown scenario or bad argument (a violation)."""
        builder = SCENARIOS.get(ctx.name)
        try:
            if builder is None:
                raise ScenarioError(f"unknown scenario {ctx.name!r} (known: {', '.join(sorted(SCENARIOS))})")
            return builder(ctx), None
        except ScenarioError as e:
            self._violate(ctx.index, ctx.name, [f"bad scenario marker: {e}"])
            return None, e

    # -- POST /alpha/generate -------------------------------------------------------------------

    def _route_generate(self, h, req) -> None:
        body, name = req.body, req.name
        if self.strict:
            problems = [req.parse_error] if req.parse_error else []
            problems += validate_headers(req.pairs, body)
            if not req.parse_error:
                problems += validate_body(body)
            self._violate(req.index, name, problems)
        elif req.parse_error:
            self._violate(req.index, name, [req.parse_error])
        if req.parse_error:
            self._send_json(h, 400, cli_error_body(400, "Invalid JSON body"))
            return

        params = body.get("params") if isinstance(body, dict) else None
        params = params if isinstance(params, dict) else {}
        ctx = SimpleNamespace(fake=self, body=body, params=params, arg=req.arg, name=name,
                              user_text=last_user_text(body), route="generate",
                              image_count=cli_image_count(params),
                              thread_id=body.get("threadId") if isinstance(body, dict) else None,
                              index=req.index)
        plan, error = self._build_plan(ctx)
        if error is not None:
            self._send_json(h, 400, cli_error_body(400, f"fake upstream: {error}", "UNKNOWN_SCENARIO"))
            return

        if self.usage_from_request and plan.status == 200:
            n = reference_input_tokens(ctx.params, self._count)
            req.record["input_tokens"] = n
            plan.steps = _with_input_tokens(plan.steps, n)
        if plan.status != 200:
            self._send_raw(h, plan.status, plan.body or b"", plan.content_type)
        else:
            self._play(h, name, plan)

    # -- account routes (docs/protocol.md §9) ----------------------------------------------------

    def _route_account(self, h, req) -> None:
        """whoami, credits, subscriptions, usage summary: key check, then ``billing_status``, then the body."""
        auth = req.headers.get("authorization", "")
        key = auth[len("Bearer "):].strip() if auth.startswith("Bearer ") else None
        if self.strict and not key:
            self._violate(req.index, req.path, ["account routes take the key as 'Authorization: Bearer <key>'"])
        plan = self.plan_of(key)
        if plan is None:
            self._send_json(h, 401, cli_error_body(401, "Invalid 'Authorization' header"))
            return
        status = self.billing_status
        if status != 200:
            self._send_json(h, status, cli_error_body(status, f"fake upstream: {req.path} is failing ({status})"))
            return
        if req.path == CREDITS_PATH:
            body = self.credits.get(key) or credits_body(plan)
        elif req.path == WHOAMI_PATH:
            body = whoami_body("limits=1" in req.query.split("&"))
        elif req.path == SUBSCRIPTIONS_PATH:
            body = subscriptions_body(plan)
        else:
            body = USAGE_SUMMARY
        self._send_json(h, 200, body)

    # -- Provider API (docs/protocol.md §11) -----------------------------------------------------

    def _route_models(self, h, req) -> None:
        """The model list; no auth needed.  ``models_status`` != 200 fails it."""
        with self._lock:
            self.models_calls += 1
            status = self.models_status
        if status != 200:
            self._send_json(h, status, provider_error_body(
                "chat", status, f"fake upstream: the model list is failing ({status})"))
            return
        self._send_json(h, 200, {"object": "list", "data": PROVIDER_MODELS})

    def _route_chat(self, h, req) -> None:
        self._route_provider(h, req, "chat")

    def _route_messages(self, h, req) -> None:
        self._route_provider(h, req, "messages")

    @staticmethod
    def _provider_key(headers, route: str):
        """``Authorization: Bearer`` on both routes; ``x-api-key`` also on messages (docs/protocol.md §11.1)."""
        auth = headers.get("authorization", "")
        if auth.startswith("Bearer ") and auth[len("Bearer "):].strip():
            return auth[len("Bearer "):].strip()
        return headers.get("x-api-key") if route == "messages" else None

    def _route_provider(self, h, req, route: str) -> None:
        """One Provider API call: validate, then key, plan, endpoint checks, then play the scenario."""
        body, name = req.body, req.name
        problems = [req.parse_error] if req.parse_error else []
        if self.strict:
            problems += validate_provider_headers(req.pairs)
            if not req.parse_error:
                problems += (validate_chat_body if route == "chat" else validate_messages_body)(body)
        self._violate(req.index, name, problems)

        def fail(status, message, code=None):
            self._send_json(h, status, provider_error_body(route, status, message, code))

        if req.parse_error:
            return fail(400, "Invalid JSON body: could not parse the request body")
        plan_id = self.plan_of(self._provider_key(req.headers, route))
        if plan_id is None:
            how = "'Authorization: Bearer <key>'" + (" or 'x-api-key: <key>'" if route == "messages" else "")
            return fail(401, f"Invalid API key: pass a Command Code key as {how}", "invalid_api_key")
        if plan_id in NO_PROVIDER_PLANS:
            return fail(403, UPGRADE_REQUIRED_MESSAGE, "upgrade_required")
        model = body.get("model") if isinstance(body, dict) else None
        if not isinstance(model, str) or not model:
            return fail(400, "model: a model id is required")
        if is_claude_model(model) != (route == "messages"):
            return fail(400, wrong_endpoint_message(route, model))

        ctx = SimpleNamespace(fake=self, body=body, params={"model": model}, arg=req.arg, name=name,
                              user_text=provider_user_text(route, body), route=route,
                              image_count=provider_image_count(route, body), thread_id=None,
                              index=req.index)
        plan, error = self._build_plan(ctx)
        if error is not None:
            return fail(400, f"fake upstream: {error}", "unknown_scenario")
        if plan.status != 200:
            return self._send_provider_http_error(h, route, plan)
        encoder = _ChatSSE(model) if route == "chat" else _MessagesSSE(model, *_lookahead(plan.steps))
        self._play(h, name, plan, content_type="text/event-stream", encode=encoder.encode,
                   chunk_size=self.sse_chunk_size, cut_utf8=True)

    def _send_provider_http_error(self, h, route: str, plan: Plan) -> None:
        """An ``HTTP_ERRORS`` plan (a CLI error body) in the route's envelope; non-JSON stays as is."""
        try:
            err = json.loads(plan.body or b"{}").get("error")
        except (ValueError, AttributeError):
            err = None
        if not plan.content_type.startswith("application/json") or not isinstance(err, dict):
            self._send_raw(h, plan.status, plan.body or b"", plan.content_type)
            return
        message = str(err.get("message") or f"HTTP {plan.status}")
        self._send_json(h, plan.status, provider_error_body(
            route, plan.status, message, provider_error_code(plan.status, message, err.get("code"))))

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

    def _play(self, h, name: str, plan: Plan, content_type="application/x-ndjson", encode=None,
              chunk_size=None, cut_utf8=False) -> None:
        """Send ``plan.steps`` as a chunked body; record first byte and disconnects.

        ``encode(step) -> str`` turns a dict or str step into body text: NDJSON by default (the
        CLI route), the Provider API's SSE translators otherwise.  Sleeps and cuts are handled
        here, the same for every route.  ``chunk_size`` (the SSE size) replaces both
        ``self.chunk_size`` and the plan's own; ``cut_utf8`` also ends a piece right after each
        UTF-8 lead byte, so every multi-byte character is cut without tiny pieces everywhere.
        """
        encode = encode or _ndjson
        chunk_size = max(1, chunk_size or plan.chunk_size or self.chunk_size)
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
                size = chunk_size
                if cut_utf8:        # end the piece right after a UTF-8 lead byte: the character is cut
                    size = next((i + 1 for i in range(min(size, len(pending))) if pending[i] >= 0xC0), size)
                piece = bytes(pending[:size])
                del pending[:size]
                chunk(piece)
                time.sleep(0.001)   # so pieces arrive in separate reads

        try:
            try:
                h.send_response(200)
                h.send_header("Content-Type", content_type)
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
                data = encode(step).encode("utf-8")
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
    """Run the fake in the foreground: ``python tests/fake_upstream.py --port 9999``.

    Serves every route: ``POST /alpha/generate``, the account GETs (whoami, billing credits and
    subscriptions, usage summary), ``GET /provider/v1/models`` and the Provider API's
    ``POST /provider/v1/chat/completions`` and ``/provider/v1/messages``.  Keys: ``GO_KEY``
    (Go plan: the Provider API answers 403 upgrade_required), ``MAX_KEY``, any other ``user_...``
    key is Pro.
    """
    ap = argparse.ArgumentParser(
        description="Fake Command Code upstream: POST /alpha/generate, the /alpha account GETs, and "
                    "the Provider API (/provider/v1/models, /chat/completions, /messages).",
        epilog=f"keys: {GO_KEY} (Go: no Provider API), {PRO_KEY} (Pro), {MAX_KEY} (Max); any other "
               "user_... key is Pro; keys containing 'invalid' or not starting with user_ get 401.")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9999)
    ap.add_argument("--chunk-size", type=int, default=7, help="bytes per HTTP chunk (default 7)")
    ap.add_argument("--sse-chunk-size", type=int, default=32,
                    help="bytes per HTTP chunk of the Provider API's SSE (default 32)")
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
                        usage_from_request=args.usage_from_request, tokenizer=args.tokenizer,
                        sse_chunk_size=args.sse_chunk_size)
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
