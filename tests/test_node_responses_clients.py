"""The Vercel AI SDK's default OpenAI model -- the Responses API -- against a real gunicorn's
``POST /v1/responses`` and the fake upstream; one pytest item per route x case.

Why: ``createOpenAI({baseURL})(id)`` (``@ai-sdk/openai``, pinned in ``tests/clients/package.json``)
is an ``OpenAIResponsesLanguageModel``: any app that points the AI SDK's OpenAI provider at the
gateway without ``.chat(id)`` talks to ``/v1/responses``.  Its zod schemas want ids on every
output item, ``created_at``, ``item_id`` on each delta and the usage numbers; it maps
``response.completed`` / ``incomplete`` to finish reasons, reasoning summaries to reasoning parts,
and, with its default ``store: true``, sends earlier output items back as ``item_reference`` ids
(the server is expected to know them) rather than as whole items.

How: ``tests/clients/ai_sdk_responses.mjs`` runs every case against one gateway URL and model in
one node process (node start-up is the slow part) and prints what the SDK showed; the module
fixture ``runs`` starts the three processes at once and keeps the fake upstream's record of the
same time window.  Every prompt carries ``(case ai-responses/<target>/<case>)``, so each case's
upstream requests -- and any protocol violation found in them -- are told apart.  Each item
asserts what the SDK showed (text, reasoning, tool call and parsed input, the tool's result,
usage from ``USAGE``, error class and status) and what reached upstream (the route's path, the
model, the tool, the tool's result, the conversation's earlier turns).

Targets: ``cli`` (``gateway``), ``provider`` (``provider_gateway``, DeepSeek -> Provider chat)
and ``provider-claude`` (``provider_gateway``, ``claude-sonnet-5`` -> Provider messages).
Run only these: ``.venv/bin/python -m pytest -q tests/test_node_responses_clients.py``.
"""
from __future__ import annotations

import concurrent.futures
import json
import os
import re
import subprocess

import pytest

from tests.conftest import LOCAL_KEY
from tests.fake_upstream import CALL_ANSWER_PREFIX, USAGE, tool_results_after_last_call
from tests.test_node_clients import CLIENTS_DIR, _node, tool_names

GENERATE = "/alpha/generate"
CHAT = "/provider/v1/chat/completions"
MESSAGES = "/provider/v1/messages"
WIRE = {GENERATE: "generate", CHAT: "chat", MESSAGES: "messages"}
FLASH = "deepseek/deepseek-v4-flash"
CLAUDE = "claude-sonnet-5"
SCRIPT = "ai_sdk_responses.mjs"
CLIENT = "ai-responses"
NODE_TIMEOUT = 60          # seconds for one node process (every case of one target)
CASE_TIMEOUT_MS = 10000    # one case inside it (each takes well under a second normally)

# The first item runs the node processes (in its module fixture); see test_node_clients.py.
pytestmark = pytest.mark.timeout(240)

TOOL_OUTPUT = "contents of a.txt"         # what the script's read_file returns for a.txt
TOOL_INPUT = {"file_path": "a.txt"}
TOOL_ANSWER = CALL_ANSWER_PREFIX + TOOL_OUTPUT
SYSTEM = "You answer questions about the weather."     # the script's system prompt (text cases)

#: target -> (gateway fixture, model, upstream path it must land on)
TARGETS = {
    "cli": ("gateway", FLASH, GENERATE),
    "provider": ("provider_gateway", FLASH, CHAT),
    "provider-claude": ("provider_gateway", CLAUDE, MESSAGES),
}


