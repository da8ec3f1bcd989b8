"""OpenAI Responses API <-> canonical model (``/v1/responses``: Codex, the Agents SDK, ...).

``decode`` turns a request body (plus, for ``previous_response_id``, the stored conversation it
continues) into a :class:`ChatRequest` and a :class:`Turn` -- what this response must echo and
how the model's tool calls map back to the client's tools.  :class:`ResponseEncoder` turns
canonical events into the Responses event sequence and, at the same time, builds the final
``response`` object, so a streamed answer and a whole one are the same object by construction.

Three things clients rely on that a chat backend does not have:

* **Tools of other kinds.**  ``custom`` tools (Codex's free-form ``apply_patch``) reach the model
  as a function taking one ``input`` string and come back as ``custom_tool_call`` with the raw
  text; ``namespace`` groups are flattened to ``<namespace>__<name>`` and come back with their
  ``namespace`` and short name; ``local_shell`` is a function for Codex models.  Built-in tools
  Command Code cannot run (web search, image generation, ...) are dropped, not refused.
* **Reasoning across a tool loop.**  Command Code refuses a DeepSeek tool turn whose reasoning was
  dropped, and Claude needs its signature back.  Each reasoning item carries an
  ``encrypted_content`` of ours (the text and signature, encoded, marked by a prefix) from which
  the next request's item is turned back into the upstream's reasoning.  It is not secret (the
  client has the text anyway); it is only opaque, as the field's name says.
* **Codex's rules.**  One ``resp_`` id on every event, ``sequence_number`` from 0, every item
  announced by ``output_item.added`` before its deltas and closed by ``output_item.done`` with
  its full content, ``*.done`` events with the full text (an empty one wipes what the client
  accumulated), the complete ``output`` in ``response.completed``; real events, not SSE comments,
  during upstream silence (Codex's idle timer ignores comments).
"""
from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from dataclasses import dataclass, field

from .. import errors
from ..canonical import (CONTENT_FILTER, LENGTH, ChatRequest, Finish, Message, Reasoning,
                         ReasoningDelta, SystemBlock, Text, TextDelta, Tool, ToolCall,
                         ToolCallEvent, ToolResult, Usage)
from ..catalog import Catalog, Model, clamp_effort, require
from ..normalize import merge_same_role
from .fields import (body_object, content_parts, get, json_arguments, number_in, parse_json,
                     positive_int)
from .openai_chat import error_body as chat_error_body
from .openai_chat import tool_choice

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
ENCRYPTED_PREFIX = "ccgw1."
INCLUDE_ENCRYPTED = "reasoning.encrypted_content"
NAMESPACE_SEPARATOR = "__"
MAX_TOOL_NAME = 64
CUSTOM_SCHEMA = {"type": "object", "properties": {"input": {
    "type": "string", "description": "The raw input for this tool, exactly as it defines it."}},
    "required": ["input"]}
LOCAL_SHELL_SCHEMA = {"type": "object", "properties": {
    "command": {"type": "array", "items": {"type": "string"}, "description": "argv to execute"},
    "working_directory": {"type": "string"}, "timeout_ms": {"type": "integer"}},
    "required": ["command"]}
#: Fields of the request the response object echoes (with their defaults when absent).
_ECHO = {"instructions": None, "max_output_tokens": None, "metadata": {}, "parallel_tool_calls": True,
         "previous_response_id": None, "prompt_cache_key": None, "service_tier": "auto",
         "store": True, "temperature": None, "tool_choice": "auto", "top_p": None,
         "truncation": "disabled", "user": None}
_DROPPED_TOOLS = ("web_search", "web_search_preview", "file_search", "image_generation",
                  "computer_use_preview", "computer_use", "code_interpreter", "mcp", "tool_search")


# ---- tools -------------------------------------------------------------------------------------

@dataclass(slots=True)
class ClientTool:
    """What one tool name the model sees stands for on the client's side."""
    kind: str                   # "function" | "custom" | "local_shell"
    name: str                   # the client's name (short, without the namespace)
    namespace: str | None = None


