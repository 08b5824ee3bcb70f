"""Captions, VQA and OpenAI vision chat over real HTTP and a real Ray session.

The VisionLanguage deployment is real and serves tiny random BLIP (caption and VQA), ViLT and GIT
checkpoints saved to a temporary folder and loaded by the production loader; the image, text and
audio deployments are stand-ins (tests/stub_backends.py), which these routes do not use. The same
checkpoints are loaded here too, Ray-free, so answers over HTTP are checked against the model.
A second app, with vision-language off, checks the 503 and the model list.
"""

import base64
import concurrent.futures as cf
import json
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest
from ray import serve

from clients import cli
from clients.client import Client
from deployments.gateway.ingress import Gateway
from deployments.search import SearchIndex
from deployments.vision_language import VisionLanguage
from models.media import decode_image
from models.registry import VisionLanguageModelSpec, load_vision_language
from models.vision_language import run_batch
from tests import assets, checkpoints
from tests.stub_backends import stub_models

PHOTOS = ("chelsea", "coffee", "rocket", "astronaut")
BUILDERS = {
    "tiny-blip-caption": ("caption", "blip", lambda p: checkpoints.blip_checkpoint(p, "caption")),
    "tiny-git": ("caption", "git", checkpoints.git_checkpoint),
    "tiny-blip-vqa": ("vqa", "blip", lambda p: checkpoints.blip_checkpoint(p, "vqa")),
    "tiny-vilt": ("vqa", "vilt", checkpoints.vilt_checkpoint),
}
ERROR_KEYS = {"type", "message", "param", "request_id"}


@pytest.fixture(scope="module")
def specs(tmp_path_factory) -> dict[str, VisionLanguageModelSpec]:
    root = tmp_path_factory.mktemp("vl-models")
    out = {}
    for model_id, (task, engine, build) in BUILDERS.items():
        build(root / model_id)
        out[model_id] = VisionLanguageModelSpec(
            id=model_id, task=task, engine=engine, path=str(root / model_id), max_tokens=8
        )
    return out


@pytest.fixture(scope="module")
def local(specs, one_torch_thread):
    """The same checkpoints, Ray-free: what the server must answer."""
    return {model_id: load_vision_language(spec) for model_id, spec in specs.items()}


@pytest.fixture(scope="module")
def vl_app(ray_cluster, specs, tmp_path_factory):
    base = f"http://127.0.0.1:{ray_cluster['port']}"
    broken = VisionLanguageModelSpec(
        id="broken", task="caption", engine="blip", path=str(tmp_path_factory.mktemp("no-weights"))
    )  # configured, not loadable
    vl = VisionLanguage.options(
        ray_actor_options={"num_cpus": 0},
        max_ongoing_requests=32,
        user_config={"max_batch_size": 8, "batch_wait_timeout_s": 0.25},
    ).bind([s.model_dump() for s in [*specs.values(), broken]], len(specs) + 1)
    search = SearchIndex.options(name="VLSearch", ray_actor_options={"num_cpus": 0}).bind(
        str(tmp_path_factory.mktemp("vl-search") / "search.db")
    )
    vl_models = [s.model_dump() for s in [*specs.values(), broken]]
    serve.run(
        Gateway.options(name="VLGateway", ray_actor_options={"num_cpus": 0}).bind(
            *stub_models("VLStub"), {}, _batch(tmp_path_factory, vl_models), vision_language=vl, search=search
        ),
        name="vl",
        route_prefix="/vl",
    )
    serve.run(
        Gateway.options(name="VLOffGateway", ray_actor_options={"num_cpus": 0}).bind(
            *stub_models("VLOffStub"), {}, _batch(tmp_path_factory, [])
        ),
        name="vl-off",
        route_prefix="/vl-off",
    )
    with Client(f"{base}/vl", timeout=60) as client:
        for model_id, spec in specs.items():  # load every model once, outside the timed tests
            text = None if spec.task == "caption" else "what is this?"
            warm = _post(
                f"{base}/vl",
                "/v1/captions" if text is None else "/v1/vqa",
                {"image": _b64("chelsea"), "model": model_id, **({"question": text} if text else {})},
            )
            assert warm.status_code == 200, warm.text
        yield {"url": f"{base}/vl", "off": f"{base}/vl-off", "client": client}
    serve.delete("vl")
    serve.delete("vl-off")


