"""Small checks for request bodies, shared by every client codec.

Each failure is an InvalidRequest (400) naming the field by its path, e.g.
``messages[2].content[0].image_url.url``, so the caller knows exactly what to fix.
"""
from __future__ import annotations

import json

from .. import errors

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
    requires; a model's broken or non-object JSON becomes ``{}`` rather than failing the turn."""
    if isinstance(raw, dict):
        return raw
    if not raw:
        return {}
    if not isinstance(raw, str):
        raise errors.InvalidRequest(f"'{path}' must be a JSON string", param=path)
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def body_object(data) -> dict:
    if not isinstance(data, dict):
        raise errors.InvalidRequest("the request body must be a JSON object")
    return data
