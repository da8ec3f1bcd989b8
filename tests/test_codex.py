"""Codex CLI itself (``codex exec``), headless, against the gateway's ``/v1/responses`` on the CLI
route and on the Provider API.

Codex speaks only the OpenAI Responses API (``wire_api = "responses"``; ``chat`` is refused at
config load), and it is strict in ways the openai SDKs are not: it only shows a message or runs a
tool that arrived as a ``response.output_item.done`` item (deltas alone show nothing, and it still
exits 0), an item whose ``arguments`` is not a JSON *string* is dropped silently, and a turn
without ``response.completed`` (or with a ``usage`` lacking ``total_tokens``) fails.  So the real
CLI, pinned in ``tests/clients/package.json`` (the npm package ships its native binary as the
optional dependency ``@openai/codex-linux-x64``), runs here as the README tells users to run it: a
``[model_providers.*]`` block in a fresh ``CODEX_HOME`` pointing at the gateway, the gateway's
local key in the provider's ``env_key`` variable, and nothing of the user's.

What each setting is for:

* ``request_max_retries = 0`` / ``stream_max_retries = 0``: Codex re-sends a failed request up to
  4 (request) and 5 (stream) times by default; here one failure is one failed run, at once, and
  the fake sees exactly the calls Codex meant to make.
* ``stream_idle_timeout_ms``: Codex's default is 300 s; a stream stuck for 15 s fails the run.
* ``approval_policy = "never"`` + ``sandbox_mode = "danger-full-access"`` (what
  ``--dangerously-bypass-approvals-and-sandbox`` sets): the model's shell command runs without a
  prompt and without Codex's bubblewrap/seccomp sandbox, so the test does not depend on user
  namespaces being allowed on the machine.
* ``analytics``, ``feedback``, ``otel``, ``check_for_update_on_startup``, ``history``: no
  traffic or files beyond the run itself; ``--ephemeral`` keeps no session files.
* ``--strict-config``: a key this Codex does not know fails the run instead of being ignored.
* ``--skip-git-repo-check``: the working folder is a fresh temporary one, not a git repository.

``codex exec --json`` prints JSONL events: ``thread.started``, ``turn.started``, ``item.started`` /
``item.completed`` (items ``agent_message`` with ``text``; ``command_execution`` with ``command``,
``aggregated_output``, ``exit_code``, ``status``; ``reasoning``; ``error`` -- e.g. the "Model
metadata ... not found" notice, which is not a failure), then ``turn.completed`` (``usage``) or
``error`` + ``turn.failed`` (``error.message``, e.g. "unexpected status 404 Not Found: ...").

Run only these: ``.venv/bin/python -m pytest -q tests/test_codex.py``.
"""
from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.conftest import LOCAL_KEY, ROOT
from tests.fake_upstream import CALL_ANSWER_PREFIX, USAGE, tool_results_after_last_call

CODEX = os.path.join(ROOT, "tests", "clients", "node_modules", ".bin", "codex")
FLASH = "deepseek/deepseek-v4-flash"
KEY_ENV = "CCGW_API_KEY"
GENERATE, CHAT = "/alpha/generate", "/provider/v1/chat/completions"
#: Codex 0.171's shell tool for models without metadata is unified exec: ``exec_command`` with
#: ``cmd`` (a shell string), run as ``/bin/bash -lc '<cmd>'``.
TOOL_PROMPT = '[[call:exec_command={"cmd": "echo codex-tool-ok"}]] run the command'
RUN_TIMEOUT = 40                 # seconds for one ``codex exec`` (a normal run takes about one)

#: route -> (gateway fixture, upstream path of a DeepSeek model, wire name for the fake's helpers)
ROUTES = {"cli": ("gateway", GENERATE, "generate"),
          "provider": ("provider_gateway", CHAT, "chat")}


@pytest.fixture(scope="module")
def codex_bin():
    missing = ("Codex CLI is not installed: run `npm ci --prefix tests/clients` (the README's test "
               "command does)")
    assert os.access(CODEX, os.X_OK), missing
    proc = subprocess.run([CODEX, "--version"], capture_output=True, text=True, timeout=30,
                          stdin=subprocess.DEVNULL)
    # the npm wrapper fails here when the native optional dependency did not install
    assert proc.returncode == 0 and "codex" in proc.stdout, \
        f"{missing}; `codex --version` said: {proc.stdout}{proc.stderr[-2000:]}"
    return CODEX