def _batch(tmp_path_factory, vl_models: list[dict]) -> dict:
    """The Batch API on, its captions and VQA pool on the models the VisionLanguage deployment serves."""
    store = str(tmp_path_factory.mktemp("vl-batches"))
    args = {"store": store, "block_size": 2, "vision_language": {"num_cpus": 0.5, "batch_size": 4}}
    return {"args": args, "models": {"vision": {}, "text": {}, "vision_language": vl_models}}


def _b64(name: str) -> str:
    return base64.b64encode(assets.photo(name)).decode()


def _data_url(name: str) -> str:
    return "data:image/jpeg;base64," + _b64(name)


def _post(url: str, path: str, body: dict) -> httpx.Response:
    return httpx.post(f"{url}{path}", json=body, timeout=60)


def _image(name: str) -> np.ndarray:
    return decode_image(assets.photo(name))


def _expect(local, model_id: str, name: str, text=None, **settings):
    model = local[model_id]
    return run_batch(model, [(_image(name), text)], model.settings(**settings))[0]


def _error(r: httpx.Response, status: int, param: str | None) -> str:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == ERROR_KEYS and r.json().keys() == {"error"}
    assert error["param"] == param, error
    return error["message"]


# ---- on and off ----------------------------------------------------------------------------
def test_models_lists_vision_language_only_when_on(vl_app):
    on = {m["id"]: m for m in httpx.get(f"{vl_app['url']}/v1/models").json()["data"]}
    assert {i: on[i]["task"] for i in BUILDERS} == {i: task for i, (task, _, _) in BUILDERS.items()}
    off = {m["id"] for m in httpx.get(f"{vl_app['off']}/v1/models").json()["data"]}
    assert off and not off & set(BUILDERS)
    assert "VisionLanguage" in httpx.get(f"{vl_app['url']}/readyz").json()["deployments"]
    assert "VisionLanguage" not in httpx.get(f"{vl_app['off']}/readyz").json()["deployments"]


@pytest.mark.parametrize(
    "path, body",
    [
        ("/v1/captions", {"image": "aGVsbG8="}),
        ("/v1/vqa", {"image": "aGVsbG8=", "question": "what?"}),
        ("/v1/chat/completions", {"model": "tiny-blip-vqa", "messages": [{"role": "user", "content": "hi"}]}),
        ("/v1/compose", {"inputs": {"image": "aGVsbG8="}, "tasks": [{"type": "caption"}]}),
    ],
)
def test_off_routes_answer_503_naming_the_config_key(vl_app, path, body):
    message = _error(_post(vl_app["off"], path, body), 503, None)
    assert "vision_language.enabled" in message


def test_a_model_that_cannot_load_is_503_naming_it(vl_app):
    message = _error(
        _post(vl_app["url"], "/v1/captions", {"image": _b64("coffee"), "model": "broken"}), 503, None
    )
    assert "'broken' could not be loaded" in message
    assert (
        _post(vl_app["url"], "/v1/captions", {"image": _b64("coffee")}).status_code == 200
    )  # the others still serve


def _batch_results(url: str, endpoint: str, bodies: dict[str, dict]) -> dict[str, dict]:
    """custom_id -> the ``response`` of its line in the output or the error file."""
    lines = [{"custom_id": k, "method": "POST", "url": endpoint, "body": v} for k, v in bodies.items()]
    jsonl = "".join(json.dumps(x) + "\n" for x in lines).encode()
    source = httpx.post(f"{url}/v1/files", files={"file": ("in.jsonl", jsonl)}, data={"purpose": "batch"})
    created = httpx.post(
        f"{url}/v1/batches", json={"input_file_id": source.json()["id"], "endpoint": endpoint}
    )
    assert created.status_code == 200, created.text
    deadline = time.monotonic() + 180
    while (batch := httpx.get(f"{url}/v1/batches/{created.json()['id']}").json())["status"] != "completed":
        assert (
            batch["status"] in ("validating", "in_progress", "finalizing") and time.monotonic() < deadline
        ), batch
        time.sleep(0.5)
    found = {}
    for file_id in (batch["output_file_id"], batch["error_file_id"]):
        if file_id is not None:
            for line in httpx.get(f"{url}/v1/files/{file_id}/content").text.splitlines():
                result = json.loads(line)
                assert result["custom_id"] not in found
                found[result["custom_id"]] = result["response"]
    return found