def _wire_name(namespace: str | None, name: str) -> str:
    """The flat name the model sees; capped at the 64 characters upstreams accept."""
    flat = f"{namespace}{NAMESPACE_SEPARATOR}{name}" if namespace else name
    if len(flat) <= MAX_TOOL_NAME:
        return flat
    digest = hashlib.sha256(flat.encode()).hexdigest()[:8]
    return flat[:MAX_TOOL_NAME - 9] + "_" + digest


def _object_schema(schema) -> dict:
    """Command Code refuses a function whose root schema is not an object."""
    if not isinstance(schema, dict) or not schema:
        return {"type": "object", "properties": {}}
    if schema.get("type") != "object":
        return {"type": "object", "properties": schema.get("properties") or {}}
    return schema


def _custom_description(t: dict) -> str:
    text = t.get("description") if isinstance(t.get("description"), str) else ""
    fmt = t.get("format")
    if isinstance(fmt, dict) and fmt.get("type") == "grammar" and isinstance(fmt.get("definition"), str):
        text += (f"\n\nThe input must follow this {fmt.get('syntax', '')} grammar:\n"
                 f"{fmt['definition']}")
    return text + "\n\nPut the raw input text in the 'input' string."


def _add_tool(t, path: str, model: Model, namespace: str | None, tools: list, names: dict) -> None:
    if not isinstance(t, dict):
        raise errors.InvalidRequest(f"'{path}' must be an object", param=path)
    kind = t.get("type") or "function"
    if kind == "namespace":
        ns = get(t, "name", str, path, required=True)
        for j, inner in enumerate(get(t, "tools", list, path, default=[])):
            _add_tool(inner, f"{path}.tools[{j}]", model, ns, tools, names)
        return
    if kind == "local_shell":
        if "codex" in model.id.lower():
            names["local_shell"] = ClientTool("local_shell", "local_shell")
            tools.append(Tool("local_shell", "Run a shell command on the user's machine.",
                              LOCAL_SHELL_SCHEMA))
        return
    if kind in ("function", "custom"):
        fn = t.get("function") if isinstance(t.get("function"), dict) else t   # nested form too
        name = get(fn, "name", str, path, required=True)
        wire = _wire_name(namespace, name)
        names[wire] = ClientTool(kind, name, namespace)
        if kind == "custom":
            tools.append(Tool(wire, _custom_description(fn), CUSTOM_SCHEMA))
        else:
            tools.append(Tool(wire, get(fn, "description", str, path, default=""),
                              _object_schema(fn.get("parameters"))))
        return
    # web_search, image_generation, file_search, computer use, hosted MCP, ...: Command Code
    # runs none of them, and a client offering one must still get an answer


def _tools(body: dict, model: Model) -> tuple[list[Tool], dict]:
    tools: list[Tool] = []
    names: dict[str, ClientTool] = {}
    for i, t in enumerate(get(body, "tools", list, default=[])):
        _add_tool(t, f"tools[{i}]", model, None, tools, names)
    for i, item in enumerate(body.get("input") if isinstance(body.get("input"), list) else ()):
        if isinstance(item, dict) and item.get("type") == "additional_tools":
            for j, t in enumerate(item.get("tools") if isinstance(item.get("tools"), list) else ()):
                _add_tool(t, f"input[{i}].tools[{j}]", model, None, tools, names)
    seen, unique = set(), []
    for t in tools:         # a tool offered twice (e.g. again in additional_tools) is one tool
        if t.name not in seen:
            seen.add(t.name)
            unique.append(t)
    return unique, names


# ---- input items -------------------------------------------------------------------------------

def encode_reasoning(text: str, signature: str = "") -> str:
    raw = _dumps({"t": text, "s": signature}).encode()
    return ENCRYPTED_PREFIX + base64.urlsafe_b64encode(raw).decode()


def decode_reasoning(value) -> tuple[str, str] | None:
    """``(text, signature)`` from an ``encrypted_content`` of ours; None for anyone else's."""
    if not isinstance(value, str) or not value.startswith(ENCRYPTED_PREFIX):
        return None
    try:
        data = parse_json(base64.urlsafe_b64decode(value[len(ENCRYPTED_PREFIX):]),
                          "encrypted_content")       # no NaN, lone surrogate or deep nesting
        return str(data.get("t", "")), str(data.get("s", ""))
    except (ValueError, AttributeError, errors.InvalidRequest):
        return None


