"""The status page's inline SVG (gateway/charts.py) on its edge cases: no data, one day, one
model holding everything, a window at 100 % and past it; always well-formed XML with model
names escaped (a model id comes from a request, so it must never become markup)."""
from __future__ import annotations

import xml.etree.ElementTree as ET

from gateway import charts

SVG = "{http://www.w3.org/2000/svg}"
DAYS = ["2026-11-29", "2026-11-30", "2026-12-01"]


def parse(fragment: str) -> ET.Element:
    """The fragment as XML (the chart is an ``<svg>`` then a legend ``<ul>``)."""
    return ET.fromstring(f"<div>{fragment}</div>")


def series_of(root: ET.Element) -> dict[str, list[ET.Element]]:
    return {g.get("data-model"): g.findall(f"{SVG}rect")
            for g in root.iter(f"{SVG}g") if g.get("class") == "series"}


def test_no_data_is_an_empty_chart_with_a_message():
    for series, days in (({}, DAYS), ({"m": {}}, DAYS), ({"m": {"2026-11-29": 0}}, DAYS),
                         ({"m": {"2026-11-29": 3}}, [])):
        root = parse(charts.daily_by_model(series, days))
        assert series_of(root) == {}
        assert "no requests" in "".join(root.itertext())


def test_one_day_one_model_fills_the_plot_height():
    root = parse(charts.daily_by_model({"a/b": {"2026-12-01": 7}}, ["2026-12-01"]))
    (rects,) = series_of(root).values()
    assert len(rects) == 1 and rects[0].get("data-requests") == "7"
    assert float(rects[0].get("height")) == 220 - 20 - 8          # the peak is the whole plot
    assert rects[0].find(f"{SVG}title").text == "2026-12-01 a/b: 7 requests"


def test_one_model_holding_everything_is_one_series_and_one_legend_entry():
    root = parse(charts.daily_by_model({"only": {d: i + 1 for i, d in enumerate(DAYS)},
                                        "idle": {}}, DAYS))
    assert list(series_of(root)) == ["only"]
    assert [li.get("data-model") for li in root.iter("li")] == ["only"]
    assert [r.get("data-requests") for r in series_of(root)["only"]] == ["1", "2", "3"]


def test_stacked_series_are_ordered_by_total_and_stack_without_overlap():
    root = parse(charts.daily_by_model({"small": {DAYS[2]: 1}, "big": {DAYS[2]: 3, DAYS[0]: 1}},
                                       DAYS))
    series = series_of(root)
    assert list(series) == ["big", "small"]
    big = [r for r in series["big"] if r.get("data-day") == DAYS[2]][0]
    small = series["small"][0]
    assert abs(float(small.get("y")) + float(small.get("height")) - float(big.get("y"))) < 0.2


def test_model_names_are_escaped_in_every_place():
    evil = '<script>alert("x")</script>&\''
    out = charts.daily_by_model({evil: {DAYS[0]: 2}}, DAYS)
    assert "<script>" not in out
    root = parse(out)
    assert list(series_of(root)) == [evil]
    assert evil in "".join(root.itertext())


def test_a_quota_bar_at_100_percent_is_full_and_red():
    root = ET.fromstring(charts.quota_bar(50, 50, "weekly"))
    fill = [r for r in root.iter(f"{SVG}rect") if r.get("class") == "fill"][0]
    assert float(fill.get("width")) == 300 and fill.get("fill") == "#e15759"
    assert root.get("data-percent") == "100"
    assert root.find(f"{SVG}title").text == "weekly: 50 of 50 (100 %)"


def test_a_quota_bar_past_its_cap_stays_full_and_an_unknown_cap_is_empty():
    over = ET.fromstring(charts.quota_bar(80, 50, "w"))
    assert [float(r.get("width")) for r in over.iter(f"{SVG}rect")] == [300, 300]
    unknown = ET.fromstring(charts.quota_bar(5, 0, "<w>"))
    assert [float(r.get("width")) for r in unknown.iter(f"{SVG}rect")] == [300, 0]
    assert unknown.find(f"{SVG}title").text.startswith("<w>")
    half = ET.fromstring(charts.quota_bar(1, 4, "w"))
    assert half.get("data-percent") == "25"