def test_caption_and_vqa_batches_answer_as_the_online_routes(vl_app):
    """The same bodies online and as lines of a batch (its own pool of the same checkpoints, Ray
    Data): equal answers, and a bad line fails alone with the online status and error."""
    bodies = {
        "cat": {"image": _b64("chelsea"), "model": "tiny-git"},
        "two": {"images": [_b64("rocket"), _b64("coffee")], "max_tokens": 4, "prompt": "a photo of"},
        "corrupt": {"image": base64.b64encode(assets.photo("coffee")[:300]).decode()},
        "unknown": {"image": _b64("chelsea"), "model": "nope"},
        "broken": {"image": _b64("chelsea"), "model": "broken"},
    }
    vqa = {
        "blip": {"image": _b64("astronaut"), "question": "what is this?", "model": "tiny-blip-vqa"},
        "vilt": {"image": _b64("chelsea"), "questions": ["a cat?", "red?"], "model": "tiny-vilt", "top_k": 3},
        "no-question": {"image": _b64("chelsea")},
    }
    for endpoint, asked in (("/v1/captions", bodies), ("/v1/vqa", vqa)):
        got = _batch_results(vl_app["url"], endpoint, asked)
        assert set(got) == set(asked)
        for name, body in asked.items():
            online = _post(vl_app["url"], endpoint, body)
            assert got[name]["status_code"] == online.status_code, (name, got[name], online.text)
            if online.status_code == 200:
                assert got[name]["body"] == online.json(), name
            elif name == "broken":  # the online message sends the operator to the replica's log
                assert "'broken' could not be loaded" in got[name]["body"]["error"]["message"]
            else:
                error = {k: v for k, v in online.json()["error"].items() if k != "request_id"}
                assert got[name]["body"]["error"] == error, name


def test_a_caption_batch_where_vision_language_is_off_is_refused_with_the_online_words(vl_app):
    """Online, each request answers 503; a batch that can never run here is the caller's error (400
    on ``endpoint``, no retry invited), saying the same."""
    lines = json.dumps({"custom_id": "a", "method": "POST", "url": "/v1/captions", "body": {"image": "eA=="}})
    url = vl_app["off"]
    source = httpx.post(
        f"{url}/v1/files", files={"file": ("in.jsonl", lines.encode())}, data={"purpose": "batch"}
    )
    refused = httpx.post(
        f"{url}/v1/batches", json={"input_file_id": source.json()["id"], "endpoint": "/v1/captions"}
    )
    online = _post(url, "/v1/captions", {"image": _b64("chelsea")})
    assert (refused.status_code, online.status_code) == (400, 503)
    assert refused.json()["error"]["param"] == "endpoint"
    assert refused.json()["error"]["message"] == online.json()["error"]["message"]


# ---- captions ------------------------------------------------------------------------------
@pytest.mark.parametrize("model_id", ["tiny-blip-caption", "tiny-git"])
def test_captions_are_the_models_and_honour_max_tokens_and_beams(vl_app, local, model_id):
    client = vl_app["client"]
    files = [assets.photo(n) for n in PHOTOS]
    greedy = client.captions(files, max_tokens=3, model=model_id)
    assert greedy.model == model_id and [c.index for c in greedy.data] == list(range(len(PHOTOS)))
    assert [c.caption for c in greedy.data] == [
        _expect(local, model_id, n, max_tokens=3).text for n in PHOTOS
    ]
    assert all(1 <= c.tokens <= 3 for c in greedy.data)
    longer = client.captions(files, max_tokens=12, model=model_id)
    assert sum(c.tokens for c in longer.data) > sum(c.tokens for c in greedy.data)
    beams = client.captions(files, max_tokens=6, num_beams=3, model=model_id)
    want = [_expect(local, model_id, n, max_tokens=6, num_beams=3).text for n in PHOTOS]
    assert [c.caption for c in beams.data] == want
    # the beams mattered: greedy decoding gives other captions for some photo
    assert want != [_expect(local, model_id, n, max_tokens=6).text for n in PHOTOS]
    assert greedy.usage.completion_tokens == sum(c.tokens for c in greedy.data)