def _parts_text(content, path: str, images, allow_images: bool) -> tuple[list, list]:
    """Text and image parts of a message's or an output's content (a string or a list)."""
    if isinstance(content, str):
        return [Text(content)], []
    texts, imgs = [], []
    for p, part in content_parts(content, path):
        kind = part.get("type")
        if kind in ("input_text", "output_text", "text", "summary_text", "reasoning_text"):
            texts.append(Text(get(part, "text", str, p, default="")))
        elif kind == "refusal":
            texts.append(Text(get(part, "refusal", str, p, default="")))
        elif kind == "input_image" and allow_images:
            url = part.get("image_url")
            url = url.get("url") if isinstance(url, dict) else url
            if not isinstance(url, str) or not url:
                raise errors.InvalidRequest(f"'{p}.image_url' is required (a data: URL; file ids "
                                            "are not supported)", param=f"{p}.image_url")
            imgs.append(images.load(url, f"{p}.image_url"))
        elif kind in ("input_file", "input_audio"):
            raise errors.InvalidRequest(f"'{p}': {kind} parts are not supported by Command Code "
                                        "(text and images only)", param=f"{p}.type")
        # anything else (annotations-only parts, future types): nothing the model can use
    return texts, imgs


def _output_result(item: dict, path: str, images) -> ToolResult:
    output = item.get("output")
    if output is None:
        output = ""
    if isinstance(output, (str, list)):
        texts, imgs = _parts_text(output, f"{path}.output", images, allow_images=True)
    else:
        texts, imgs = [Text(_dumps(output))], []
    return ToolResult(get(item, "call_id", str, path, required=True),
                      "\n".join(t.text for t in texts), images=imgs)


def _message_item(item: dict, path: str, images, system: list, out: list) -> None:
    role = get(item, "role", str, path, required=True)
    content = item.get("content")
    content = content if content is not None else ""
    if role in ("system", "developer"):
        texts, _ = _parts_text(content, f"{path}.content", images, allow_images=False)
        system.append(SystemBlock("\n".join(t.text for t in texts)))
    elif role == "user":
        texts, imgs = _parts_text(content, f"{path}.content", images, allow_images=True)
        out.append(Message("user", [*texts, *imgs]))
    elif role == "assistant":
        texts, _ = _parts_text(content, f"{path}.content", images, allow_images=False)
        out.append(Message("assistant", texts))
    else:
        raise errors.InvalidRequest(f"'{path}.role' must be user, assistant, system or "
                                    "developer", param=f"{path}.role")


def _reasoning_item(item: dict, path: str, images, system: list, out: list) -> None:
    """Ours come back whole (text and signature) from ``encrypted_content``; anyone else's as
    their visible text, if any."""
    ours = decode_reasoning(item.get("encrypted_content"))
    if ours is not None:
        out.append(Message("assistant", [Reasoning(*ours)]))
        return
    parts = [p for key in ("content", "summary")
             for p in (item.get(key) if isinstance(item.get(key), list) else ())]
    texts, _ = _parts_text(parts, f"{path}.summary", images, allow_images=False)
    text = "\n".join(t.text for t in texts)
    if text:
        out.append(Message("assistant", [Reasoning(text)]))


def _function_call_item(item: dict, path: str, images, system: list, out: list) -> None:
    namespace = get(item, "namespace", str, path)
    out.append(Message("assistant", [ToolCall(
        get(item, "call_id", str, path, required=True),
        _wire_name(namespace, get(item, "name", str, path, required=True)),
        json_arguments(item.get("arguments"), f"{path}.arguments"))]))


def _custom_call_item(item: dict, path: str, images, system: list, out: list) -> None:
    namespace = get(item, "namespace", str, path)
    out.append(Message("assistant", [ToolCall(
        get(item, "call_id", str, path, required=True),
        _wire_name(namespace, get(item, "name", str, path, required=True)),
        {"input": get(item, "input", str, path, default="")})]))


def _shell_call_item(item: dict, path: str, images, system: list, out: list) -> None:
    action = get(item, "action", dict, path, default={})
    args = {k: action[k] for k in ("command", "working_directory", "timeout_ms")
            if action.get(k) is not None}
    out.append(Message("assistant", [ToolCall(
        get(item, "call_id", str, path, default="") or get(item, "id", str, path, required=True),
        "local_shell", args)]))


