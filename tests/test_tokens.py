"""The ``count_tokens`` estimate (``gateway/tokens.py``) as plain functions.

The endpoint tests (``test_anthropic_integration.py``) only check that counts grow; these pin
what each piece costs, so that a change to the rules is a deliberate one.  The rules are the
module docstring's: per-piece costs for text, then the framing a chat template adds around
messages, parts, reasoning, tool calls, tool results and tool definitions, and Anthropic's
``width * height / 750`` for images.  How close the rules come to a real tokenizer is measured
by ``bench/count_tokens_accuracy.py``, not here.
"""
from __future__ import annotations

import base64
import copy
import json
import math
import struct

import pytest

from gateway.canonical import (ChatRequest, Image, Message, Reasoning, SystemBlock, Text, Tool,
                               ToolCall, ToolResult)
from gateway.catalog import Catalog
from gateway.tokens import estimate, image_tokens, text_tokens
from gateway.upstream.cli import DEFAULT_SYSTEM

FLASH = Catalog.load().resolve("deepseek/deepseek-v4-flash")


def req(messages=(), **kw) -> ChatRequest:
    return ChatRequest(model=FLASH, requested_model=FLASH.id, messages=list(messages), **kw)


def margin(n: float) -> int:
    """What ``n`` raw tokens come to once the safety margin (3 %) is applied."""
    return math.ceil(n * 1.03)


# ---- images, as the headers a client really sends ------------------------------------------------

def data_url(data: bytes, media: str = "image/png") -> str:
    return f"data:{media};base64," + base64.b64encode(data).decode()