class Case:
    """One target x case: the script's result for it and the upstream requests it caused."""

    def __init__(self, target, name, run, requests, violations):
        self.target, self.name = target, name
        _, self.model, self.path = TARGETS[target]
        self.wire = WIRE[self.path]
        self.run = run
        self.result = run["cases"].get(name)
        self.requests, self.violations = requests, violations

    def usage(self, *scenarios: str) -> dict:
        """The AI SDK's LanguageModelUsage for ``USAGE`` of ``scenarios`` (summed): inputTokens
        includes cache reads and writes; behind the Anthropic Messages API (no reasoning-token
        count) reasoningTokens is 0."""
        u = {k: sum(USAGE[s][k] for s in scenarios) for k in USAGE[scenarios[0]]}
        return {"inputTokens": u["input"], "outputTokens": u["output"],
                "totalTokens": u["input"] + u["output"],
                "noCacheTokens": u["input"] - u["cache_read"] - u["cache_write"],
                "cacheReadTokens": u["cache_read"], "cacheWriteTokens": u["cache_write"],
                "reasoningTokens": 0 if self.path == MESSAGES else u["reasoning"]}

    def why(self, what: str) -> str:
        shown = json.dumps(self.result, indent=1, default=str)
        if len(shown) > 6000:
            shown = shown[:6000] + " ..."
        return (f"{CLIENT} on {self.target} ({self.model}), case {self.name}: {what}\n"
                f"client showed: {shown}\n--- node stderr (tail) ---\n{self.run['stderr'][-4000:]}")

    def check_ran(self):
        assert self.result is not None, self.why("the script did not report this case")
        assert "error" not in self.result, self.why("the client raised an unexpected error")

    def check_upstream(self, count: int, tools: bool = False):
        """``count`` requests, all on this target's path and model, without protocol violations."""
        assert self.violations == [], self.why(f"the gateway broke the upstream protocol: {self.violations}")
        paths = [r["path"] for r in self.requests]
        assert paths == [self.path] * count, self.why(f"upstream requests {paths}, expected {count} x {self.path}")
        for r in self.requests:
            body = r["body"] or {}
            model = (body.get("params") or {}).get("model") if self.wire == "generate" else body.get("model")
            assert model == self.model, self.why(f"upstream was asked for model {model!r}")
            if tools:
                assert tool_names(body, self.wire) == ["read_file"], self.why(
                    f"tools upstream: {tool_names(body, self.wire)}")

    def history(self, request) -> list[tuple[str, str]]:
        """The user / assistant turns of an upstream request, as (role, text of its text parts)."""
        body = request["body"]
        messages = body["params"]["messages"] if self.wire == "generate" else body["messages"]
        out = []
        for m in messages:
            if m["role"] in ("user", "assistant"):
                content = m.get("content")
                text = content if isinstance(content, str) else \
                    "".join(p.get("text", "") for p in content or () if p.get("type") == "text")
                out.append((m["role"], text))
        return out

    def system(self, request) -> str:
        """The system prompt of an upstream request, as one text."""
        body = request["body"]
        if self.wire == "generate":
            return body["params"]["system"]
        if self.wire == "chat":
            return "\n".join(m["content"] if isinstance(m["content"], str) else
                             "".join(p.get("text", "") for p in m["content"])
                             for m in body["messages"] if m["role"] in ("system", "developer"))
        system = body.get("system") or ""
        return system if isinstance(system, str) else "".join(b.get("text", "") for b in system)

    def tag(self) -> str:
        return f"(case {CLIENT}/{self.target}/{self.name})"


# ---- the cases ---------------------------------------------------------------------------------

def _text(c: Case, streamed: bool):
    r = c.result
    assert (r["text"], r["finishReason"]) == ("Hello world", "stop"), c.why("text and finishReason")
    assert r["usage"] == c.usage("text"), c.why("usage")
    assert (r["responseId"] or "").startswith("resp_"), c.why("providerMetadata.openai.responseId")
    if streamed:
        assert r["errors"] == [] and r["streamed"] == "Hello world", c.why("the stream itself")
        assert r["types"] == ["start", "start-step", "text-start", "text-delta", "text-end",
                              "finish-step", "finish"], c.why("stream part types")
    c.check_upstream(1)
    assert SYSTEM in c.system(c.requests[0]), c.why(f"system upstream: {c.system(c.requests[0])!r}")
    assert c.history(c.requests[0]) == [("user", f"Say hello {c.tag()}")], c.why("the prompt upstream")