def _output_item(item: dict, path: str, images, system: list, out: list) -> None:
    if item.get("type") == "local_shell_call_output" and not item.get("call_id"):
        item = {**item, "call_id": item.get("id")}
    out.append(Message("tool", [_output_result(item, path, images)]))


#: Input item type -> how it joins the conversation.  Any other (additional_tools, hoisted into
#: the tool list; web_search_call, image_generation_call, compaction, ...) is nothing a Command
#: Code model can be sent, and is skipped.
_ITEMS = {"message": _message_item, "reasoning": _reasoning_item,
          "function_call": _function_call_item, "custom_tool_call": _custom_call_item,
          "local_shell_call": _shell_call_item, "function_call_output": _output_item,
          "custom_tool_call_output": _output_item, "local_shell_call_output": _output_item}


def _item(item, i: int, images, system: list, out: list) -> None:
    """One input item appended to ``system`` or ``out`` (messages), by :data:`_ITEMS`."""
    path = f"input[{i}]"
    if not isinstance(item, dict):
        raise errors.InvalidRequest(f"'{path}' must be an object", param=path)
    kind = item.get("type") or ("message" if "role" in item else None)
    handler = _ITEMS.get(kind) if isinstance(kind, str) else None
    if handler is not None:
        handler(item, path, images, system, out)


def _effort(body: dict, model: Model) -> str | None:
    reasoning = get(body, "reasoning", dict) or {}
    effort = get(reasoning, "effort", str, "reasoning")
    if effort is None:
        return None
    if effort not in EFFORTS:
        raise errors.InvalidRequest(f"'reasoning.effort' must be one of {', '.join(EFFORTS)}",
                                    param="reasoning.effort")
    if effort == "none":
        return None
    return clamp_effort(model, effort)       # minimal: the model's lowest


def _format_instruction(body: dict) -> str | None:
    """``text.format`` json_schema as an instruction: no route has a structured-output switch
    that every model honours, but every model reads its system prompt."""
    fmt = (get(body, "text", dict) or {}).get("format")
    if not isinstance(fmt, dict):
        return None
    if fmt.get("type") == "json_schema" and isinstance(fmt.get("schema"), dict):
        return ("Answer with one JSON value only, no prose and no code fences, matching this "
                f"JSON schema:\n{_dumps(fmt['schema'])}")
    if fmt.get("type") == "json_object":
        return "Answer with one JSON object only, no prose and no code fences."
    return None


@dataclass(slots=True)
class Turn:
    """What one response needs beyond the canonical request: its id, the fields it echoes, how
    tool names map back, whether reasoning is returned encrypted, and what gets stored."""
    id: str
    model: str                          # as the client named it
    created_at: int
    tools: dict                         # wire name -> ClientTool
    include_encrypted: bool
    store: bool
    echo: dict
    input_items: list = field(default_factory=list)     # the whole input, chain included
    own_from: int = 0                   # where this request's own input starts in it


def new_id(prefix: str = "resp_") -> str:
    return prefix + secrets.token_hex(16)


def _resolve_references(items: list, find_item) -> list:
    """``item_reference`` items replaced by the stored items they name (``@ai-sdk/openai`` sends
    its earlier answers this way when it stores them); one that is not stored here is a 404
    rather than a silently shorter conversation."""
    out = []
    for i, item in enumerate(items):
        if isinstance(item, dict) and item.get("type") == "item_reference":
            ref = get(item, "id", str, f"input[{i}]", required=True)
            found = find_item(ref) if find_item is not None else None
            if found is None:
                raise errors.NotFound(
                    f"'input[{i}]' refers to the item '{ref}', which this gateway has not stored "
                    "(unknown, expired, or from a response made with store: false): send the "
                    "item itself instead of a reference", param=f"input[{i}].id",
                    code="item_not_found")
            item = found
        out.append(item)
    return out


