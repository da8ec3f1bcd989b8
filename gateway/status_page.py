"""The ``/status`` page: usage, quota and health on one server-rendered HTML page.

Built from what the gateway already keeps -- the usage counters (``gw.usage``), the last access
lines (``gw.recent``) and the account's billing body -- as plain strings, every value through
:func:`charts.esc`.  There is no template engine, no script and no external asset: the page
is read under a ``default-src 'none'`` policy and must be useful without JavaScript.  It shows
labels, counts and error codes only, never a key, a prompt or an answer (the access lines hold
none).  Numbers tests compare with ``/usage`` carry ``data-*`` attributes.
"""
from __future__ import annotations

import calendar
import time

from . import __version__, errors, plans, usage
from .charts import daily_by_model, esc, quota_bar

#: when this process started (the module is imported while the app is built)
STARTED = time.time()
ROUTES = ("cli", "provider")
DAYS_CHARTED = 30
RECENT_LIMIT = 100
COUNTERS = usage.COUNTERS

#: error codes, by the class an operator acts on
ERROR_CLASSES = (
    ("credits", {"insufficient_quota", "insufficient_credits", "payment_required"}),
    ("plan", {"model_not_in_plan", "upgrade_required", "premium_required"}),
    ("usage window", {"usage_limit_reached", "rate_limit_exceeded"}),
    ("upstream 5xx", {"upstream_error", "overloaded", "upstream_overloaded", "server_error",
                      "bad_gateway", "service_unavailable", "upstream_finish_error"}),
    ("truncated streams", {"upstream_truncated"}),
    ("client disconnects", {"client_disconnected"}),
    ("timeouts", {"upstream_timeout", "request_timeout"}),
)


def error_class(code: str) -> str:
    for name, codes in ERROR_CLASSES:
        if code in codes:
            return name
    return "other"


# ---- the data ----------------------------------------------------------------------------------

def _quota(gw) -> dict:
    if not gw.api_key:
        return {"error": "the gateway has no Command Code API key"}
    try:
        return plans.quota(gw.account.credits(gw.api_key))
    except errors.GatewayError as err:
        return {"error": err.message}


def _history(gw) -> dict:
    """``gw.usage.history()`` where the store has it; an empty one otherwise."""
    read = getattr(gw.usage, "history", None)
    data = read() if read is not None else {}
    return {"day_models": data.get("day_models") or {}, "day_errors": data.get("day_errors") or {}}


def _recent(gw) -> list[dict]:
    recent = getattr(gw, "recent", None)
    return list(recent.read(limit=RECENT_LIMIT)) if recent is not None else []


def collect(gw, now: float | None = None) -> dict:
    """Everything the page shows, read once."""
    now = time.time() if now is None else now
    return {"now": now, "usage": gw.usage.read(), "history": _history(gw), "recent": _recent(gw),
            "quota": _quota(gw), "cli_version": gw.config.commandcode.cli_version,
            "backend": "redis" if gw.config.state else "files", "version": __version__,
            "started": STARTED}


# ---- formatting --------------------------------------------------------------------------------

def span(seconds: float) -> str:
    """``3d 4h``, ``2h 5m``, ``4m 10s``: two units, enough to read at a glance."""
    s = max(int(seconds), 0)
    d, h, m = s // 86400, s % 86400 // 3600, s % 3600 // 60
    if d:
        return f"{d}d {h}h"
    if h:
        return f"{h}h {m}m"
    return f"{m}m {s % 60}s"


def clock(epoch: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch)) if epoch else "—"


def num(value) -> str:
    return "—" if value is None else f"{value:,}" if isinstance(value, int) else esc(value)


def _days_back(today: str, n: int) -> list[str]:
    base = calendar.timegm(time.strptime(today, "%Y-%m-%d"))
    return [time.strftime("%Y-%m-%d", time.gmtime(base - 86400 * i)) for i in range(n - 1, -1, -1)]


def _section(title: str, body: str, cls: str = "") -> str:
    return f'<section class="card {cls}"><h2>{esc(title)}</h2>{body}</section>'


# ---- health ------------------------------------------------------------------------------------

def _last(recent: list[dict], route: str, failed: bool) -> dict | None:
    for line in recent:                             # newest first
        if line.get("route") == route and (int(line.get("status") or 0) >= 400) == failed:
            return line
    return None


