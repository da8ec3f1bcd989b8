"""Claude Code itself, headless, against the gateway on the CLI route and on the Provider API.

The gateway's own tests validate against our reading of the Anthropic protocol; Claude Code is
what users actually point at it, and it changes every week (mid-conversation system turns,
adaptive thinking with ``output_config.effort``, deferred tools ...).  So the real CLI, pinned in
``tests/clients/package.json``, runs here exactly as the README tells users to run it: nothing
but ``ANTHROPIC_BASE_URL`` and the gateway's local key, telemetry and non-essential traffic off,
a fresh ``HOME`` so no user settings leak in.  Each test checks what Claude Code shows (its
``--output-format json`` result, or the ``stream-json`` messages) against what the fake
upstream sent, and what reached the fake against what Claude Code asked for.

Run only these: ``.venv/bin/python -m pytest -q tests/test_claude_code.py``.
"""
from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.conftest import LOCAL_KEY, ROOT, start_gateway
from tests.fake_upstream import CALL_ANSWER_PREFIX, PRO_KEY, USAGE, tool_results_after_last_call

CLAUDE = os.path.join(ROOT, "tests", "clients", "node_modules", ".bin", "claude")
DEFAULT_MODEL = "claude-opus-5-5"          # Claude Code 2.1.332's default
FLASH = "deepseek/deepseek-v4-flash"
MAP = {"claude-*": FLASH}                   # the README's Go-plan recipe, in one line
GENERATE, CHAT, MESSAGES = "/alpha/generate", "/provider/v1/chat/completions", "/provider/v1/messages"
TOOL_PROMPT = ('[[call:Bash={"command": "echo gateway-tool-ok", "description": "Print a word"}]] '
               "run the command")


@pytest.fixture(scope="module")
def claude_bin():
    assert os.access(CLAUDE, os.X_OK), (
        "Claude Code is not installed: run `npm ci --prefix tests/clients` (the README's test "
        "command does)")
    return CLAUDE


@pytest.fixture(scope="module")
def mapped_cli(fake_server, tmp_path_factory):
    server = start_gateway(fake_server, tmp_path_factory, "cc-cli-mapped", model_map=MAP)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def mapped_provider(fake_server, tmp_path_factory):
    server = start_gateway(fake_server, tmp_path_factory, "cc-provider-mapped", model_map=MAP,
                           commandcode={"mode": "provider", "api_key": PRO_KEY})
    yield server
    server.stop()


#: route -> (gateway fixture, upstream path of the default Claude model, of the mapped model)
ROUTES = {"cli": ("gateway", "mapped_cli", GENERATE, GENERATE),
          "provider": ("provider_gateway", "mapped_provider", MESSAGES, CHAT)}


class Claude:
    """Runs ``claude -p`` against one gateway and reads what the fake upstream received."""

    def __init__(self, binary, server, fake, home, path):
        self.binary, self.server, self.fake, self.home, self.path = binary, server, fake, home, path

    def run(self, prompt: str, *args: str, stream_json: bool = False, timeout: float = 90,
            extra_env: dict | None = None):
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("ANTHROPIC_", "CLAUDE", "OPENAI_"))}
        env.update(HOME=str(self.home), ANTHROPIC_BASE_URL=self.server.url,
                   ANTHROPIC_AUTH_TOKEN=LOCAL_KEY, DISABLE_TELEMETRY="1",
                   CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1", DISABLE_AUTOUPDATER="1",
                   DISABLE_ERROR_REPORTING="1", **(extra_env or {}))
        fmt = ["--output-format", "stream-json", "--verbose"] if stream_json else \
            ["--output-format", "json"]
        proc = subprocess.run([self.binary, "-p", prompt, *fmt, *args], cwd=self.home, env=env,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=timeout)
        out = proc.stdout.strip()
        assert out, f"claude printed nothing (exit {proc.returncode}): {proc.stderr[-2000:]}"
        if not stream_json:
            return json.loads(out)
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def calls(self, path: str | None = None) -> list[dict]:
        """The model calls that reached the fake; all of them on this route's path."""
        calls = [r for r in self.fake.requests if r["method"] == "POST"]
        assert calls and {r["path"] for r in calls} == {path or self.path}, \
            [r["path"] for r in calls]
        return calls

    def model_of(self, call: dict) -> str:
        return call["body"]["params"]["model"] if call["path"] == GENERATE else call["body"]["model"]

    def effort_of(self, call: dict):
        body = call["body"]
        if self.path == GENERATE:
            return body["params"].get("reasoning_effort")
        if self.path == CHAT:
            return body.get("reasoning_effort")
        return (body.get("thinking") or {}).get("budget_tokens")


def _claude(request, claude_bin, fake, tmp_path, route: str, mapped: bool) -> Claude:
    plain, with_map, path, mapped_path = ROUTES[route]
    server = request.getfixturevalue(with_map if mapped else plain)
    return Claude(claude_bin, server, fake, tmp_path, mapped_path if mapped else path)


@pytest.fixture(params=list(ROUTES))
def claude(request, claude_bin, fake, tmp_path):
    """Claude Code with its defaults: the default model, Claude ids straight through."""
    return _claude(request, claude_bin, fake, tmp_path, request.param, mapped=False)


