"""Configuration: the cmdcode2apipy file format, generated keys, strict validation, env overrides,
and how gunicorn behaves on a bad or missing config file.

Everything goes through ``gateway.config.load(env=...)`` with an explicit env dict whose HOME is a
tmp folder, so neither os.environ nor a real ``~/.commandcode/auth.json`` is ever involved.
"""
from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys

import pytest
import requests
import yaml

from gateway import config as config_mod
from gateway import create_app
from gateway.config import ConfigError
from tests.conftest import ROOT, Gunicorn, free_port

CMDCODE2APIPY_FILE = """\
api_key: "sk-local-0123456789"
commandcode:
  api_key: "user_abcdef0123456789"
  base_url: "https://api.commandcode.ai"
  cli_version: "1.64.0"
host: "0.0.0.0"
port: 8080
exclude_models:
  - "claude-"
  - "gemini-"
usage_file: "data/usage.json"
"""


def write(folder, text, name="config.yaml") -> str:
    path = folder / name
    path.write_text(text)
    return str(path)


def env_for(tmp_path, path, **extra) -> dict:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {"GATEWAY_CONFIG": str(path), "HOME": str(home), **extra}


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def load_error(tmp_path, text, **extra_env) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        config_mod.load(env=env_for(tmp_path, path, **extra_env))
    message = str(info.value)
    assert "\n" not in message, message
    return message


# ---- 1. the cmdcode2apipy format --------------------------------------------------------------

def test_a_cmdcode2apipy_file_loads_unchanged(tmp_path):
    path = write(tmp_path, CMDCODE2APIPY_FILE)
    cfg = config_mod.load(env=env_for(tmp_path, path))
    assert config_mod.local_keys(cfg) == ["sk-local-0123456789"]
    cc = cfg["commandcode"]
    assert cc["api_key"] == "user_abcdef0123456789"
    assert cc["base_url"] == "https://api.commandcode.ai"
    assert cc["cli_version"] == "1.64.0"
    assert cfg["host"] == "0.0.0.0" and cfg["port"] == 8080
    assert cfg["exclude_models"] == ["claude-", "gemini-"]
    # relative to the config file's folder, not to the working directory
    assert cfg["usage_file"] == str(tmp_path / "data" / "usage.json")
    # the rest keeps its defaults
    assert cfg["keepalive_interval"] == config_mod.DEFAULTS["keepalive_interval"]
    assert cc["idle_timeout"] == config_mod.DEFAULTS["commandcode"]["idle_timeout"]
    # a file that names its key never gets a generated one beside it
    assert not (tmp_path / ".gateway_api_key").exists()


def test_api_keys_list_is_accepted(tmp_path):
    path = write(tmp_path, 'api_keys: ["key-one", "key-two"]\n'
                           'commandcode: {api_key: "user_x"}\n')
    cfg = config_mod.load(env=env_for(tmp_path, path))
    assert sorted(config_mod.local_keys(cfg)) == ["key-one", "key-two"]
    assert not (tmp_path / ".gateway_api_key").exists()


def test_absolute_usage_file_stays_absolute(tmp_path):
    target = tmp_path / "elsewhere" / "u.json"
    path = write(tmp_path, f'api_key: "k"\nusage_file: "{target}"\n')
    assert config_mod.load(env=env_for(tmp_path, path))["usage_file"] == str(target)


# ---- 2. a missing file is created -------------------------------------------------------------

def test_missing_file_is_written_with_mode_0600_and_a_generated_key(tmp_path):
    path = tmp_path / "conf" / "gateway.yaml"
    path.parent.mkdir()
    env = env_for(tmp_path, path)
    cfg = config_mod.load(env=env)

    assert path.exists()
    assert mode(path) == 0o600
    data = yaml.safe_load(path.read_text())
    key = data["api_key"]
    assert isinstance(key, str) and key.startswith("ccgw-") and len(key) > 20
    assert config_mod.local_keys(cfg) == [key]
    assert not cfg["commandcode"]["api_key"]          # no env, no file key, no auth.json
    assert cfg["usage_file"] == str(path.parent / "usage.json")
    # no temporary files left behind, no extra key file
    assert sorted(os.listdir(path.parent)) == ["gateway.yaml"]

    again = config_mod.load(env=env)
    assert config_mod.local_keys(again) == [key]
    assert yaml.safe_load(path.read_text())["api_key"] == key
    assert mode(path) == 0o600


