"""What the wire-format tests share (test_sse, test_openai_wire, test_anthropic_wire): sample
models and requests, and feeding the same bytes in several splits -- whole, one byte at a time
(which cuts lines and UTF-8 characters), line by line and at random -- to expect the exact
same events.  ``split`` is a fixture: import it into a test module to use it."""
from __future__ import annotations

import json
import random

import pytest

from gateway.canonical import ChatRequest, Message, Text, Tool
from gateway.catalog import Catalog

CATALOG = Catalog.load()
FLASH = CATALOG.resolve("deepseek/deepseek-v4-flash")      # efforts high/max, no vision, no cap
KIMI = CATALOG.resolve("moonshotai/Kimi-K3")               # vision
KIMI_26 = CATALOG.resolve("moonshotai/Kimi-K2.6")          # no efforts
GLM_FLASH = CATALOG.resolve("z-ai/glm-5.3-flash")          # max output 131072
SONNET = CATALOG.resolve("claude-sonnet-5")                # efforts, no max output
HAIKU = CATALOG.resolve("claude-haiku-4-5")                # no efforts
PNG = "data:image/png;base64,iVBORw0KGgo="
JPG = "data:image/jpeg;base64,/9j/4AAQSkZJRg=="
SCHEMA = {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}
READ = Tool("read_file", "Read a file", SCHEMA)


def req(messages, model=FLASH, **kw) -> ChatRequest:
    return ChatRequest(model=model, requested_model=model.id, messages=messages, **kw)


def hi(**kw) -> ChatRequest:
    return req([Message("user", [Text("hi")])], **kw)


# ---- feeding bytes in every split ----------------------------------------------------------------

def _random(seed: int, most: int):
    def split(data: bytes) -> list[bytes]:
        rnd, out, i = random.Random(seed), [], 0
        while i < len(data):
            n = rnd.randint(1, most)
            out.append(data[i:i + n])
            i += n
        return out
    return split


SPLITS = {
    "whole": lambda d: [d],
    "bytes": lambda d: [d[i:i + 1] for i in range(len(d))],
    "lines": lambda d: d.splitlines(keepends=True),
    "random-small": _random(1, 7),
    "random-mid": _random(2, 40),
    "random-large": _random(3, 300),
}


@pytest.fixture(params=list(SPLITS), ids=list(SPLITS))
def split(request):
    return SPLITS[request.param]


def run(decoder_cls, data: bytes, split) -> list:
    """What :func:`gateway.upstream.exchange.iter_events` does: feed every chunk, ``end()`` unless done."""
    decoder = decoder_cls()
    events: list = []
    for chunk in split(data):
        events += decoder.feed(chunk)
    if not decoder.done:
        events += decoder.end()
    assert decoder.done
    return events


def openai_sse(*chunks, done: bool = True, crlf: bool = False) -> bytes:
    nl = "\r\n" if crlf else "\n"
    text = "".join(f"data: {json.dumps(c, ensure_ascii=False)}{nl}{nl}" for c in chunks)
    return (text + (f"data: [DONE]{nl}{nl}" if done else "")).encode()


def anthropic_sse(*events) -> bytes:
    return "".join(f"event: {e['type']}\ndata: {json.dumps(e, ensure_ascii=False)}\n\n"
                   for e in events).encode()