def _model(body: dict, catalog: Catalog, previous: dict | None) -> tuple[str, Model]:
    """The model as the client named it, and the catalog's model for it."""
    asked = get(body, "model", str)
    if asked is None and previous is not None:
        asked = previous["response"].get("model")      # Codex app follow-ups may omit it
    if asked is None:
        raise errors.InvalidRequest("'model' is required", param="model")
    return asked, require(catalog, asked)


def _refuse_unsupported(body: dict) -> None:
    """400 for the two ways of running a response that a relay cannot offer."""
    if get(body, "background", bool):
        raise errors.InvalidRequest("'background' responses are not supported: send the request "
                                    "with stream true or false and wait for it", param="background")
    if body.get("conversation") is not None:
        raise errors.InvalidRequest("'conversation' (the Conversations API) is not supported: use "
                                    "previous_response_id, or send the whole input", param="conversation")


def _input(body: dict, previous: dict | None, find_item) -> tuple[list, list]:
    """``(history, items)``: the stored conversation continued, and this request's own items
    (a string input as one user message, references resolved)."""
    raw = body.get("input")
    if raw is None or raw == "" or raw == []:
        if previous is None:
            raise errors.InvalidRequest("'input' is required", param="input")
        raw = []
    items = [{"type": "message", "role": "user", "content": raw}] if isinstance(raw, str) else raw
    if not isinstance(items, list):
        raise errors.InvalidRequest("'input' must be a string or an array of items", param="input")
    items = _resolve_references(items, find_item)
    history = (previous["input"] + previous["response"]["output"]) if previous else []
    return history, items


def _conversation(body: dict, history: list, items: list,
                  images) -> tuple[list[SystemBlock], list[Message]]:
    """The system prompt (instructions, system items, then the output format) and the turns."""
    system: list[SystemBlock] = []
    instructions = get(body, "instructions", str)
    if instructions:
        system.append(SystemBlock(instructions))
    messages: list[Message] = []
    for i, item in enumerate(history):
        _item(item, i, images, system, messages)
    for i, item in enumerate(items):
        _item(item, i, images, system, messages)
    messages = merge_same_role(messages)  # one turn per run of items: parallel calls stay one
    extra = _format_instruction(body)
    if extra:
        system.append(SystemBlock(extra))
    return system, messages


def _echo(body: dict, req: ChatRequest, previous: dict | None, store: bool) -> dict:
    """The request fields the response object repeats, with their defaults when absent."""
    echo = {k: body.get(k, v) for k, v in _ECHO.items()}
    echo["store"] = store
    echo["previous_response_id"] = previous["response"]["id"] if previous else None
    echo["tools"] = body.get("tools") if isinstance(body.get("tools"), list) else []
    echo["reasoning"] = {"effort": req.reasoning_effort,
                         "summary": (get(body, "reasoning", dict) or {}).get("summary")}
    echo["text"] = get(body, "text", dict) or {"format": {"type": "text"}}
    return echo


def decode(body, catalog: Catalog, images, previous: dict | None = None,
           store_default: bool = True, find_item=None) -> tuple[ChatRequest, Turn]:
    """A Responses request (continuing ``previous`` -- the stored entry of
    ``previous_response_id`` -- when given) as a canonical request and its :class:`Turn`;
    ``find_item(id)`` looks up a stored item for an ``item_reference``.

    Fields are checked in the order a client reads its request (model, input, tools, ...), so
    the 400 names the first one that is wrong."""
    body = body_object(body)
    asked, model = _model(body, catalog, previous)
    _refuse_unsupported(body)
    history, items = _input(body, previous, find_item)
    all_items = history + items
    tools, names = _tools({**body, "input": all_items}, model)
    system, messages = _conversation(body, history, items, images)

    max_tokens = positive_int(get(body, "max_output_tokens", int), "max_output_tokens")
    include = get(body, "include", list, default=[])
    store = get(body, "store", bool)
    req = ChatRequest(
        model=model, requested_model=asked, messages=messages, system=system, tools=tools,
        tool_choice=tool_choice(body), max_tokens=max_tokens,
        temperature=number_in(get(body, "temperature", (int, float)), 0, 2, "temperature"),
        reasoning_effort=_effort(body, model), stream=bool(get(body, "stream", bool, default=False)))
    echo = _echo(body, req, previous, store_default if store is None else store)
    turn = Turn(id=new_id(), model=asked, created_at=int(time.time()), tools=names,
                include_encrypted=INCLUDE_ENCRYPTED in include, store=echo["store"], echo=echo,
                input_items=_with_ids(all_items), own_from=len(history))
    return req, turn