def test_the_default_file_template_passes_validation(tmp_path):
    text = config_mod.DEFAULT_FILE_TEMPLATE.format(
        local_key="ccgw-x", base_url=config_mod.DEFAULT_BASE_URL,
        cli_version=config_mod.DEFAULT_CLI_VERSION)
    config_mod.validate(yaml.safe_load(text))


# ---- 3. a config without any local key --------------------------------------------------------

def test_committed_config_yaml_holds_no_secret():
    with open(os.path.join(ROOT, "config.yaml"), encoding="utf-8") as f:
        text = f.read()
    assert not re.search(r"user_[A-Za-z0-9_\-]{4,}", text)
    assert not re.search(r"ccgw-[A-Za-z0-9_\-]{4,}", text)
    data = yaml.safe_load(text) or {}
    config_mod.validate(data)                          # and it is a valid file
    assert not data.get("api_key") and not data.get("api_keys")
    assert not (data.get("commandcode") or {}).get("api_key")


def test_config_without_local_key_gets_a_stable_generated_key_file(tmp_path):
    with open(os.path.join(ROOT, "config.yaml"), encoding="utf-8") as f:
        path = write(tmp_path, f.read())
    env = env_for(tmp_path, path)
    before = (tmp_path / "config.yaml").read_text()

    cfg = config_mod.load(env=env)
    key_file = tmp_path / ".gateway_api_key"
    assert key_file.exists()
    assert mode(key_file) == 0o600
    key = key_file.read_text().strip()
    assert key.startswith("ccgw-") and len(key) > 20
    assert config_mod.local_keys(cfg) == [key]
    assert (tmp_path / "config.yaml").read_text() == before     # the config file is left alone

    for _ in range(2):
        assert config_mod.local_keys(config_mod.load(env=env)) == [key]
    assert key_file.read_text().strip() == key


def test_gateway_api_key_env_means_no_generated_key_file(tmp_path):
    path = write(tmp_path, "host: localhost\n")
    cfg = config_mod.load(env=env_for(tmp_path, path, GATEWAY_API_KEY="from-env"))
    assert config_mod.local_keys(cfg) == ["from-env"]
    assert not (tmp_path / ".gateway_api_key").exists()


def test_empty_config_file_is_all_defaults(tmp_path):
    path = write(tmp_path, "")
    cfg = config_mod.load(env=env_for(tmp_path, path))
    assert cfg["port"] == 11434 and cfg["host"] == "localhost"
    assert len(config_mod.local_keys(cfg)) == 1


# ---- 4. bad configs ---------------------------------------------------------------------------

def test_unparsable_yaml_names_line_and_column(tmp_path):
    message = load_error(tmp_path, 'api_key: "k"\nport: [1, 2\nhost: x\n')
    assert message.startswith("config.yaml: not valid YAML")
    assert re.search(r"line \d+, column \d+", message), message


def test_top_level_must_be_a_mapping(tmp_path):
    message = load_error(tmp_path, "- a\n- b\n")
    assert message.startswith("config.yaml:") and "mapping" in message


@pytest.mark.parametrize("text,field,secret", [
    ('api_key: "k"\nbogus_field: "s3cr3t-value"\n', "unknown field 'bogus_field'", "s3cr3t-value"),
    ('api_key: "k"\ncomandcode: {api_key: "user_s3cr3t"}\n', "unknown field 'comandcode'",
     "user_s3cr3t"),
    ('api_key: "k"\ncommandcode: {foo: "s3cr3t-value"}\n', "unknown field 'commandcode.foo'",
     "s3cr3t-value"),
    ('api_key: "k"\ncommandcode: {bse_url: "https://x.example"}\n',
     "unknown field 'commandcode.bse_url'", "x.example"),
])
def test_unknown_fields_are_named(tmp_path, text, field, secret):
    message = load_error(tmp_path, text)
    assert message == f"config.yaml: {field}"
    assert secret not in message


