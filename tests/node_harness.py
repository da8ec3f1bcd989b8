"""What the Node client tests share (``tests/test_node_clients.py``, ``tests/test_node_responses_clients.py``):
running the scripts in ``tests/clients``, telling apart what each case caused upstream, and the
``Case`` an item asserts on.

How: a client's script (in ``tests/clients``, its shared plumbing in ``common.mjs``) runs
every case of that client against one gateway URL in one node process (node start-up is the slow
part) and prints one JSON document of what the client showed.  A test module names its clients
(``CLIENTS``: name -> ``Client``, each with its own case table) and gets from this module its
items (``items(CLIENTS)``: one per client x route x case, id ``<client>-<route>-<case>``) and its
``runs`` fixture (``runs_fixture(CLIENTS)``).  The fixture starts the node processes the selected
items need (a few at once), then keeps the fake upstream's record of what it received; every
prompt carries ``(case <client>/<route>/<case>)``, so each case's upstream requests -- and any
protocol violation the fake found in them -- are told apart even though the runs overlap.  Each
item then runs its case's check on a ``Case``: what the client showed, and what reached upstream
(the route's path, the model, the tool and the tool's result, the conversation).
"""
from __future__ import annotations

import concurrent.futures
import json
import os
import re
import shutil
import subprocess
from typing import Callable, NamedTuple

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

TOOL_OUTPUT = "contents of a.txt"         # what every script's read_file returns for a.txt
TOOL_INPUT = {"file_path": "a.txt"}
TOOL_ANSWER = CALL_ANSWER_PREFIX + TOOL_OUTPUT

#: route -> (gateway fixture, {surface: (model, upstream path it must land on)}).  ``cli`` is the
#: CLI route; ``provider`` the Provider API with a model of the surface's own kind (OpenAI surface:
#: a non-Claude model -> Provider chat; Anthropic surface: a Claude model -> Provider messages);
#: ``provider-cross`` the other way round (any model works from any surface).
ROUTES = {
    "cli": ("gateway", {"openai": (FLASH, GENERATE), "anthropic": (CLAUDE, GENERATE)}),
    "provider": ("provider_gateway", {"openai": (FLASH, CHAT), "anthropic": (CLAUDE, MESSAGES)}),
    "provider-cross": ("provider_gateway", {"openai": (CLAUDE, MESSAGES), "anthropic": (FLASH, CHAT)}),
}


class Client(NamedTuple):
    """One Node client: the script (and its arguments) in ``tests/clients``, the API surface it
    speaks (``openai`` or ``anthropic``: with the route, it decides the model and the upstream
    path, see ``ROUTES``) and its case table (case name -> check of a ``Case``)."""
    script: list[str]
    surface: str
    cases: dict[str, Callable[["Case"], None]]


# ---- one case: what the client showed, what reached upstream -----------------------------------

class Case:
    """One client x route x case: the script's result for it and the upstream requests it caused."""

    def __init__(self, client, surface, route, name, run, requests, violations):
        self.client, self.route, self.name = client, route, name
        self.model, self.path = ROUTES[route][1][surface]
        self.wire = WIRE[self.path]
        self.run = run
        self.result = run["cases"].get(name)
        self.requests, self.violations = requests, violations

    def usage(self, *scenarios: str) -> dict:
        """``USAGE`` of ``scenarios`` (summed), as this case's upstream could report it: the
        Anthropic Messages API has no reasoning-token count, so behind it the number is 0."""
        u = {k: sum(USAGE[s][k] for s in scenarios) for k in USAGE[scenarios[0]]}
        if self.path == MESSAGES:
            u["reasoning"] = 0
        return u

    def tag(self) -> str:
        """The marker the script put into every prompt of this case."""
        return f"(case {self.client}/{self.route}/{self.name})"

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


def tool_names(body: dict, wire: str) -> list:
    if wire == "generate":
        return [t.get("name") for t in (body.get("params") or {}).get("tools") or []]
    if wire == "chat":
        return [(t.get("function") or {}).get("name") for t in body.get("tools") or []]
    return [t.get("name") for t in body.get("tools") or []]


# ---- checks every AI SDK provider shares (ai_sdk.mjs, ai_sdk_responses.mjs) ---------------------

