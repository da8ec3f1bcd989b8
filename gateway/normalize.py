"""Conversation invariants every upstream needs, applied to the canonical request.

Clients send histories that upstream models reject: a tool call whose result was lost when the
user interrupted, a result for a call that was never made, empty text blocks, two user turns in
a row.  The CLI repairs these before sending (docs/protocol.md §4.3); so do we, once,
whichever surface the request came from.
"""
from __future__ import annotations

from . import errors
from .canonical import ChatRequest, Image, Message, Reasoning, Text, ToolCall, ToolResult

MISSING_RESULT = "No result \u2014 the tool call did not complete (interrupted or lost)."


def _keep(part) -> bool:
    if isinstance(part, (Text, Reasoning)):
        return bool(part.text.strip())
    return True


def _pair_tool_calls(messages: list[Message]) -> list[Message]:
    """Answer every tool call before the next turn; drop results nobody asked for.

    Pairing is per assistant turn: agents (and models) reuse ids such as ``call_1`` in later
    turns, and each use is answered by the results that follow it.
    """
    out: list[Message] = []
    pending: dict[str, str] = {}        # call id -> tool name, in call order

    def flush():
        if pending:
            out.append(Message("tool", [ToolResult(cid, MISSING_RESULT, name=name)
                                        for cid, name in pending.items()]))
            pending.clear()

    for msg in messages:
        if msg.role == "tool":
            parts = []
            for p in msg.parts:
                if isinstance(p, ToolResult) and p.call_id in pending:
                    p.name = pending.pop(p.call_id)
                    parts.append(p)
            if parts:
                out.append(Message("tool", parts))
            continue
        flush()
        out.append(msg)
        if msg.role == "assistant":
            for p in msg.parts:
                if isinstance(p, ToolCall):
                    if not p.id or not p.name:
                        raise errors.InvalidRequest("every tool call in the history needs a "
                                                    "non-empty id and name", param="messages")
                    if p.id in pending:
                        raise errors.InvalidRequest(f"the tool call id '{p.id}' appears twice in "
                                                    "one assistant turn", param="messages")
                    pending[p.id] = p.name
    flush()
    return out


def _check_tools(req: ChatRequest) -> None:
    names = set()
    for i, tool in enumerate(req.tools):
        if not tool.name:
            raise errors.InvalidRequest("every tool needs a non-empty name", param=f"tools[{i}].name")
        if tool.name in names:
            raise errors.InvalidRequest(f"the tool name '{tool.name}' is used twice",
                                        param=f"tools[{i}].name")
        names.add(tool.name)


def merge_same_role(messages: list[Message]) -> list[Message]:
    """Consecutive messages of one role as one (two user turns in a row, or a turn a codec
    received as several items)."""
    out: list[Message] = []
    for msg in messages:
        if out and out[-1].role == msg.role:
            out[-1].parts.extend(msg.parts)
        else:
            out.append(msg)
    return out


def _has_images(messages: list[Message]) -> bool:
    return any(isinstance(p, Image) or (isinstance(p, ToolResult) and p.images)
               for m in messages for p in m.parts)


def normalize(req: ChatRequest, *, sendable: bool = True) -> ChatRequest:
    """Apply the invariants in place and return ``req``; raise InvalidRequest when unfixable.

    ``sendable=False`` (token counting, which sends nothing) skips the checks that only matter
    to a model: that there is a user turn to answer and that the model can see images.
    """
    messages = []
    for msg in req.messages:
        parts = [p for p in msg.parts if _keep(p)]
        if parts:
            messages.append(Message(msg.role, parts))
    messages = merge_same_role(_pair_tool_calls(messages))
    _check_tools(req)
    req.messages = messages
    if not sendable:
        return req
    if not any(m.role in ("user", "tool") for m in messages):
        raise errors.InvalidRequest("messages must contain at least one non-empty user message",
                                    param="messages")
    if req.model.vision is False and _has_images(messages):     # None: unknown, upstream decides
        raise errors.InvalidRequest(
            f"the model '{req.model.id}' does not accept images; pick a vision model "
            "(GET /v1/models shows \"vision\": true), or point model_map at one if the gateway "
            "maps your client's model ids", param="messages", code="image_not_supported")
    return req
