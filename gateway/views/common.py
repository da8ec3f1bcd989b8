"""What every blueprint needs from a request."""
from __future__ import annotations

import json

from flask import request

from .. import errors


def json_body():
    """The request body parsed as JSON; a 400 that says why when it is not JSON.

    Read through Flask so that ``max_body_mb`` applies (a larger body is a 413).
    """
    data = request.get_data(cache=False)
    if not data:
        raise errors.InvalidRequest("the request body is empty; send a JSON object")
    try:
        return json.loads(data)
    except ValueError as exc:
        raise errors.InvalidRequest(f"the request body is not valid JSON ({exc})") from None
