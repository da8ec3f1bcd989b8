"""Real Node clients -> real gunicorn -> the fake upstream, one pytest item per client x route x case.

Why: most callers of the gateway are not the Python SDKs.  The Vercel AI SDK (``ai`` with its
``@ai-sdk/openai-compatible``, ``@ai-sdk/anthropic`` and ``@ai-sdk/openai`` providers), the
``openai`` Node SDK and ``@anthropic-ai/sdk`` each parse streams, usage, tool calls and errors
with their own code and schemas; these tests run those exact packages (pinned in
``tests/clients/package.json``, installed by ``npm ci --prefix tests/clients``) against the
gateway the way users run it.

How: ``tests/clients/{ai_sdk,openai_node,anthropic_node}.mjs`` run every case of one client
against one gateway URL in one node process (node start-up is the slow part) and print one JSON
document of what the client showed.  The module fixture ``runs`` starts the node processes the
selected items need (a few at once), then keeps the fake upstream's record of what it received;
every prompt carries ``(case <client>/<route>/<case>)``, so each case's upstream requests --
and any protocol violation the fake found in them -- are told apart even though the runs
overlap.  Each item then asserts one case: what the client showed (text, reasoning, tool call
and its parsed input, usage derived from ``USAGE``, error class and status) and what reached
upstream (the route's path, the model, the tool and the tool's result).

Routes: ``cli`` (``gateway``, the CLI route), ``provider`` (``provider_gateway``; OpenAI-surface
clients ask a non-Claude model -> Provider chat, Anthropic-surface clients a Claude model ->
Provider messages) and ``provider-cross`` (the other way round: any model works from any
surface).
"""
from __future__ import annotations

import concurrent.futures
import json
import os
import re
import shutil
import subprocess

import pytest

from tests.conftest import LOCAL_KEY, ROOT
from tests.fake_upstream import CALL_ANSWER_PREFIX, USAGE, tool_results_after_last_call

CLIENTS_DIR = os.path.join(ROOT, "tests", "clients")
GENERATE = "/alpha/generate"
CHAT = "/provider/v1/chat/completions"
MESSAGES = "/provider/v1/messages"
WIRE = {GENERATE: "generate", CHAT: "chat", MESSAGES: "messages"}
FLASH = "deepseek/deepseek-v4-flash"
CLAUDE = "claude-sonnet-5"
NODE_TIMEOUT = 60          # seconds for one node process (all the cases of one client x route)
CASE_TIMEOUT_MS = 10000    # one case inside it (each takes well under a second normally)
PARALLEL = 4               # node processes at once

# The first item runs every node process (in its module fixture), ~10-20 s on 2 cores; give it
# more than pytest.ini's 60 s so a slow machine reports the case that hung, not a timeout.
pytestmark = pytest.mark.timeout(240)

TOOL_OUTPUT = "contents of a.txt"         # what every script's read_file returns for a.txt
TOOL_INPUT = {"file_path": "a.txt"}
TOOL_ANSWER = CALL_ANSWER_PREFIX + TOOL_OUTPUT

#: client -> (script and arguments, surface, family of cases)
CLIENTS = {
    "ai-openai-compatible": (["ai_sdk.mjs", "openai-compatible"], "openai", "ai"),
    "ai-anthropic": (["ai_sdk.mjs", "anthropic"], "anthropic", "ai"),
    "ai-openai-chat": (["ai_sdk.mjs", "openai-chat"], "openai", "ai"),
    "openai-node": (["openai_node.mjs"], "openai", "openai-node"),
    "anthropic-node": (["anthropic_node.mjs"], "anthropic", "anthropic-node"),
}
#: route -> (gateway fixture, {surface: (model, upstream path it must land on)})
ROUTES = {
    "cli": ("gateway", {"openai": (FLASH, GENERATE), "anthropic": (CLAUDE, GENERATE)}),
    "provider": ("provider_gateway", {"openai": (FLASH, CHAT), "anthropic": (CLAUDE, MESSAGES)}),
    "provider-cross": ("provider_gateway", {"openai": (CLAUDE, MESSAGES), "anthropic": (FLASH, CHAT)}),
}
#: AI SDK providers that surface the model's reasoning text (@ai-sdk/openai's chat model does
#: not read ``reasoning_content``: it is an OpenAI-compatible extension) ...
AI_EXPOSES_REASONING = {"ai-openai-compatible", "ai-anthropic"}
#: ... and that report reasoning tokens (the Anthropic API has no such number).
AI_REPORTS_REASONING_TOKENS = {"ai-openai-compatible", "ai-openai-chat"}


