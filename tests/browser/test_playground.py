"""The playground at /ui/ in a real browser, against the served graph with the packaged offline models:
each view does what a person would try first, errors show the server's own words, and with a tenants
file the page asks for a key and works with one."""

from __future__ import annotations

import base64
import json

import pytest
import requests
from playwright.sync_api import expect

from clients.client import Client
from clients.indexing import index_folder
from tests.assets import EN_SENTENCE, photo, speech, wer
from tests.browser.pages import shoot, upload

pytestmark = [pytest.mark.slow, pytest.mark.browser]

CAT_CLASSES = {"tabby", "tiger cat", "Egyptian cat", "Persian cat", "Siamese cat"}
PHOTOS = ("chelsea", "coffee", "rocket")


@pytest.fixture(scope="module")
def ui(base_url) -> str:
    return f"{base_url}/ui/"


def _jpeg(name: str) -> dict:
    return upload(f"{name}.jpg", photo(name), "image/jpeg")


def _wav(text: str, name: str = "speech.wav") -> dict:
    return upload(name, speech(text), "audio/wav")


def _open(page, ui: str, view: str) -> None:
    """The view, once the page has read the server's model list (which redraws the task lists)."""
    page.goto(f"{ui}#{view}")
    expect(page.locator("#server")).to_contain_text("models")


def _labels(page, selector: str) -> list[str]:
    return [li.get_attribute("data-label") for li in page.locator(selector).all()]


def test_image_view_classifies_the_cat_and_picks_cat_among_typed_labels(page, ui):
    _open(page, ui, "image")
    chips = page.locator("#zs-chips .chip")
    while chips.count():  # start from no labels
        chips.first.locator("button").click()
    for label in ("cat", "dog", "car"):
        page.fill("#zs-label", label)
        page.press("#zs-label", "Enter")
    page.set_input_files("#image-file", _jpeg("chelsea"))
    expect(page.locator("#classify-bars li")).to_have_count(5)
    assert _labels(page, "#classify-bars li")[0] in CAT_CLASSES, _labels(page, "#classify-bars li")
    expect(page.locator("#zs-bars li")).to_have_count(3)
    assert _labels(page, "#zs-bars li")[0] == "cat", _labels(page, "#zs-bars li")
    # The session's graph runs no vision-language models, and the page says so.
    expect(page.locator("#vl-off")).to_be_visible()
    expect(page.locator("#vl-off")).to_contain_text("vision_language.enabled")
    shoot(page, "image")


def test_speech_view_shows_the_transcript_its_segments_and_features(page, ui):
    _open(page, ui, "speech")
    page.set_input_files("#speech-file", _wav(EN_SENTENCE))
    expect(page.locator("#speech-meta")).to_contain_text("language en")
    text = page.locator("#speech-text").inner_text()
    assert wer(EN_SENTENCE, text) <= 0.3, text
    expect(page.locator("#speech-timeline .segment").first).to_be_visible()
    expect(page.locator("#feature-panels canvas.heatmap")).to_have_count(3)
    expect(page.locator("#speech-request")).to_contain_text("request ")
    shoot(page, "speech")


def test_search_view_indexes_photos_and_finds_the_coffee_with_its_thumbnail(page, ui):
    _open(page, ui, "search")
    page.fill("#index-name", "playground")
    page.click("#index-create button")
    expect(page.locator("#index-select")).to_have_value("playground")
    page.set_input_files("#index-files", [_jpeg(n) for n in PHOTOS])
    expect(page.locator("#index-progress-text")).to_have_text("3 / 3 · 100 %")
    assert page.locator("#index-progress").get_attribute("value") == "100"
    expect(page.locator("#index-info")).to_contain_text("3 items")
    page.fill("#query-text", "a cup of coffee")
    page.click("#query-text-form button")
    first = page.locator("#hits .hit").first
    expect(first).to_have_attribute("data-file", "coffee.jpg")
    thumb = first.locator("img.thumb")
    assert thumb.get_attribute("src").startswith("data:image/jpeg;base64,")
    assert thumb.evaluate("img => img.complete && img.naturalWidth") == 128  # a real, decoded 128-px picture
    shoot(page, "search")


def test_a_spoken_query_shows_its_transcript_and_hits_with_cli_thumbnails(page, ui, base_url, tmp_path):
    for name in PHOTOS:  # indexed the way `mmserve index add` does it: thumbnails by default
        (tmp_path / f"{name}.jpg").write_bytes(photo(name))
    with Client(base_url, timeout=120) as client:
        report = index_folder(client, "spoken", tmp_path, progress=False)
    assert report.added == 3 and not report.failed
    _open(page, ui, "search")
    expect(page.locator("#index-select option[value=spoken]")).to_have_count(1)
    page.select_option("#index-select", "spoken")
    page.set_input_files("#query-audio", _wav("show me a cup of coffee", "query.wav"))
    expect(page.locator("#query-transcript")).to_contain_text("coffee")
    expect(page.locator("#hits .hit").first).to_have_attribute("data-file", "coffee.jpg")
    expect(page.locator("#hits .hit img.thumb")).to_have_count(3)
    shoot(page, "search-spoken")


