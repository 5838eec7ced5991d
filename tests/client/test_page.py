"""The browser page at / in headless Chromium, against the single-process server in a child.

Chromium is Debian's (``apt-get install chromium``) driven by Python ``playwright`` with
``executable_path`` (no ``playwright install``), with the flags that stop it reaching outside
hosts. The page's JavaScript QoE is checked against ``andes.qoe`` on the same cases, and a
streamed answer against the digest rule: each token is shown no earlier than its release
time, and the release times are the digest times of the measured arrivals.
(docs/images/make_chat_page.py takes the README's screenshot the same way.)
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from andes.client.events import token_pieces
from andes.engines.sim import make_text
from andes.qoe import digest_times, live_qoe, qoe
from local_server import local_server_process

CHROMIUM = "/usr/bin/chromium"
REQUIRED = os.environ.get("ANDES_REQUIRE_CHROMIUM") == "1"  # CI: fail, never skip, if missing
if REQUIRED:
    from playwright import sync_api
else:
    sync_api = pytest.importorskip("playwright.sync_api", reason="the dev extra installs playwright")
FLAGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--disable-gpu", "--headless"]

pytestmark = [pytest.mark.subprocess,
              pytest.mark.skipif(not REQUIRED and not Path(CHROMIUM).exists(), reason="apt-get install chromium")]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with local_server_process(tmp_path_factory.mktemp("page") / "server.log") as base:
        yield base


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, server):
    """The chat page, recording every URL it requests and every script error."""
    page = browser.new_page(viewport={"width": 1280, "height": 760})
    page.requested, page.errors = [], []
    page.on("request", lambda request: page.requested.append(request.url))
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    page.goto(f"{server}/")
    yield page
    assert not page.errors
    assert all(url.startswith(f"{server}/") or url.startswith("data:") for url in page.requested)
    page.close()


def cases(seed: int = 0, num: int = 60):
    """(times, ttft, tds, now) cases: the design document's examples and random streams."""
    first = 0.5 + 0.05 * np.arange(40)
    yield [1.69, 3.03, 3.71, 4.53], 1.0, 2.0, 5.0
    yield list(first), 1.0, 4.0, 13.0
    yield list(np.concatenate([first, first[-1] + 10 + 0.05 * np.arange(1, 21)])), 1.0, 4.0, 20.0
    yield [], 1.0, 4.0, 0.5
    yield [], 1.0, 4.0, 2.0
    rng = np.random.default_rng(seed)
    for _ in range(num):
        n = int(rng.integers(1, 80))
        times = np.sort(rng.uniform(0, 20, n)) if rng.random() < 0.5 else np.cumsum(rng.exponential(0.2, n))
        yield list(times), float(rng.uniform(0.2, 5)), float(rng.uniform(0.5, 30)), float(rng.uniform(0, 30))


def test_javascript_qoe_matches_andes_qoe(page):
    all_cases = list(cases())
    got = page.evaluate("""cases => cases.map(([t, ttft, tds, now]) => [
        AndesPacer.digestTimes(t, tds), AndesPacer.qoe(t, ttft, tds), AndesPacer.liveQoe(t, ttft, tds, now)])""",
                        all_cases)
    for (times, ttft, tds, now), (c, q, live) in zip(all_cases, got):
        np.testing.assert_allclose(c, digest_times(times, tds), rtol=0, atol=1e-9)
        assert q == pytest.approx(qoe(times, ttft, tds), abs=1e-9)
        assert live == pytest.approx(live_qoe(times, ttft, tds, now), abs=1e-9)
    texts = ["one", " two words ", "  ", "", "a\nb\tc  d", " the model"]
    assert page.evaluate("texts => texts.map(AndesPacer.tokenPieces)", texts) == [token_pieces(t) for t in texts]


def snapshot(page) -> dict:
    return page.evaluate("window.andesChat.snapshot()")


def ask(page, prompt: str, *, tds: str, max_tokens: str) -> None:
    page.check("input[name=speed][value=custom]")
    page.fill("#custom-tds", tds)
    page.fill("#max-tokens", max_tokens)
    page.fill("#prompt", prompt)
    page.click("#send")