@pytest.mark.parametrize("text,field,value", [
    ('port: "abc"\n', "port", "abc"),
    ("port: true\n", "port", None),
    ("port: 1.5\n", "port", "1.5"),
    ('exclude_models: "x-not-a-list"\n', "exclude_models", "x-not-a-list"),
    ("exclude_models: [1, 2]\n", "exclude_models", None),
    ("commandcode: 5\n", "commandcode", None),
    ('fetch_remote_images: "yes"\n', "fetch_remote_images", "yes"),
    ('keepalive_interval: "fast"\n', "keepalive_interval", "fast"),
    ("keepalive_interval: -1\n", "keepalive_interval", "-1"),
    ("commandcode: {idle_timeout: 0}\n", "commandcode.idle_timeout", None),
    ("port: 70000\n", "port", "70000"),
    ('commandcode: {base_url: "ftp://cc.example.org"}\n', "commandcode.base_url",
     "cc.example.org"),
    ('commandcode: {base_url: "api.commandcode.ai"}\n', "commandcode.base_url",
     "api.commandcode.ai"),
    ('commandcode: {mode: "fastest"}\n', "commandcode.mode", "fastest"),
    ('client_keys: "everyone"\n', "client_keys", "everyone"),
    ('plan: "platinum"\n', "plan", "platinum"),
    ('include_models: "claude-"\n', "include_models", None),
    ('discover_models: "yes"\n', "discover_models", None),
])
def test_wrong_values_are_one_line_naming_the_field(tmp_path, text, field, value):
    message = load_error(tmp_path, 'api_key: "k"\n' + text)
    assert message.startswith("config.yaml: ")
    assert f"'{field}'" in message, message
    if value is not None:
        assert value not in message, message


@pytest.mark.parametrize("text,secret", [
    ("commandcode: {api_key: 12345}\n", "12345"),
    ("commandcode: {api_key: [user_s3cr3t]}\n", "user_s3cr3t"),
    ("api_key: 987654321\n", "987654321"),
    ("api_keys: ccgw-s3cr3t-key\n", "ccgw-s3cr3t-key"),
    ("api_keys: [ccgw-s3cr3t-key, 424242]\n", "424242"),
])
def test_wrong_typed_secrets_are_never_echoed(tmp_path, text, secret):
    message = load_error(tmp_path, text)
    assert secret not in message, message
    assert "api_key" in message


# ---- 5. environment overrides -----------------------------------------------------------------

def test_command_code_api_key_env_beats_the_file(tmp_path):
    path = write(tmp_path, CMDCODE2APIPY_FILE)
    cfg = config_mod.load(env=env_for(tmp_path, path, COMMAND_CODE_API_KEY=" user_from_env \n"))
    assert cfg["commandcode"]["api_key"] == "user_from_env"


def test_blank_command_code_api_key_env_is_ignored(tmp_path):
    path = write(tmp_path, CMDCODE2APIPY_FILE)
    cfg = config_mod.load(env=env_for(tmp_path, path, COMMAND_CODE_API_KEY="  "))
    assert cfg["commandcode"]["api_key"] == "user_abcdef0123456789"


def _auth_json(tmp_path, content) -> None:
    folder = tmp_path / "home" / ".commandcode"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "auth.json").write_text(content)


def test_cli_auth_json_is_the_fallback(tmp_path):
    _auth_json(tmp_path, json.dumps({"apiKey": "user_from_cli_login", "other": 1}))
    path = write(tmp_path, 'api_key: "k"\n')
    assert config_mod.load(env=env_for(tmp_path, path))["commandcode"]["api_key"] == \
        "user_from_cli_login"
    # but the file's key and the env key both win over it
    path = write(tmp_path, 'api_key: "k"\ncommandcode: {api_key: "user_file"}\n')
    assert config_mod.load(env=env_for(tmp_path, path))["commandcode"]["api_key"] == "user_file"
    assert config_mod.load(env=env_for(tmp_path, path, COMMAND_CODE_API_KEY="user_env")
                           )["commandcode"]["api_key"] == "user_env"


@pytest.mark.parametrize("content", ["not json", "[1, 2]", '{"apiKey": 5}', '{"apiKey": "  "}',
                                     "{}"])
def test_unusable_auth_json_means_no_key(tmp_path, content):
    _auth_json(tmp_path, content)
    path = write(tmp_path, 'api_key: "k"\n')
    assert not config_mod.load(env=env_for(tmp_path, path))["commandcode"]["api_key"]


def test_gateway_api_key_env_replaces_the_files_local_keys(tmp_path):
    path = write(tmp_path, 'api_key: "file-key"\napi_keys: ["file-key-2"]\n')
    cfg = config_mod.load(env=env_for(tmp_path, path, GATEWAY_API_KEY="env-key"))
    assert config_mod.local_keys(cfg) == ["env-key"]
    cfg = config_mod.load(env=env_for(tmp_path, path, GATEWAY_API_KEY=" a , b,,c "))
    assert config_mod.local_keys(cfg) == ["a", "b", "c"]


