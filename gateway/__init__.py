"""Command Code Gateway: OpenAI- and Anthropic-compatible APIs over a Command Code plan.

``create_app(config=None)`` builds the Flask app.  Everything that can be done once is done
here, at startup: the configuration is read and validated, the catalog indexed, the upstream
headers built; a request only decodes, sends and relays.
"""
from __future__ import annotations

import atexit
import hmac
import logging
import os

from flask import Flask, request

from . import config as config_mod
from . import access, capacity, errors, keys, logs, plans, state
from .account import Account, ModelDiscovery
from .catalog import Catalog, prefixed
from .config import Settings
from .images import RemoteImages
from .transport import Transport
from .upstream import routes
from .views import error_handlers

__version__ = "0.6.0"

log = logging.getLogger("gateway")

_PUBLIC_ENDPOINTS = {"meta.health", "meta.index",
                     "status.page", "status.login", "status.logout"}   # own auth: views/status.py
_ALLOW_HEADERS = "authorization, content-type, x-api-key, anthropic-version, anthropic-beta"


class Gateway:
    """The per-process state the views share (kept in ``app.extensions["gateway"]``)."""

    def __init__(self, cfg: Settings):
        self.config = cfg
        self.shipped_catalog = Catalog.load(cfg.exclude_models, cfg.model_map)
        self._set_catalog(self.shipped_catalog)
        self.images = RemoteImages(cfg.fetch_remote_images,
                                   int(cfg.remote_image_max_mb * 1024 * 1024),
                                   cfg.remote_image_timeout)
        cc = cfg.commandcode
        self.api_key = cc.api_key
        self.transport = Transport(cc.connect_timeout, cc.idle_timeout)
        # one place decides where the state lives: the files beside the usage file, or Redis
        self.shared = state.open_shared(cfg, os.path.dirname(os.path.abspath(cfg.usage_file)))
        if cfg.state is not None:       # a worker that stops sends the counts Redis still lacks
            atexit.register(self.shared.close)
        self.route = routes.build(cc.mode, cc, self.transport, self.shared.key_routes)
        self.usage = self.shared.usage
        self.slots = capacity.current = capacity.Slots(cfg.stream_slots)
        self.conversations = self.shared.conversations
        self.recent = self.shared.recent     # the last requests of every worker (/usage/recent)
        self.account = Account(cc.base_url, cc.cli_version, self.transport,
                               failures=self.shared.failures, cache=self.shared.credits)
        self.discovery = ModelDiscovery(cc.base_url, self.transport, self._merge_model_list,
                                        cache=self.shared.model_list) \
            if cfg.discover_models else None
        self.keepalive_interval = cfg.keepalive_interval
        self.local_keys = [k.encode() for k in config_mod.local_keys(cfg)]
        self.metrics_key = cfg.metrics_key.encode() if cfg.metrics_key else None
        self.passthrough = cfg.client_keys == "passthrough"
        self._include = tuple(p.lower() for p in cfg.include_models if p)

    def _set_catalog(self, catalog: Catalog) -> None:
        self.codex_models = {m.id: m.as_codex(i) for i, m in enumerate(catalog.models)}
        self.models_payload = [(m, m.as_openai()) for m in catalog.models]
        self.catalog = catalog          # one assignment: readers see the old or the new one

    def _merge_model_list(self, entries: list[dict]) -> None:
        self._set_catalog(self.shipped_catalog.with_upstream(entries))

    def upstream_key(self, environ: dict) -> str | None:
        """The Command Code key this request uses: the caller's own (passthrough) or ours.

        The one place that chooses: routes take the key they are given and require it (None or
        empty: the 503 that says how to configure one).
        """
        return environ.get(keys.UPSTREAM_KEY) or self.api_key

    def tier(self, key: str | None) -> str | None:
        """The plan tier whose models ``/v1/models`` lists for ``key`` (None: list them all)."""
        plan = self.config.plan
        if plan == "all":
            return None
        if plan != "auto":
            return plan
        if not key:
            return None
        try:
            return plans.tier(self.account.credits(key))
        except errors.GatewayError as err:
            log.warning("could not read the plan (%s); listing every model", err.message)
            return None

    def listed_models(self, key: str | None) -> list[dict]:
        """``/v1/models`` entries: the catalog less ``exclude_models``, less what the plan cannot
        use unless ``include_models`` names it."""
        tier = self.tier(key)
        if tier is None:
            return [entry for _, entry in self.models_payload]
        return [entry for m, entry in self.models_payload
                if plans.usable(m.min_plan, tier) or prefixed(m.id, self._include)]

    def scraper(self, presented: str | None) -> bool:
        """Whether ``presented`` is ``metrics_key``: it reads /metrics and nothing else."""
        return bool(self.metrics_key and presented
                    and hmac.compare_digest(presented.encode(), self.metrics_key))

    def authorized(self, presented: str | None) -> bool:
        """Constant-time comparison against every local key (no early exit on a match)."""
        if not presented:
            return False
        candidate = presented.encode()
        ok = False
        for key in self.local_keys:
            ok |= hmac.compare_digest(candidate, key)
        return ok