def _with_ids(items: list) -> list:
    """Input items as stored and listed by ``/input_items``: each with an id, as OpenAI's are."""
    out = []
    for item in items:
        if isinstance(item, dict) and not item.get("id"):
            item = {"id": new_id("msg_" if item.get("type", "message") == "message" else "item_"),
                    **item}
        out.append(item)
    return out


# ---- response ----------------------------------------------------------------------------------

def usage_object(u: Usage) -> dict:
    return {"input_tokens": u.input_tokens,
            "input_tokens_details": {"cached_tokens": u.cache_read_tokens,
                                     "cache_write_tokens": u.cache_write_tokens},
            "output_tokens": u.output_tokens,
            "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
            "total_tokens": u.input_tokens + u.output_tokens}


#: Our error codes -> ``response.failed`` codes.  Codex acts on ``insufficient_quota`` (stops) and
#: ``server_is_overloaded`` (backs off), which the SDK's enum lacks but its parser keeps; every
#: other failure is one of the SDK's codes, and Codex retries those.
_FAILED_CODES = {"insufficient_quota": "insufficient_quota", "overloaded": "server_is_overloaded",
                 "rate_limit_exceeded": "rate_limit_exceeded",
                 "usage_limit_reached": "rate_limit_exceeded"}


def failure(err: errors.GatewayError) -> dict:
    code = _FAILED_CODES.get(err.code or "")
    if code is None:
        code = "invalid_prompt" if isinstance(err, errors.InvalidRequest) else "server_error"
    message = err.message
    if code == "rate_limit_exceeded" and err.retry_after:
        message += f" Please try again in {err.retry_after}s."
    return {"code": code, "message": message}


def error_body(err: errors.GatewayError) -> dict:
    """OpenAI's envelope (:func:`openai_chat.error_body`) with what Codex reads on top.

    A plan's usage window is ``type: "usage_limit_reached"`` with ``resets_at`` (epoch seconds),
    which Codex shows instead of retrying; an overload, upstream's or this worker's, is
    ``code: "server_is_overloaded"``, which Codex backs off from.
    """
    envelope = chat_error_body(err)
    body = envelope["error"]
    if err.code == "usage_limit_reached":
        body["type"] = "usage_limit_reached"
        if err.retry_after is not None:
            body["resets_at"] = int(time.time()) + err.retry_after
    elif isinstance(err, (errors.Overloaded, errors.AtCapacity)):
        body["code"] = "server_is_overloaded"
    return envelope


def public(item: dict, include_encrypted: bool) -> dict:
    """An output item as the client sees it: ours keep ``encrypted_content`` internally."""
    if item.get("type") == "reasoning" and not include_encrypted and "encrypted_content" in item:
        item = {k: v for k, v in item.items() if k != "encrypted_content"}
    return item