def png(w: int, h: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr


def gif(w: int, h: int) -> bytes:
    return b"GIF89a" + struct.pack("<HH", w, h) + b"\x00\x00\x00"


def webp_vp8x(w: int, h: int) -> bytes:
    chunk = b"VP8X" + struct.pack("<I", 10) + b"\x00\x00\x00\x00" + (w - 1).to_bytes(3, "little") + \
        (h - 1).to_bytes(3, "little")
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


def webp_vp8l(w: int, h: int) -> bytes:
    bits = (w - 1) | ((h - 1) << 14)
    chunk = b"VP8L" + struct.pack("<I", 5) + b"\x2f" + bits.to_bytes(4, "little") + b"\x00" * 5
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


def webp_vp8(w: int, h: int) -> bytes:
    chunk = b"VP8 " + struct.pack("<I", 10) + b"\x00" * 3 + b"\x9d\x01\x2a" + struct.pack("<HH", w, h)
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


def jpeg(w: int, h: int, sof: int = 0xC0, app_bytes: int = 14, gap: bytes = b"") -> bytes:
    """A JPEG head: SOI, an APP0 segment of ``app_bytes`` (the size is not at a fixed offset, so
    the reader must walk past it), ``gap`` (stray bytes some encoders leave between segments),
    then the start-of-frame segment holding the size."""
    app0 = b"\xff\xe0" + struct.pack(">H", app_bytes + 2) + b"\x00" * app_bytes
    frame = b"\xff" + bytes([sof]) + struct.pack(">HBHHB", 11, 8, h, w, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + app0 + gap + frame


def image(data: bytes, media: str = "image/png") -> Image:
    return Image(data_url(data, media), media)


# ---- text ----------------------------------------------------------------------------------------

def test_empty_and_blank_text_cost_nothing():
    assert text_tokens("") == 0
    assert text_tokens(" ") == text_tokens("   ") == 0         # a space joins the next token
    assert text_tokens("\n") == margin(1)                      # but a newline is one


def test_a_word_is_one_token_up_to_six_letters_then_one_per_ten_more():
    assert text_tokens("hello " * 100) == margin(100)
    assert text_tokens("aaaaaa " * 100) == margin(100)
    assert text_tokens("abcdefghijklmnop " * 100) == margin(200)     # 16 letters: 1 + 10/10
    assert text_tokens("internationalization") == margin(1 + 14 / 10)


def test_camel_case_is_cut_at_its_capitals_and_capital_runs_cost_one_per_three_and_a_half():
    assert text_tokens("camelCaseName") == margin(3)
    assert text_tokens("camelcasename") == margin(1 + 7 / 10)
    assert text_tokens("camelCaseName") > text_tokens("camelcasename")
    assert text_tokens("JSON " * 100) == margin(100 * 4 / 3.5)
    assert text_tokens("HTTPServer") == margin(1 + 1)               # "HTTP" + "Server"


def test_digits_and_punctuation_cost_per_run_at_least_one_each():
    assert text_tokens("1234567890") == margin(10 / 2.4)
    assert text_tokens("1 " * 100) == margin(100)                   # a single digit is still one
    assert text_tokens("}) " * 100) == margin(100)                  # "})" is one token
    assert text_tokens("}); " * 100) == margin(100 * 3 / 2.5)


def test_newlines_tabs_and_inner_space_runs_cost_one_but_indentation_merges_into_the_newline():
    assert text_tokens("\n" * 100) == margin(100)
    assert text_tokens("\n    x" * 100) == margin(200)          # newline + word; the 4 spaces are free
    assert text_tokens("a b") == margin(2)
    assert text_tokens("a  b") == margin(3)                     # two spaces inside a line: one more
    assert text_tokens("\t\t") == margin(1)                     # a run of tabs is one


@pytest.mark.parametrize("char, cost", [
    ("é", 1.0), ("Ж", 1.0),                 # two UTF-8 bytes
    ("中", 1.1), ("か", 1.1), ("\u201c", 1.1),   # three bytes: CJK, kana, typographic marks
    ("한", 1.4),                             # Hangul costs more than other three-byte text
    ("😀", 2.5), ("\U0010ffff", 2.5),        # four bytes
])
def test_non_ascii_costs_by_its_utf8_length(char, cost):
    assert text_tokens(char * 100) == margin(100 * cost)


def test_mixed_scripts_add_up_and_odd_unicode_never_raises():
    assert text_tokens("hello 中文") == margin(1 + 2 * 1.1)
    assert text_tokens("café") == margin(1 + 1)                 # "caf" and the accented letter
    for odd in ("\ud800", "e\u0301", "\u200b", "\ufeff", "\U0001f469\u200d\U0001f4bb"):
        assert text_tokens(odd) >= 1
    assert text_tokens("\x00\x07\x1b") == 0      # ASCII control characters match no rule (rare in text)


def test_text_grows_with_its_length_and_is_never_below_the_word_count():
    counts = [text_tokens("the quick brown fox jumps " * n) for n in range(0, 200, 10)]
    assert counts == sorted(counts) and len(set(counts)) == len(counts)
    for n in (1, 10, 100, 1000):
        assert text_tokens("word " * n) == margin(n) >= n


# ---- images --------------------------------------------------------------------------------------

@pytest.mark.parametrize("make", [png, gif, webp_vp8x, webp_vp8l, webp_vp8, jpeg],
                         ids=["png", "gif", "webp-vp8x", "webp-vp8l", "webp-vp8", "jpeg"])
def test_every_supported_format_is_sized_from_its_header(make):
    assert image_tokens(image(make(200, 100))) == math.ceil(200 * 100 / 750)       # 27
    assert image_tokens(image(make(1000, 1000))) == math.ceil(1000 * 1000 / 750)   # 1334


def test_progressive_jpeg_segments_before_the_frame_and_stray_bytes_are_read_past():
    assert image_tokens(image(jpeg(300, 300, sof=0xC2), "image/jpeg")) == 120
    assert image_tokens(image(jpeg(300, 300, app_bytes=5000), "image/jpeg")) == 120
    assert image_tokens(image(jpeg(300, 300, gap=b"\x00"), "image/jpeg")) == 120
    assert image_tokens(image(jpeg(300, 300, gap=b"\x00\x01\x02"), "image/jpeg")) == 120


def test_the_long_edge_is_scaled_to_1568_px_and_the_cost_capped_at_1600():
    assert image_tokens(image(png(3136, 100))) == math.ceil(1568 * 50 / 750)      # halved: 105
    assert image_tokens(image(png(100, 3136))) == 105
    assert image_tokens(image(png(1568, 1568))) == 1600                           # 3278 before the cap
    assert image_tokens(image(png(4000, 3000))) == 1600
    assert image_tokens(image(png(1, 1))) == 1                                    # never zero


@pytest.mark.parametrize("url", [
    "data:image/png;base64,",                                     # nothing to read
    "no comma here",
    data_url(b"not an image at all"),
    data_url(png(0, 100)),                                        # a zero edge
    data_url(png(100, 100))[:-3] + "!",                           # broken base64
    data_url(png(100, 100)[:20]),                                 # header cut short
    data_url(jpeg(300, 300, app_bytes=60000)),                    # frame header past the decoded head
])
def test_an_image_whose_size_cannot_be_read_costs_the_maximum(url):
    """Counting high is the safe side: a client compacts a little early instead of overflowing."""
    assert image_tokens(Image(url, "image/png")) == 1600


# ---- whole requests ------------------------------------------------------------------------------

BASE = 4 + text_tokens(DEFAULT_SYSTEM)          # the answer's turn, and the system the gateway sends


def one(*parts) -> ChatRequest:
    return req([Message("user", list(parts))])


def test_an_empty_request_is_counted_with_the_default_system_prompt():
    assert estimate(req()) == BASE
    assert estimate(req(system=[SystemBlock("  \n"), SystemBlock("")])) == BASE     # blank is none


def test_the_client_system_prompt_replaces_the_default_and_every_block_counts():
    assert estimate(req(system=[SystemBlock("Be brief.")])) == 4 + text_tokens("Be brief.")
    two = req(system=[SystemBlock("Be brief."), SystemBlock(" "), SystemBlock("Answer in French.")])
    assert estimate(two) == 4 + text_tokens("Be brief.") + text_tokens("Answer in French.")


def test_each_message_adds_a_role_marker_and_each_further_part_a_separator():
    assert estimate(one(Text("hello"))) == BASE + 5 + text_tokens("hello")
    assert estimate(one(Text("hello"), Text("world"))) == BASE + 5 + 2 + 2 * text_tokens("hello")
    two_turns = req([Message("user", [Text("hello")]), Message("assistant", [Text("hello")])])
    assert estimate(two_turns) == BASE + 2 * (5 + text_tokens("hello"))


def test_reasoning_adds_its_thinking_wrapper_and_not_its_signature():
    plain = estimate(req([Message("assistant", [Reasoning("let me think")])]))
    assert plain == BASE + 5 + 8 + text_tokens("let me think")
    assert estimate(req([Message("assistant", [Reasoning("let me think", signature="s" * 500)])])) == plain


def test_a_tool_call_counts_its_wrapper_name_one_wrapper_per_argument_and_its_json():
    args = {"file_path": "a.txt", "limit": 20}
    call = req([Message("assistant", [ToolCall("c1", "read_file", args)])])
    assert estimate(call) == BASE + 5 + 20 + text_tokens("read_file") + 2 * 5 + \
        text_tokens('{"file_path": "a.txt", "limit": 20}')
    no_args = req([Message("assistant", [ToolCall("c1", "read_file", {})])])
    assert estimate(no_args) == BASE + 5 + 20 + text_tokens("read_file") + text_tokens("{}")


def test_tool_call_arguments_are_counted_as_unescaped_json():
    """Chat templates print the arguments as UTF-8, so CJK costs as CJK, not as ``\\uXXXX``."""
    call = req([Message("assistant", [ToolCall("c1", "say", {"q": "中文" * 50})])])
    assert estimate(call) == BASE + 5 + 20 + text_tokens("say") + 5 + \
        text_tokens(json.dumps({"q": "中文" * 50}, ensure_ascii=False))
    assert text_tokens(json.dumps({"q": "中文" * 50}, ensure_ascii=False)) < \
        text_tokens(json.dumps({"q": "中文" * 50}))


def test_a_tool_result_counts_its_wrapper_name_text_and_images():
    def result(**kw) -> int:
        return estimate(req([Message("tool", [ToolResult("c1", "file contents", **kw)])]))

    assert result() == BASE + 5 + 28 + text_tokens("file contents")
    assert result(name="read_file") == result() + text_tokens("read_file")
    shot = image(png(1000, 1000))
    assert result(images=[shot, shot]) == result() + 2 * 1334
    assert result(is_error=True) == result()


def test_an_image_in_a_message_costs_what_image_tokens_says():
    text = Text("what is this")
    assert estimate(one(text, image(png(1000, 1000)))) == estimate(one(text)) + 2 + 1334
    assert estimate(one(text, Image("data:image/png;base64,", "image/png"))) == \
        estimate(one(text)) + 2 + 1600


def test_tool_definitions_count_unless_tool_choice_is_none():
    weather = Tool("get_weather", "Current weather for a city.",
                   {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})
    base = estimate(one(Text("hi")))
    cost = 20 + text_tokens(weather.name) + text_tokens(weather.description) + \
        text_tokens(json.dumps(weather.input_schema, ensure_ascii=False))
    assert estimate(req([Message("user", [Text("hi")])], tools=[weather])) == base + 10 + cost
    assert estimate(req([Message("user", [Text("hi")])], tools=[weather, weather])) == base + 10 + 2 * cost
    assert estimate(req([Message("user", [Text("hi")])], tools=[weather], tool_choice="required")) == \
        base + 10 + cost
    assert estimate(req([Message("user", [Text("hi")])], tools=[weather], tool_choice="none")) == base


def test_a_request_grows_with_every_turn_and_with_the_length_of_each():
    def history(turns: int, words: int) -> ChatRequest:
        return req([Message("user" if i % 2 == 0 else "assistant", [Text("some words here " * words)])
                    for i in range(turns)])

    by_turns = [estimate(history(t, 5)) for t in range(1, 20)]
    by_words = [estimate(history(3, w)) for w in range(1, 50)]
    assert by_turns == sorted(by_turns) and len(set(by_turns)) == len(by_turns)
    assert by_words == sorted(by_words) and len(set(by_words)) == len(by_words)


def test_the_estimate_is_deterministic_and_leaves_the_request_alone():
    def build() -> ChatRequest:
        return req([Message("user", [Text("read a.txt 中文 😀"), image(jpeg(640, 480), "image/jpeg")]),
                    Message("assistant", [Reasoning("ok"), ToolCall("c1", "read_file", {"path": "a.txt"})]),
                    Message("tool", [ToolResult("c1", "x" * 300, name="read_file")])],
                   system=[SystemBlock("Be brief.")], tools=[Tool("read_file", "Read", {"type": "object"})])

    r = build()
    before = copy.deepcopy(r)
    assert estimate(r) == estimate(r) == estimate(build())
    assert r == before


def test_a_message_with_no_parts_costs_its_role_marker_less_one_separator():
    """Normalising drops empty messages before counting; this pins what the estimate alone does."""
    assert estimate(req([Message("user", [])])) == BASE + 5 - 2

