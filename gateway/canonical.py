"""The canonical model in the middle: one request shape and one event vocabulary.

Every client codec decodes into :class:`ChatRequest` and encodes from the events below; every
upstream route encodes from :class:`ChatRequest` and decodes into the events.  Adding a surface or
a route is therefore one codec, never a change to the others.  Everything here is plain data.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from .catalog import Model

# ---- request ---------------------------------------------------------------------------------


@dataclass(slots=True)
class Text:
    """``cache_control``: an Anthropic prompt-cache breakpoint after this block, kept so that
    Claude on the Provider API caches what the client asked it to (Claude Code relies on it)."""
    text: str
    cache_control: dict | None = None


@dataclass(slots=True)
class Image:
    """An image as a ``data:`` URL (remote URLs are fetched and inlined while decoding)."""
    data_url: str
    media_type: str


@dataclass(slots=True)
class Reasoning:
    """Reasoning shown in an earlier turn.  ``signature`` is Anthropic's proof that a thinking
    block is the model's own; Claude needs it back to continue a turn that used tools."""
    text: str
    signature: str = ""


@dataclass(slots=True)
class ToolCall:
    id: str
    name: str
    input: dict


@dataclass(slots=True)
class ToolResult:
    call_id: str
    content: str
    is_error: bool = False
    images: list[Image] = field(default_factory=list)
    name: str | None = None     # filled from the matching call when normalising
    cache_control: dict | None = None


Part = Union[Text, Image, Reasoning, ToolCall, ToolResult]


@dataclass(slots=True)
class Message:
    role: str           # "user" | "assistant" | "tool"
    parts: list[Part]


@dataclass(slots=True)
class Tool:
    name: str
    description: str
    input_schema: dict
    cache_control: dict | None = None


@dataclass(slots=True)
class SystemBlock:
    text: str
    cache_control: dict | None = None


@dataclass(slots=True)
class ChatRequest:
    model: Model
    requested_model: str
    messages: list[Message]
    system: list[SystemBlock] = field(default_factory=list)
    tools: list[Tool] = field(default_factory=list)
    tool_choice: str = "auto"           # "auto" | "none" | "required" (best effort upstream)
    max_tokens: int | None = None
    temperature: float | None = None
    reasoning_effort: str | None = None  # already checked against the model's efforts
    stream: bool = False


# ---- response events -------------------------------------------------------------------------


@dataclass(slots=True)
class Usage:
    """Token counts as upstream reports them: ``input_tokens`` includes cache reads and writes."""
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0

    def add(self, other: "Usage") -> None:
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.cache_read_tokens += other.cache_read_tokens
        self.cache_write_tokens += other.cache_write_tokens
        self.reasoning_tokens += other.reasoning_tokens

    @property
    def uncached_input_tokens(self) -> int:
        return max(0, self.input_tokens - self.cache_read_tokens - self.cache_write_tokens)


@dataclass(slots=True)
class TextDelta:
    text: str


@dataclass(slots=True)
class ReasoningDelta:
    """Reasoning text; a delta may instead carry only the block's ``signature`` (Claude)."""
    text: str
    signature: str = ""


@dataclass(slots=True)
class ToolCallEvent:
    """One complete tool call (upstream's authoritative ``tool-call``; arguments are final)."""
    id: str
    name: str
    input: dict


STOP, LENGTH, TOOL_CALLS, CONTENT_FILTER = "stop", "length", "tool_calls", "content_filter"


@dataclass(slots=True)
class Finish:
    reason: str         # one of STOP, LENGTH, TOOL_CALLS, CONTENT_FILTER
    usage: Usage


Event = Union[TextDelta, ReasoningDelta, ToolCallEvent, Finish]