# ---- expected usage, in each client's terms ----------------------------------------------------

def _sum(*scenarios) -> dict:
    return {k: sum(USAGE[s][k] for s in scenarios) for k in USAGE[scenarios[0]]}


def ai_usage(client: str, u: dict) -> dict:
    """The AI SDK's LanguageModelUsage (inputTokens includes cache reads and writes)."""
    return {"inputTokens": u["input"], "outputTokens": u["output"],
            "totalTokens": u["input"] + u["output"],
            "noCacheTokens": u["input"] - u["cache_read"] - u["cache_write"],
            "cacheReadTokens": u["cache_read"],
            "reasoningTokens": u["reasoning"] if client in AI_REPORTS_REASONING_TOKENS else None}


def ai_usage_of(shown: dict) -> dict:
    """What the client showed, minus cacheWriteTokens (checked apart: not every provider reads it)."""
    return {k: v for k, v in shown.items() if k != "cacheWriteTokens"}


def openai_usage(u: dict) -> dict:
    return {"prompt_tokens": u["input"], "completion_tokens": u["output"],
            "total_tokens": u["input"] + u["output"], "cached_tokens": u["cache_read"],
            "reasoning_tokens": u["reasoning"]}


def anthropic_usage(u: dict) -> dict:
    """Anthropic's meaning: ``input_tokens`` is the uncached part only."""
    return {"input_tokens": u["input"] - u["cache_read"] - u["cache_write"],
            "output_tokens": u["output"], "cache_read_input_tokens": u["cache_read"],
            "cache_creation_input_tokens": u["cache_write"]}


# ---- one case: what the client showed, what reached upstream -----------------------------------

class Case:
    """One client x route x case: the script's result for it and the upstream requests it caused."""

    def __init__(self, client, route, name, run, requests, violations):
        self.client, self.route, self.name = client, route, name
        self.surface = CLIENTS[client][1]
        self.model, self.path = ROUTES[route][1][self.surface]
        self.wire = WIRE[self.path]
        self.run = run
        self.result = run["cases"].get(name)
        self.requests, self.violations = requests, violations

    def usage(self, *scenarios: str) -> dict:
        """``USAGE`` of ``scenarios`` (summed), as this case's upstream could report it: the
        Anthropic Messages API has no reasoning-token count, so behind it the number is 0."""
        u = _sum(*scenarios)
        if self.path == MESSAGES:
            u["reasoning"] = 0
        return u

    def why(self, what: str) -> str:
        """An assertion message naming the case, with what the client showed and node's stderr."""
        shown = json.dumps(self.result, indent=1, default=str)
        if len(shown) > 6000:
            shown = shown[:6000] + " ..."
        return (f"{self.client} on {self.route} ({self.model}), case {self.name}: {what}\n"
                f"client showed: {shown}\n--- node stderr (tail) ---\n{self.run['stderr'][-4000:]}")

    def check_ran(self):
        assert self.result is not None, self.why("the script did not report this case")
        assert "error" not in self.result, self.why("the client raised an unexpected error")

    def check_upstream(self, count: int, tools: bool = False):
        """``count`` requests, all on this route's path and model, without protocol violations."""
        assert self.violations == [], self.why(f"the gateway broke the upstream protocol: {self.violations}")
        paths = [r["path"] for r in self.requests]
        assert paths == [self.path] * count, \
            self.why(f"upstream requests {paths}, expected {count} x {self.path}")
        for r in self.requests:
            body = r["body"] or {}
            model = (body.get("params") or {}).get("model") if self.wire == "generate" else body.get("model")
            assert model == self.model, self.why(f"upstream was asked for model {model!r}")
            if tools:
                assert tool_names(body, self.wire) == ["read_file"], self.why(
                    f"tools upstream: {tool_names(body, self.wire)}")

    def check_tool_result_upstream(self):
        """The first request has no tool result yet; the second carries exactly ours."""
        first, second = (tool_results_after_last_call(r["body"], self.wire) for r in self.requests)
        assert not first, self.why(f"the first upstream request already had tool results {first}")
        assert second == [TOOL_OUTPUT], self.why(f"tool results that reached upstream: {second}")