def test_captions_from_multipart_file_parts(vl_app, local):
    files = [("images", ("a.jpg", assets.photo("coffee"))), ("images", ("b.jpg", assets.photo("rocket")))]
    r = httpx.post(
        f"{vl_app['url']}/v1/captions", files=files, data={"max_tokens": "3", "model": "tiny-git"}, timeout=60
    )
    assert r.status_code == 200, r.text
    assert [c["caption"] for c in r.json()["data"]] == [
        _expect(local, "tiny-git", n, max_tokens=3).text for n in ("coffee", "rocket")
    ]


def test_conditional_captions_start_with_the_prompt(vl_app, local):
    prompt = "A photograph of"
    out = vl_app["client"].captions([assets.photo("coffee")], prompt=prompt, max_tokens=4)
    assert out.model == "tiny-blip-caption"  # the first caption model when none is named
    assert out.data[0].caption.startswith(prompt) and len(out.data[0].caption) > len(prompt)
    assert out.data[0].caption == _expect(local, "tiny-blip-caption", "coffee", prompt, max_tokens=4).text


def test_concurrent_captions_share_batches(vl_app):
    def generate_sizes() -> dict[int, int]:
        stats = httpx.get(f"{vl_app['url']}/v1/stats", timeout=30).json()["VisionLanguage"]
        return {int(k): v for k, v in stats.get("generate", {}).items()}

    before = generate_sizes()
    body = {"image": _b64("rocket"), "model": "tiny-blip-caption", "max_tokens": 5}
    with cf.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: _post(vl_app["url"], "/v1/captions", body), range(8)))
    assert all(r.status_code == 200 for r in answers)
    assert len({r.json()["data"][0]["caption"] for r in answers}) == 1
    after = generate_sizes()
    grown = {size: after.get(size, 0) - before.get(size, 0) for size in after}
    assert sum(n * size for size, n in grown.items()) == 8, grown
    assert max(size for size, n in grown.items() if n > 0) > 1, grown


# ---- VQA -----------------------------------------------------------------------------------
def test_vqa_blip_generates_and_vilt_ranks_answers(vl_app, local):
    client = vl_app["client"]
    questions = ["what is this?", "what colour is the cup on the table?"]
    blip = client.ask(assets.photo("coffee"), questions, model="tiny-blip-vqa", max_tokens=4)
    assert [a.answer for a in blip.data] == [
        _expect(local, "tiny-blip-vqa", "coffee", q, max_tokens=4).text for q in questions
    ]
    assert [a.question for a in blip.data] == questions and all(not a.answers for a in blip.data)
    vilt = client.ask(assets.photo("coffee"), "is it a cat?", model="tiny-vilt", top_k=3).data[0]
    want = _expect(local, "tiny-vilt", "coffee", "is it a cat?", top_k=3)
    assert [(a.answer, a.probability) for a in vilt.answers] == [
        (a.answer, a.probability) for a in want.answers
    ]
    assert len(vilt.answers) == 3 and vilt.answer == vilt.answers[0].answer
    assert (
        vilt.answers[0].probability >= vilt.answers[-1].probability
        and sum(a.probability for a in vilt.answers) <= 1
    )
    default = client.ask(assets.photo("coffee"), "is it a cat?")
    assert default.model == "tiny-blip-vqa"  # the first vqa model when none is named


# ---- OpenAI chat completions ----------------------------------------------------------------
@pytest.fixture(scope="module")
def openai_client(vl_app):
    import openai

    return openai.OpenAI(base_url=f"{vl_app['url']}/v1", api_key="unused-on-loopback", max_retries=0)


def _user(text: str | None, *images: str) -> list[dict]:
    parts = ([{"type": "text", "text": text}] if text else []) + [
        {"type": "image_url", "image_url": {"url": url}} for url in images
    ]
    return [{"role": "system", "content": "You describe images."}, {"role": "user", "content": parts}]


