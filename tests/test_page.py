"""The /speak page in headless Chromium (Debian's chromium driven by Playwright; nothing
downloads a browser): load, speak, audio arrives and feeds the AudioWorklet, cancel, and a voice
uploaded from the page appears in the list. Screenshots go to docs/."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from conftest import TINY, TINY_MODEL
from server_util import ServerThread
from qwen3tts.server.app import ServerConfig
from qwen3tts.server.engine import Engine
from qwen3tts.voices import VoiceStore

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (uses Debian's chromium, no download)")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")
DOCS = Path(__file__).resolve().parent.parent / "docs"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    eng = Engine(str(TINY_MODEL), voices=VoiceStore(tmp_path_factory.mktemp("voices")), greedy=True, max_new_tokens=40)
    s = ServerThread(ServerConfig(), eng)
    yield s
    s.stop()
    eng.shutdown()


@pytest.fixture(scope="module")
def page(server):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--no-first-run", "--autoplay-policy=no-user-gesture-required", "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream"])
        pg = browser.new_page(viewport={"width": 900, "height": 860})
        logs = []
        pg.on("console", lambda m: logs.append(m.text))
        pg.on("pageerror", lambda e: logs.append(f"pageerror: {e}"))
        pg.goto(server.url + "/speak")
        yield pg
        assert not [line for line in logs if line.startswith("pageerror")], logs
        browser.close()


def stats(pg):
    return pg.evaluate("() => window.__speak")


def test_load_speak_and_play(page):
    page.wait_for_function("() => window.__speak.ready", timeout=30000)
    assert "ready" in page.inner_text("#conn")
    langs = page.eval_on_selector_all("#language option", "els => els.map(e => e.value)")
    assert langs[0] == "auto" and "English" in langs
    page.select_option("#language", "English")
    page.click("#speak")
    page.wait_for_function("() => window.__speak.completes.length >= 1", timeout=60000)
    page.wait_for_function("() => window.__speak.played > 0", timeout=10000)
    s = stats(page)
    assert s["binaryMessages"] > 0 and s["samplesPosted"] > 0 and s["workletStarted"]
    done = s["completes"][0]
    # the page asked for its AudioContext rate; the server resampled the 24 kHz audio to it
    assert abs(s["samplesPosted"] - done["audioLengthMs"] * s["sampleRate"] / 1000) <= s["sampleRate"] / 100
    assert "ms" in page.inner_text("#ttfa") and page.inner_text("#rtf") != "–"
    page.screenshot(path=str(DOCS / "speak-page.png"))


def test_cancel(page, server):
    tts = server.server.engine.tts
    orig = tts.stream

    def slow(*a, **k):
        for ch in orig(*a, **k):
            time.sleep(0.05)
            yield ch

    tts.stream = slow
    try:
        n = len(stats(page)["completes"])
        page.fill("#text", "This one is long enough to be cancelled while it is still speaking.")
        page.click("#speak")
        page.wait_for_function("() => window.__speak.state === 'speaking' && window.__speak.binaryMessages > 0", timeout=30000)
        page.click("#cancel")
        page.wait_for_function("() => window.__speak.state === 'cancelled'", timeout=10000)
        s = stats(page)
        assert any(e["code"] == "CANCELLED" for e in s["errors"]) and len(s["completes"]) == n
    finally:
        tts.stream = orig


def test_upload_voice_from_page(page):
    page.click("#newvoice summary")
    page.fill("#vname", "Page Voice")
    page.set_input_files("#vfile", str(TINY / "reference.wav"))
    page.fill("#vtranscript", "Okay, this is the reference recording used for voice cloning.")
    page.click("#vsave")
    page.wait_for_function("() => window.__speak.voices.includes('page-voice')", timeout=20000)
    assert page.input_value("#voice") == "page-voice"
    assert 'saved as "page-voice"' in page.inner_text("#vstatus")
    page.screenshot(path=str(DOCS / "speak-page-voice.png"))
    # and it speaks with the new voice
    n = len(stats(page)["completes"])
    page.click("#speak")
    page.wait_for_function(f"() => window.__speak.completes.length > {n}", timeout=60000)


def test_stream_words_like_an_llm(page):
    """The page's LLM mode: the text goes out word by word at the chosen rate (speak final:false +
    text messages); the audio plays and first audio is measured from the first word."""
    n = len(stats(page)["completes"])
    text = "Streamed word by word, as a language model writes its answer."
    page.fill("#text", text)
    page.select_option("#voice", "default")
    page.check("#llm")
    page.fill("#wps", "25")
    page.click("#speak")
    page.wait_for_function(f"() => window.__speak.completes.length > {n}", timeout=60000)
    s = stats(page)
    done = s["completes"][-1]
    assert s["wordsSent"] == len(text.split()) and done["charactersProcessed"] == len(text)
    assert s["firstAudioFromFirstWordMs"] is not None and s["firstAudioFromFirstWordMs"] > 0
    assert "from the first word" in page.inner_text("#ttfa") and done["audioLengthMs"] > 0
    page.screenshot(path=str(DOCS / "speak-page-stream.png"))
    page.uncheck("#llm")
