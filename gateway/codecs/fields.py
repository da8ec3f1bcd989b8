"""Small checks for request bodies, shared by every client codec.

Each failure is an InvalidRequest (400) naming the field by its path, e.g.
``messages[2].content[0].image_url.url``, so the caller knows exactly what to fix.
"""
from __future__ import annotations

import json
import math
import re

from .. import errors

# Far deeper than any real request (a tool's JSON schema nests a few dozen levels at most), far
# shallower than what the JSON parser, the encoders or any walk of the value could not take.
MAX_DEPTH = 256

# What a lone surrogate can come from: a \uD800-\uDFFF escape, or the bytes ED A0-BF (CESU-8),
# which json.loads decodes with surrogatepass.  Only a body showing one is walked (two searches:
# each has a literal prefix, which the regex engine finds fast; one alternation would not).
_SURROGATE_HINTS = (re.compile(rb"\\u[dD][89a-fA-F]"), re.compile(rb"\xed[\xa0-\xbf]"))
_SURROGATE = re.compile("[\ud800-\udfff]")

_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "a boolean",
          list: "an array", dict: "an object"}


def _describe(types) -> str:
    if not isinstance(types, tuple):
        types = (types,)
    names = []
    for t in types:
        name = _NAMES.get(t, t.__name__)
        if name not in names and not (t is int and float in types):
            names.append(name)
    return " or ".join(names)


def _matches(value, types) -> bool:
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        return False    # JSON true is not a number here
    return isinstance(value, types)


def get(obj: dict, key: str, types, path: str = "", *, required: bool = False, default=None):
    """``obj[key]`` checked against ``types``; a missing or null value gives ``default``."""
    name = f"{path}.{key}" if path else key
    value = obj.get(key)
    if value is None:
        if required:
            raise errors.InvalidRequest(f"'{name}' is required", param=name)
        return default
    if not _matches(value, types):
        raise errors.InvalidRequest(f"'{name}' must be {_describe(types)}", param=name)
    return value


def number_in(value, low: float, high: float, name: str):
    if value is not None and not low <= value <= high:
        raise errors.InvalidRequest(f"'{name}' must be between {low:g} and {high:g}", param=name)
    return value


def positive_int(value, name: str):
    if value is not None and value < 1:
        raise errors.InvalidRequest(f"'{name}' must be at least 1", param=name)
    return value


def content_parts(content, path: str):
    """``(path, part)`` for each part of an array of content parts, each checked to be an
    object; a content that is not an array is a 400 (a string content is the caller's case)."""
    if not isinstance(content, list):
        raise errors.InvalidRequest(f"'{path}' must be a string or an array of content parts",
                                    param=path)
    for i, part in enumerate(content):
        p = f"{path}[{i}]"
        if not isinstance(part, dict):
            raise errors.InvalidRequest(f"'{p}' must be an object", param=p)
        yield p, part


def json_arguments(raw, path: str) -> dict:
    """A tool call's arguments (a JSON string, or already an object) as the object upstream
    requires; a model's broken or non-object JSON (or JSON no upstream could be sent) becomes
    ``{}`` rather than failing the turn."""
    if isinstance(raw, dict):
        return raw
    if not raw:
        return {}
    if not isinstance(raw, str):
        raise errors.InvalidRequest(f"'{path}' must be a JSON string", param=path)
    try:
        value = parse_json(raw, f"'{path}'")     # no NaN, lone surrogate or deep nesting
    except errors.InvalidRequest:
        return {}
    return value if isinstance(value, dict) else {}


def body_object(data) -> dict:
    if not isinstance(data, dict):
        raise errors.InvalidRequest("the request body must be a JSON object")
    return data


