"""Inline SVG for the status page: requests per day by model, and a quota window's bar.

Plain strings, no library and no script, because the page has a ``default-src 'none'`` policy
and must work without JavaScript: the SVG is part of the HTML.  Every name that comes from a
request (model ids) goes through :func:`esc`, so a hostile model name is text, never markup,
and the output is well-formed XML (tests/test_charts.py parses it).
"""
from __future__ import annotations

import html

#: one colour per series, chosen to stay apart on light and dark backgrounds
PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#b07aa1", "#76b7b2", "#edc948",
           "#ff9da7", "#9c755f", "#bab0ac")


def esc(text) -> str:
    """Text safe inside an element and inside a double-quoted attribute."""
    return html.escape(str(text), quote=True)


def _stack(series: dict[str, dict[str, int]], days: list[str]) -> list[int]:
    return [sum(counts.get(d, 0) for counts in series.values()) for d in days]


def _bars(model: str, counts: dict[str, int], days: list[str], base: list[int], geo: dict) -> str:
    """One model's rects, stacked on ``base`` (updated in place), each with its exact count."""
    parts = []
    for i, d in enumerate(days):
        n = counts.get(d, 0)
        if n <= 0:
            continue
        h = n * geo["scale"]
        y = geo["bottom"] - (base[i] * geo["scale"]) - h
        base[i] += n
        parts.append(f'<rect x="{geo["left"] + i * geo["step"]:.1f}" y="{y:.1f}" '
                     f'width="{geo["bar"]:.1f}" height="{h:.1f}" data-day="{esc(d)}" '
                     f'data-requests="{n}"><title>{esc(d)} {esc(model)}: {n} requests</title>'
                     '</rect>')
    return "".join(parts)


def _axis(days: list[str], peak: int, geo: dict) -> str:
    bottom, left, right = geo["bottom"], geo["left"], geo["right"]
    out = [f'<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="currentColor" '
           f'stroke-opacity="0.4"/>',
           f'<text x="{left - 4}" y="{geo["top"] + 4}" text-anchor="end" font-size="10" '
           f'fill="currentColor">{peak}</text>',
           f'<text x="{left - 4}" y="{bottom}" text-anchor="end" font-size="10" '
           f'fill="currentColor">0</text>']
    for i in (0, len(days) - 1):
        anchor = "start" if i == 0 else "end"
        x = left + i * geo["step"] + (0 if i == 0 else geo["bar"])
        out.append(f'<text x="{x:.1f}" y="{bottom + 14}" text-anchor="{anchor}" font-size="10" '
                   f'fill="currentColor">{esc(days[i][5:])}</text>')
    return "".join(out)


def _legend(models: list[str]) -> str:
    items = "".join(
        f'<li data-model="{esc(m)}"><span class="swatch" style="background:'
        f'{PALETTE[i % len(PALETTE)]}"></span>{esc(m)}</li>' for i, m in enumerate(models))
    return f'<ul class="legend">{items}</ul>'


def daily_by_model(series: dict[str, dict[str, int]], days: list[str],
                   width: int = 720, height: int = 220) -> str:
    """Stacked bars: one ``<g class="series" data-model=...>`` per model with any request in
    ``days`` (``series``: model -> day -> requests), then a legend.  Models are ordered by their
    total, largest first, so the colours of the main models stay put from day to day."""
    totals = {m: sum(c.get(d, 0) for d in days) for m, c in series.items()}
    models = sorted((m for m, t in totals.items() if t > 0), key=lambda m: (-totals[m], m))
    if not days or not models:
        return ('<svg xmlns="http://www.w3.org/2000/svg" class="chart empty" role="img" '
                f'viewBox="0 0 {width} 40" width="100%"><text x="{width // 2}" y="24" '
                'text-anchor="middle" font-size="13" fill="currentColor">no requests in these '
                'days</text></svg>')
    peak = max(_stack({m: series[m] for m in models}, days))
    left, right, top, bottom = 36, width - 4, 8, height - 20
    step = (right - left) / len(days)
    geo = {"left": left, "right": right, "top": top, "bottom": bottom, "step": step,
           "bar": max(step * 0.8, 1.0), "scale": (bottom - top) / peak}
    base = [0] * len(days)
    groups = "".join(
        f'<g class="series" data-model="{esc(m)}" fill="{PALETTE[i % len(PALETTE)]}">'
        f'{_bars(m, series[m], days, base, geo)}</g>' for i, m in enumerate(models))
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" '
           f'viewBox="0 0 {width} {height}" width="100%" aria-label="requests per day by model">'
           f'{_axis(days, peak, geo)}{groups}</svg>')
    return svg + _legend(models)


def quota_bar(used: float, cap: float, label: str, width: int = 300, height: int = 14) -> str:
    """A window's use as a bar: full at (or past) the cap, red from 90 %; the exact numbers in
    its ``<title>`` and ``data-*`` attributes.  A cap of 0 (unknown) draws an empty bar."""
    share = min(max(used / cap, 0.0), 1.0) if cap > 0 else 0.0
    colour = "#e15759" if share >= 0.9 else "#4e79a7"
    pct = round(share * 100, 1)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="bar" role="img" '
            f'viewBox="0 0 {width} {height}" width="100%" height="{height}" '
            f'preserveAspectRatio="none" '
            f'data-used="{esc(used)}" data-cap="{esc(cap)}" data-percent="{pct:g}">'
            f'<title>{esc(label)}: {esc(used)} of {esc(cap)} ({pct:g} %)</title>'
            f'<rect x="0" y="0" width="{width}" height="{height}" rx="3" fill="currentColor" '
            f'fill-opacity="0.15"/>'
            f'<rect class="fill" x="0" y="0" width="{share * width:.1f}" height="{height}" '
            f'rx="3" fill="{colour}"/></svg>')
