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
import typing
from dataclasses import dataclass, fields as dataclass_fields, is_dataclass, make_dataclass

import yaml

log = logging.getLogger("gateway.config")

DEFAULT_BASE_URL = "https://api.commandcode.ai"
#: The CLI release docs/protocol.md was read from (its "Sources" and §3.1); sent as
#: ``x-command-code-version``.
DEFAULT_CLI_VERSION = "1.64.0"

MODES = ("auto", "cli", "provider")
CLIENT_KEYS = ("local", "passthrough")
PLANS = ("auto", "all", "go", "goat", "pro", "max")
#: the URL schemes ``state`` accepts: Redis, plain or over TLS (as PaaS add-ons hand them out)
STATE_SCHEMES = ("redis://", "rediss://")

_NUMBER = (int, float)


@dataclass(frozen=True)
class Field:
    """One setting: everything about it is written here, once.

    ``DEFAULTS``, the schema :func:`validate` checks, the :class:`Settings` type and the file
    written on first start all come from :data:`FIELDS`, and tests/test_config.py checks the
    README's table against it, so a new setting is one row here and one in the README.
    """

    name: str                   # dotted for a section's field: "commandcode.idle_timeout"
    kind: object                # a type, a tuple of types, or "mapping" (strings to strings)
    default: object
    doc: str                    # what it means, in a few words (the generated file's comment)
    choices: tuple = ()         # the values allowed, if only some are
    positive: bool = False      # a number that must be greater than 0
    in_file: object = None      # written into a new config file: the value's YAML text
    shown: str | None = None    # the README's "default" column, where it is not the value


FIELDS: tuple[Field, ...] = (
    Field("api_key", (str, type(None)), None, "local key clients must send (or api_keys: [...])",
          in_file='"{local_key}"', shown="generated"),
    Field("api_keys", list, [], "several local keys", shown="generated"),
    Field("commandcode.api_key", (str, type(None)), None,
          "your Command Code key (user_...); or set COMMAND_CODE_API_KEY", in_file='""',
          shown="—"),
    Field("commandcode.mode", str, "auto",
          "auto: Provider API if the plan has it, else the CLI route", choices=MODES,
          in_file='"auto"'),
    Field("commandcode.base_url", str, DEFAULT_BASE_URL, "Command Code's API",
          in_file='"{base_url}"'),
    Field("commandcode.cli_version", str, DEFAULT_CLI_VERSION,
          "sent as x-command-code-version", in_file='"{cli_version}"'),
    Field("commandcode.connect_timeout", _NUMBER, 10.0, "seconds to open the upstream connection",
          positive=True),
    Field("commandcode.idle_timeout", _NUMBER, 900.0,
          "seconds of upstream silence before we give up (reasoning can stall for minutes)",
          positive=True),
    Field("host", str, "localhost", "where gunicorn listens", in_file='"localhost"'),
    Field("port", int, 11434, "the port it listens on", in_file="11434"),
    Field("client_keys", str, "local",
          "local | passthrough (callers may send their own user_ key)", choices=CLIENT_KEYS),
    Field("plan", str, "auto", "which models /v1/models lists", choices=PLANS),
    Field("include_models", list, [], "listed whatever the plan (same prefixes as exclude_models)"),
    Field("exclude_models", list, [], "prefixes of model names not to serve", in_file="[]"),
    Field("discover_models", bool, True,
          "merge /provider/v1/models into /v1/models (in the background)"),
    Field("model_map", "mapping", {},
          "ordered glob patterns -> catalog ids, e.g. claude-* -> deepseek/..."),
    Field("usage_file", str, "usage.json", "the usage store, relative to the config file",
          in_file='"usage.json"'),
    Field("store_responses", bool, True,
          "keep /v1/responses for previous_response_id (state.sqlite3)"),
    Field("responses_ttl_days", _NUMBER, 30, "stored responses expire after this many days",
          positive=True),
    Field("responses_max_mb", _NUMBER, 512,
          "past this size the oldest stored responses go first", positive=True),
    Field("state", (str, type(None)), None,
          "redis://... or rediss://...: every piece of shared state in Redis (several "
          "instances); unset: the files beside usage_file; or set REDIS_URL", shown="—"),
    Field("state_prefix", str, "ccgw",
          "prefix of every Redis key, so several gateways can share one Redis"),
    Field("usage_days_kept", _NUMBER, 400,
          "with state in Redis, daily usage counters expire after this many days",
          positive=True),
    Field("fetch_remote_images", bool, False,
          "fetch http(s) image URLs (never private/loopback addresses)"),
    Field("remote_image_max_mb", _NUMBER, 10, "largest remote image fetched", positive=True),
    Field("remote_image_timeout", _NUMBER, 10.0, "seconds a remote image may take",
          positive=True),
    Field("keepalive_interval", _NUMBER, 15.0,
          "seconds of upstream silence between SSE keep-alives", positive=True),
    Field("stream_slots", int, 160, "model calls one worker relays at once; past that: 503"),
    Field("max_body_mb", _NUMBER, 50, "request body limit (base64 images are large)",
          positive=True),
    Field("cors_origins", str, "*", 'Access-Control-Allow-Origin; "" disables CORS headers'),
    Field("log_level", str, "info", "Python logging level"),
    Field("log_format", str, "text",
          "text, or json: one JSON object per line, gunicorn's own lines included",
          choices=("text", "json")),
    Field("metrics_key", (str, type(None)), None,
          "a key that may read /metrics and nothing else (for a Prometheus scraper)",
          shown="—"),
    Field("status_public", bool, False, "show /status without login, for a private network"),
)


