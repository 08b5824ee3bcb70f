"""The Speech view's microphone, live over the WebSocket, in the real chromium: Chromium's fake
capture device plays a spoken WAV as the microphone (``--use-file-for-fake-audio-capture``), the page
streams it as 16 kHz PCM, shows partial transcripts while it plays and the final one on stop."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from playwright.sync_api import expect

from models.media import SAMPLE_RATE, decode_audio
from tests.assets import EN_SENTENCE, speech, wer
from tests.browser.conftest import ARGS, CHROMIUM
from tests.browser.pages import shoot
from tests.speech_corpus import Recording, wav_bytes

pytestmark = [pytest.mark.slow, pytest.mark.browser]
# The sentence (~5 s) and silence: the fake device loops the file (the test app's max_buffer_s is 20).
PADDED_S = 15.0


@pytest.fixture(scope="module")
def microphone(tmp_path_factory) -> Path:
    audio = decode_audio(speech(EN_SENTENCE))
    padded = np.zeros(int(PADDED_S * SAMPLE_RATE), dtype=np.float32)
    padded[: audio.size] = audio
    path = tmp_path_factory.mktemp("microphone") / "spoken.wav"
    path.write_bytes(wav_bytes(Recording(audio=padded, sentences=(EN_SENTENCE,))))
    return path


@pytest.fixture(scope="module")
def chromium(microphone):
    """The browser of this module: the conftest's, with the WAV as its microphone."""
    from playwright.sync_api import sync_playwright

    exe = shutil.which("chromium") or CHROMIUM
    fake = [
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={microphone}",
        "--autoplay-policy=no-user-gesture-required",
    ]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=exe, args=[*ARGS, *fake])
        yield browser
        browser.close()


# Whether a partial transcript (an element .partial in #speech-text) was ever on the page.
WATCH_PARTIALS = """() => {
  window.partials = [];
  new MutationObserver(() => {
    const partial = document.querySelector("#speech-text .partial");
    if (partial) window.partials.push(partial.textContent);
  }).observe(document.getElementById("speech-text"), { childList: true, subtree: true, characterData: true });
}"""


HEARD_THE_SENTENCE = """() => {
  const heard = document.getElementById("speech-meta").textContent.match(/([0-9.]+) s heard so far/);
  return heard !== null && parseFloat(heard[1]) >= 5.2;
}"""


def test_the_microphone_streams_live_partial_then_final_transcript(page, base_url):
    page.goto(f"{base_url}/ui/#speech")
    expect(page.locator("#server")).to_contain_text("models")
    page.evaluate(WATCH_PARTIALS)
    page.click("#speech-record")
    expect(page.locator("#speech-record")).to_have_text("■ Stop")
    expect(page.locator("#speech-request")).to_contain_text("request ")
    # Stop once a partial has heard the sentence (~5 s), before the looping file (15 s) starts over.
    page.wait_for_function(HEARD_THE_SENTENCE)
    shoot(page, "speech-live-partial", full_page=False)
    page.click("#speech-record")
    expect(page.locator("#speech-meta")).to_contain_text("language en")
    text = page.locator("#speech-text").inner_text()
    partials = page.evaluate("window.partials")
    print("partials:", partials[:3], "... final:", text)
    assert any(p.strip() and p != "…" for p in partials), partials
    assert wer(EN_SENTENCE, text) <= 0.3, text
    expect(page.locator("#feature-panels canvas.heatmap")).to_have_count(3)
    assert not page.locator("#error").is_visible(), page.locator("#error").inner_text()
    shoot(page, "speech-live")
