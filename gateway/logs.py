"""Log lines for people (``log_format: text``) or for machines (``json``: one object a line).

In JSON mode every line the process writes is JSON, gunicorn's own included
(:func:`gunicorn_logconfig` is handed to gunicorn by gunicorn.conf.py), so a log shipper
parses the whole stream without a special case.  Access lines come from
:mod:`gateway.access`; the startup line shows the effective configuration with every secret
masked (:func:`effective`), so an operator can see what a deployment runs with without being
able to read a key off it.
"""
from __future__ import annotations

import json
import logging
import time
from urllib.parse import urlsplit, urlunsplit

FORMATS = ("text", "json")
_TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_MASK = "***"
#: settings whose values are secrets: never written anywhere, only whether they are set
_SECRETS = ("api_key", "api_keys", "commandcode.api_key", "metrics_key")


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601, ms), level, logger, message, and the
    fields of an access line (``record.access``) at the top level."""

    def format(self, record: logging.LogRecord) -> str:
        out = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
               + f".{int(record.msecs):03d}Z",
               "level": record.levelname.lower(), "logger": record.name}
        access = getattr(record, "access", None)
        if isinstance(access, dict):
            out.update(access)
        else:
            out["message"] = record.getMessage()
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def formatter(log_format: str) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else logging.Formatter(_TEXT)


def configure(log_format: str, level: str) -> None:
    """The process's root handler, in the chosen format (one handler: reconfiguring replaces
    it, so an app built twice in one process does not log twice)."""
    root = logging.getLogger()
    root.setLevel(level.upper())
    handler = next((h for h in root.handlers if getattr(h, "_gateway", False)), None)
    if handler is None:
        handler = logging.StreamHandler()
        handler._gateway = True
        root.addHandler(handler)
    handler.setFormatter(formatter(log_format))


def text_access(line: dict) -> str:
    """An access line for people: the request first, then ``name=value`` for what is known."""
    head = f'{line["client"]} "{line["method"]} {line["path"]}" {line["status"]}'
    rest = " ".join(f"{k}={v}" for k, v in line.items()
                    if k not in ("client", "method", "path", "status") and v is not None)
    return f"{head} {rest}"


def access_emitter(log_format: str):
    """The function :class:`gateway.access.Recorder` calls with each finished request."""
    from .access import quiet
    logger = logging.getLogger("gateway.access")

    def emit(line: dict) -> None:
        level = logging.DEBUG if quiet(line) else logging.INFO
        if not logger.isEnabledFor(level):
            return
        if log_format == "json":
            logger.log(level, "access", extra={"access": line})
        else:
            logger.log(level, "%s", text_access(line))
    return emit


def _masked_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:{_MASK}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def effective(settings) -> dict:
    """``settings`` as a plain dict, secrets replaced by ``***`` (or None when unset), and
    passwords in URLs (``state: redis://:pw@host``) masked."""
    def plain(section, prefix=""):
        out = {}
        for name in section.keys():
            value, dotted = section[name], prefix + name
            if hasattr(value, "keys") and not isinstance(value, dict):
                out[name] = plain(value, dotted + ".")
            elif dotted in _SECRETS:
                out[name] = (_MASK if value else None)
            elif isinstance(value, str) and "://" in value:
                out[name] = _masked_url(value)
            else:
                out[name] = value
        return out
    return plain(settings)


def gunicorn_logconfig(log_format: str, level: str = "info") -> dict:
    """gunicorn's ``logconfig_dict``: in JSON mode its error log as JSON lines too (text mode
    keeps gunicorn's own line format: ``{}``).  The root logger gets no handler here: the app
    adds its own in each worker (:func:`configure`), so no line is written twice."""
    if log_format != "json":
        return {}
    return {
        "version": 1, "disable_existing_loggers": False,
        "root": {"level": level.upper(), "handlers": []},
        "formatters": {"gateway": {"()": "gateway.logs.JsonFormatter"}},
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "gateway",
                                 "stream": "ext://sys.stdout"},
                     "error_console": {"class": "logging.StreamHandler",
                                       "formatter": "gateway", "stream": "ext://sys.stderr"}},
        "loggers": {"gunicorn.error": {"level": level.upper(), "handlers": ["error_console"],
                                       "propagate": False},
                    "gunicorn.access": {"level": "CRITICAL", "handlers": [],
                                        "propagate": False}},
    }
