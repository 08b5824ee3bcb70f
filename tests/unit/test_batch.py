"""The Batch API without Ray: the store's limits and ids, line checks, and the runner's resume
(a run cut mid-way and run again leaves every request once in the output or error file)."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json

import numpy as np
import pytest

from api.batch import BatchObject, CreateBatchRequest
from config.batch import BatchArgs, BatchLimits
from config.tenants import Tenant
from deployments.batch import runner
from deployments.batch.store import Store
from deployments.batch.work import Plan, prepare
from deployments.gateway.errors import statuses_by_class
from deployments.gateway.services.batches import Batches
from models.errors import InvalidInput, NotFound, PayloadTooLarge, Throttled
from models.media import MediaLimits


def plan(store: str, batch_id: str = "batch_" + "a" * 24, tenant: str = "t") -> Plan:
    return Plan(
        tenant=tenant,
        batch_id=batch_id,
        endpoint="/v1/embeddings",
        store=store,
        block_size=2,
        pool={"num_cpus": 1},
        vision_spec={},
        text_spec={},
        limits=MediaLimits(),
        embedders={"text-model": "text"},
        infos={},
        statuses=statuses_by_class(),
    )


def line(custom_id: str, **body) -> str:
    body = body or {"model": "text-model", "input": "hi"}
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/embeddings", "body": body})


def test_the_store_refuses_a_file_over_its_limits_while_copying(tmp_path):
    store = Store(tmp_path)
    served = []

    def chunks():
        for _ in range(10):
            served.append(1)
            yield b"x" * 1000

    with pytest.raises(PayloadTooLarge):
        store.add_file("t", "f", chunks(), max_bytes=2500, max_lines=10)
    assert len(served) == 3  # stopped at the chunk that crossed the limit, not after reading it all
    with pytest.raises(InvalidInput):
        store.add_file("t", "f", [b"a\nb\nc"], max_bytes=100, max_lines=2)  # the last line has no newline
    assert store.files("t") == [] and not list((tmp_path / "t" / "files").iterdir())
    kept = store.add_file("t", "f", [b"a\nb"], max_bytes=100, max_lines=2)
    assert store.file("t", kept.id).bytes == 3


def test_ids_name_only_the_tenants_own_files(tmp_path):
    store = Store(tmp_path)
    kept = store.add_file("acme", "f", [b"{}\n"], max_bytes=100, max_lines=2)
    store.add_file("globex", "f", [b"{}\n"], max_bytes=100, max_lines=2)  # its folder exists
    for tenant, file_id in (
        ("globex", kept.id),
        ("globex", "../../acme/files/" + kept.id),
        ("acme", "file-x"),
    ):
        with pytest.raises(NotFound):
            store.file(tenant, file_id)
    assert store.file("acme", kept.id) == kept


def test_bad_lines_become_their_own_errors(tmp_path):
    texts = [line("a"), "{oops", line("b", model="text-model"), line("c", model="nope", input="x")]
    out = prepare(plan(str(tmp_path)), {"line": np.arange(4), "text": np.array(texts)})
    assert out["custom_id"] == ["a", None, "b", "c"]
    assert out["status_code"] == [0, 400, 422, 404]
    assert json.loads(out["body"][2])["error"]["param"] == "input"


def transcription_line(custom_id: str, **body) -> str:
    return json.dumps(
        {"custom_id": custom_id, "method": "POST", "url": "/v1/audio/transcriptions", "body": body}
    )


def test_transcription_lines_are_checked_as_online_and_for_a_json_result(tmp_path):
    """The online route's schema (base64 ``file``, options), and what a result file cannot hold:
    an event stream or plain text."""
    p = dataclasses.replace(plan(str(tmp_path)), endpoint="/v1/audio/transcriptions")
    wav = base64.b64encode(b"RIFF....WAVE").decode()  # checked later, when the worker decodes it
    texts = [
        transcription_line("ok", file=wav, language="en"),
        transcription_line("verbose", file=wav, response_format="verbose_json"),
        transcription_line("srt", file=wav, response_format="srt"),
        transcription_line("stream", file=wav, stream=True),
        transcription_line("not-base64", file="%%%"),
        transcription_line("no-file", language="en"),
        transcription_line("hot", file=wav, temperature=3),
    ]
    out = prepare(p, {"line": np.arange(len(texts)), "text": np.array(texts)})
    assert out["status_code"] == [0, 0, 400, 400, 400, 422, 422]
    params = [json.loads(b)["error"]["param"] if b else None for b in out["body"]]
    assert params == [None, None, "response_format", "stream", "body.file", "file", "temperature"]


def test_duplicate_custom_ids_fail_the_batch():
    found = runner.duplicates([(1, line("a")), (2, line("b")), (3, line("a"))])
    assert [(e.code, e.line) for e in found] == [("duplicate_custom_id", 3)]


def _start(tmp_path, texts: list[str]) -> Plan:
    store = Store(tmp_path)
    source = store.add_file("t", "in", ["\n".join(texts).encode()], max_bytes=10**6, max_lines=10**4)
    p = plan(str(tmp_path))
    store.save_batch(
        "t",
        BatchObject(
            id=p.batch_id, endpoint=p.endpoint, input_file_id=source.id, status="validating", created_at=0
        ),
    )
    return p


def _fake_results(crash_after: int | None):
    """Each line answered as an embedding of its number; with ``crash_after``, the run dies after that
    many blocks, as a killed runner would."""

    def results(plan: Plan, pending):
        for n, start in enumerate(range(0, len(pending), plan.block_size)):
            if crash_after is not None and n == crash_after:
                raise SystemExit("killed")
            block = pending[start : start + plan.block_size]
            prepared = prepare(
                plan, {"line": np.array([n for n, _ in block]), "text": np.array([t for _, t in block])}
            )
            yield [
                {
                    "line": ln,
                    "custom_id": cid,
                    "status_code": code or 200,
                    "body": body or json.dumps({"n": ln}),
                }
                for ln, cid, code, body in zip(
                    prepared["line"], prepared["custom_id"], prepared["status_code"], prepared["body"]
                )
            ]

    return results


def test_a_run_cut_mid_way_resumes_with_nothing_lost_or_doubled(tmp_path, monkeypatch):
    texts = [line(f"r{i}") for i in range(9)] + ["not json"]
    p = _start(tmp_path, texts)
    monkeypatch.setattr(runner.pipeline, "results", _fake_results(crash_after=2))
    with pytest.raises(SystemExit):
        runner.run(p)
    store = Store(tmp_path)
    assert store.batch("t", p.batch_id).request_counts.completed == 4  # two blocks committed
    seen = []
    monkeypatch.setattr(
        runner.pipeline,
        "results",
        lambda plan, pending: (seen.append(len(pending)), _fake_results(None)(plan, pending))[1],
    )
    done = runner.run(p)
    assert seen == [6]  # only what was not committed went through again
    assert (
        done.status,
        done.request_counts.total,
        done.request_counts.completed,
        done.request_counts.failed,
    ) == ("completed", 10, 9, 1)
    out = [json.loads(x) for x in b"".join(store.content("t", done.output_file_id)).splitlines()]
    err = [json.loads(x) for x in b"".join(store.content("t", done.error_file_id)).splitlines()]
    assert sorted(x["custom_id"] for x in out) == sorted(f"r{i}" for i in range(9))
    assert [x["response"]["status_code"] for x in err] == [400]
    assert runner.run(p) == done  # a finished batch is left as it is


def test_a_tenant_runs_at_most_its_limit_of_batches(tmp_path):
    tenant = Tenant(id="t", batch=BatchLimits(max_running=1))
    batches = Batches(BatchArgs(store=str(tmp_path)), encoders=None, media=MediaLimits(), models={})  # type: ignore[arg-type]
    source = batches.store.add_file("t", "in", [line("a").encode()], max_bytes=10**6, max_lines=10)
    batches.store.save_batch(
        "t",
        BatchObject(
            id="batch_" + "b" * 24,
            endpoint="/v1/embeddings",
            input_file_id=source.id,
            status="in_progress",
            created_at=0,
        ),
    )
    request = CreateBatchRequest(input_file_id=source.id, endpoint="/v1/embeddings")
    with pytest.raises(Throttled):
        asyncio.run(batches.create(tenant, request))


def test_a_cancelled_batch_stops_at_the_next_block_and_keeps_what_it_did(tmp_path, monkeypatch):
    p = _start(tmp_path, [line(f"r{i}") for i in range(8)])
    store = Store(tmp_path)

    def results(plan: Plan, pending):
        for n, block in enumerate(_fake_results(None)(plan, pending)):
            if n == 1:
                store.ask_cancel("t", plan.batch_id)  # asked while the second block was running
            yield block

    monkeypatch.setattr(runner.pipeline, "results", results)
    done = runner.run(p)
    assert (done.status, done.request_counts.completed, done.request_counts.total) == ("cancelled", 2, 8)
    out = [json.loads(x)["custom_id"] for x in b"".join(store.content("t", done.output_file_id)).splitlines()]
    assert out == ["r0", "r1"]


def test_the_store_is_private_to_its_owner(tmp_path):
    """Every tenant's uploads and results live under the store: its folder is 0700, also when it
    existed before with a wider mode."""
    fresh, existing = tmp_path / "new" / "batches", tmp_path / "old"
    existing.mkdir(mode=0o755)
    for root in (fresh, existing):
        Store(root)
        assert root.stat().st_mode & 0o777 == 0o700, oct(root.stat().st_mode)


@pytest.mark.slow  # loads whisper-base (a few seconds), no Ray
def test_the_audio_worker_transcribes_good_clips_and_fails_bad_ones_alone(tmp_path):
    """The pool's worker on the served speech model: each clip decoded within the online limits, short
    clips transcribed in one batched pass, a corrupt, too long or unsupported line failing alone."""
    from deployments.batch.work import ModelWorker
    from tests import assets

    p = dataclasses.replace(
        plan(str(tmp_path)),
        endpoint="/v1/audio/transcriptions",
        pool={"num_cpus": 1},
        limits=MediaLimits(max_audio_seconds=20),
        speech_spec={"model": "whisper-base"},
    )
    said = ("the quick brown fox jumps over the lazy dog", "please send the report before friday")
    fox, report = (base64.b64encode(assets.speech(x)).decode() for x in said)
    corrupt = base64.b64encode(assets.speech(said[0])[:30]).decode()  # its header cut short
    too_long = base64.b64encode(assets.tone(21)).decode()
    texts = [
        transcription_line("fox", file=fox, language="en"),
        transcription_line("corrupt", file=corrupt),
        transcription_line("report", file=report, response_format="verbose_json"),
        transcription_line("too-long", file=too_long),
        transcription_line("klingon", file=fox, language="xx"),
    ]
    prepared = prepare(p, {"line": np.arange(len(texts)), "text": np.array(texts)})
    out = ModelWorker(p)({k: np.array(v, dtype=object) for k, v in prepared.items()})
    assert sorted(out["custom_id"]) == sorted(["fox", "report", "corrupt", "too-long", "klingon"])
    result = dict(zip(out["custom_id"], zip(out["status_code"], map(json.loads, out["body"]))))
    assert {k: code for k, (code, _) in result.items()} == {
        "fox": 200,
        "report": 200,
        "corrupt": 400,
        "too-long": 413,
        "klingon": 400,
    }
    assert set(result["fox"][1]) == {"text"} and assets.wer(said[0], result["fox"][1]["text"]) <= 0.3
    verbose = result["report"][1]
    assert verbose["language"] == "en" and verbose["segments"] and "words" not in verbose
    assert assets.wer(said[1], verbose["text"]) <= 0.3, verbose["text"]
    assert [result[k][1]["error"]["param"] for k in ("corrupt", "too-long", "klingon")] == [
        "file",
        "file",
        "language",
    ]


def vl_line(custom_id: str, url: str, **body) -> str:
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": url, "body": body})


@pytest.fixture(scope="module")
def vl_specs(tmp_path_factory) -> list[dict]:
    from tests import checkpoints

    root = tmp_path_factory.mktemp("vl")
    checkpoints.blip_checkpoint(root / "cap", "caption")
    checkpoints.vilt_checkpoint(root / "vilt")
    return [
        {"id": "tiny-cap", "task": "caption", "engine": "blip", "path": str(root / "cap"), "max_tokens": 6},
        {"id": "tiny-vilt", "task": "vqa", "engine": "vilt", "path": str(root / "vilt")},
    ]


def test_caption_and_vqa_lines_are_the_models_answers_and_bad_ones_fail_alone(tmp_path, vl_specs):
    """Tiny random BLIP and ViLT checkpoints through the pool's worker, Ray-free: each body is what the
    model answers for its image (the online route's shape), and a line naming no such model, the wrong
    kind of model, both image and images or a corrupt image fails alone with the online status."""
    from deployments.batch.work import ModelWorker
    from models.media import decode_image
    from models.registry import VisionLanguageModelSpec, load_vision_language
    from models.vision_language import run_batch
    from tests import assets

    cat, rocket = (base64.b64encode(assets.photo(n)).decode() for n in ("chelsea", "rocket"))
    corrupt = base64.b64encode(assets.photo("coffee")[:300]).decode()
    local = {s["id"]: load_vision_language(VisionLanguageModelSpec.model_validate(s)) for s in vl_specs}

    def run(url: str, lines: list[str]) -> dict[str, tuple[int, dict]]:
        p = dataclasses.replace(plan(str(tmp_path)), endpoint=url, vl_specs=vl_specs)
        prepared = prepare(p, {"line": np.arange(len(lines)), "text": np.array(lines)})
        out = ModelWorker(p)({k: np.array(v, dtype=object) for k, v in prepared.items()})
        return dict(zip(out["custom_id"], zip(out["status_code"], map(json.loads, out["body"]))))

    url = "/v1/captions"
    got = run(
        url,
        [
            vl_line("one", url, image=cat),
            vl_line("two", url, images=[rocket, cat], max_tokens=4),
            vl_line("corrupt", url, image=corrupt),
            vl_line("both", url, image=cat, images=[cat]),
            vl_line("nope", url, image=cat, model="nope"),
            vl_line("vqa-model", url, image=cat, model="tiny-vilt"),
        ],
    )
    assert {k: code for k, (code, _) in got.items()} == {
        "one": 200,
        "two": 200,
        "corrupt": 400,
        "both": 400,
        "nope": 404,
        "vqa-model": 400,
    }
    model = local["tiny-cap"]
    want = run_batch(
        model,
        [(decode_image(assets.photo(n)), None) for n in ("rocket", "chelsea")],
        model.settings(max_tokens=4),
    )
    two = got["two"][1]
    assert two["model"] == "tiny-cap" and [c["caption"] for c in two["data"]] == [w.text for w in want]
    assert two["usage"]["completion_tokens"] == sum(w.tokens for w in want)
    one = run_batch(model, [(decode_image(assets.photo("chelsea")), None)], model.settings())[0]
    assert got["one"][1]["data"] == [{"index": 0, "caption": one.text, "tokens": one.tokens}]
    assert got["corrupt"][1]["error"]["param"] == "image"

    url = "/v1/vqa"
    got = run(url, [vl_line("ask", url, image=cat, questions=["what is this?", "is it red?"], top_k=2)])
    vilt = local["tiny-vilt"]
    want = run_batch(
        vilt,
        [(decode_image(assets.photo("chelsea")), q) for q in ("what is this?", "is it red?")],
        vilt.settings(top_k=2),
    )
    code, body = got["ask"]
    assert code == 200 and [a["answer"] for a in body["data"]] == [w.text for w in want]
    assert [len(a["answers"]) for a in body["data"]] == [2, 2] and body["data"][1]["question"] == "is it red?"


def test_a_pool_granted_a_gpu_loads_its_models_on_it(tmp_path, monkeypatch):
    """As an online replica does: the pool's ``num_gpus`` asks for the GPU (CUDA when it exists), and
    every backend the worker loads is loaded on the device it got."""
    import models.registry
    import models.runtime
    from deployments.batch.work import ModelWorker

    asked, loaded = [], []
    monkeypatch.setattr(
        models.runtime,
        "resolve_device",
        lambda want_gpu: asked.append(want_gpu) or ("cuda" if want_gpu else "cpu"),
    )
    monkeypatch.setattr(models.registry, "load_text", lambda spec, device="cpu": loaded.append(device))
    monkeypatch.setattr(models.registry, "load_speech", lambda spec, device="cpu": loaded.append(device))
    p = dataclasses.replace(
        plan(str(tmp_path)), pool={"num_cpus": 1, "num_gpus": 0.25}, speech_spec={"model": "whisper-base"}
    )
    worker = ModelWorker(p)
    worker.text_model(), worker.speech()
    assert (asked, worker.device, loaded) == ([True], "cuda", ["cuda", "cuda"])
    assert ModelWorker(plan(str(tmp_path))).device == "cpu" and asked == [True, False]  # no GPU asked
