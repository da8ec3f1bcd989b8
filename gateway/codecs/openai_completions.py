"""OpenAI legacy Completions (``/v1/completions``) <-> canonical model.

Code-completion plugins, older LangChain ``OpenAI`` LLMs and many scripts still speak this
format, and every model behind Command Code is a chat model, so the codec maps one onto the
other rather than pretending to offer raw text continuation:

* the ``prompt`` goes upstream as one user message, with no system prompt of the caller's (the
  routes then send the gateway's default one: an empty system makes Command Code inject, and
  bill, its own agent prompt);
* what a chat model cannot do is refused with a 400 naming the field when the caller actually
  asks for it (``echo: true``, a non-empty ``suffix``, ``n`` or ``best_of`` above 1,
  ``logprobs`` above 0, several prompts or token arrays), and accepted when it carries its
  default value, because SDKs and plugins send the defaults explicitly;
* ``stop`` is checked and accepted but not applied: the CLI route has no stop parameter, and
  cutting the text gateway-side would still bill the tokens generated past the stop string
  while hiding them, so the answer comes back as the model wrote it;
* ``max_tokens`` defaults as on every other surface (the route's default, clamped to the model's
  output cap), not to the legacy API's 16, which would cut nearly every chat model's answer;
* reasoning is not part of the legacy format, so reasoning deltas are dropped (their tokens stay
  in ``usage.completion_tokens_details.reasoning_tokens``); no tools are sent, so no tool call
  can occur (one that did would be dropped, and the finish would read ``stop``).

:func:`decode` builds the :class:`ChatRequest`; :class:`ChunkEncoder` writes ``text_completion``
SSE chunks as events arrive, then a ``finish_reason`` chunk, a usage chunk (``choices: []``,
always, as the chat codec does) and ``[DONE]``; :func:`completion` builds the whole object.
"""
from __future__ import annotations

import json
import secrets
import time

from .. import errors
from ..canonical import (TOOL_CALLS, ChatRequest, Finish, Message, ReasoningDelta, Text,
                         TextDelta, Usage)
from ..catalog import Catalog, require
from . import openai_chat
from .fields import body_object, get, number_in, positive_int
from .openai_chat import stream_end, stream_error, usage_object

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode

#: Errors are answered in Chat Completions' envelope, which the same SDKs parse.
error_body = openai_chat.error_body


# ---- request -----------------------------------------------------------------------------------

def _prompt(body: dict) -> str:
    """The one prompt string: a string, or an array holding exactly one string."""
    prompt = body.get("prompt")
    if isinstance(prompt, list):
        if len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        elif prompt and all(isinstance(p, str) for p in prompt):
            raise errors.InvalidRequest(
                "'prompt' must be one string: Command Code answers one prompt per request "
                f"(got {len(prompt)}; send them as separate requests)", param="prompt")
        else:
            raise errors.InvalidRequest(
                "'prompt' must be a string (or an array of one string): token arrays are not "
                "supported, the models behind Command Code take text", param="prompt")
    if prompt is None:
        raise errors.InvalidRequest("'prompt' is required", param="prompt")
    if not isinstance(prompt, str):
        raise errors.InvalidRequest("'prompt' must be a string", param="prompt")
    if not prompt.strip():
        raise errors.InvalidRequest("'prompt' must not be empty", param="prompt")
    return prompt


def _refuse_what_a_chat_model_cannot_do(body: dict) -> None:
    """400 for legacy options asked for in earnest; their default values pass silently."""
    if get(body, "echo", bool):
        raise errors.InvalidRequest("'echo' is not supported: Command Code returns only the "
                                    "completion, not the prompt", param="echo")
    if get(body, "suffix", str):
        raise errors.InvalidRequest("'suffix' is not supported: the models behind Command Code "
                                    "cannot fill in between a prompt and a suffix", param="suffix")
    for name in ("n", "best_of"):
        value = get(body, name, int)
        if value is not None and value != 1:
            raise errors.InvalidRequest(f"'{name}' must be 1: Command Code returns one choice per "
                                        "request", param=name)
    if get(body, "logprobs", int):
        raise errors.InvalidRequest("'logprobs' is not supported: Command Code does not return "
                                    "token probabilities", param="logprobs")