def tool_names(body: dict, wire: str) -> list:
    if wire == "generate":
        return [t.get("name") for t in (body.get("params") or {}).get("tools") or []]
    if wire == "chat":
        return [(t.get("function") or {}).get("name") for t in body.get("tools") or []]
    return [t.get("name") for t in body.get("tools") or []]


# ---- AI SDK cases (the same for its three providers) -------------------------------------------

def _ai_text(c: Case, streamed: bool):
    r = c.result
    assert r["text"] == "Hello world", c.why("text")
    assert r["finishReason"] == "stop", c.why("finishReason")
    assert ai_usage_of(r["usage"]) == ai_usage(c.client, c.usage("text")), c.why("usage")
    assert r["usage"]["cacheWriteTokens"] in (None, USAGE["text"]["cache_write"]), c.why("cacheWriteTokens")
    if streamed:
        assert r["errors"] == [] and r["streamed"] == "Hello world", c.why("the stream itself")
    c.check_upstream(1)


def _ai_tools(c: Case, streamed: bool):
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
    assert r["text"] == TOOL_ANSWER and r["finishReason"] == "stop", c.why("final text")
    assert ai_usage_of(call_step["usage"]) == ai_usage(c.client, c.usage("call")), \
        c.why("tool step usage")
    assert ai_usage_of(answer_step["usage"]) == ai_usage(c.client, c.usage("call_answer")), \
        c.why("answer step usage")
    assert ai_usage_of(r["usage"]) == ai_usage(c.client, c.usage("call", "call_answer")), \
        c.why("total usage of the two steps")
    if streamed:
        assert r["errors"] == [] and r["streamed"] == TOOL_ANSWER, c.why("the stream itself")
        assert "tool-call" in r["types"] and "tool-result" in r["types"], c.why("stream part types")
    c.check_upstream(2, tools=True)
    c.check_tool_result_upstream()


def _ai_reasoning(c: Case):
    r = c.result
    assert r["text"] == "4", c.why("text")
    if c.client in AI_EXPOSES_REASONING:
        assert r["reasoningText"] == "Let me think.", c.why("reasoningText")
    assert ai_usage_of(r["usage"]) == ai_usage(c.client, c.usage("reasoning")), c.why("usage")
    if "errors" in r:
        assert r["errors"] == [], c.why("stream errors")
    c.check_upstream(1)


def _ai_error(c: Case, streamed: bool):
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


AI_CASES = {
    "generate_text": lambda c: _ai_text(c, streamed=False),
    "stream_text": lambda c: _ai_text(c, streamed=True),
    "generate_tool_round_trip": lambda c: _ai_tools(c, streamed=False),
    "stream_tool_round_trip": lambda c: _ai_tools(c, streamed=True),
    "generate_reasoning": _ai_reasoning,
    "stream_reasoning": _ai_reasoning,
    "generate_error_429": lambda c: _ai_error(c, streamed=False),
    "stream_error_429": lambda c: _ai_error(c, streamed=True),
}


# ---- openai (Node) cases -----------------------------------------------------------------------

def _oa_text(c: Case):
    r = c.result
    assert (r["text"], r["finishReason"]) == ("Hello world", "stop"), c.why("text and finish_reason")
    assert r["usage"] == openai_usage(c.usage("text")), c.why("usage")
    if "contentDeltas" in r:
        assert r["contentDeltas"] == "Hello world", c.why("the helper's content.delta events")
    c.check_upstream(1)


def _oa_tools(c: Case):
    first, second = c.result["first"], c.result["second"]
    assert [(t["name"], t["input"]) for t in first["toolCalls"]] == [("read_file", TOOL_INPUT)], \
        c.why("tool call (name, parsed arguments)")
    assert first["toolCalls"][0]["id"] and first["toolCalls"][0]["type"] == "function", \
        c.why("tool call id and type")
    assert first["finishReason"] == "tool_calls", c.why("first finish_reason")
    assert first["usage"] == openai_usage(c.usage("call")), c.why("first usage")
    assert (second["text"], second["finishReason"]) == (TOOL_ANSWER, "stop"), c.why("answer after the tool")
    assert second["toolCalls"] == [], c.why("no second tool call")
    assert second["usage"] == openai_usage(c.usage("call_answer")), c.why("second usage")
    c.check_upstream(2, tools=True)
    c.check_tool_result_upstream()