def _route_health(recent: list[dict], route: str, now: float) -> str:
    cells = []
    for failed, name in ((False, "last success"), (True, "last failure")):
        line = _last(recent, route, failed)
        if line is None:
            text = f"none in the last {RECENT_LIMIT} requests"
        else:
            text = (f"{clock(line.get('time'))} ({span(now - (line.get('time') or now))} ago), "
                    f"{esc(line.get('status'))}" + (f" {esc(line['error'])}"
                                                    if line.get("error") else ""))
        kind = "failure" if failed else "success"
        cells.append(f'<div data-route="{esc(route)}" data-kind="{kind}">'
                     f'<b>{esc(route)} {name}</b><br>{text}</div>')
    return "".join(cells)


def health(ctx: dict) -> str:
    now = ctx["now"]
    items = "".join(_route_health(ctx["recent"], r, now) for r in ROUTES)
    items += (f'<div><b>cli_version sent</b><br><span id="cli-version">{esc(ctx["cli_version"])}'
              f'</span></div><div><b>state</b><br><span id="backend">{esc(ctx["backend"])}</span>'
              f'</div><div><b>gateway</b><br><span id="version">{esc(ctx["version"])}</span>, up '
              f'{span(now - ctx["started"])}</div>')
    return _section("Health", f'<div class="strip">{items}</div>', "wide")


# ---- quota -------------------------------------------------------------------------------------

def _resets(iso: str | None, now: float) -> str:
    if not iso:
        return "reset time unknown"
    try:
        at = calendar.timegm(time.strptime(iso, "%Y-%m-%dT%H:%M:%SZ"))
    except ValueError:
        return "reset time unknown"
    return f"resets in {span(at - now)}"


def _window(name: str, window: dict | None, now: float) -> str:
    if not window:
        return f'<p>{esc(name)}: not reported</p>'
    used, cap = window["used"], window["cap"]
    flag = " — exceeded" if window.get("exceeded") else ""
    return (f'<div class="window" data-window="{esc(name)}"><p>{esc(name)}: {num(used)} of '
            f'{num(cap)}{flag}, {_resets(window.get("resets_at"), now)}</p>'
            f'{quota_bar(used, cap, name)}</div>')


def _others(keys: dict) -> str:
    labels = sorted(k for k in keys if k != "gateway")
    if not labels:
        return ""
    items = "".join(f'<li data-key="{esc(k)}">{esc(k)}: quota not available (the gateway never '
                    f'stores callers\' keys)</li>' for k in labels)
    return f'<h3>Other keys</h3><ul>{items}</ul>'


def quota(ctx: dict) -> str:
    q, now = ctx["quota"], ctx["now"]
    if "error" in q:
        body = f'<p class="error" id="quota-error">{esc(q["error"])}</p>'
    else:
        credits = q["credits"]
        left = credits["monthly"] + credits["purchased"] + credits["free"]
        body = (f'<p>plan <b id="plan">{esc(q["plan"] or "unknown")}</b>, credits left '
                f'<b id="credits" data-value="{esc(left)}">${left:,.2f}</b> '
                f'(monthly {num(credits["monthly"])}, purchased {num(credits["purchased"])}, '
                f'free {num(credits["free"])})</p>'
                + _window("five-hour window", q["windows"]["five_hour"], now)
                + _window("weekly window", q["windows"]["weekly"], now))
    return _section("Quota (the gateway's key)", body + _others(ctx["usage"].get("keys") or {}))


# ---- today vs yesterday ------------------------------------------------------------------------

def _top_model(models: dict) -> str:
    if not models:
        return "—"
    return max(sorted(models), key=lambda m: models[m].get("total_requests", 0))


def _share(day: dict) -> str:
    total = day.get("total_requests", 0)
    return f"{day.get('failed_requests', 0) / total * 100:.1f} %" if total else "—"


_DAY_ROWS = (("requests", "total_requests"), ("failed", "failed_requests"),
             ("input tokens", "prompt_tokens"), ("output tokens", "completion_tokens"),
             ("cached tokens", "cache_read_tokens"), ("reasoning tokens", "reasoning_tokens"))


def days_compared(ctx: dict, today: str) -> str:
    yesterday = _days_back(today, 2)[0]
    days = ctx["usage"].get("days") or {}
    day_models = ctx["history"]["day_models"]
    cols = ((today, "today"), (yesterday, "yesterday"))
    rows = "".join(
        f'<tr><th>{label}</th>' + "".join(
            f'<td data-day="{name}" data-counter="{key}">'
            f'{num((days.get(d) or {}).get(key, 0))}</td>'
            for d, name in cols) + '</tr>' for label, key in _DAY_ROWS)
    rows += '<tr><th>failed share</th>' + "".join(
        f'<td>{_share(days.get(d) or {})}</td>' for d, _ in cols) + '</tr>'
    rows += '<tr><th>most used model</th>' + "".join(
        f'<td data-day="{name}" data-counter="top_model">{esc(_top_model(day_models.get(d) or {}))}'
        f'</td>' for d, name in cols) + '</tr>'
    head = (f'<tr><th></th><th>today (<span id="today">{esc(today)}</span>)</th>'
            f'<th>yesterday</th></tr>')
    return _section("Today and yesterday",
                    f'<div class="scroll"><table class="num wrap">{head}{rows}</table></div>')