def _ancestors(deps: dict[str, list[str]], node: str) -> set[str]:
    seen, todo = set(), list(deps[node])
    while todo:
        n = todo.pop()
        if n not in seen:
            seen.add(n)
            todo.extend(deps.get(n, []))
    return seen


# The numbers of bars the compose timeline showed while the response's JSON was still empty.
WATCH_BARS_BEFORE_THE_RESPONSE = """() => {
  window.barsBeforeResponse = [];
  new MutationObserver(() => {
    const bars = document.querySelectorAll("#compose-timeline .dag-bar").length;
    if (bars && document.getElementById("compose-json").textContent === "") window.barsBeforeResponse.push(bars);
  }).observe(document.getElementById("compose-timeline"), { childList: true, subtree: true });
}"""


def test_compose_draws_the_dag_with_parallel_nodes_overlapping(page, ui):
    _open(page, ui, "compose")
    page.set_input_files("#compose-image", _jpeg("chelsea"))
    page.fill("#compose-text", "a cat asleep on a sofa")
    page.set_input_files("#compose-audio", _wav("good morning"))
    for task in ("classify", "embed-text", "transcribe"):
        page.check(f'#compose-tasks input[data-task="{task}"]')
    page.evaluate(WATCH_BARS_BEFORE_THE_RESPONSE)
    page.click("#compose-run")
    expect(page.locator("#compose-json")).to_contain_text('"dag"')
    # Streamed: bars were drawn as nodes finished, before the last one (Whisper's) and the response came.
    drawn = page.evaluate("window.barsBeforeResponse")
    assert drawn and min(drawn) < page.locator("#compose-timeline .dag-bar").count(), drawn
    request_id = page.locator("#compose-request").inner_text()
    assert request_id.startswith("request ") and len(request_id) > 12, request_id
    assert (
        f'"request_id": "{request_id.removeprefix("request ")}"' in page.locator("#compose-json").inner_text()
    )
    bars = page.locator("#compose-timeline .dag-bar").all()
    assert len(bars) >= 3
    spans, deps = {}, {}
    for bar in bars:
        box, node = bar.bounding_box(), bar.get_attribute("data-id")
        spans[node] = (box["x"], box["x"] + box["width"])
        deps[node] = (bar.get_attribute("data-deps") or "").split()
    parallel = [
        (a, b)
        for a in spans
        for b in spans
        if a < b and a not in _ancestors(deps, b) and b not in _ancestors(deps, a)
    ]
    overlapping = [
        (a, b) for a, b in parallel if min(spans[a][1], spans[b][1]) > max(spans[a][0], spans[b][0])
    ]
    assert overlapping, (spans, deps)
    assert page.locator("#compose-timeline path.link").count() == sum(len(d) for d in deps.values())
    # each model node shows its queue and replica time as the server reported them; decoding has none
    reported = {n["id"]: n for n in json.loads(page.locator("#compose-json").inner_text())["dag"]["nodes"]}
    classify = page.locator('#compose-timeline .dag-bar[data-id="classify:classify"] .queued')
    assert float(classify.get_attribute("data-replica")) == reported["classify:classify"]["replica_ms"] > 0
    expect(page.locator("#compose-timeline .dag-label", has_text="classify:classify")).to_contain_text(
        f"replica {reported['classify:classify']['replica_ms']:.0f} ms"
    )
    assert page.locator('#compose-timeline .dag-bar[data-id="decode:image"] .queued').count() == 0
    shoot(page, "compose")


def test_a_broken_file_shows_the_servers_error(page, ui, base_url):
    raw = b"this is a text file, not a picture"
    url = "data:image/jpeg;base64," + base64.b64encode(raw).decode()
    answers = [
        requests.post(f"{base_url}/{route}", json=body, timeout=60)
        for route, body in (
            ("v1/classify", {"image": url, "top_k": 5}),
            ("v1/zero-shot", {"image": url, "labels": ["cat", "dog", "car"]}),
        )
    ]
    # The page asks both at once and shows the first refusal: either one, word for word.
    expected = {
        (
            f"{a.json()['error']['type']} (HTTP {a.status_code})",
            a.json()["error"]["message"],
            f"param: {a.json()['error']['param']}",
        )
        for a in answers
    }
    assert all(400 <= a.status_code < 500 for a in answers)
    _open(page, ui, "image")
    page.set_input_files("#image-file", upload("broken.jpg", raw, "image/jpeg"))
    expect(page.locator("#error")).to_be_visible()
    expect(page.locator("#error-request")).to_contain_text("request ")
    shown = tuple(page.locator(f"#error-{part}").inner_text() for part in ("title", "message", "param"))
    assert shown in expected, (shown, expected)
    shoot(page, "error")


def test_docs_work_offline(page, base_url):
    page.goto(f"{base_url}/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("mmserve")
    expect(page.locator(".opblock-summary-path").first).to_be_visible()
    shoot(page, "docs", full_page=False)
