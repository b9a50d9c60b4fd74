"""Open WebUI (the real one, images/openwebui) as the chart installs it, in a real browser: Debian's
Chromium, headless, driven by playwright (no browser download). It lists every catalog model
(through the api-gateway), sends a chat, and the answer streams in from a real engine.

Setting: LLM_CHARTS_CHROMIUM, the browser executable (default /usr/bin/chromium, installed from
Debian when missing and running as root on Debian).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest
from progress import say
from stack import models as stack_models

REPO = Path(__file__).resolve().parents[2]
SCREENSHOT = REPO / "build" / "e2e" / "openwebui.png"
# Chromium in a container or VM: no sandbox (no user namespaces for it), no GPU, /dev/shm small.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"]


def _chromium() -> str:
    path = os.environ.get("LLM_CHARTS_CHROMIUM", "/usr/bin/chromium")
    if not Path(path).exists() and path == "/usr/bin/chromium":
        sys.path.insert(0, str(REPO / "tools"))
        import bootstrap

        bootstrap.debian_packages(["chromium"], purpose="the Open WebUI browser test")
    if not Path(path).exists():
        pytest.fail(f"no browser at {path}: install Debian's chromium, or set LLM_CHARTS_CHROMIUM to a Chromium")
    return path


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=_chromium(), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def ui(stack):
    with stack.openwebui_url() as url:
        yield url


def test_open_webui_lists_every_model_and_streams_an_answer_from_a_real_engine(stack, ui, browser):
    names = [m["modelName"] for m in stack_models.enabled(stack.catalog())]
    gguf = stack_models.enabled(stack.catalog(), "gguf")[0]["modelName"]
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    try:
        # `load`, not `networkidle`: the UI keeps a websocket open, the network is never idle.
        page.goto(ui, wait_until="load", timeout=120_000)
        # The first visit shows the release notes.
        with_notes = page.get_by_role("button", name="Okay, Let's Go!")
        with_notes.wait_for(timeout=60_000)
        with_notes.click()
        selector = page.locator('button[aria-label^="Selected model"]').first
        selector.wait_for(timeout=60_000)
        selector.click()
        options = page.get_by_role("option")
        options.first.wait_for(timeout=30_000)
        listed = [options.nth(i).inner_text() for i in range(options.count())]
        missing = [n for n in names if not any(n in text for text in listed)]
        assert not missing, f"models missing from Open WebUI's list: {missing}; it shows {listed}"
        # Chat with the llama.cpp model: it starts generating at once, so the stream is visible.
        next(options.nth(i) for i in range(options.count()) if gguf in listed[i]).click()
        box = page.locator("#chat-input")
        # Record the answer's length as it grows: a streamed answer is seen at several lengths.
        page.evaluate("""() => {
            window.__lengths = [];
            const seen = () => {
                const all = document.querySelectorAll('#response-content-container');
                const n = all.length ? all[all.length - 1].innerText.length : 0;
                const l = window.__lengths;
                if (n && l[l.length - 1] !== n) l.push(n);
            };
            new MutationObserver(seen).observe(document.body, {subtree: true, childList: true, characterData: true});
        }""")
        answers = page.locator("#response-content-container")
        # The random-weight model sometimes ends its answer after a few words, too short to be
        # seen growing: then ask again in the same chat (at most 3 answers), and judge the stream
        # on the first answer long enough to show it.
        tries = []
        for attempt in range(3):
            page.evaluate("() => { window.__lengths = []; }")
            box.click()
            box.type("Tell me a story" if attempt == 0 else "Go on, tell me a longer one")
            started = time.monotonic()
            page.keyboard.press("Enter")
            answer = answers.nth(attempt)
            answer.wait_for(timeout=120_000)
            # Done when the length stops changing for a few seconds.
            last, stable_since = -1, time.monotonic()
            while time.monotonic() - started < 180:
                n = len(answer.inner_text())
                if n != last:
                    last, stable_since = n, time.monotonic()
                elif n and time.monotonic() - stable_since > 5:
                    break
                time.sleep(0.25)
            lengths = page.evaluate("() => window.__lengths")
            tries.append((last, lengths))
            say(f"  Open WebUI: answer of {last} characters, seen at {len(lengths)} lengths while streaming")
            if len(lengths) >= 3 or last >= 300:
                break
        assert last > 0, "no answer text"
        assert len(lengths) >= 3, f"the answer appeared at once, not streamed: (characters, lengths seen) {tries}"
        assert page.locator("#response-message-model-name").first.inner_text().strip() == gguf
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT))
        say(f"  screenshot: {SCREENSHOT} (docs/openwebui.png is a copy of one)")
    finally:
        page.close()


def test_open_webui_started_offline(stack):
    """The chart's offline settings kept it from the Hugging Face hub: no hub request in its log."""
    pod = next(p for p in stack.pods("app.kubernetes.io/name=openwebui") if p["status"].get("podIP"))
    logs = stack.cluster.kubectl("-n", stack.namespace, "logs", pod["metadata"]["name"], check=False).stdout
    assert "huggingface.co" not in logs and "Retrying" not in logs, logs[-3000:]
