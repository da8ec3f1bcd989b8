"""Configuration: a YAML file, environment overrides for PaaS, and strict validation.

The file format is the one of cmdcode2apipy (the gateway this project replaces) so its users can
bring their files unchanged; the extra keys are all optional.  Validation is strict on purpose: a
typo such as ``comandcode:`` would otherwise silently fall back to a default, so an unknown key, a
wrong type or unparsable YAML stops startup with one line that names the field (and never its
value, which may be a secret).
"""
from __future__ import annotations

import copy
import json
import logging
import os
import secrets
import tempfile

import yaml

log = logging.getLogger("gateway.config")

DEFAULT_BASE_URL = "https://api.commandcode.ai"
#: The CLI release upstream-protocol.md was read from; sent as ``x-command-code-version``.
DEFAULT_CLI_VERSION = "1.64.0"

DEFAULTS: dict = {
    "api_key": None,            # local key clients must send (or api_keys: [...])
    "api_keys": [],
    "commandcode": {
        "api_key": None,        # the Command Code key (user_...)
        "mode": "auto",         # auto | cli | provider: which upstream route model calls take
        "base_url": DEFAULT_BASE_URL,
        "cli_version": DEFAULT_CLI_VERSION,
        "connect_timeout": 10.0,    # seconds to open the upstream connection
        "idle_timeout": 900.0,      # seconds of upstream silence before we give up (reasoning can stall for minutes)
    },
    "host": "localhost",
    "port": 11434,
    "client_keys": "local",         # local | passthrough (callers may send their own user_ key)
    "plan": "auto",                 # auto | all | go | goat | pro | max: which models /v1/models lists
    "include_models": [],           # listed whatever the plan (same prefixes as exclude_models)
    "exclude_models": [],
    "discover_models": True,        # merge /provider/v1/models into /v1/models (in the background)
    "model_map": {},                # ordered glob patterns -> catalog ids, e.g. claude-* -> deepseek/...
    "usage_file": "usage.json",
    "store_responses": True,        # keep /v1/responses for previous_response_id (state.sqlite3)
    "responses_ttl_days": 30,       # stored responses expire after this many days
    "responses_max_mb": 512,        # past this size the oldest stored responses go first
    "fetch_remote_images": False,   # fetch http(s) image URLs (never private/loopback addresses)
    "remote_image_max_mb": 10,
    "remote_image_timeout": 10.0,
    "keepalive_interval": 15.0,     # seconds of upstream silence between SSE keep-alives
    "stream_slots": 160,            # model calls one worker relays at once; past that: 503
    "max_body_mb": 50,              # request body limit (base64 images are large)
    "cors_origins": "*",            # Access-Control-Allow-Origin; "" disables CORS headers
    "log_level": "info",
}

MODES = ("auto", "cli", "provider")
CLIENT_KEYS = ("local", "passthrough")
PLANS = ("auto", "all", "go", "goat", "pro", "max")

_NUMBER = (int, float)
#: The type each leaf must have; a dict means a nested section.
_SCHEMA: dict = {
    "api_key": (str, type(None)),
    "api_keys": list,
    "commandcode": {
        "api_key": (str, type(None)),
        "mode": str,
        "base_url": str,
        "cli_version": str,
        "connect_timeout": _NUMBER,
        "idle_timeout": _NUMBER,
    },
    "host": str,
    "port": int,
    "client_keys": str,
    "plan": str,
    "include_models": list,
    "exclude_models": list,
    "discover_models": bool,
    "model_map": "mapping",
    "usage_file": str,
    "store_responses": bool,
    "responses_ttl_days": _NUMBER,
    "responses_max_mb": _NUMBER,
    "fetch_remote_images": bool,
    "remote_image_max_mb": _NUMBER,
    "remote_image_timeout": _NUMBER,
    "keepalive_interval": _NUMBER,
    "stream_slots": int,
    "max_body_mb": _NUMBER,
    "cors_origins": str,
    "log_level": str,
}
_TYPE_NAMES = {str: "a string", int: "an integer", bool: "true or false", list: "a list",
               dict: "a mapping", _NUMBER: "a number", "mapping": "a mapping of strings to strings"}

DEFAULT_FILE_TEMPLATE = """\
# Command Code Gateway configuration, written on first start (mode 0600).
# Every key is documented in README.md.
api_key: "{local_key}"          # clients send this as 'Authorization: Bearer ...' or 'x-api-key'
commandcode:
  api_key: ""                   # your Command Code key (user_...); or set COMMAND_CODE_API_KEY
  mode: "auto"                  # auto: Provider API if the plan has it, else the CLI route
  base_url: "{base_url}"
  cli_version: "{cli_version}"
host: "localhost"
port: 11434
exclude_models: []
usage_file: "usage.json"
"""