@pytest.fixture(params=list(ROUTES))
def claude_mapped(request, claude_bin, fake, tmp_path):
    """Claude Code against a gateway whose ``model_map`` sends ``claude-*`` to DeepSeek."""
    return _claude(request, claude_bin, fake, tmp_path, request.param, mapped=True)


@pytest.fixture(params=[(r, m) for r in ROUTES for m in (False, True)],
                ids=lambda p: f"{p[0]}-{'model-map' if p[1] else 'default-model'}")
def any_claude(request, claude_bin, fake, tmp_path):
    return _claude(request, claude_bin, fake, tmp_path, *request.param)


def _expected_usage(name: str) -> dict:
    u = USAGE[name]
    return {"input_tokens": u["input"] - u["cache_read"] - u["cache_write"],
            "cache_read_input_tokens": u["cache_read"],
            "cache_creation_input_tokens": u["cache_write"], "output_tokens": u["output"]}


def _usage(result: dict) -> dict:
    return {k: result["usage"][k] for k in ("input_tokens", "cache_read_input_tokens",
                                            "cache_creation_input_tokens", "output_tokens")}


def test_a_plain_answer_with_the_default_model(claude):
    result = claude.run("Say hello")
    assert (result["is_error"], result["subtype"], result["result"]) == (False, "success",
                                                                          "Hello world")
    assert _usage(result) == _expected_usage("text")
    [call] = claude.calls()
    assert claude.model_of(call) == DEFAULT_MODEL


def test_a_plain_answer_through_model_map(claude_mapped):
    result = claude_mapped.run("Say hello")
    assert (result["is_error"], result["result"]) == (False, "Hello world")
    assert _usage(result) == _expected_usage("text")
    assert list(result["modelUsage"]) == [DEFAULT_MODEL]      # the gateway names the asked model
    [call] = claude_mapped.calls()
    assert claude_mapped.model_of(call) == FLASH


def test_any_command_code_model_by_its_id(claude):
    """``ANTHROPIC_MODEL=moonshotai/Kimi-K3 claude``: no model_map needed to pick a model."""
    result = claude.run("Say hello", extra_env={"ANTHROPIC_MODEL": "moonshotai/Kimi-K3"})
    assert (result["is_error"], result["result"]) == (False, "Hello world")
    [call] = claude.calls(GENERATE if claude.path == GENERATE else CHAT)
    assert claude.model_of(call) == "moonshotai/Kimi-K3"


def test_claude_code_runs_a_tool_and_sends_its_result_back(any_claude):
    cc = any_claude
    result = cc.run(TOOL_PROMPT, "--allowedTools", "Bash")
    assert result["is_error"] is False, result
    assert result["result"] == CALL_ANSWER_PREFIX + "gateway-tool-ok"
    assert result["num_turns"] == 2
    first, second = cc.calls()
    wire = {GENERATE: "generate", CHAT: "chat", MESSAGES: "messages"}[cc.path]
    assert tool_results_after_last_call(first["body"], wire) is None
    [output] = tool_results_after_last_call(second["body"], wire)
    assert output.strip() == "gateway-tool-ok"          # Bash really ran; its output went back
    u, a = USAGE["call"], USAGE["call_answer"]
    assert result["usage"]["output_tokens"] == u["output"] + a["output"]
    assert result["usage"]["cache_read_input_tokens"] == u["cache_read"] + a["cache_read"]


def test_reasoning_is_shown_as_thinking(claude):
    messages = claude.run("[[reasoning]] 2+2?", stream_json=True)
    blocks = [b for m in messages if m.get("type") == "assistant" for b in m["message"]["content"]]
    assert [b["thinking"] for b in blocks if b["type"] == "thinking"] == ["Let me think."]
    assert [b["text"] for b in blocks if b["type"] == "text"] == ["4"]
    result = messages[-1]
    assert (result["type"], result["is_error"], result["result"]) == ("result", False, "4")
    assert result["usage"]["output_tokens"] == USAGE["reasoning"]["output"]


@pytest.mark.parametrize("effort", ["low", "max"])
def test_effort_reaches_command_code(claude, effort):
    """``--effort`` arrives as ``output_config.effort``: on the CLI route it is the reasoning
    effort; Claude on the Provider API gets the matching thinking budget."""
    result = claude.run("Say hello", "--effort", effort)
    assert result["result"] == "Hello world"
    [call] = claude.calls()
    max_tokens = call["body"].get("max_tokens")
    want = effort if claude.path == GENERATE else {"low": 4096, "max": max_tokens - 1}[effort]
    assert claude.effort_of(call) == want


def test_effort_is_clamped_to_what_the_mapped_model_accepts(claude_mapped):
    """DeepSeek V4 Flash takes high and max only: ``--effort low`` becomes high."""
    claude_mapped.run("Say hello", "--effort", "low")
    [call] = claude_mapped.calls()
    assert claude_mapped.effort_of(call) == "high"


def test_a_model_outside_the_plan_tells_the_user_about_model_map(claude):
    """A Go plan without a model_map: Claude Code's default model is refused upstream, and what
    Claude Code prints says how to fix it."""
    result = claude.run("[[http_403_model]] hi")
    assert result["is_error"] is True
    assert "model_map" in result["result"] and "403" in result["result"], result["result"]