def _oa_reasoning(c: Case):
    r = c.result
    assert (r["reasoning"], r["text"]) == ("Let me think.", "4"), c.why("reasoning_content and content")
    assert r["usage"] == openai_usage(c.usage("reasoning")), c.why("usage")
    c.check_upstream(1)


def _sdk_429(c: Case) -> dict:
    """Both Node SDKs: a 429 before any output is their RateLimitError, the message kept."""
    r = c.result
    assert not r.get("unexpectedSuccess"), c.why("a 429 before any output must be an error")
    err = r["thrown"]
    assert (err["class"], err["status"], r["isRateLimitError"]) == ("RateLimitError", 429, True), \
        c.why("error class and status")
    assert "slow down" in err["message"], c.why("the upstream's message is kept")
    c.check_upstream(1)
    return err


def _oa_error(c: Case):
    _sdk_429(c)


OPENAI_CASES = {
    "create_whole": _oa_text, "create_stream": _oa_text, "stream_helper": _oa_text,
    "tools_whole": _oa_tools, "tools_stream": _oa_tools, "stream_helper_tools": _oa_tools,
    "reasoning_whole": _oa_reasoning, "reasoning_stream": _oa_reasoning,
    "error_429_whole": _oa_error, "error_429_stream": _oa_error,
}


# ---- @anthropic-ai/sdk cases -------------------------------------------------------------------

def _an_events(c: Case, r: dict):
    if "events" in r:        # a raw stream: the SDK's event order
        ev = r["events"]
        assert ev[0] == "message_start" and ev[-2:] == ["message_delta", "message_stop"], c.why("event order")


def _an_text(c: Case):
    r = c.result
    assert (r["blocks"], r["text"], r["stopReason"]) == (["text"], "Hello world", "end_turn"), \
        c.why("message")
    assert r["usage"] == anthropic_usage(c.usage("text")), c.why("usage")
    if "textEvents" in r:
        assert r["textEvents"] == "Hello world", c.why("the helper's text events")
    _an_events(c, r)
    c.check_upstream(1)


def _an_tools(c: Case):
    first, second = c.result["first"], c.result["second"]
    assert [(t["name"], t["input"]) for t in first["toolCalls"]] == [("read_file", TOOL_INPUT)], \
        c.why("tool_use (name, parsed input)")
    assert first["blocks"] == ["tool_use"] and first["stopReason"] == "tool_use", c.why("first message")
    assert first["usage"] == anthropic_usage(c.usage("call")), c.why("first usage")
    assert (second["blocks"], second["text"], second["stopReason"]) == (["text"], TOOL_ANSWER, "end_turn"), \
        c.why("answer after the tool")
    assert second["usage"] == anthropic_usage(c.usage("call_answer")), c.why("second usage")
    _an_events(c, first)
    _an_events(c, second)
    c.check_upstream(2, tools=True)
    c.check_tool_result_upstream()


def _an_reasoning(c: Case):
    r = c.result
    assert (r["blocks"], r["thinking"], r["text"]) == (["thinking", "text"], "Let me think.", "4"), \
        c.why("thinking block then text")
    assert r["usage"] == anthropic_usage(c.usage("reasoning")), c.why("usage")
    if "thinkingEvents" in r:
        assert (r["thinkingEvents"], r["textEvents"]) == ("Let me think.", "4"), c.why("the helper's events")
    c.check_upstream(1)


def _an_error(c: Case):
    err = _sdk_429(c)
    assert err["body"]["type"] == "error" and err["body"]["error"]["type"] == "rate_limit_error", \
        c.why("Anthropic error envelope")


ANTHROPIC_CASES = {
    "create_whole": _an_text, "create_stream": _an_text, "stream_helper": _an_text,
    "tools_whole": _an_tools, "tools_stream": _an_tools, "stream_helper_tools": _an_tools,
    "reasoning_whole": _an_reasoning, "reasoning_stream_helper": _an_reasoning,
    "error_429_whole": _an_error, "error_429_stream": _an_error, "error_429_stream_helper": _an_error,
}

FAMILIES = {"ai": AI_CASES, "openai-node": OPENAI_CASES, "anthropic-node": ANTHROPIC_CASES}


# ---- running the scripts -----------------------------------------------------------------------