class ConfigError(Exception):
    """A configuration problem, worded as one line that names the field."""


def _type_name(t) -> str:
    return _TYPE_NAMES.get(t) or " or ".join(_TYPE_NAMES.get(x, x.__name__) for x in t
                                              if x is not type(None))


def _check(data: dict, schema: dict, prefix: str, where: str) -> None:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: '{prefix.rstrip('.') or 'top level'}' must be a mapping")
    for key, value in data.items():
        name = f"{prefix}{key}"
        if key not in schema:
            raise ConfigError(f"{where}: unknown field '{name}'")
        expected = schema[key]
        if isinstance(expected, dict):
            _check(value, expected, name + ".", where)
            continue
        if expected == "mapping":       # free keys, string values (model_map)
            if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                      for k, v in value.items()):
                raise ConfigError(f"{where}: field '{name}' must be {_TYPE_NAMES[expected]}")
            continue
        ok = isinstance(value, expected) and not (isinstance(value, bool) and expected in (int, _NUMBER))
        if not ok:
            raise ConfigError(f"{where}: field '{name}' must be {_type_name(expected)}, "
                              f"got {type(value).__name__}")
        if expected is list and not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: field '{name}' must be a list of strings")


def _merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def validate(overrides: dict, where: str = "config") -> dict:
    """Check ``overrides`` against the schema and return it merged over the defaults."""
    _check(overrides, _SCHEMA, "", where)
    cfg = _merge(DEFAULTS, overrides)
    for field in ("commandcode.connect_timeout", "commandcode.idle_timeout", "keepalive_interval",
                  "max_body_mb", "remote_image_max_mb", "remote_image_timeout",
                  "responses_ttl_days", "responses_max_mb"):
        section, _, key = field.rpartition(".")
        value = (cfg[section] if section else cfg)[key]
        if value <= 0:
            raise ConfigError(f"{where}: field '{field}' must be greater than 0")
    for field, choices in (("commandcode.mode", MODES), ("client_keys", CLIENT_KEYS),
                           ("plan", PLANS)):
        section, _, key = field.rpartition(".")
        if (cfg[section] if section else cfg)[key] not in choices:
            raise ConfigError(f"{where}: field '{field}' must be one of {', '.join(choices)}")
    _check_port(cfg["port"], f"{where}: field 'port'")
    cfg["commandcode"]["base_url"] = _check_url(cfg["commandcode"]["base_url"],
                                                f"{where}: field 'commandcode.base_url'")
    _check_model_map(cfg["model_map"], cfg["exclude_models"], where)
    if not isinstance(logging.getLevelName(cfg["log_level"].upper()), int):
        raise ConfigError(f"{where}: field 'log_level' must be one of debug, info, warning, "
                          "error, critical")
    return cfg


def _check_model_map(model_map: dict, exclude: list, where: str) -> None:
    """Every target must be a model the gateway serves: a typo, or a target hidden by
    ``exclude_models``, would otherwise surface only as 404s on every mapped request."""
    if not model_map:
        return
    from .catalog import Catalog
    catalog = Catalog.load(exclude)
    for pattern, target in model_map.items():
        if catalog.resolve(target) is None:
            raise ConfigError(f"{where}: field 'model_map.{pattern}' maps to '{target}', which is "
                              "not a known model or is excluded by exclude_models")


def _check_port(port: int, name: str) -> int:
    if not 0 < port < 65536:
        raise ConfigError(f"{name} must be between 1 and 65535")
    return port


def _check_url(url: str, name: str) -> str:
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"{name} must start with http:// or https://")
    return url.rstrip("/")


def config_path(env=os.environ) -> str:
    return os.path.abspath(env.get("GATEWAY_CONFIG") or "config.yaml")


def _write_new_file(path: str, text: str) -> bool:
    """Create ``path`` with mode 0600 unless it exists; atomic, so racing workers agree on one file."""
    folder = os.path.dirname(path) or "."
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")   # mkstemp files are 0600
    except OSError as exc:
        raise ConfigError(f"{os.path.basename(path)}: cannot create it in {folder} "
                          f"({exc.strerror})") from None
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, path)           # fails if another process created it first
        return True
    except FileExistsError:
        return False
    finally:
        os.unlink(tmp)