def codex_config(base_url: str, model: str = FLASH, key_file: str | None = None) -> str:
    """The README's provider block; with ``key_file``, the key comes from an ``auth`` command
    (``cat`` of the gateway's key file) instead of ``env_key`` -- the form in which Codex also
    reads the gateway's model list (context windows, reasoning levels)."""
    q = json.dumps                      # a JSON string is a valid TOML basic string
    key = (f'\n[model_providers.ccgw.auth]\ncommand = "cat"\nargs = [{q(key_file)}]\n'
           if key_file else f"env_key = {q(KEY_ENV)}\n")
    return f"""\
model = {q(model)}
model_provider = "ccgw"
approval_policy = "never"
sandbox_mode = "danger-full-access"
check_for_update_on_startup = false

[analytics]
enabled = false

[feedback]
enabled = false

[otel]
exporter = "none"

[history]
persistence = "none"

[model_providers.ccgw]
name = "Command Code Gateway"
base_url = {q(base_url)}
wire_api = "responses"
request_max_retries = 0
stream_max_retries = 0
stream_idle_timeout_ms = 15000
{key}"""


class CodexRun:
    """One ``codex exec --json`` run: exit code, JSONL events, stderr."""

    def __init__(self, proc: subprocess.CompletedProcess):
        self.returncode, self.stderr = proc.returncode, proc.stderr
        self.events, self.other = [], []
        for line in proc.stdout.splitlines():
            try:
                self.events.append(json.loads(line))
            except ValueError:
                if line.strip():
                    self.other.append(line)

    def items(self, kind: str) -> list[dict]:
        return [e["item"] for e in self.events
                if e.get("type") == "item.completed" and e.get("item", {}).get("type") == kind]

    @property
    def final_message(self) -> str | None:
        messages = self.items("agent_message")
        return messages[-1]["text"] if messages else None

    @property
    def commands(self) -> list[dict]:
        return self.items("command_execution")

    @property
    def usage(self) -> dict | None:
        done = [e for e in self.events if e.get("type") == "turn.completed"]
        return done[-1].get("usage") if done else None

    @property
    def errors(self) -> list[str]:
        out = [e.get("message") or (e.get("error") or {}).get("message")
               for e in self.events if e.get("type") in ("error", "turn.failed")]
        return list(dict.fromkeys(m for m in out if m))       # error + turn.failed repeat it

    def explain(self) -> str:
        """For assertion messages: what Codex said went wrong, and its stderr tail."""
        kinds = [e.get("type") + (f":{e['item'].get('type')}" if "item" in e else "")
                 for e in self.events]
        return (f"codex exited {self.returncode}; errors: {self.errors}; events: {kinds}; "
                f"final message: {self.final_message!r}; other stdout: {self.other[-5:]}; "
                f"stderr tail: {self.stderr[-2000:]}")


