"""Token estimates for ``count_tokens``, without calling upstream and without a vocabulary.

Command Code has no counting endpoint and its models use different tokenizers, so an exact
count is impossible; clients (Claude Code among them) use the number to decide when to compact
a conversation, where being a little high is safe and being low is not.  The estimate follows
how byte-pair tokenizers split text, with per-piece costs measured on Claude's public tokenizer
over English, Python, JavaScript and CJK text:

* a lowercase or capitalised word (camelCase is cut at its capitals, as BPE merges are) is one
  token up to six letters, plus one per ten letters beyond; a run of capitals costs one per 3.5
  letters and a run of digits one per 2.4 digits, at least one each;
* a run of ASCII punctuation costs one per 2.5 characters, at least one (``",`` or ``});``
  are single tokens);
* a single space is folded into the next token; each newline costs one (indentation spaces
  merge into it), and so does a run of tabs, or of two or more spaces inside a line;
* a non-ASCII character costs by its UTF-8 length: 1 for two bytes (accents, Cyrillic, Greek),
  1.1 for three (CJK, kana, typographic marks; 1.4 for Hangul), 2.5 for four (emoji);
* the sum is raised by 3 % (``_MARGIN``) so that text the rules undercount (rare words, JSON
  full of names) still comes out a little high rather than low.

Images cost what Anthropic documents, ``width * height / 750`` after scaling the long edge to
1568 px, at most 1600, read from the image header.  Structured parts are counted on their JSON
text (``", "`` and ``": "`` separators, as chat templates print them); each message, content
part, reasoning block, tool definition, tool call (and each of its arguments) and tool result
adds the framing a chat template wraps around it.  A request without a system prompt is counted
with the one the gateway sends instead, and tools are not counted when ``tool_choice`` is
``none`` (the gateway sends none).  ``bench/count_tokens_accuracy.py`` measures how close this
comes to a real tokenizer; the README states the result.
"""
from __future__ import annotations

import base64
import json
import math
import re
import struct

from .canonical import ChatRequest, Image, Message, Reasoning, Text, ToolCall, ToolResult
from .upstream.cli import DEFAULT_SYSTEM

# Each pattern finds one kind of piece; the kinds never overlap, so they are counted separately
# (a findall per kind runs at C speed: about 0.1 s for a 1 MB conversation).
_WORDS = re.compile(r"[A-Z]?[a-z]+")                # "word", "Word", "Case" of "camelCase"
_LONG_WORDS = re.compile(r"[A-Z]?[a-z]{7,}")        # the same pieces, those over six letters
_CAPITALS = re.compile(r"[A-Z]+(?![a-z])")          # "HTTP" of "HTTPServer", "I", "JSON"
_DIGITS = re.compile(r"[0-9]+")
_PUNCTUATION = re.compile(r"[!-/:-@\[-`{-~]+")
_BLANKS = re.compile(r"\t+|(?<=\S) [ \t]+")     # tabs (indentation too), or 2+ spaces inside a line
_NON_ASCII_2 = re.compile(r"[\u0080-\u07ff]")
_NON_ASCII_3 = re.compile(r"[\u0800-\uffff]")
_HANGUL = re.compile(r"[\u1100-\u11ff\u3130-\u318f\uac00-\ud7af]")
_NON_ASCII_4 = re.compile(r"[\U00010000-\U0010ffff]")

_WORD_EXTRA_LETTERS = 10        # a word costs one more token per this many letters past six
_CAPITALS_PER_TOKEN = 3.5
_DIGITS_PER_TOKEN = 2.4
_PUNCTUATION_PER_TOKEN = 2.5
_MARGIN = 1.03                  # text costs are scaled by this, to err on the high side
_COST_2_BYTES, _COST_3_BYTES, _COST_HANGUL, _COST_4_BYTES = 1.0, 1.1, 1.4, 2.5

_REQUEST_OVERHEAD = 4           # the turn the answer starts ("\n\nAssistant:")
_MESSAGE_OVERHEAD = 5           # a role marker ("\n\nHuman: ")
_PART_OVERHEAD = 2              # the separator between two parts of a message
_REASONING_OVERHEAD = 8         # <thinking> ... </thinking>
_TOOL_OVERHEAD = 20             # a tool definition's wrapper and its JSON keys
_TOOLS_OVERHEAD = 10            # the list holding the tool definitions
_TOOL_CALL_OVERHEAD = 20        # <function_calls><invoke name=...> ... </invoke></function_calls>
_ARGUMENT_OVERHEAD = 5          # <parameter name=...> ... </parameter>, per top-level argument
_TOOL_RESULT_OVERHEAD = 28      # <function_results><result><name>...</name><output> ... </...>
_MAX_IMAGE_TOKENS = 1600
_MAX_EDGE = 1568


def _run_cost(runs: list[str], per_token: float) -> float:
    """Runs costing one token per ``per_token`` characters, at least one each."""
    return sum(max(1.0, len(r) / per_token) for r in runs)