def test_openai_client_chat_completion_and_stream(openai_client, local):
    question = "what is on the table?"
    messages = _user(question, _data_url("coffee"))
    done = openai_client.chat.completions.create(model="tiny-blip-vqa", messages=messages, max_tokens=5)
    want = _expect(local, "tiny-blip-vqa", "coffee", question, max_tokens=5)
    assert done.object == "chat.completion" and done.model == "tiny-blip-vqa"
    assert done.choices[0].message.role == "assistant" and done.choices[0].message.content == want.text
    assert done.choices[0].finish_reason == ("length" if want.tokens == 5 else "stop")
    assert (done.usage.prompt_tokens, done.usage.completion_tokens) == (want.prompt_tokens, want.tokens)
    assert done.usage.total_tokens == want.prompt_tokens + want.tokens
    chunks = list(
        openai_client.chat.completions.create(
            model="tiny-blip-vqa", messages=messages, max_tokens=5, stream=True
        )
    )
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == want.text
    assert chunks[-1].choices[0].finish_reason == done.choices[0].finish_reason
    assert chunks[-1].usage.total_tokens == done.usage.total_tokens


def test_chat_streams_server_sent_events_ending_with_done(vl_app):
    body = {"model": "tiny-git", "messages": _user(None, _data_url("rocket")), "stream": True}
    with httpx.stream("POST", f"{vl_app['url']}/v1/chat/completions", json=body, timeout=60) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert (
        all(line.startswith("data: ") for line in lines) and lines[-1] == "data: [DONE]" and len(lines) >= 4
    )


def test_chat_captions_with_a_caption_model_or_without_a_question(openai_client, local):
    caption = openai_client.chat.completions.create(
        model="tiny-git", messages=_user(None, _data_url("rocket"))
    )
    assert caption.choices[0].message.content == _expect(local, "tiny-git", "rocket").text
    prompted = openai_client.chat.completions.create(
        model="tiny-blip-caption", messages=_user("A picture of", _data_url("rocket"))
    )
    assert prompted.choices[0].message.content.startswith("A picture of")
    bounded = openai_client.chat.completions.create(
        model="tiny-git", messages=_user(None, _data_url("rocket")), max_tokens=4096
    )  # clients send large bounds: the model's applies
    assert bounded.choices[0].message.content == _expect(local, "tiny-git", "rocket", max_tokens=32).text
    no_question = openai_client.chat.completions.create(
        model="tiny-vilt", messages=_user(None, _data_url("rocket"))
    )
    assert no_question.model == "tiny-blip-caption"  # a VQA model with no question: the first caption model


# ---- bad input -----------------------------------------------------------------------------
def _chat(messages: list[dict], **extra) -> dict:
    return {"model": "tiny-blip-vqa", "messages": messages, **extra}


BAD = [
    ("/v1/captions", {"model": "tiny-git"}, 400, "image"),
    ("/v1/captions", {"image": "AAAA", "images": ["AAAA"]}, 400, "image"),
    ("/v1/vqa", {"question": "what?"}, 422, "image"),
    ("/v1/vqa", {"image": "PHOTO", "question": "what?", "questions": ["why?"]}, 400, "question"),
    ("/v1/vqa", {"image": "PHOTO", "question": "x" * 5000}, 422, "question"),
    ("/v1/vqa", {"image": "PHOTO", "question": "is the " + "very " * 80 + "big cat red?"}, 400, "question"),
    (
        "/v1/vqa",
        {"image": "PHOTO", "question": "what?", "model": "tiny-vilt", "num_beams": 2},
        400,
        "num_beams",
    ),
    ("/v1/captions", {"image": "PHOTO", "model": "no-such-model"}, 404, "model"),
    ("/v1/captions", {"image": "PHOTO", "model": "tiny-vilt"}, 400, "model"),
    ("/v1/captions", {"image": "bm90IGFuIGltYWdl"}, 415, "image"),
    ("/v1/chat/completions", _chat(_user("what?")), 400, "messages[1].content"),
    ("/v1/chat/completions", _chat(_user("what?", "URL", "URL")), 400, "messages[1].content"),
    (
        "/v1/chat/completions",
        _chat(_user("what?", "https://example.com/cat.jpg")),
        400,
        "messages[1].content[1].image_url.url",
    ),
    (
        "/v1/chat/completions",
        _chat(_user("what?", "data:image/png;base64,%%%")),
        400,
        "messages[1].content[1].image_url.url",
    ),
    ("/v1/chat/completions", {**_chat(_user("what?", "URL")), "model": "gpt-4o"}, 404, "model"),
    (
        "/v1/chat/completions",
        _chat(_user("what?", "URL"), tools=[{"type": "function", "function": {"name": "f"}}]),
        400,
        "tools",
    ),
    ("/v1/chat/completions", _chat(_user("what?", "URL"), n=2), 400, "n"),
    ("/v1/chat/completions", _chat(_user("what?", "URL"), logprobs=True), 400, "logprobs"),
    ("/v1/chat/completions", _chat([{"role": "system", "content": "hi"}]), 400, "messages"),
]