def _new_local_key() -> str:
    return "ccgw-" + secrets.token_urlsafe(24)


def _read_file(path: str) -> dict:
    where = os.path.basename(path)
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError(f"{where}: not valid YAML{at}") from None
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read ({exc.strerror})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: the top level must be a mapping of fields")
    return data


def _cli_auth_key(home: str | None) -> str | None:
    """The key the Command Code CLI stored at login (``~/.commandcode/auth.json``), if any."""
    path = os.path.join(home or os.path.expanduser("~"), ".commandcode", "auth.json")
    try:
        with open(path, encoding="utf-8") as f:
            key = json.load(f).get("apiKey")
    except (OSError, ValueError, AttributeError):
        return None
    return key.strip() if isinstance(key, str) and key.strip() else None


def _local_key_file(cfg_path: str) -> str:
    return os.path.join(os.path.dirname(cfg_path), ".gateway_api_key")


def _ensure_local_key(cfg_path: str) -> str:
    """A generated local key kept beside a config that names none (the committed config.yaml)."""
    key_path = _local_key_file(cfg_path)
    if _write_new_file(key_path, _new_local_key() + "\n"):
        log.warning("no local api_key configured: generated one in %s (mode 0600)", key_path)
    with open(key_path, encoding="utf-8") as f:
        key = f.read().strip()
    if not key:
        raise ConfigError(f"{os.path.basename(key_path)} is empty: delete it to get a new key, "
                          "or set api_key in the config")
    return key


def load(env=os.environ) -> dict:
    """Read, complete and validate the configuration the process should run with.

    Order: defaults < file < environment.  The Command Code key falls back to the CLI's own
    ``~/.commandcode/auth.json`` as the CLI does.  A missing file is created with a fresh local key.
    """
    path = config_path(env)
    if not os.path.exists(path):
        text = DEFAULT_FILE_TEMPLATE.format(local_key=_new_local_key(), base_url=DEFAULT_BASE_URL,
                                            cli_version=DEFAULT_CLI_VERSION)
        if _write_new_file(path, text):
            log.warning("wrote a default configuration to %s (mode 0600); the local API key is in it", path)
    cfg = validate(_read_file(path), os.path.basename(path))

    cc = cfg["commandcode"]
    if env.get("COMMAND_CODE_API_KEY", "").strip():
        cc["api_key"] = env["COMMAND_CODE_API_KEY"].strip()
    if not cc["api_key"]:
        cc["api_key"] = _cli_auth_key(env.get("HOME"))
    if env.get("COMMANDCODE_MODE"):
        cc["mode"] = env["COMMANDCODE_MODE"].strip()
        if cc["mode"] not in MODES:
            raise ConfigError(f"environment: COMMANDCODE_MODE must be one of {', '.join(MODES)}")
    if env.get("COMMANDCODE_BASE_URL"):
        cc["base_url"] = _check_url(env["COMMANDCODE_BASE_URL"], "environment: COMMANDCODE_BASE_URL")
    if env.get("GATEWAY_API_KEY", "").strip():
        cfg["api_keys"] = [k.strip() for k in env["GATEWAY_API_KEY"].split(",") if k.strip()]
        cfg["api_key"] = None
    if env.get("HOST"):
        cfg["host"] = env["HOST"]
    if env.get("PORT"):
        try:
            cfg["port"] = int(env["PORT"])
        except ValueError:
            raise ConfigError("environment: PORT must be an integer") from None
        _check_port(cfg["port"], "environment: PORT")
    if env.get("GATEWAY_THREADS"):          # streams per worker, as the PaaS variable says
        try:
            cfg["stream_slots"] = int(env["GATEWAY_THREADS"])
        except ValueError:
            raise ConfigError("environment: GATEWAY_THREADS must be an integer") from None
    if cfg["stream_slots"] < 1:
        raise ConfigError("stream_slots (or GATEWAY_THREADS) must be at least 1")
    if not local_keys(cfg):
        cfg["api_keys"] = [_ensure_local_key(path)]
    cfg["usage_file"] = os.path.join(os.path.dirname(path), cfg["usage_file"])
    return cfg


def local_keys(cfg: dict) -> list[str]:
    """Every local key a client may present (``api_key`` and ``api_keys`` together)."""
    keys = list(cfg.get("api_keys") or [])
    if cfg.get("api_key"):
        keys.append(cfg["api_key"])
    return [k for k in keys if k]