def _nest(pairs) -> dict:
    """``{"a.b": v}`` pairs as nested dicts ``{"a": {"b": v}}``, in the table's order."""
    out: dict = {}
    for name, value in pairs:
        section, _, key = name.rpartition(".")
        (out.setdefault(section, {}) if section else out)[key] = value
    return out


DEFAULTS: dict = _nest((f.name, f.default) for f in FIELDS)
#: The type each leaf must have; a dict means a nested section.
_SCHEMA: dict = _nest((f.name, f.kind) for f in FIELDS)
_TYPE_NAMES = {str: "a string", int: "an integer", bool: "true or false", list: "a list",
               dict: "a mapping", _NUMBER: "a number", "mapping": "a mapping of strings to strings"}


def _file_template() -> str:
    """The file written on first start: the fields marked ``in_file``, each with its comment."""
    lines = ["# Command Code Gateway configuration, written on first start (mode 0600).",
             "# Every key is documented in README.md."]
    section = ""
    for f in FIELDS:
        if f.in_file is None:
            continue
        head, _, key = f.name.rpartition(".")
        if head != section:
            if head:
                lines.append(f"{head}:")
            section = head
        text = f"{'  ' if head else ''}{key}: {f.in_file}"
        lines.append(f"{text:<32}# {f.doc}")
    return "\n".join(lines) + "\n"


DEFAULT_FILE_TEMPLATE = _file_template()


class _Section:
    """Read access by name as well as by attribute (``cfg["port"]`` is ``cfg.port``), so the
    settings read like the YAML they came from; nothing can be assigned."""

    def __getitem__(self, key: str):
        try:
            return getattr(self, key)
        except AttributeError:
            raise KeyError(key) from None

    def get(self, key: str, default=None):
        return getattr(self, key, default)

    def __contains__(self, key) -> bool:
        return isinstance(key, str) and key in self.__dataclass_fields__

    def keys(self):
        return self.__dataclass_fields__.keys()


def _python_type(kind):
    if kind == "mapping":
        return dict
    return kind if not isinstance(kind, tuple) else typing.Union[kind]


def _settings_type(name: str, tree: dict) -> type:
    fields_ = [(key, _settings_type(key, value) if isinstance(value, dict) else
                _python_type(value)) for key, value in tree.items()]
    cls = make_dataclass(name.title().replace("_", "") if name else "Settings", fields_,
                         bases=(_Section,), frozen=True)
    cls.__module__ = __name__
    return cls


#: The validated configuration's type: one frozen field per row of FIELDS (sections nested).
Settings = _settings_type("", _SCHEMA)
#: The ``commandcode`` section's type: what the upstream routes are built from.
CommandCode = next(f.type for f in dataclass_fields(Settings) if f.name == "commandcode")


def _freeze(cfg: dict, kind: type = Settings):
    values = {}
    for f in dataclass_fields(kind):
        value = cfg[f.name]
        values[f.name] = _freeze(value, f.type) if is_dataclass(f.type) else value
    return kind(**values)


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
        else:
            _check_leaf(value, expected, f"{where}: field '{name}'")


def _check_leaf(value, expected, field: str) -> None:
    """One value against its kind; the message names the field, never the value."""
    if expected == "mapping":       # free keys, string values (model_map)
        if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                  for k, v in value.items()):
            raise ConfigError(f"{field} must be {_TYPE_NAMES[expected]}")
        return
    ok = isinstance(value, expected) and not (isinstance(value, bool) and expected in (int, _NUMBER))
    if not ok:
        raise ConfigError(f"{field} must be {_type_name(expected)}, got {type(value).__name__}")
    if expected is list and not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{field} must be a list of strings")