def test_base_url_host_and_port_env_overrides(tmp_path):
    path = write(tmp_path, CMDCODE2APIPY_FILE)
    cfg = config_mod.load(env=env_for(tmp_path, path, COMMANDCODE_BASE_URL="http://127.0.0.1:9/",
                                      HOST="127.0.0.1", PORT="12345"))
    assert cfg["commandcode"]["base_url"] == "http://127.0.0.1:9"
    assert cfg["host"] == "127.0.0.1"
    assert cfg["port"] == 12345


def test_port_env_that_is_not_a_number_names_port(tmp_path):
    path = write(tmp_path, CMDCODE2APIPY_FILE)
    with pytest.raises(ConfigError) as info:
        config_mod.load(env=env_for(tmp_path, path, PORT="abc"))
    message = str(info.value)
    assert "PORT" in message and "\n" not in message and "abc" not in message


def test_defaults_for_routes_keys_and_plans(tmp_path):
    cfg = config_mod.load(env=env_for(tmp_path, write(tmp_path, CMDCODE2APIPY_FILE)))
    assert cfg["commandcode"]["mode"] == "auto"
    assert (cfg["client_keys"], cfg["plan"], cfg["include_models"], cfg["discover_models"]) == \
        ("local", "auto", [], True)


def test_commandcode_mode_env_overrides_the_file(tmp_path):
    path = write(tmp_path, CMDCODE2APIPY_FILE)
    assert config_mod.load(env=env_for(tmp_path, path, COMMANDCODE_MODE="provider"))[
        "commandcode"]["mode"] == "provider"


@pytest.mark.parametrize("extra_env,name", [
    ({"COMMANDCODE_MODE": "turbo"}, "COMMANDCODE_MODE"),
    ({"PORT": "70000"}, "PORT"), ({"PORT": "0"}, "PORT"),
    ({"COMMANDCODE_BASE_URL": "ftp://x"}, "COMMANDCODE_BASE_URL")])
def test_environment_values_are_checked_like_file_values(tmp_path, extra_env, name):
    assert name in load_error(tmp_path, CMDCODE2APIPY_FILE, **extra_env)


def test_an_unknown_log_level_names_the_field(tmp_path):
    assert "'log_level'" in load_error(tmp_path, "log_level: verbose\n")


def test_a_config_path_in_a_missing_folder_is_one_line(tmp_path):
    path = tmp_path / "nowhere" / "config.yaml"
    with pytest.raises(ConfigError, match="cannot create") as info:
        config_mod.load(env=env_for(tmp_path, path))
    assert "\n" not in str(info.value)


def test_an_empty_generated_key_file_is_an_error_not_an_open_gateway(tmp_path):
    (tmp_path / ".gateway_api_key").write_text("\n")
    assert ".gateway_api_key is empty" in load_error(tmp_path, "port: 11434\n")


# ---- 6. the app without a Command Code key ----------------------------------------------------