def parse_json(data: bytes | str, what: str = "the request body"):
    """JSON text ``data`` as a value; a 400 naming ``what`` for what no upstream could be
    sent, before anything else walks the value: text that is not JSON, nesting deeper than
    ``MAX_DEPTH``, ``NaN`` and ``Infinity``, and lone UTF-16 surrogates (not Unicode: nothing
    can encode them again; a surrogate pair escape is one character and fine).

    The codecs use it too for JSON inside a request's strings (tool call arguments, our
    ``encrypted_content``), which they treat as broken when it is refused.
    """
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    try:
        value = json.loads(data, parse_constant=lambda name: _refuse_constant(name, what),
                           parse_float=lambda text: _finite_float(text, what))
    except RecursionError:      # deeper than the parser can go (about 900 levels)
        raise _too_deep(what) from None
    except ValueError as exc:
        raise errors.InvalidRequest(f"{what} is not valid JSON ({exc})") from None
    if data.count(b"[") + data.count(b"{") > MAX_DEPTH and _nests_deeper(value, MAX_DEPTH):
        raise _too_deep(what)
    if _may_hold_surrogates(data) and _has_lone_surrogate(value):
        _refuse_lone_surrogate(value, what)
    return value


def _nests_deeper(value, limit: int) -> bool:
    """Whether ``value`` (as json.loads makes it: plain dicts and lists) nests deeper than
    ``limit``: a walk level by level, without recursion, that keeps containers only (about a
    millisecond for a megabyte of JSON, a sixth of parsing it)."""
    level = [value] if type(value) in (dict, list) else []
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            return True
        deeper = []
        add = deeper.append
        for item in level:
            for child in (item.values() if type(item) is dict else item):
                if type(child) is dict or type(child) is list:
                    add(child)
        level = deeper
    return False


def _too_deep(what: str) -> errors.InvalidRequest:
    return errors.InvalidRequest(f"{what} nests deeper than {MAX_DEPTH} levels of arrays and "
                                 "objects")


def _refuse_constant(name: str, what: str):
    raise errors.InvalidRequest(f"{what} contains {name}, which is not valid JSON; send a "
                                "finite number or null")


def _finite_float(text: str, what: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise errors.InvalidRequest(f"{what} contains the number {text[:40]}, which is too "
                                    "large for a 64-bit float")
    return value


def _may_hold_surrogates(data: bytes) -> bool:
    """False when ``data`` cannot decode to a lone surrogate; UTF-16 and UTF-32 bodies (which
    json.loads detects) always may."""
    return (any(hint.search(data) for hint in _SURROGATE_HINTS) or 0 in data[:4]
            or data[:2] in (b"\xff\xfe", b"\xfe\xff"))


def _has_lone_surrogate(value) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is str:
            if not item.isascii() and _SURROGATE.search(item):
                return True
        elif kind is dict:
            stack += item
            stack += item.values()
        elif kind is list:
            stack += item
    return False


def _refuse_lone_surrogate(value, what: str) -> None:
    """The 400 naming where a lone surrogate in ``value`` is (a key counts as its member)."""
    stack = [(value, None)]          # (value, its path as (parent's path, key or index))
    while stack:
        item, path = stack.pop()
        if isinstance(item, dict):
            for key, child in item.items():
                stack += ((key, (path, key)), (child, (path, key)))
        elif isinstance(item, list):
            stack.extend((child, (path, i)) for i, child in enumerate(item))
        elif isinstance(item, str) and (found := _SURROGATE.search(item)):
            where = _path_text(path)
            raise errors.InvalidRequest(
                f"{what} contains a lone UTF-16 surrogate (U+{ord(found.group()):04X})"
                f" at {where or 'the top level'}, which is not Unicode text; send UTF-8, or a "
                "character outside the BMP as a surrogate pair", param=where or None)


def _path_text(path) -> str:
    keys = []
    while path is not None:
        path, key = path
        keys.append(key)
    out = ""
    for key in reversed(keys):
        if isinstance(key, int):
            out += f"[{key}]"
        else:
            key = _SURROGATE.sub("\ufffd", key[:60])
            out += f".{key}" if out else key
    return out