def check_paced(s: dict) -> None:
    """Shown in order, never before the release time, releases = digest times of the arrivals."""
    arrivals, releases = np.array(s["arrivals"]), np.array(s["releases"])
    np.testing.assert_allclose(releases, digest_times(arrivals, s["tds"]), rtol=0, atol=1e-9)
    shown = s["numShown"]
    assert len(s["shownAt"]) == shown and np.all(np.array(s["shownAt"]) >= releases[:shown] - 1e-9)
    assert s["text"] == "".join(make_text(i) for i in range(shown))


def test_page_streams_an_answer_at_the_readers_pace_with_its_qoe(page):
    ask(page, "Why does my answer appear at reading speed?", tds="6", max_tokens="24")
    middle = page.wait_for_function(  # the snapshot taken when the check passes
        "() => { const s = window.andesChat.snapshot(); return s && s.numShown >= 6 ? s : null; }").json_value()
    assert middle["numShown"] < 24 and middle["tds"] == 6  # 24 tokens at 6/s take over 3 s to show
    check_paced(middle)
    assert 0.0 <= float(middle["qoeText"]) <= 1.0

    page.wait_for_function("() => window.andesChat.snapshot().isDone", timeout=60_000)
    done = snapshot(page)
    check_paced(done)
    assert done["numShown"] == 24 and done["error"] is None
    assert done["qoeText"] == f"{qoe(done['arrivals'], done['ttft'], done['tds']):.3f}"
    assert page.text_content("#fig-gateway") == f"{done['report']['qoe']:.3f}"
    assert "QoE" in page.text_content(".msg.assistant .figures")
    assert plotted_pixels(page, (0x18, 0x80, 0x38)) > 50  # the "shown" curve is drawn


def plotted_pixels(page, rgb: tuple[int, int, int]) -> int:
    """Pixels of the timeline canvas in colour ``rgb``."""
    return page.evaluate("""rgb => {
        const c = document.getElementById("timeline");
        const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
        let n = 0;
        for (let i = 0; i < d.length; i += 4)
            if (Math.abs(d[i] - rgb[0]) + Math.abs(d[i + 1] - rgb[1]) + Math.abs(d[i + 2] - rgb[2]) < 30) n++;
        return n; }""", list(rgb))


def test_page_shows_why_a_request_was_rejected(page):
    ask(page, "hello", tds="6", max_tokens="100000")
    page.wait_for_function("() => window.andesChat.snapshot().isDone")
    s = snapshot(page)
    assert s["numShown"] == 0 and s["error"].startswith("HTTP 400: max_tokens")
    assert "max_tokens" in page.text_content(".msg.assistant .error")
    assert page.is_enabled("#send")


def test_pausing_holds_the_answer_and_tells_the_server_resuming_faster_shows_the_rest(page):
    ask(page, "Tell me a long story", tds="4", max_tokens="400")
    page.wait_for_function("() => { const s = window.andesChat.snapshot(); return s && s.numShown >= 2; }")
    page.click("#pause")
    held = snapshot(page)
    page.wait_for_timeout(1000)  # four tokens' worth of reading at 4 tokens/s
    still = snapshot(page)
    assert held["paused"] and still["numShown"] == held["numShown"] and not still["isDone"]
    assert any(f"/v1/reader/{held['streamId']}" in url for url in page.requested)
    assert held["streamId"].startswith("chatcmpl-")
    page.fill("#custom-tds", "200")  # resume, much faster: the new pace applies to this answer
    page.dispatch_event("#custom-tds", "change")
    page.click("#pause")
    page.wait_for_function("() => window.andesChat.snapshot().isDone", timeout=60_000)
    done = snapshot(page)
    assert not done["paused"] and done["error"] is None and done["numShown"] == 400
    assert done["text"] == "".join(make_text(i) for i in range(400))
    assert done["tds"] == 200 and 0.0 <= float(done["qoeText"]) <= 1.0