def text_tokens(text: str) -> int:
    if not text:
        return 0
    words = _WORDS.findall(text)
    n = len(words) + sum(len(w) - 6 for w in _LONG_WORDS.findall(text)) / _WORD_EXTRA_LETTERS
    n += _run_cost(_CAPITALS.findall(text), _CAPITALS_PER_TOKEN)
    n += _run_cost(_DIGITS.findall(text), _DIGITS_PER_TOKEN)
    n += _run_cost(_PUNCTUATION.findall(text), _PUNCTUATION_PER_TOKEN)
    n += text.count("\n") + len(_BLANKS.findall(text))
    if not text.isascii():
        hangul = len(_HANGUL.findall(text))
        n += (_COST_2_BYTES * len(_NON_ASCII_2.findall(text))
              + _COST_3_BYTES * (len(_NON_ASCII_3.findall(text)) - hangul)
              + _COST_HANGUL * hangul + _COST_4_BYTES * len(_NON_ASCII_4.findall(text)))
    return math.ceil(n * _MARGIN)


def _webp_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from a WebP header (``RIFF....WEBP`` already checked): the extended
    (VP8X), lossless (VP8L) and lossy (``VP8 ``) layouts each store them differently."""
    kind = data[12:16]
    if kind == b"VP8X":
        return (int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1)
    if kind == b"VP8L":
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if kind == b"VP8 ":
        w, h = struct.unpack("<HH", data[26:30])
        return w & 0x3FFF, h & 0x3FFF
    return None


# JPEG start-of-frame markers (SOF0-3, 5-7, 9-11, 13-15): the segments that hold the size.
_JPEG_SOF = (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF)


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from a JPEG (``FF D8`` already checked): the size is not at a fixed
    offset but in the first start-of-frame segment, so walk the segments to it (``image_tokens``
    decodes only the first 48 kB; a frame header beyond that gives None, and the maximum cost)."""
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            i += 1
            continue
        if data[i + 1] in _JPEG_SOF:
            h, w = struct.unpack(">HH", data[i + 5:i + 9])
            return w, h
        i += 2 + struct.unpack(">H", data[i + 2:i + 4])[0]
    return None


def _image_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from a PNG, GIF, JPEG or WebP header; None if unrecognised."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        return struct.unpack("<HH", data[6:10])
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP" and len(data) >= 30:
        return _webp_size(data)
    if data[:2] == b"\xff\xd8":
        return _jpeg_size(data)
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
    return text_tokens(json.dumps(value, ensure_ascii=False))


def _system_tokens(req: ChatRequest) -> int:
    """The system prompt as sent: a request with no non-blank system block is counted with
    ``DEFAULT_SYSTEM``, because the gateway sends that one (upstream would otherwise add its own,
    far longer, prompt; docs/protocol.md §4.4)."""
    system = [block.text for block in req.system if block.text.strip()] or [DEFAULT_SYSTEM]
    return sum(text_tokens(text) for text in system)


def _tool_call_tokens(call: ToolCall) -> int:
    """A tool call: its wrapper, its name, one parameter wrapper per top-level argument (chat
    templates print each argument on its own) and the arguments' JSON."""
    return (_TOOL_CALL_OVERHEAD + text_tokens(call.name) + _ARGUMENT_OVERHEAD * len(call.input)
            + _json_tokens(call.input))


def _tool_result_tokens(result: ToolResult) -> int:
    """A tool result: its wrapper, the tool's name (filled in by normalising; may be None), its
    text and the images it carries, which count like any other image."""
    return (_TOOL_RESULT_OVERHEAD + text_tokens(result.name or "") + text_tokens(result.content)
            + sum(image_tokens(i) for i in result.images))


def _part_tokens(part) -> int:
    """One content part of a message, by kind.  Any other kind would cost nothing; the canonical
    model has none, and a new one should get its own rule here rather than a silent zero."""
    if isinstance(part, Text):
        return text_tokens(part.text)
    if isinstance(part, Reasoning):
        return _REASONING_OVERHEAD + text_tokens(part.text)
    if isinstance(part, Image):
        return image_tokens(part)
    if isinstance(part, ToolCall):
        return _tool_call_tokens(part)
    if isinstance(part, ToolResult):
        return _tool_result_tokens(part)
    return 0


def _message_tokens(msg: Message) -> int:
    """A message: its role marker, a separator between each two parts, and the parts.  (A
    message with no parts counts ``_MESSAGE_OVERHEAD - _PART_OVERHEAD``, as it always has;
    normalising drops empty messages before counting, so the case does not arise in practice.)"""
    return (_MESSAGE_OVERHEAD + _PART_OVERHEAD * (len(msg.parts) - 1)
            + sum(_part_tokens(p) for p in msg.parts))


def _tools_tokens(req: ChatRequest) -> int:
    """The tool definitions as sent: none when ``tool_choice`` is ``none`` (the gateway then
    sends no tools upstream), otherwise the list's wrapper plus each definition's wrapper, name,
    description and schema JSON."""
    tools = req.tools if req.tool_choice != "none" else []
    if not tools:
        return 0
    return _TOOLS_OVERHEAD + sum(_TOOL_OVERHEAD + text_tokens(tool.name) + text_tokens(tool.description)
                                 + _json_tokens(tool.input_schema) for tool in tools)


def estimate(req: ChatRequest) -> int:
    """Estimated input tokens of ``req``: system, messages (text, images, tool parts) and tools.

    Each piece is counted by a helper named after it, so that the rules stay readable one by one
    (and each stays simple enough to check by eye); every count is an int, so the total does
    not depend on the order of the sum.
    """
    return (_REQUEST_OVERHEAD + _system_tokens(req) + sum(_message_tokens(m) for m in req.messages)
            + _tools_tokens(req))