@pytest.mark.parametrize(
    "path, body, status, param", BAD, ids=[f"{p}-{param}-{n}" for n, (p, _, _, param) in enumerate(BAD)]
)
def test_bad_input_is_4xx_in_the_one_error_shape(vl_app, path, body, status, param):
    def fill(value):
        if value == "PHOTO":
            return _b64("coffee")
        if value == "URL":
            return _data_url("coffee")
        if isinstance(value, dict):
            return {k: fill(v) for k, v in value.items()}
        if isinstance(value, list):
            return [fill(v) for v in value]
        return value

    message = _error(_post(vl_app["url"], path, fill(body)), status, param)
    if "example.com" in str(body):
        assert "remote image URLs are not fetched" in message and "data URL" in message


# ---- compose and CLI ------------------------------------------------------------------------
def test_compose_caption_and_vqa_share_the_image_decode(vl_app, local):
    tasks = [
        {"type": "caption", "max_tokens": 4},
        {"type": "vqa", "question": "is it a cat?", "model": "tiny-vilt"},
        {"type": "classify", "top_k": 1},
    ]
    out = vl_app["client"].compose(tasks, image=assets.photo("chelsea"))
    assert out.results["caption"].caption == _expect(local, "tiny-blip-caption", "chelsea", max_tokens=4).text
    assert out.results["vqa"].answer == _expect(local, "tiny-vilt", "chelsea", "is it a cat?").text
    decodes = [n for n in out.dag.nodes if n.op == "decode_image"]
    assert len(decodes) == 1 and {"caption:caption", "vqa:vqa"} <= {
        n.id for n in out.dag.nodes if decodes[0].id in n.deps
    }


def test_cli_caption_and_ask(vl_app, local, tmp_path, capsys):
    photo = tmp_path / "coffee.jpg"
    photo.write_bytes(assets.photo("coffee"))
    assert cli.main(["--url", vl_app["url"], "caption", str(photo), "--max-tokens", "4"]) == 0
    want = _expect(local, "tiny-blip-caption", "coffee", max_tokens=4).text
    assert capsys.readouterr().out.strip() == f"{photo}: {want}"
    assert (
        cli.main(
            [
                "--url",
                vl_app["url"],
                "ask",
                str(photo),
                "is it a cat?",
                "--model",
                "tiny-vilt",
                "--top-k",
                "2",
            ]
        )
        == 0
    )
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == _expect(local, "tiny-vilt", "coffee", "is it a cat?").text and len(lines) == 2


def test_schemathesis_finds_no_server_error(vl_app):
    """Property-based requests to the vision-language routes, with vision-language on and real models."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "run",
            f"{vl_app['url']}/openapi.json",
            "--url",
            vl_app["url"],
            "--include-path-regex",
            "^/v1/(captions|vqa|chat/completions)$",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "15",
            "--phases",
            "examples,coverage,fuzzing",
            "--seed",
            "1",
            "--request-timeout",
            "60",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "Tested: 3" in done.stdout, done.stdout[-2000:]  # the three routes were reached


def test_index_add_with_captions_keeps_each_images_caption(vl_app, local, tmp_path):
    """``mmserve index add NAME DIR --caption MODEL``: hits carry the caption the model generated."""
    from tools import cli as mmserve

    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("chelsea", "coffee"):
        (folder / f"{name}.jpg").write_bytes(assets.photo(name))
    args = ["--url", vl_app["url"], "index", "add", "captioned", str(folder), "--caption", "tiny-git"]
    assert mmserve.main(args) == 0
    hits = vl_app["client"].query("captioned", image=assets.photo("coffee"), top_k=2).hits
    captions = {h.metadata["file"]: h.metadata["caption"] for h in hits}
    assert captions == {f"{n}.jpg": _expect(local, "tiny-git", n).text for n in ("chelsea", "coffee")}