class ResponseEncoder:
    """Canonical events -> Responses SSE events (bytes), building the ``response`` as it goes.

    ``on_done(response)`` is called with the final response (internal form, reasoning encrypted)
    before the ``response.completed`` / ``response.incomplete`` event is produced, so a stored
    response exists before the client can ask to continue it.
    """

    def __init__(self, turn: Turn, on_done=None):
        self.turn = turn
        self._on_done = on_done
        self._seq = 0
        self.output: list[dict] = []            # finished items, internal form
        self._open: dict | None = None          # the item being streamed
        self._text: list[str] = []              # its text so far (message or reasoning)
        self._signature = ""
        self._started = False
        self.response: dict | None = None       # the final one, as the client sees it

    # -- the response object ------------------------------------------------------------------

    def snapshot(self, status: str, output: list | None = None, usage: Usage | None = None,
                 error: dict | None = None, incomplete: str | None = None,
                 public_items: bool = True) -> dict:
        t = self.turn
        items = self.output if output is None else output
        if public_items:
            items = [public(i, t.include_encrypted) for i in items]
        return {"id": t.id, "object": "response", "created_at": t.created_at, "status": status,
                "background": False, "error": error,
                "incomplete_details": {"reason": incomplete} if incomplete else None,
                "model": t.model, "output": items, "usage": usage_object(usage) if usage else None,
                "end_turn": None if status == "in_progress" else
                not any(i.get("type") != "message" and i.get("type") != "reasoning" for i in items),
                **t.echo}

    # -- SSE ----------------------------------------------------------------------------------

    def _sse(self, kind: str, data: dict) -> str:
        data = {"type": kind, "sequence_number": self._seq, **data}
        self._seq += 1
        return f"event: {kind}\ndata: {_dumps(data)}\n\n"

    def _begin(self) -> str:
        if self._started:
            return ""
        self._started = True
        created = self.snapshot("in_progress", [])
        return (self._sse("response.created", {"response": created})
                + self._sse("response.in_progress", {"response": created}))

    def _index(self) -> int:
        return len(self.output)

    def _add(self, item: dict) -> str:
        self._open, self._text = item, []
        return self._sse("response.output_item.added", {"output_index": self._index(),
                                                        "item": public(item, True)})

    def _filled(self, status: str) -> dict:
        """The open item with what was streamed into it so far."""
        item, text = self._open, "".join(self._text)
        if item["type"] == "message":
            return {**item, "status": status, "content": [
                {"type": "output_text", "text": text, "annotations": [], "logprobs": []}]}
        if item["type"] == "reasoning":
            return {**item, "summary": [{"type": "summary_text", "text": text}],
                    "encrypted_content": encode_reasoning(text, self._signature)}
        return {**item, "status": status}

    def _close(self) -> str:
        if self._open is None:
            return ""
        idx, item, out = self._index(), self._filled("completed"), ""
        iid, text = item["id"], "".join(self._text)
        if item["type"] == "message":
            part = item["content"][0]
            out += self._sse("response.output_text.done", {"item_id": iid, "output_index": idx,
                                                           "content_index": 0, "text": text,
                                                           "logprobs": []})
            out += self._sse("response.content_part.done", {"item_id": iid, "output_index": idx,
                                                            "content_index": 0, "part": part})
        elif item["type"] == "reasoning":
            part = item["summary"][0]
            out += self._sse("response.reasoning_summary_text.done",
                             {"item_id": iid, "output_index": idx, "summary_index": 0, "text": text})
            out += self._sse("response.reasoning_summary_part.done",
                             {"item_id": iid, "output_index": idx, "summary_index": 0, "part": part})
        self._open = None
        self.output.append(item)
        return out + self._sse("response.output_item.done",
                               {"output_index": idx,
                                "item": public(item, self.turn.include_encrypted)})

    def _reasoning(self, ev: ReasoningDelta) -> str:
        out = ""
        if self._open is None or self._open["type"] != "reasoning":
            if not ev.text:
                return ""          # a lone signature belongs to the block that just closed
            out += self._close()
            self._signature = ""
            item = {"id": new_id("rs_"), "type": "reasoning", "summary": []}
            out += self._add(item)
            out += self._sse("response.reasoning_summary_part.added",
                             {"item_id": item["id"], "output_index": self._index(),
                              "summary_index": 0, "part": {"type": "summary_text", "text": ""}})
        if ev.text:
            self._text.append(ev.text)
            out += self._sse("response.reasoning_summary_text.delta",
                             {"item_id": self._open["id"], "output_index": self._index(),
                              "summary_index": 0, "delta": ev.text})
        if ev.signature:
            self._signature = ev.signature
        return out

    def _message(self, ev: TextDelta) -> str:
        out = ""
        if self._open is None or self._open["type"] != "message":
            out += self._close()
            item = {"id": new_id("msg_"), "type": "message", "status": "in_progress",
                    "role": "assistant", "content": []}
            out += self._add(item)
            out += self._sse("response.content_part.added",
                             {"item_id": item["id"], "output_index": self._index(),
                              "content_index": 0,
                              "part": {"type": "output_text", "text": "", "annotations": [],
                                       "logprobs": []}})
        self._text.append(ev.text)
        return out + self._sse("response.output_text.delta",
                               {"item_id": self._open["id"], "output_index": self._index(),
                                "content_index": 0, "delta": ev.text, "logprobs": []})

    def _tool_call(self, ev: ToolCallEvent) -> str:
        out = self._close()
        tool = self.turn.tools.get(ev.name) or ClientTool("function", ev.name)
        idx = self._index()
        if tool.kind == "custom":
            raw = ev.input.get("input") if isinstance(ev.input.get("input"), str) else _dumps(ev.input)
            item = {"id": new_id("ctc_"), "type": "custom_tool_call", "status": "completed",
                    "call_id": ev.id, "name": tool.name, "input": raw}
            if tool.namespace:
                item["namespace"] = tool.namespace
            out += self._add({**item, "input": ""})
            out += self._sse("response.custom_tool_call_input.delta",
                             {"item_id": item["id"], "output_index": idx, "delta": raw})
            out += self._sse("response.custom_tool_call_input.done",
                             {"item_id": item["id"], "output_index": idx, "input": raw})
        elif tool.kind == "local_shell":
            action = {"type": "exec", "command": ev.input.get("command") or [],
                      "timeout_ms": ev.input.get("timeout_ms"),
                      "working_directory": ev.input.get("working_directory"),
                      "env": {}, "user": None}
            item = {"id": new_id("lsh_"), "type": "local_shell_call", "status": "completed",
                    "call_id": ev.id, "action": action}
            out += self._add({**item, "status": "in_progress"})
        else:
            args = _dumps(ev.input)
            item = {"id": new_id("fc_"), "type": "function_call", "status": "completed",
                    "call_id": ev.id, "name": tool.name, "arguments": args}
            if tool.namespace:
                item["namespace"] = tool.namespace
            out += self._add({**item, "status": "in_progress", "arguments": ""})
            out += self._sse("response.function_call_arguments.delta",
                             {"item_id": item["id"], "output_index": idx, "delta": args})
            out += self._sse("response.function_call_arguments.done",
                             {"item_id": item["id"], "output_index": idx, "name": tool.name,
                              "arguments": args})
        self._open = None
        self.output.append(item)
        return out + self._sse("response.output_item.done",
                               {"output_index": idx, "item": item})

    def _finish(self, ev: Finish) -> str:
        out = self._close()
        incomplete = {LENGTH: "max_output_tokens", CONTENT_FILTER: "content_filter"}.get(ev.reason)
        status = "incomplete" if incomplete else "completed"
        internal = self.snapshot(status, usage=ev.usage, incomplete=incomplete, public_items=False)
        if self._on_done is not None:
            self._on_done(internal)
        self.response = self.snapshot(status, usage=ev.usage, incomplete=incomplete)
        return out + self._sse(f"response.{status}", {"response": self.response})

    # -- the EventEncoder contract (codecs/base.py), as chat.stream uses it -----------------

    def event(self, ev) -> bytes:
        out = self._begin()
        if type(ev) is TextDelta:
            out += self._message(ev)
        elif type(ev) is ReasoningDelta:
            out += self._reasoning(ev)
        elif type(ev) is ToolCallEvent:
            out += self._tool_call(ev)
        elif type(ev) is Finish:
            out += self._finish(ev)
        return out.encode()

    def heartbeat(self) -> bytes:
        """During upstream silence: a real event (Codex's idle timer ignores SSE comments)."""
        if not self._started:
            return self._begin().encode()
        return self._sse("response.in_progress",
                         {"response": self.snapshot("in_progress")}).encode()

    def error(self, err: errors.GatewayError) -> bytes:
        """A failure after the stream started: ``response.failed`` (never ``completed``)."""
        out = self._begin()
        if self._open is not None:       # what the client already saw stays in the output
            self.output.append(self._filled("incomplete"))
            self._open = None
        self.response = self.snapshot("failed", error=failure(err))
        return (out + self._sse("response.failed", {"response": self.response})).encode()


def response(events, turn: Turn, on_done=None) -> dict:
    """The whole ``response`` object from a finished stream of canonical events."""
    encoder = ResponseEncoder(turn, on_done)
    for ev in events:
        encoder.event(ev)
    if encoder.response is None:
        raise errors.UpstreamError("Command Code ended the answer without finishing it",
                                   code="upstream_truncated")
    return encoder.response