# ---- chart and per-model table -----------------------------------------------------------------

def chart(ctx: dict, today: str) -> str:
    days = _days_back(today, DAYS_CHARTED)
    series: dict[str, dict[str, int]] = {}
    for d in days:
        for model, bucket in (ctx["history"]["day_models"].get(d) or {}).items():
            series.setdefault(model, {})[d] = bucket.get("total_requests", 0)
    return _section(f"Requests per day, last {DAYS_CHARTED} days", daily_by_model(series, days),
                    "wide")


def _sum_days(day_models: dict, days: list[str], model: str) -> int:
    return sum((day_models.get(d) or {}).get(model, {}).get("total_requests", 0) for d in days)


def model_table(ctx: dict, today: str) -> str:
    all_time = ctx["usage"].get("models") or {}
    day_models = ctx["history"]["day_models"]
    week = _days_back(today, 7)
    models = sorted(all_time, key=lambda m: (-all_time[m].get("total_requests", 0), m))
    rows = "".join(
        f'<tr data-model="{esc(m)}"><td>{esc(m)}</td>'
        f'<td data-period="today">{num(_sum_days(day_models, [today], m))}</td>'
        f'<td data-period="7d">{num(_sum_days(day_models, week, m))}</td>'
        f'<td data-period="all" data-requests="{all_time[m].get("total_requests", 0)}">'
        f'{num(all_time[m].get("total_requests", 0))}</td>'
        f'<td>{num(all_time[m].get("failed_requests", 0))}</td>'
        f'<td>{num(all_time[m].get("prompt_tokens", 0))}</td>'
        f'<td>{num(all_time[m].get("completion_tokens", 0))}</td></tr>' for m in models)
    head = ('<tr><th>model</th><th>today</th><th>7 days</th><th>all time</th><th>failed</th>'
            '<th>input tokens</th><th>output tokens</th></tr>')
    body = f'<table class="num" id="models">{head}{rows}</table>' if models else "<p>none yet</p>"
    return _section("Requests by model", f'<div class="scroll">{body}</div>', "wide")


# ---- errors and recent requests ----------------------------------------------------------------

def error_table(ctx: dict, today: str) -> str:
    codes = ctx["history"]["day_errors"].get(today) or {}
    grouped: dict[str, dict[str, int]] = {}
    for code, n in codes.items():
        grouped.setdefault(error_class(code), {})[code] = n
    order = [name for name, _ in ERROR_CLASSES] + ["other"]
    rows = "".join(
        f'<tr data-class="{esc(name)}"><td>{esc(name)}</td><td>{sum(grouped[name].values())}</td>'
        f'<td>' + ", ".join(f'<code>{esc(c)}</code> {n}' for c, n in sorted(grouped[name].items()))
        + '</td></tr>' for name in order if name in grouped)
    body = (f'<div class="scroll"><table id="errors" class="wrap"><tr><th>class</th>'
            f'<th>count</th><th>codes</th></tr>{rows}</table></div>'
            if rows else '<p>no errors today</p>')
    return _section("Errors today", body)


def _tokens(line: dict) -> str:
    parts = [line.get("tokens_in"), line.get("tokens_out")]
    if parts == [None, None]:
        return "—"
    text = f"{num(parts[0] or 0)} → {num(parts[1] or 0)}"
    return text + (f" ({num(line['tokens_cached'])} cached)" if line.get("tokens_cached") else "")


def _recent_row(line: dict) -> str:
    ms = line.get("ttfb_ms")
    return (f'<tr class="req" data-time="{esc(line.get("time"))}" data-surface="'
            f'{esc(line.get("surface"))}" data-status="{esc(line.get("status"))}" data-model="'
            f'{esc(line.get("model") or "")}"><td>{esc(clock(line.get("time"))[11:19])}</td>'
            f'<td>{esc(line.get("surface"))}</td><td>{esc(line.get("model") or "—")}</td>'
            f'<td>{esc(line.get("route") or "—")}</td><td>{esc(line.get("key") or "—")}</td>'
            f'<td>{esc(line.get("status"))}</td><td>{"—" if ms is None else esc(ms)}</td>'
            f'<td>{esc(line.get("duration_ms"))}</td><td>{_tokens(line)}</td>'
            f'<td>{esc(line.get("error") or "")}</td></tr>')