def _merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def validate(overrides: dict, where: str = "config") -> Settings:
    """Check ``overrides`` against the schema and return it merged over the defaults, as the
    frozen :class:`Settings`."""
    return _freeze(_validated(overrides, where))


def _value(cfg: dict, name: str):
    section, _, key = name.rpartition(".")
    return (cfg[section] if section else cfg)[key]


def _validated(overrides: dict, where: str) -> dict:
    """:func:`validate`'s work, as a plain dict that :func:`load` may still complete."""
    _check(overrides, _SCHEMA, "", where)
    cfg = _merge(DEFAULTS, overrides)
    for f in FIELDS:
        if f.positive and _value(cfg, f.name) <= 0:
            raise ConfigError(f"{where}: field '{f.name}' must be greater than 0")
    for f in FIELDS:
        if f.choices and _value(cfg, f.name) not in f.choices:
            raise ConfigError(f"{where}: field '{f.name}' must be one of {', '.join(f.choices)}")
    _check_port(cfg["port"], f"{where}: field 'port'")
    cfg["state"] = _check_state(cfg["state"], f"{where}: field 'state'")
    if not cfg["state_prefix"].strip():
        raise ConfigError(f"{where}: field 'state_prefix' must not be empty")
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


def _check_state(url: str | None, name: str) -> str | None:
    """A ``redis://`` or ``rediss://`` URL, or None (blank counts as unset).

    The message never repeats the URL: it usually carries the Redis password.
    """
    if url is None or not url.strip():
        return None
    url = url.strip()
    if not url.lower().startswith(STATE_SCHEMES) or not url.split("://", 1)[1]:
        raise ConfigError(f"{name} must be a redis:// or rediss:// URL")
    return url


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


def load(env=os.environ) -> Settings:
    """Read, complete and validate the configuration the process should run with.

    Order: defaults < file < environment.  The Command Code key falls back to the CLI's own
    ``~/.commandcode/auth.json`` as the CLI does.  The files the configuration needs and lacks
    (the config file itself, a generated local key) are created here and only here, by
    whichever process loads first (gunicorn's master, before it forks); they are written
    atomically, so a worker that loads at the same moment finds the same ones.
    """
    path = config_path(env)
    _create_default_file(path)
    cfg = _validated(_read_file(path), os.path.basename(path))
    _apply_environment(cfg, env)
    if not local_keys(cfg):
        cfg["api_keys"] = [_ensure_local_key(path)]
    cfg["usage_file"] = os.path.join(os.path.dirname(path), cfg["usage_file"])
    return _freeze(cfg)


def _create_default_file(path: str) -> None:
    if not os.path.exists(path):
        text = DEFAULT_FILE_TEMPLATE.format(local_key=_new_local_key(), base_url=DEFAULT_BASE_URL,
                                            cli_version=DEFAULT_CLI_VERSION)
        if _write_new_file(path, text):
            log.warning("wrote a default configuration to %s (mode 0600); the local API key is in it", path)


def _env_int(env, name: str) -> int:
    try:
        return int(env[name])
    except ValueError:
        raise ConfigError(f"environment: {name} must be an integer") from None


def _apply_environment(cfg: dict, env) -> None:
    """The environment's overrides (for PaaS), each checked as strictly as the file's values."""
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
        cfg["port"] = _check_port(_env_int(env, "PORT"), "environment: PORT")
    _apply_redis_url(cfg, env)
    if env.get("GATEWAY_THREADS"):          # streams per worker, as the PaaS variable says
        cfg["stream_slots"] = _env_int(env, "GATEWAY_THREADS")
    if cfg["stream_slots"] < 1:
        raise ConfigError("stream_slots (or GATEWAY_THREADS) must be at least 1")


def _apply_redis_url(cfg: dict, env) -> None:
    """``REDIS_URL``, as PaaS Redis add-ons set it, is the ``state`` of a config naming none
    (a URL in the file is the operator's choice and wins)."""
    if env.get("REDIS_URL", "").strip() and cfg["state"] is None:
        cfg["state"] = _check_state(env["REDIS_URL"], "environment: REDIS_URL")


def local_keys(cfg) -> list[str]:
    """Every local key a client may present (``api_key`` and ``api_keys`` together)."""
    keys = list(cfg.get("api_keys") or [])
    if cfg.get("api_key"):
        keys.append(cfg["api_key"])
    return [k for k in keys if k]