def _tools(c: Case, streamed: bool):
    r = c.result
    steps = r["steps"]
    assert len(steps) == 2, c.why(f"{len(steps)} steps, expected a tool step and an answer step")
    call_step, answer_step = steps
    assert call_step["finishReason"] == "tool-calls", c.why("first step's finishReason")
    assert [(t["name"], t["input"]) for t in call_step["toolCalls"]] == [("read_file", TOOL_INPUT)], \
        c.why("tool call (name, parsed input)")
    assert [(t["id"], t["output"]) for t in call_step["toolResults"]] == \
        [(call_step["toolCalls"][0]["id"], TOOL_OUTPUT)], c.why("the tool's execute result")
    assert (answer_step["finishReason"], answer_step["text"]) == ("stop", TOOL_ANSWER), c.why("answer step")
    assert call_step["responseId"] != answer_step["responseId"], c.why("one response per step")
    assert r["text"] == TOOL_ANSWER and r["finishReason"] == "stop", c.why("final text")
    assert call_step["usage"] == c.usage("call"), c.why("tool step usage")
    assert answer_step["usage"] == c.usage("call_answer"), c.why("answer step usage")
    assert r["usage"] == c.usage("call", "call_answer"), c.why("total usage of the two steps")
    assert r["sentInputs"] == [["message"], ["message", "function_call", "function_call_output"]], \
        c.why("what the SDK sent: the call and its output go back whole, not as item references")
    if streamed:
        assert r["errors"] == [] and r["streamed"] == TOOL_ANSWER, c.why("the stream itself")
        assert "tool-call" in r["types"] and "tool-result" in r["types"], c.why("stream part types")
    c.check_upstream(2, tools=True)
    first, second = (tool_results_after_last_call(q["body"], c.wire) for q in c.requests)
    assert not first, c.why(f"the first upstream request already had tool results {first}")
    assert second == [TOOL_OUTPUT], c.why(f"tool results that reached upstream: {second}")


def _reasoning(c: Case):
    r = c.result
    assert (r["reasoningText"], r["text"]) == ("Let me think.", "4"), c.why("reasoning summary and text")
    if "reasoningParts" in r:
        assert r["reasoningParts"] == ["Let me think."], c.why("one reasoning part")
    if "errors" in r:
        assert r["errors"] == [] and r["streamedReasoning"] == "Let me think.", c.why("reasoning deltas")
        assert r["types"].index("reasoning-start") < r["types"].index("text-start"), c.why("part order")
    assert r["usage"] == c.usage("reasoning"), c.why("usage")
    c.check_upstream(1)


def _cache(c: Case):
    r = c.result
    assert (r["text"], r["finishReason"]) == ("cached", "stop"), c.why("text")
    assert r["usage"] == c.usage("cache"), c.why("usage with cache writes")
    c.check_upstream(1)


def _second_turn(c: Case):
    """The second turn answers the new message, and upstream got the first turn before it."""
    r = c.result
    assert r["firstText"] == "Hello world", c.why("first answer")
    c.check_upstream(2)
    first_q = f"Say hello {c.tag()}"
    assert c.history(c.requests[0]) == [("user", first_q)], c.why("first upstream request")
    assert c.history(c.requests[1]) == [("user", first_q), ("assistant", "Hello world"),
                                        ("user", f"[[echo]] and again {c.tag()}")], \
        c.why(f"history upstream on the second turn: {c.history(c.requests[1])}")
    assert r["text"] == f"and again {c.tag()}", c.why("the echo of the second user message alone")
    assert r["usage"] == c.usage("echo"), c.why("usage")


def _history_second_turn(c: Case):
    """The app sends the first turn back as history; the SDK (store: true by default) sends the
    first answer as ``{"type": "item_reference", "id": <its msg_ id>}``, which the gateway has
    stored, so upstream must get the first answer's text in its place."""
    r = c.result
    [sent] = r["sent"]
    [answer_id] = r["firstItemIds"]
    assert sent["path"] == "/v1/responses" and [i.get("type", "message") for i in sent["input"]] == \
        ["message", "item_reference", "message"], c.why("what the SDK sent on the second turn")
    assert sent["input"][1]["id"] == answer_id and answer_id.startswith("msg_"), c.why("the referenced item")
    _second_turn(c)


def _previous_response_id(c: Case):
    """``providerOptions.openai.previousResponseId``: the SDK sends only the new message."""
    r = c.result
    assert r["firstId"].startswith("resp_") and r["secondId"].startswith("resp_") and \
        r["firstId"] != r["secondId"], c.why("response ids")
    [sent] = r["sent"]
    assert (sent["previousResponseId"], len(sent["input"])) == (r["firstId"], 1), c.why("what the SDK sent")
    _second_turn(c)


def _error(c: Case, streamed: bool):
    r = c.result
    assert not r.get("unexpectedSuccess"), c.why("a 429 before any output must be an error")
    if streamed:
        assert r["streamed"] == "", c.why("text before the error")
        assert len(r["errors"]) == 1, c.why("the stream must carry exactly one error part")
        err = r["errors"][0]
    else:
        err = r["thrown"]
    assert (err["class"], err["status"]) == ("APICallError", 429), c.why("error class and status")
    assert "slow down" in err["message"], c.why("the upstream's message is kept")
    c.check_upstream(1)