class Codex:
    """Runs ``codex exec`` against one gateway and reads what the fake upstream received."""

    def __init__(self, binary, server, fake, tmp_path, path, wire, key_file: bool = False):
        self.binary, self.server, self.fake, self.path, self.wire = binary, server, fake, path, wire
        self.home, self.codex_home, self.work = (tmp_path / "home", tmp_path / "codex-home",
                                                 tmp_path / "work")
        for folder in (self.home, self.codex_home, self.work):
            folder.mkdir()
        key_path = None
        if key_file:
            key_path = tmp_path / ".gateway_api_key"
            key_path.write_text(LOCAL_KEY + "\n")
        (self.codex_home / "config.toml").write_text(
            codex_config(server.url + "/v1", key_file=str(key_path) if key_path else None))

    def run(self, prompt: str, *args: str, timeout: float = RUN_TIMEOUT) -> CodexRun:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("OPENAI_", "CODEX_", "RUST_LOG"))
               and k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
        env.update(HOME=str(self.home), CODEX_HOME=str(self.codex_home), NO_COLOR="1",
                   NO_PROXY="127.0.0.1,localhost", **{KEY_ENV: LOCAL_KEY})
        cmd = [self.binary, "exec", "--json", "--strict-config", "--ephemeral",
               "--skip-git-repo-check", "--color", "never", *args, prompt]
        try:
            proc = subprocess.run(cmd, cwd=self.work, env=env, stdin=subprocess.DEVNULL,
                                  capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout
            err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr
            pytest.fail(f"codex exec did not finish in {timeout} s; stdout: {(out or '')[-2000:]}; "
                        f"stderr: {(err or '')[-2000:]}")
        return CodexRun(proc)

    def calls(self) -> list[dict]:
        """The model calls that reached the fake; all of them on this route's path."""
        calls = [r for r in self.fake.requests if r["method"] == "POST"]
        assert calls and {r["path"] for r in calls} == {self.path}, [r["path"] for r in calls]
        return calls

    def model_of(self, call: dict) -> str:
        return call["body"]["params"]["model"] if call["path"] == GENERATE else call["body"]["model"]


@pytest.fixture(params=list(ROUTES))
def codex(request, codex_bin, fake, tmp_path):
    server_fixture, path, wire = ROUTES[request.param]
    return Codex(codex_bin, request.getfixturevalue(server_fixture), fake, tmp_path, path, wire)


def test_a_plain_answer(codex):
    run = codex.run("Say hello")
    assert run.returncode == 0 and run.errors == [], run.explain()
    assert run.final_message == "Hello world", run.explain()
    [call] = codex.calls()
    assert codex.model_of(call) == FLASH


def test_codex_shows_the_usage_command_code_reported(codex):
    """Responses ``input_tokens`` include cached tokens (Codex shows them as they come)."""
    run = codex.run("Say hello")
    assert run.returncode == 0, run.explain()
    u = USAGE["text"]
    assert run.usage == {"input_tokens": u["input"], "cached_input_tokens": u["cache_read"],
                         "cache_write_input_tokens": u["cache_write"],
                         "output_tokens": u["output"], "reasoning_output_tokens": u["reasoning"]}


def test_codex_runs_a_shell_command_and_sends_its_output_back(codex):
    run = codex.run(TOOL_PROMPT)
    assert run.returncode == 0 and run.errors == [], run.explain()
    final = run.final_message or ""
    assert final.startswith(CALL_ANSWER_PREFIX) and "codex-tool-ok" in final, run.explain()
    [command] = run.commands                                    # the command really ran
    assert "echo codex-tool-ok" in command["command"], command
    assert (command["exit_code"], command["aggregated_output"].strip()) == (0, "codex-tool-ok")
    first, second = codex.calls()
    assert codex.model_of(first) == codex.model_of(second) == FLASH
    assert tool_results_after_last_call(first["body"], codex.wire) is None
    [output] = tool_results_after_last_call(second["body"], codex.wire)
    # Codex wraps the output ("Chunk ID: ...\nProcess exited with code 0\n...\nOutput:\n...")
    assert output.rstrip().endswith("codex-tool-ok"), output
    u, a = USAGE["call"], USAGE["call_answer"]
    assert run.usage["output_tokens"] == u["output"] + a["output"], run.usage


def test_with_the_key_from_a_command_codex_knows_each_models_efforts(request, codex_bin, fake, tmp_path):
    """The README's second form: ``[model_providers.ccgw.auth]`` with ``cat`` of the key file.
    Codex then reads ``/v1/models`` (its ``models`` list) and, knowing DeepSeek V4 Flash's
    reasoning levels, asks for one; with ``env_key`` it falls back to default metadata."""
    server_fixture, path, wire = ROUTES["cli"]
    codex = Codex(codex_bin, request.getfixturevalue(server_fixture), fake, tmp_path, path, wire,
                  key_file=True)
    run = codex.run("Say hello")
    assert run.returncode == 0 and run.final_message == "Hello world", run.explain()
    notices = [i.get("message", "") for i in run.items("error")]
    assert not any("metadata" in n.lower() for n in notices), notices
    [call] = codex.calls()
    assert call["body"]["params"].get("reasoning_effort") in ("high", "max")