def recent_table(ctx: dict) -> str:
    head = ('<tr><th>time (UTC)</th><th>surface</th><th>model</th><th>route</th><th>key</th>'
            '<th>status</th><th>ttfb ms</th><th>ms</th><th>tokens</th><th>error</th></tr>')
    rows = "".join(_recent_row(line) for line in ctx["recent"])
    body = (f'<table class="num" id="recent">{head}{rows}</table>' if rows
            else "<p>no requests since the gateway started</p>")
    return _section(f"Last {RECENT_LIMIT} requests", f'<div class="scroll">{body}</div>', "wide")


# ---- the page ----------------------------------------------------------------------------------

CSS = """
:root{color-scheme:light dark;--bg:#f6f7f9;--card:#fff;--fg:#1d2330;--muted:#5b6577;--line:#dde1e8}
@media (prefers-color-scheme:dark){:root{--bg:#12151b;--card:#1b2029;--fg:#e6e9ef;
--muted:#9aa4b5;--line:#2d3441}}
*{box-sizing:border-box}body{margin:0;font:14px/1.45 system-ui,sans-serif;background:var(--bg);
color:var(--fg)}header{display:flex;flex-wrap:wrap;gap:8px;align-items:center;
justify-content:space-between;padding:12px 16px}h1{font-size:18px;margin:0}
h2{font-size:15px;margin:0 0 8px}h3{font-size:13px;margin:12px 0 4px}
main{display:grid;grid-template-columns:repeat(auto-fit,minmax(320px,1fr));gap:12px;
padding:0 16px 16px}.card{background:var(--card);border:1px solid var(--line);border-radius:8px;
padding:12px;min-width:0}.wide{grid-column:1/-1}.strip{display:grid;
grid-template-columns:repeat(auto-fit,minmax(180px,1fr));gap:8px}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:3px 6px;
border-bottom:1px solid var(--line);white-space:nowrap}
table.num td{font-variant-numeric:tabular-nums}
.wrap th,.wrap td{white-space:normal}.wrap td{overflow-wrap:anywhere}
.scroll{overflow-x:auto}.legend{list-style:none;padding:0;margin:6px 0 0;display:flex;
flex-wrap:wrap;gap:4px 12px}.swatch{display:inline-block;width:10px;height:10px;margin-right:4px;
border-radius:2px}.error{color:#e15759}.muted{color:var(--muted)}button,input{font:inherit;
padding:6px 10px}form.login{max-width:360px;margin:15vh auto;display:grid;gap:8px;padding:16px}
"""

_HEAD = ('<!doctype html><html lang="en"><head><meta charset="utf-8">'
         '<meta name="viewport" content="width=device-width,initial-scale=1">'
         '<meta name="referrer" content="no-referrer"><link rel="icon" href="data:,">'
         '{refresh}<title>Command Code Gateway: status</title><style>' + CSS + '</style></head>')


def page(ctx: dict, logout: bool = True) -> str:
    """The whole status page for ``ctx`` (from :func:`collect`)."""
    today = usage.day(ctx["now"])
    button = ('<form method="post" action="/status/logout"><button type="submit">Log out'
              '</button></form>') if logout else ""
    body = "".join((health(ctx), quota(ctx), days_compared(ctx, today), error_table(ctx, today),
                    chart(ctx, today), model_table(ctx, today), recent_table(ctx)))
    return (_HEAD.replace("{refresh}", '<meta http-equiv="refresh" content="60">')
            + f'<body><header><h1>Command Code Gateway</h1><span class="muted">'
              f'{esc(clock(ctx["now"]))}</span>{button}</header><main>{body}</main></body></html>')


def login(error: str | None = None) -> str:
    """The login form: the local key goes in the POST body, never in a URL."""
    msg = f'<p class="error" id="login-error">{esc(error)}</p>' if error else ""
    return (_HEAD.replace("{refresh}", "")
            + '<body><form class="login card" method="post" action="/status/login">'
              '<h1>Gateway status</h1><label for="key">Local key</label>'
              '<input id="key" name="key" type="password" autocomplete="current-password" '
              f'required autofocus>{msg}<button type="submit">Log in</button></form></body></html>')
