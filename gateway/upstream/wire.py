"""What the three upstream wire formats share: compact JSON out, lenient JSON and counts in,
images moved out of tool results, and adjacent turns of one role merged.

Each helper was written three times (``cli``, ``openai_wire``, ``anthropic_wire``) before; one
copy keeps a fix in one format from missing the others.
"""
from __future__ import annotations

import json

from ..canonical import Image

#: compact JSON, non-ASCII kept as is: the form every request body and relayed argument takes
dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def body(value) -> bytes:
    """A request body: ``value`` as compact UTF-8 JSON."""
    return dumps(value).encode()


def count(v) -> int:
    """A token count as upstream sends it: a positive int, or 0 for anything else (missing,
    null, negative, a float, a bool -- upstream formats differ, a wrong one must not crash)."""
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else 0


def json_object(data: bytes) -> dict | None:
    """One event's JSON object; None for a line that is not JSON or not an object (skipped,
    as the official clients skip it)."""
    try:
        value = json.loads(data)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def tool_input(value, *, lone_item: bool = False) -> dict:
    """A tool call's arguments as an object: upstream sends an object, or a JSON string that
    may be empty or broken (then ``{}``: the call still reaches the client).  With
    ``lone_item`` a one-element list is its element (the CLI route sometimes wraps it)."""
    if isinstance(value, str):
        try:
            value = json.loads(value) if value else {}
        except ValueError:
            return {}
    if lone_item and isinstance(value, list) and len(value) == 1:
        value = value[0]
    return value if isinstance(value, dict) else {}


def note_images(text: str, images: list[Image], moved: list[Image]) -> str:
    """A tool result's text with a line per image, which joins ``moved``.

    Neither wire format carries images inside tool results, so they follow in a user turn of
    their own, numbered across the turn so the model can tell them apart.
    """
    for img in images:
        moved.append(img)
        text += f"\n[image {len(moved)} attached below]"
    return text.strip("\n") or "(empty)"


def merge_turns(messages) -> list[dict]:
    """``{"role", "content": [...]}`` messages with adjacent turns of one role joined (formats
    that want alternating roles; a moved-image turn may follow a user turn)."""
    merged: list[dict] = []
    for m in messages:
        if merged and merged[-1]["role"] == m["role"]:
            merged[-1]["content"].extend(m["content"])
        else:
            merged.append(m)
    return merged