def _node() -> str:
    if not os.path.isdir(os.path.join(CLIENTS_DIR, "node_modules")):
        pytest.fail("tests/clients/node_modules is missing: run `npm ci --prefix tests/clients` "
                    "(the Node clients these tests run are pinned in tests/clients/package.json)")
    node = shutil.which("node")
    if node is None:
        pytest.fail("`node` is not on PATH: install Node.js 20+, then `npm ci --prefix tests/clients`")
    return node


def _run_script(node: str, client: str, route: str, url: str) -> dict:
    """One node process: every case of ``client`` against ``url``; never raises."""
    script, surface, _ = CLIENTS[client]
    model = ROUTES[route][1][surface][0]
    env = {**os.environ, "GATEWAY_URL": url, "GATEWAY_KEY": LOCAL_KEY, "MODEL": model,
           "CASE_TAG": f"{client}/{route}", "CASE_TIMEOUT_MS": str(CASE_TIMEOUT_MS), "NO_COLOR": "1"}
    env.pop("CASES", None)
    cmd = [node, *script]
    try:
        p = subprocess.run(cmd, cwd=CLIENTS_DIR, env=env, capture_output=True, text=True,
                           timeout=NODE_TIMEOUT)
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


CASE_RE = re.compile(r"\(case ([\w.-]+)/([\w.-]+)/(\w+)\)")
VIOLATION_RE = re.compile(r"^request #(\d+) ")


def _case_of(record: dict):
    m = CASE_RE.search(json.dumps(record.get("body"), ensure_ascii=False))
    return m.groups() if m else None


class Runs:
    """The scripts' results and the fake's record of the same time window, split per case."""

    def __init__(self, results: dict, requests: list, violations: list):
        self.results = results
        self.by_case: dict = {}
        self.untagged: list = []
        index_to_case = {}
        for i, r in enumerate(requests):
            key = _case_of(r) if r["method"] == "POST" else None
            if key is None:
                if r["method"] == "POST":
                    self.untagged.append(r["path"])
                continue
            index_to_case[i] = key
            self.by_case.setdefault(key, ([], []))[0].append(r)
        self.unattributed = []
        for v in violations:
            m = VIOLATION_RE.match(v)
            key = index_to_case.get(int(m.group(1))) if m else None
            if key is None:
                self.unattributed.append(v)
            else:
                self.by_case.setdefault(key, ([], []))[1].append(v)

    def case(self, client: str, route: str, name: str) -> Case:
        run = self.results[(client, route)]
        reqs, viol = self.by_case.get((client, route, name), ([], []))
        return Case(client, route, name, run, reqs, viol)


ITEMS = [pytest.param(client, route, case, id=f"{client}-{route}-{case}")
         for client, (_, _, family) in CLIENTS.items() for route in ROUTES for case in FAMILIES[family]]


@pytest.fixture(scope="module")
def runs(request, fake_server):
    """Run the node processes the selected items need (PARALLEL at a time), once per module."""
    node = _node()
    wanted = set()
    for item in request.session.items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if getattr(item, "module", None) is request.module and "client" in params:
            wanted.add((params["client"], params["route"]))
    urls = {route: request.getfixturevalue(ROUTES[route][0]).url for route in {r for _, r in wanted}}
    fake_server.reset()
    with concurrent.futures.ThreadPoolExecutor(PARALLEL) as pool:
        futures = {key: pool.submit(_run_script, node, *key, urls[key[1]]) for key in sorted(wanted)}
        results = {key: f.result() for key, f in futures.items()}
    recorded = Runs(results, list(fake_server.requests), list(fake_server.violations))
    fake_server.reset()
    return recorded


@pytest.mark.parametrize("client,route,case", ITEMS)
def test_node_client(runs, client, route, case):
    c = runs.case(client, route, case)
    assert c.run.get("problem") is None, c.why(f"the node script failed: {c.run['problem']}")
    c.check_ran()
    FAMILIES[CLIENTS[client][2]][case](c)


def test_every_upstream_request_belongs_to_a_case(runs):
    """Nothing the runs caused upstream is unaccounted for (nor any violation outside a case)."""
    assert runs.untagged == [], f"upstream requests without a case tag: {runs.untagged}"
    assert runs.unattributed == [], f"protocol violations outside any case: {runs.unattributed}"