def _check_stop(body: dict) -> None:
    """``stop`` is accepted (not applied, see the module docstring) but must be well formed."""
    stop = body.get("stop")
    if stop is None or isinstance(stop, str):
        return
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise errors.InvalidRequest("'stop' must be a string or an array of strings", param="stop")


def decode(body, catalog: Catalog, images=None) -> ChatRequest:
    """A legacy Completions body as a canonical request; a 400 naming the field when it is wrong.

    ``images`` is unused (a prompt is text) and there only to fit :class:`~.base.Decode`.

    Accepted and ignored, as the chat codec does: ``top_p``, ``presence_penalty``,
    ``frequency_penalty``, ``logit_bias``, ``seed``, ``user``, ``stream_options`` (the usage chunk
    is always sent) and the legacy options above at their default values.
    """
    body = body_object(body)
    model = require(catalog, get(body, "model", str, required=True))
    prompt = _prompt(body)
    _refuse_what_a_chat_model_cannot_do(body)
    _check_stop(body)
    get(body, "stream_options", dict)
    max_tokens = positive_int(get(body, "max_tokens", int), "max_tokens")
    return ChatRequest(
        model=model, requested_model=body["model"], messages=[Message("user", [Text(prompt)])],
        max_tokens=max_tokens,
        temperature=number_in(get(body, "temperature", (int, float)), 0, 2, "temperature"),
        stream=bool(get(body, "stream", bool, default=False)))


# ---- response ----------------------------------------------------------------------------------

def new_id() -> str:
    return "cmpl-" + secrets.token_hex(12)


def _finish_reason(reason: str) -> str:
    """Legacy finish reasons are ``stop``, ``length`` and ``content_filter``; nothing else."""
    return "stop" if reason == TOOL_CALLS else reason


class ChunkEncoder:
    """Canonical events -> ``data: {text_completion}`` lines, as UTF-8 bytes.

    As in the chat codec, everything around the text is fixed for the stream and formatted once.
    Reasoning is dropped, but a model can reason for minutes before its first word; while it
    does, a keep-alive comment goes out every ``keepalive`` seconds (upstream is busy, so the
    relay's own keep-alive for silences never fires) so that proxies keep the stream open.
    """

    def __init__(self, model: str, keepalive: float | None = None,
                 completion_id: str | None = None, created: int | None = None):
        self.id = completion_id or new_id()
        self.created = created or int(time.time())
        self._base = ('{"id":"%s","object":"text_completion","created":%d,"model":%s,'
                      % (self.id, self.created, _dumps(model)))
        self._head = "data: " + self._base + '"choices":[{"text":'
        self._keepalive = keepalive
        self._sent_at = time.monotonic()

    def _chunk(self, text: str, finish: str | None = None) -> bytes:
        tail = ',"index":0,"logprobs":null,"finish_reason":%s}]}\n\n' % (
            "null" if finish is None else '"%s"' % finish)
        self._sent_at = time.monotonic()
        return (self._head + _dumps(text) + tail).encode()

    def event(self, ev) -> bytes:
        if type(ev) is TextDelta:
            return self._chunk(ev.text) if ev.text else b""
        if type(ev) is Finish:
            return self._chunk("", _finish_reason(ev.reason)) + stream_end(self._base, ev.usage)
        if type(ev) is ReasoningDelta and self._keepalive is not None \
                and time.monotonic() - self._sent_at >= self._keepalive:
            self._sent_at = time.monotonic()
            return self.heartbeat()
        return b""      # reasoning, and tool calls (none are asked for)

    @staticmethod
    def heartbeat() -> bytes:
        return b": keep-alive\n\n"

    error = staticmethod(stream_error)


def completion(events, model: str) -> dict:
    """The whole ``text_completion`` object from a finished stream of canonical events."""
    text, finish = [], None
    for ev in events:
        if type(ev) is TextDelta:
            text.append(ev.text)
        elif type(ev) is Finish:
            finish = ev
    return {"id": new_id(), "object": "text_completion", "created": int(time.time()),
            "model": model,
            "choices": [{"text": "".join(text), "index": 0, "logprobs": None,
                         "finish_reason": _finish_reason(finish.reason if finish else "stop")}],
            "usage": usage_object(finish.usage if finish else Usage())}