def language_model_usage(u: dict, reasoning_tokens: bool = True) -> dict:
    """The AI SDK's LanguageModelUsage for ``u`` (a ``Case.usage``): inputTokens includes cache
    reads and writes.  Without cacheWriteTokens (not every provider reads it); reasoningTokens is
    None for a provider that does not report it (``reasoning_tokens=False``)."""
    return {"inputTokens": u["input"], "outputTokens": u["output"],
            "totalTokens": u["input"] + u["output"],
            "noCacheTokens": u["input"] - u["cache_read"] - u["cache_write"],
            "cacheReadTokens": u["cache_read"],
            "reasoningTokens": u["reasoning"] if reasoning_tokens else None}


def ai_tool_round_trip(c: Case, streamed: bool) -> tuple[dict, dict]:
    """A tool step (read_file called with our input, executed) then an answer step with the
    tool's result, and that result upstream on the second request.  Returns (tool step, answer
    step) for the caller's checks of usage, which differ by provider."""
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
    if streamed:
        assert r["errors"] == [] and r["streamed"] == TOOL_ANSWER, c.why("the stream itself")
        assert "tool-call" in r["types"] and "tool-result" in r["types"], c.why("stream part types")
    c.check_upstream(2, tools=True)
    c.check_tool_result_upstream()
    return call_step, answer_step


def ai_error(c: Case, streamed: bool):
    """A 429 before any output: generateText throws, a stream carries one error part; either is
    an ``APICallError`` with the status and the upstream's message."""
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


# ---- running the scripts -----------------------------------------------------------------------

def _node() -> str:
    if not os.path.isdir(os.path.join(CLIENTS_DIR, "node_modules")):
        pytest.fail("tests/clients/node_modules is missing: run `npm ci --prefix tests/clients` "
                    "(the Node clients these tests run are pinned in tests/clients/package.json)")
    node = shutil.which("node")
    if node is None:
        pytest.fail("`node` is not on PATH: install Node.js 20+, then `npm ci --prefix tests/clients`")
    return node


def _run_script(node: str, spec: Client, client: str, route: str, url: str) -> dict:
    """One node process: every case of ``client`` against ``url``; never raises."""
    model = ROUTES[route][1][spec.surface][0]
    env = {**os.environ, "GATEWAY_URL": url, "GATEWAY_KEY": LOCAL_KEY, "MODEL": model,
           "CASE_TAG": f"{client}/{route}", "CASE_TIMEOUT_MS": str(CASE_TIMEOUT_MS), "NO_COLOR": "1"}
    env.pop("CASES", None)
    cmd = [node, *spec.script]
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

    def __init__(self, clients: dict[str, Client], results: dict, requests: list, violations: list):
        self.clients, self.results = clients, results
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
        return Case(client, self.clients[client].surface, route, name, run, reqs, viol)

    def check(self, client: str, route: str, name: str):
        """The item of ``client`` x ``route`` x case ``name``: the script ran and reported the
        case without an unexpected error, and the case table's check holds."""
        c = self.case(client, route, name)
        assert c.run.get("problem") is None, c.why(f"the node script failed: {c.run['problem']}")
        c.check_ran()
        self.clients[client].cases[name](c)

    def check_accounted_for(self):
        """Nothing the runs caused upstream is unaccounted for (nor any violation outside a case)."""
        assert self.untagged == [], f"upstream requests without a case tag: {self.untagged}"
        assert self.unattributed == [], f"protocol violations outside any case: {self.unattributed}"


def items(clients: dict[str, Client]) -> list:
    """One pytest param (client, route, case) per client x route x case, id ``<client>-<route>-<case>``."""
    return [pytest.param(client, route, case, id=f"{client}-{route}-{case}")
            for client, spec in clients.items() for route in ROUTES for case in spec.cases]


def runs_fixture(clients: dict[str, Client]):
    """The module-scoped ``runs`` fixture of a test module whose items are ``items(clients)``."""

    @pytest.fixture(scope="module")
    def runs(request, fake_server) -> Runs:
        """Run the node processes the module's selected items need (PARALLEL at a time), once."""
        node = _node()
        wanted = set()
        for item in request.session.items:
            params = getattr(getattr(item, "callspec", None), "params", {})
            if getattr(item, "module", None) is request.module and "client" in params:
                wanted.add((params["client"], params["route"]))
        urls = {route: request.getfixturevalue(ROUTES[route][0]).url for route in {r for _, r in wanted}}
        fake_server.reset()
        with concurrent.futures.ThreadPoolExecutor(PARALLEL) as pool:
            futures = {key: pool.submit(_run_script, node, clients[key[0]], *key, urls[key[1]])
                       for key in sorted(wanted)}
            results = {key: f.result() for key, f in futures.items()}
        recorded = Runs(clients, results, list(fake_server.requests), list(fake_server.violations))
        fake_server.reset()
        return recorded

    return runs