@pytest.mark.parametrize("stream", [False, True])
def test_app_without_command_code_key_serves_health_and_models_and_503s_calls(tmp_path, stream):
    app = create_app({"api_key": "local-k", "usage_file": str(tmp_path / "usage.json"),
                      "discover_models": False})    # no background fetch from the real API
    c = app.test_client()
    assert c.get("/health").status_code == 200
    assert c.get("/v1/models").status_code == 401
    r = c.get("/v1/models", headers={"Authorization": "Bearer local-k"})
    assert r.status_code == 200 and r.json["data"]

    r = c.post("/v1/chat/completions", headers={"Authorization": "Bearer local-k"},
               json={"model": "deepseek/deepseek-v4-flash", "stream": stream,
                     "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 503
    assert r.mimetype == "application/json"
    err = r.json["error"]
    assert set(err) == {"message", "type", "code", "param"}
    assert err["type"] == "server_error" and err["code"] == "upstream_key_missing"
    assert "COMMAND_CODE_API_KEY" in err["message"]


# ---- 7./8. gunicorn ---------------------------------------------------------------------------

def _clean_env(tmp_path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("COMMAND_CODE_API_KEY", "GATEWAY_API_KEY", "COMMANDCODE_BASE_URL",
                         "COMMANDCODE_MODE")}
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env.update(HOME=str(home), PYTHONUNBUFFERED="1", **extra)
    return env


def test_gunicorn_refuses_a_bad_config_with_one_clear_line(tmp_path):
    path = write(tmp_path, 'api_key: "k"\nbogus_field: "s3cr3t-value"\n', name="bad.yaml")
    env = _clean_env(tmp_path, GATEWAY_CONFIG=path, PORT=str(free_port()), HOST="127.0.0.1")
    proc = subprocess.run([sys.executable, "-m", "gunicorn", "wsgi:app"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=20)
    assert proc.returncode != 0
    lines = proc.stderr.splitlines()
    assert "gateway: bad.yaml: unknown field 'bogus_field'" in lines, proc.stderr
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    assert "s3cr3t-value" not in proc.stderr + proc.stdout


def test_gunicorn_starts_with_a_missing_config_file_and_writes_the_default(tmp_path):
    folder = tmp_path / "srv"
    folder.mkdir()
    path = folder / "config.yaml"
    # a closed port, so the background model-list fetch stays on this machine
    server = Gunicorn(str(path), free_port(), extra_env={"HOME": str(tmp_path),
                                                          "COMMANDCODE_BASE_URL": "http://127.0.0.1:9"})
    try:
        server.wait_ready()
        assert requests.get(server.url + "/health", timeout=5).json() == {"status": "ok"}
        assert mode(path) == 0o600
        key = yaml.safe_load(path.read_text())["api_key"]
        assert key.startswith("ccgw-")
        # every worker runs with the key that was written (no worker generated its own)
        for _ in range(6):
            r = requests.get(server.url + "/v1/models", headers={"Authorization": f"Bearer {key}"},
                             timeout=5)
            assert r.status_code == 200
        assert requests.get(server.url + "/v1/models", timeout=5).status_code == 401
    finally:
        server.stop()
    log = server.log()
    assert key not in log
    assert "Traceback" not in log, log
    assert str(path) in log                       # the operator is told where the key is
    assert not (folder / ".gateway_api_key").exists()


# ---- the one table of settings ----------------------------------------------------------------

def _readme_table() -> dict:
    """``{field name: default column}`` from the README's configuration table."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    section = text[text.index("## Configuration"):]
    rows = {}
    for line in section.splitlines():
        if not line.startswith("| `"):
            if rows:
                break           # the table has ended
            continue
        names, default = line.split("|")[1:3]
        for name in re.findall(r"`([a-z_.]+)`", names):
            rows[name] = default.strip()
    return rows


def _shown(field: config_mod.Field) -> str:
    if field.shown is not None:
        return field.shown
    value = field.default
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def test_the_readme_table_names_every_setting_with_its_default():
    table = _readme_table()
    assert set(table) == {f.name for f in config_mod.FIELDS}
    for field in config_mod.FIELDS:
        assert f"`{_shown(field)}`" in table[field.name] or _shown(field) == table[field.name], \
            (field.name, table[field.name])


def test_defaults_schema_and_file_come_from_the_table():
    for field in config_mod.FIELDS:
        section, _, key = field.name.rpartition(".")
        defaults = config_mod.DEFAULTS[section] if section else config_mod.DEFAULTS
        assert defaults[key] == field.default
        if field.in_file is not None:
            assert re.search(rf"^\s*{key}: ", config_mod.DEFAULT_FILE_TEMPLATE, re.M), field.name
    assert set(config_mod.DEFAULTS) == {f.name.split(".")[0] for f in config_mod.FIELDS}


def test_the_settings_are_typed_frozen_and_read_by_attribute_or_name():
    import dataclasses
    cfg = config_mod.validate({"port": 8080, "commandcode": {"mode": "cli"}})
    assert isinstance(cfg, config_mod.Settings)
    assert cfg.port == cfg["port"] == 8080
    assert cfg.commandcode.mode == cfg["commandcode"]["mode"] == "cli"
    assert cfg.commandcode.idle_timeout == 900.0 and cfg.keepalive_interval == 15.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.port = 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.commandcode.mode = "provider"
    with pytest.raises(KeyError):
        cfg["no_such_field"]
    names = {f.name for f in dataclasses.fields(config_mod.Settings)}
    assert names == set(config_mod.DEFAULTS)


def test_every_mode_the_config_accepts_has_a_route():
    from gateway.upstream import routes
    assert set(config_mod.MODES) == set(routes.ROUTES)


# ---- state: the files, or Redis for several instances -------------------------------------------

@pytest.mark.parametrize("text", [
    'state: "http://:hunter2secret@redis.example.org:6379"\n',
    'state: "hunter2secret@redis.example.org"\n',
    'state: "redis://"\n',
    "state: 6379\n",
])
def test_state_must_be_a_redis_url_and_is_never_echoed(tmp_path, text):
    message = load_error(tmp_path, 'api_key: "k"\n' + text)
    assert "'state'" in message
    assert "hunter2secret" not in message and "redis.example.org" not in message


def test_state_takes_redis_and_rediss_urls_and_defaults_to_the_files(tmp_path):
    for url in ("redis://localhost:6379/0", "rediss://:pw@cache.example.org:6380"):
        path = write(tmp_path, f'api_key: "k"\nstate: "{url}"\n')
        assert config_mod.load(env=env_for(tmp_path, path)).state == url
    path = write(tmp_path, 'api_key: "k"\n')
    cfg = config_mod.load(env=env_for(tmp_path, path))
    assert cfg.state is None and cfg.state_prefix == "ccgw" and cfg.usage_days_kept == 400
    path = write(tmp_path, 'api_key: "k"\nstate: ""\n')            # blank: unset
    assert config_mod.load(env=env_for(tmp_path, path)).state is None


def test_an_empty_state_prefix_is_refused(tmp_path):
    assert "'state_prefix'" in load_error(tmp_path, 'api_key: "k"\nstate_prefix: " "\n')


def test_redis_url_env_sets_state_unless_the_file_names_one(tmp_path):
    path = write(tmp_path, 'api_key: "k"\n')
    env = env_for(tmp_path, path, REDIS_URL="redis://:pw@10.0.0.5:6379")
    assert config_mod.load(env=env).state == "redis://:pw@10.0.0.5:6379"
    path = write(tmp_path, 'api_key: "k"\nstate: "redis://mine:6379"\n')
    assert config_mod.load(env=env_for(tmp_path, path, REDIS_URL="redis://other:1")).state \
        == "redis://mine:6379"


def test_a_bad_redis_url_env_names_the_variable_not_its_value(tmp_path):
    message = load_error(tmp_path, 'api_key: "k"\n', REDIS_URL="memcached://:topsecret@h:1")
    assert "REDIS_URL" in message and "topsecret" not in message


def test_without_state_nothing_imports_redis(tmp_path):
    """The file backends need no redis client: building the app (and serving a request) never
    loads it, so a gateway without ``state`` runs where redis is not even installed."""
    script = (
        "import sys, json\n"
        "from gateway import create_app\n"
        f"cfg = json.loads({json.dumps(json.dumps({'api_key': 'k', 'usage_file': str(tmp_path / 'usage.json'), 'commandcode': {'mode': 'auto'}}))})\n"
        "c = create_app(cfg).test_client()\n"
        "assert c.get('/usage', headers={'Authorization': 'Bearer k'}).status_code == 200\n"
        "loaded = sorted(m for m in sys.modules if m == 'redis' or m.startswith('redis.')\n"
        "                or m == 'gateway.redis_state')\n"
        "print(json.dumps(loaded))\n")
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, env={**os.environ, "PYTHONPATH": ROOT})
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_without_state_the_backends_are_the_files_beside_the_usage_file(tmp_path):
    from gateway import state
    from gateway.account import SharedFailures
    from gateway.conversations import ConversationStore
    from gateway.key_routes import KeyRoutes
    from gateway.usage import UsageStore
    cfg = config_mod.validate({"usage_file": str(tmp_path / "usage.json")})
    shared = state.open_shared(cfg, str(tmp_path))
    assert isinstance(shared.usage, UsageStore) and shared.usage.path == str(tmp_path / "usage.json")
    assert isinstance(shared.key_routes, KeyRoutes)
    assert shared.key_routes.path == str(tmp_path / "key_routes.json")
    assert isinstance(shared.failures, SharedFailures)
    assert shared.failures.path == str(tmp_path / "billing_failures.json")
    assert isinstance(shared.credits, state.MemoryCache)
    assert isinstance(shared.model_list, state.MemoryModelList)
    assert isinstance(shared.conversations, ConversationStore)
    assert shared.credits.claim("gateway", 5) and shared.model_list.claim(60)
    off = state.open_shared(config_mod.validate({"store_responses": False}), str(tmp_path))
    assert off.conversations is None
    shared.close()
