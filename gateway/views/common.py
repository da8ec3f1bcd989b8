"""What every blueprint needs from a request."""
from __future__ import annotations

from flask import request
from werkzeug.exceptions import ClientDisconnected, HTTPException, RequestEntityTooLarge

from .. import errors
from ..codecs.fields import parse_json

def json_body():
    """The request body parsed as JSON (:func:`parse_json`); a 400 that says why when it is not.

    Read through Flask so that ``max_body_mb`` applies (a larger body is a 413, chunked or not).
    """
    data = _read_body()
    if not data:
        raise errors.InvalidRequest("the request body is empty; send a JSON object")
    return parse_json(data)


def _read_body() -> bytes:
    try:
        data = request.get_data(cache=False)
    except ClientDisconnected as exc:
        if isinstance(exc.__context__, TimeoutError):   # the worker's pace (gateway/arrival.py)
            raise errors.RequestTimeout("the request body arrived too slowly: the gateway "
                                        "stopped waiting for it") from None
        raise errors.InvalidRequest("the request body ended before it was complete") from None
    except HTTPException:
        raise                   # 413 over max_body_mb
    except Exception as exc:    # the server's reader: a malformed chunked body, for one
        raise errors.InvalidRequest(f"the request body could not be read ({exc})") from None
    limit = request.max_content_length
    env = request.environ
    if (limit is not None and len(data) >= limit and request.content_length is None
            and env.get("wsgi.input_terminated")):
        # Without Content-Length (chunked) werkzeug stops reading at the limit and says
        # nothing; the server ends that stream itself, so one more byte tells if there was more.
        try:
            more = env["wsgi.input"].read(1)
        except Exception:       # malformed past the limit: over it all the same
            more = b"?"
        if more:
            raise RequestEntityTooLarge()
    return data
