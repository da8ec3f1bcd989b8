"""gateway/logs.py: JSON lines, the text access line, and the effective configuration with
every secret masked."""
from __future__ import annotations

import json
import logging
import logging.config

from gateway import config, logs


def _record(msg="hello %s", args=("world",), **extra) -> logging.LogRecord:
    record = logging.LogRecord("gateway.test", logging.WARNING, __file__, 1, msg, args, None)
    for k, v in extra.items():
        setattr(record, k, v)
    return record


def test_a_json_line_is_one_object_with_time_level_logger_and_message():
    out = json.loads(logs.JsonFormatter().format(_record()))
    assert out["level"] == "warning" and out["logger"] == "gateway.test"
    assert out["message"] == "hello world" and out["time"].endswith("Z")


def test_an_access_record_puts_its_fields_at_the_top_level():
    line = {"method": "POST", "path": "/v1/messages", "status": 200, "surface": "messages"}
    out = json.loads(logs.JsonFormatter().format(_record("access", (), access=line)))
    assert {k: out[k] for k in line} == line and "message" not in out


def test_the_text_access_line_leaves_out_what_is_unknown():
    text = logs.text_access({"client": "1.2.3.4", "method": "GET", "path": "/health",
                             "status": 200, "surface": "health", "model": None,
                             "duration_ms": 0.4})
    assert text == '1.2.3.4 "GET /health" 200 surface=health duration_ms=0.4'


def test_the_effective_configuration_masks_every_secret():
    cfg = config.validate({"api_key": "local-secret-key",
                           "commandcode": {"api_key": "user_secret_value"}})
    shown = logs.effective(cfg)
    text = json.dumps(shown)
    assert "local-secret-key" not in text and "user_secret_value" not in text
    assert shown["api_key"] == "***" and shown["commandcode"]["api_key"] == "***"
    assert shown["commandcode"]["base_url"] == "https://api.commandcode.ai"
    assert shown["api_keys"] is None                # unset: said so, not masked


def test_a_password_in_a_url_is_masked():
    assert logs._masked_url("redis://:pw123@cache.internal:6379/0") == \
        "redis://:***@cache.internal:6379/0"
    assert logs._masked_url("rediss://user:pw@h/1") == "rediss://user:***@h/1"
    assert logs._masked_url("redis://h:6379") == "redis://h:6379"


def test_gunicorns_log_configuration_is_json_in_json_mode_and_its_own_in_text_mode():
    assert logs.gunicorn_logconfig("text") == {}
    conf = logs.gunicorn_logconfig("json")
    assert conf["root"]["handlers"] == []            # the app adds the one root handler
    logging.config.dictConfig(conf)
    assert isinstance(logging.getLogger("gunicorn.error").handlers[0].formatter,
                      logs.JsonFormatter)
    logging.config.dictConfig({"version": 1, "disable_existing_loggers": False})
