"""``/status`` in a real headless Chromium (Debian's ``chromium``, driven by Playwright) over
a real 2-worker gunicorn: after a known mix of chat and messages calls on two models and one
failing call, the page -- reached through its login form -- shows what ``/usage`` and
``/usage/recent`` say, draws one chart series per model, loads nothing from anywhere else, logs
no console error and holds no prompt text.  Screenshots at desktop and phone width go to
``$STATUS_SCREENSHOTS`` (default: ``.ci/artifacts/status/``, which git ignores: CI keeps them as
artifacts, they are never committed).
"""
from __future__ import annotations

import os
import pathlib
import time

import pytest
import requests

from tests.conftest import LOCAL_KEY, UPSTREAM_KEY, start_gateway

from playwright import sync_api     # requirements-dev.txt; the browser is Debian's chromium
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
FLASH = "deepseek/deepseek-v4-flash"
GEMINI = "google/gemini-3.8-flash"
MARKER = "quokka-marmalade-4417"            # in every prompt; must never reach the page
AUTH = {"Authorization": f"Bearer {LOCAL_KEY}"}



@pytest.fixture(autouse=True, scope="module")
def _chromium_is_installed():
    """Never a skip: without the browser this fails and says how to get it (.ci/run does)."""
    assert os.path.exists(CHROMIUM), "Debian's chromium is not installed: apt-get install -y chromium"


@pytest.fixture(scope="module")
def server(fake_server, tmp_path_factory):
    fake_server.reset()
    gw = start_gateway(fake_server, tmp_path_factory, "status_browser")
    yield gw
    gw.stop()
    assert "Traceback" not in gw.log(), gw.log()


def chat(server, model: str, text: str) -> requests.Response:
    return requests.post(server.url + "/v1/chat/completions", headers=AUTH, timeout=30,
                         json={"model": model, "messages": [{"role": "user", "content": text}]})


def messages(server, model: str, text: str) -> requests.Response:
    return requests.post(server.url + "/v1/messages", headers=AUTH, timeout=30,
                         json={"model": model, "max_tokens": 50,
                               "messages": [{"role": "user", "content": text}]})


def known_mix(server) -> None:
    """3 chats and 1 messages call on FLASH, 1 chat and 2 messages on GEMINI, 1 that fails."""
    for call, model in ((chat, FLASH), (messages, GEMINI), (chat, FLASH), (chat, GEMINI),
                        (messages, FLASH), (messages, GEMINI), (chat, FLASH)):
        assert call(server, model, f"hello {MARKER}").status_code == 200
    assert chat(server, FLASH, f"[[http_500]] {MARKER}").status_code >= 500
    time.sleep(0.5)                     # the last access lines close with their bodies


def ints(locator) -> list[int]:
    return [int(t.replace(",", "")) for t in locator.all_inner_texts()]


def check_numbers(page, usage: dict) -> None:
    today = page.locator("#today").inner_text()
    for counter in ("total_requests", "failed_requests", "prompt_tokens", "completion_tokens",
                    "cache_read_tokens", "reasoning_tokens"):
        shown = ints(page.locator(f'td[data-day="today"][data-counter="{counter}"]'))
        assert shown == [usage["days"][today][counter]], counter
    for model, bucket in usage["models"].items():
        cell = page.locator(f'#models tr[data-model="{model}"] td[data-period="all"]')
        assert int(cell.get_attribute("data-requests")) == bucket["total_requests"], model
    credits = usage["upstream"]["credits"]
    assert float(page.locator("#credits").get_attribute("data-value")) == pytest.approx(
        credits["monthly"] + credits["purchased"] + credits["free"])
    assert page.locator("#plan").inner_text() == usage["upstream"]["plan"]


def check_recent(page, recent: list[dict]) -> None:
    rows = page.locator("#recent tr.req")
    shown = [(float(r.get_attribute("data-time")), r.get_attribute("data-surface"),
              r.get_attribute("data-model"), int(r.get_attribute("data-status")))
             for r in rows.all()]
    assert shown == [(line["time"], line["surface"], line["model"] or "", line["status"])
                     for line in recent]
    calls = [s for s in shown if s[1] in ("chat", "messages")]
    assert len(calls) == 8 and calls[0][3] >= 500               # newest first: the failure
    assert [s[0] for s in shown] == sorted((s[0] for s in shown), reverse=True)


def test_the_status_page_in_a_browser(server, fake_server, tmp_path):
    known_mix(server)
    shots = pathlib.Path(os.environ.get("STATUS_SCREENSHOTS")
                         or pathlib.Path(__file__).resolve().parent.parent / ".ci/artifacts/status")
    shots.mkdir(parents=True, exist_ok=True)
    console, foreign = [], []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: console.append(str(e)))
        page.on("request", lambda r: None if r.url.startswith((server.url + "/", "data:"))
                else foreign.append(r.url))
        page.goto(server.url + "/status")
        page.fill("input[name=key]", LOCAL_KEY)
        with page.expect_navigation():
            page.click("button[type=submit]")
        assert page.url == server.url + "/status"              # the key is in no URL
        source = page.content()
        usage = requests.get(server.url + "/usage", headers=AUTH, timeout=5).json()
        recent = requests.get(server.url + "/usage/recent", headers=AUTH, timeout=5).json()["data"]

        check_numbers(page, usage)
        check_recent(page, recent)
        series = page.locator("svg.chart g.series")
        assert sorted(g.get_attribute("data-model") for g in series.all()) == sorted(
            usage["models"]) == [FLASH, GEMINI]
        assert page.locator(f'svg.chart g.series[data-model="{FLASH}"] rect title').count() >= 1
        for secret in (MARKER, LOCAL_KEY, UPSTREAM_KEY, "hello"):
            assert secret not in source, secret

        page.screenshot(path=str(shots / "status-desktop.png"), full_page=True)
        page.emulate_media(color_scheme="dark")
        page.screenshot(path=str(shots / "status-desktop-dark.png"), full_page=True)
        page.emulate_media(color_scheme="light")
        page.set_viewport_size({"width": 390, "height": 844})
        assert page.evaluate("document.documentElement.scrollWidth") <= 390   # nothing overflows
        page.screenshot(path=str(shots / "status-phone.png"), full_page=True)

        page.click("text=Log out")
        page.wait_for_selector("input[name=key]")
        browser.close()
    assert console == []
    assert foreign == []
    assert fake_server.violations == []
