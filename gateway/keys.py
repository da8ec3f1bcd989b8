"""Which Command Code key a request uses upstream, and how it is named without being revealed.

With ``client_keys: local`` (the default) callers present a local key and every request uses the
gateway's own Command Code key.  With ``client_keys: passthrough`` a caller may instead present
its own Command Code key (``user_...``), which is then used upstream for that request only: a team
shares one gateway while each member spends their own plan.  Such keys are never stored or
logged; usage and route memory name them by :func:`label`, a truncated SHA-256 that cannot be
turned back into the key.
"""
from __future__ import annotations

import hashlib

from . import errors

#: WSGI environ entries set by the auth hook for the rest of the request
UPSTREAM_KEY = "gateway.upstream_key"       # the caller's own key, or None for the gateway's
KEY_LABEL = "gateway.key_label"

PASSTHROUGH_PREFIX = "user_"
GATEWAY_LABEL = "gateway"                   # usage of requests made with the gateway's own key


def label(key: str) -> str:
    """A short, stable, non-reversible name for ``key``: ``key-`` and 12 hex digits."""
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:12]


def is_command_code_key(key: str) -> bool:
    return key.startswith(PASSTHROUGH_PREFIX) and len(key) > len(PASSTHROUGH_PREFIX)


def require(key: str | None) -> str:
    """``key``, or the 503 that tells the operator how to give the gateway one."""
    if not key:
        raise errors.NotConfigured(
            "the gateway has no Command Code API key: set COMMAND_CODE_API_KEY, or "
            "commandcode.api_key in the gateway's config file, or log in with the Command "
            "Code CLI (cmd login) on this machine, then restart the gateway",
            code="upstream_key_missing")
    return key