def _presented_key() -> str | None:
    auth = request.headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return request.headers.get("x-api-key") or None


def _install_cors(app: Flask, origins: str) -> None:
    allowed = [o.strip() for o in origins.split(",") if o.strip()]
    if not allowed:
        return

    def origin_header() -> str | None:
        if "*" in allowed:
            return "*"
        origin = request.headers.get("Origin")
        return origin if origin in allowed else None

    @app.after_request
    def add_cors(resp):
        value = origin_header()
        if value:
            resp.headers["Access-Control-Allow-Origin"] = value
            resp.headers["Access-Control-Expose-Headers"] = "Retry-After"
            if value != "*":
                resp.headers.add("Vary", "Origin")
        return resp


def _install_handlers(app: Flask, gw: Gateway) -> None:
    @app.before_request
    def preflight_and_auth():
        rec = access.record(request.environ)        # for the access line
        rec["endpoint"] = request.endpoint
        rec["rule"] = request.url_rule.rule if request.url_rule is not None else None
        if request.method == "OPTIONS":       # CORS preflight: browsers send it without credentials
            resp = app.make_response(("", 204))
            resp.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
            resp.headers["Access-Control-Allow-Headers"] = (
                request.headers.get("Access-Control-Request-Headers") or _ALLOW_HEADERS)
            resp.headers["Access-Control-Max-Age"] = "86400"
            return resp
        if request.endpoint in _PUBLIC_ENDPOINTS:
            return None
        presented = _presented_key()
        environ = request.environ
        if gw.authorized(presented):
            environ[keys.UPSTREAM_KEY] = None
            environ[keys.KEY_LABEL] = keys.GATEWAY_LABEL
        elif request.endpoint == "meta.metrics" and gw.scraper(presented):
            environ[keys.KEY_LABEL] = "metrics"
        elif gw.passthrough and presented and keys.is_command_code_key(presented):
            environ[keys.UPSTREAM_KEY] = presented      # the caller's own plan, this request only
            environ[keys.KEY_LABEL] = keys.label(presented)
        else:
            raise errors.AuthenticationFailed(
                "Missing or invalid API key: send the gateway's local key as 'Authorization: "
                "Bearer <key>' or 'x-api-key: <key>'" + (
                    ", or your own Command Code key (user_...)" if gw.passthrough else ""))
        return None

    # each blueprint answers its own errors in its codec's envelope; these see only requests
    # that matched no route (gateway/views/error_handlers.py)
    error_handlers.install_unrouted(app)


def create_app(config: dict | None = None) -> Flask:
    """Build the app from ``config`` (a dict of overrides, as in config.yaml) or from the
    configuration file and environment when ``config`` is None."""
    cfg = config_mod.load() if config is None else config_mod.validate(config)
    logs.configure(cfg.log_format, cfg.log_level)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = int(cfg.max_body_mb * 1024 * 1024)
    app.json.sort_keys = False
    app.json.ensure_ascii = False
    gw = Gateway(cfg)
    app.extensions["gateway"] = gw
    if gw.discovery is not None:
        gw.discovery.ensure_running()       # gunicorn builds the app in each worker
    if not cfg.commandcode.api_key:
        log.warning("no Command Code API key: set COMMAND_CODE_API_KEY or commandcode.api_key; "
                    "/health and /v1/models work, model calls will fail until then")

    from .views import anthropic, meta, openai, responses, status
    app.register_blueprint(meta.bp)
    app.register_blueprint(status.bp)
    app.register_blueprint(openai.bp)
    app.register_blueprint(responses.bp)
    app.register_blueprint(anthropic.bp)
    _install_cors(app, cfg.cors_origins)
    _install_handlers(app, gw)
    # one access line per request, timed to its last byte, counted in the metrics; the client
    # behind a proxy is believed from the addresses gunicorn trusts (FORWARDED_ALLOW_IPS)
    app.wsgi_app = access.Recorder(app.wsgi_app, logs.access_emitter(cfg.log_format),
                                   access.TrustedProxies(
                                       os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")),
                                   on_finish=gw.recent.add)
    return app
