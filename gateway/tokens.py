"""Token estimates for ``count_tokens``, without calling upstream and without a vocabulary.

Command Code has no counting endpoint and its models use different tokenizers, so an exact
count is impossible; clients (Claude Code among them) use the number to decide when to compact
a conversation, where being a little high is safe and being low is not.  The estimate follows
how byte-pair tokenizers split text: a run of ASCII letters or digits costs about one token per
four characters (at least one), each punctuation mark one, each CJK or other non-ASCII
character about one; whitespace is folded into the next token.  Images cost what Anthropic
documents, ``width * height / 750`` after scaling the long edge to 1568 px, read from the image
header; structured parts (tool schemas, tool inputs) are counted on their JSON text, and each
message, tool and block adds a small framing overhead.  How close this comes is measured by
``bench/count_tokens_accuracy.py`` and stated in the README.
"""
from __future__ import annotations

import base64
import json
import math
import re
import struct

from .canonical import ChatRequest, Image, Reasoning, Text, ToolCall, ToolResult

_PIECES = re.compile(r"[A-Za-z]+|[0-9]+|[^\sA-Za-z0-9]")
_MESSAGE_OVERHEAD = 4
_TOOL_OVERHEAD = 8
_REQUEST_OVERHEAD = 3
_MAX_IMAGE_TOKENS = 1600
_MAX_EDGE = 1568


def text_tokens(text: str) -> int:
    n = 0
    for piece in _PIECES.findall(text):
        c = piece[0]
        if c.isascii() and c.isalnum():
            n += (len(piece) + 3) // 4
        else:
            n += 1
    return n


def _image_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from a PNG, GIF, JPEG or WebP header; None if unrecognised."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        return struct.unpack("<HH", data[6:10])
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP" and len(data) >= 30:
        kind = data[12:16]
        if kind == b"VP8X":
            return (int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1)
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
            if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
                h, w = struct.unpack(">HH", data[i + 5:i + 9])
                return w, h
            i += 2 + struct.unpack(">H", data[i + 2:i + 4])[0]
    return None


def image_tokens(img: Image) -> int:
    try:
        head = base64.b64decode(img.data_url.split(",", 1)[1][:65536], validate=False)
    except (ValueError, IndexError):
        return _MAX_IMAGE_TOKENS
    size = _image_size(head)
    if not size or not all(size):
        return _MAX_IMAGE_TOKENS
    w, h = size
    scale = min(1.0, _MAX_EDGE / max(w, h))
    return max(1, min(_MAX_IMAGE_TOKENS, math.ceil(w * scale * h * scale / 750)))


def _json_tokens(value) -> int:
    return text_tokens(json.dumps(value, ensure_ascii=False, separators=(",", ":")))


def estimate(req: ChatRequest) -> int:
    """Estimated input tokens of ``req``: system, messages (text, images, tool parts) and tools."""
    n = _REQUEST_OVERHEAD
    for block in req.system:
        n += text_tokens(block.text)
    for msg in req.messages:
        n += _MESSAGE_OVERHEAD
        for p in msg.parts:
            if isinstance(p, (Text, Reasoning)):
                n += text_tokens(p.text)
            elif isinstance(p, Image):
                n += image_tokens(p)
            elif isinstance(p, ToolCall):
                n += _TOOL_OVERHEAD + text_tokens(p.name) + _json_tokens(p.input)
            elif isinstance(p, ToolResult):
                n += _TOOL_OVERHEAD + text_tokens(p.content) + sum(image_tokens(i) for i in p.images)
    for tool in req.tools:
        n += _TOOL_OVERHEAD + text_tokens(tool.name) + text_tokens(tool.description) + \
            _json_tokens(tool.input_schema)
    return n