CASES = {
    "generate_text": lambda c: _text(c, streamed=False),
    "stream_text": lambda c: _text(c, streamed=True),
    "generate_tool_round_trip": lambda c: _tools(c, streamed=False),
    "stream_tool_round_trip": lambda c: _tools(c, streamed=True),
    "generate_reasoning": _reasoning,
    "stream_reasoning": _reasoning,
    "generate_cache": _cache,
    "history_second_turn": _history_second_turn,
    "previous_response_id": _previous_response_id,
    "generate_error_429": lambda c: _error(c, streamed=False),
    "stream_error_429": lambda c: _error(c, streamed=True),
}


# ---- running the script ------------------------------------------------------------------------

def _run_script(node: str, target: str, url: str) -> dict:
    """One node process: every case against ``url`` with the target's model; never raises."""
    env = {**os.environ, "GATEWAY_URL": url, "GATEWAY_KEY": LOCAL_KEY, "MODEL": TARGETS[target][1],
           "CASE_TAG": f"{CLIENT}/{target}", "CASE_TIMEOUT_MS": str(CASE_TIMEOUT_MS), "NO_COLOR": "1"}
    env.pop("CASES", None)
    cmd = [node, SCRIPT]
    try:
        p = subprocess.run(cmd, cwd=CLIENTS_DIR, env=env, capture_output=True, text=True, timeout=NODE_TIMEOUT)
    except subprocess.TimeoutExpired as e:
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        return {"cases": {}, "stderr": err, "problem": f"`{' '.join(cmd)}` timed out after {NODE_TIMEOUT} s"}
    try:
        doc = json.loads(p.stdout.strip().splitlines()[-1])
        problem = None if p.returncode == 0 else f"exit code {p.returncode}"
    except (ValueError, IndexError):
        doc, problem = {"cases": {}}, f"exit code {p.returncode}, no JSON on stdout: {p.stdout[-2000:]!r}"
    doc["stderr"], doc["problem"] = p.stderr, problem
    return doc


CASE_RE = re.compile(r"\(case " + re.escape(CLIENT) + r"/([\w.-]+)/(\w+)\)")
VIOLATION_RE = re.compile(r"^request #(\d+) ")


class Runs:
    """The scripts' results and the fake's record of the same time window, split per case."""

    def __init__(self, results: dict, requests: list, violations: list):
        self.results = results
        self.by_case: dict = {}
        self.untagged: list = []
        index_to_case = {}
        for i, r in enumerate(requests):
            if r["method"] != "POST":
                continue
            m = CASE_RE.search(json.dumps(r.get("body"), ensure_ascii=False))
            if m is None:
                self.untagged.append(r["path"])
                continue
            index_to_case[i] = m.groups()
            self.by_case.setdefault(m.groups(), ([], []))[0].append(r)
        self.unattributed = []
        for v in violations:
            m = VIOLATION_RE.match(v)
            key = index_to_case.get(int(m.group(1))) if m else None
            if key is None:
                self.unattributed.append(v)
            else:
                self.by_case.setdefault(key, ([], []))[1].append(v)

    def case(self, target: str, name: str) -> Case:
        reqs, viol = self.by_case.get((target, name), ([], []))
        return Case(target, name, self.results[target], reqs, viol)


@pytest.fixture(scope="module")
def runs(request, fake_server):
    """Run the node processes the selected items need (all at once), once per module."""
    node = _node()
    wanted = set()
    for item in request.session.items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if getattr(item, "module", None) is request.module and "target" in params:
            wanted.add(params["target"])
    urls = {t: request.getfixturevalue(TARGETS[t][0]).url for t in wanted}
    fake_server.reset()
    with concurrent.futures.ThreadPoolExecutor(len(TARGETS)) as pool:
        futures = {t: pool.submit(_run_script, node, t, urls[t]) for t in sorted(wanted)}
        results = {t: f.result() for t, f in futures.items()}
    recorded = Runs(results, list(fake_server.requests), list(fake_server.violations))
    fake_server.reset()
    return recorded


@pytest.mark.parametrize("target,case", [pytest.param(t, c, id=f"{t}-{c}") for t in TARGETS for c in CASES])
def test_ai_sdk_responses(runs, target, case):
    c = runs.case(target, case)
    assert c.run.get("problem") is None, c.why(f"the node script failed: {c.run['problem']}")
    c.check_ran()
    CASES[case](c)


def test_every_upstream_request_belongs_to_a_case(runs):
    assert runs.untagged == [], f"upstream requests without a case tag: {runs.untagged}"
    assert runs.unattributed == [], f"protocol violations outside any case: {runs.unattributed}"
