"""Fusion heads end to end: trained on the demo data with the service's encoders, served by id
(Serve model multiplexing) and queried through /v1/compose over real HTTP."""

from pathlib import Path

import numpy as np
import pytest

from clients.client import MMServeError
from config.args import AppArgs
from models import fusion
from tests.assets import photo, speech
from tools import demo_data
from tools import train_fusion as train

KINDS = ("early", "late", "attention")


@pytest.fixture(scope="module")
def heads(served, tmp_path_factory) -> dict:
    manifest = demo_data.build(tmp_path_factory.mktemp("demo"), seed=1, per_class=16)
    cfg = AppArgs.model_validate(served["args"])
    data = train.load_examples(manifest, cfg)
    store = Path(cfg.fusion.store) / "default"
    return {
        kind: train.train_and_save(
            data, kind=kind, head_id=f"demo-{kind}", store=store, epochs=40, progress=False
        )
        for kind in KINDS
    }


def _fuse(client, head: str, **inputs):
    return client.compose([{"type": "fuse", "head": head}], **inputs)


def test_trained_heads_are_listed_with_their_metadata(client, heads):
    cards = {c.id: c for c in client.fusion_heads().data}
    for kind in KINDS:
        card = cards[f"demo-{kind}"]
        assert card.kind == kind and card.labels == ["animal", "drink", "plant", "space"]
        assert card.modalities == ["audio", "image", "text"]
        assert card.encoders["image"]["id"] == "conse-efficientnet-lite0"
        assert 0.0 <= card.metrics["test_accuracy"] <= 1.0


@pytest.mark.parametrize("kind", KINDS)
def test_each_head_fuses_image_text_and_audio_through_compose(client, heads, kind):
    body = _fuse(
        client,
        f"demo-{kind}",
        image=photo("coffee"),
        text="a cup of hot coffee",
        audio=speech("this is a drink in a cup"),
    )
    out = body.results["fuse"]
    assert out.used == ["audio", "image", "text"] and out.missing == []
    assert out.label == out.scores[0].label
    assert sum(s.score for s in out.scores) == pytest.approx(1.0, abs=1e-4)
    nodes = {n.id: n for n in body.dag.nodes}
    assert set(nodes["fuse:fuse"].deps) == {
        "fusion_features:image",
        "fusion_features:text",
        "fusion_features:audio",
    }
    if kind == "late":
        assert out.label == "drink", out


def test_a_missing_modality_still_gets_a_fused_answer_with_the_mask_reported(client, heads):
    out = _fuse(client, "demo-late", image=photo("rocket")).results["fuse"]
    assert out.used == ["image"] and out.missing == ["audio", "text"]
    assert out.label == "space"
    spoken = _fuse(client, "demo-early", audio=speech("a tiny cat sleeping")).results["fuse"]
    assert spoken.missing == ["image", "text"]


def test_a_checkpoint_of_the_wrong_dimension_is_a_4xx(client, served):
    dims = fusion.FusionDims(
        pooled={"image": 16, "text": 384}, tokens={"image": 16, "text": 384}, hidden=8, heads=2
    )
    head = fusion.build_head("late", dims=dims, num_labels=2)
    meta = fusion.HeadMeta(
        head_id="wrong-dims",
        kind="late",
        labels=["a", "b"],
        dims=dims,
        encoders={"image": {"id": "conse-efficientnet-lite0"}, "text": {"id": "all-MiniLM-L6-v2"}},
    )
    fusion.save_checkpoint(
        Path(AppArgs.model_validate(served["args"]).fusion.store) / "default", head, meta, overwrite=True
    )
    with pytest.raises(MMServeError) as err:
        _fuse(client, "wrong-dims", image=photo("chelsea"), text="a cat")
    assert err.value.status == 400 and "16" in err.value.message and "384" in err.value.message


def test_unknown_head_and_absent_modalities_are_4xx(client, heads):
    with pytest.raises(MMServeError) as err:
        _fuse(client, "no-such-head", text="hello")
    assert err.value.status == 404
    with pytest.raises(MMServeError) as err:
        client.compose([{"type": "classify"}], text="no image here")
    assert err.value.status == 400 and err.value.param == "inputs.image"


def test_one_request_runs_every_kind_of_task_as_one_dag(client, heads):
    client.create_index("compose-gallery")
    client.add_images(
        "compose-gallery",
        [photo("chelsea"), photo("coffee"), photo("rocket")],
        metadata=[{"file": n} for n in ("chelsea", "coffee", "rocket")],
    )
    tasks = [
        {"type": "classify", "top_k": 3},
        {"type": "zero_shot", "labels": ["cat", "cup of coffee", "rocket"]},
        {"type": "embed", "modality": "text"},
        {"type": "transcribe"},
        {"type": "search", "index": "compose-gallery", "query": "audio", "top_k": 1},
        {"type": "fuse", "head": "demo-late"},
        {"type": "features", "features": ["mfcc"]},
        {"type": "language"},
    ]
    body = client.compose(
        tasks, image=photo("chelsea"), text="a cat on a sofa", audio=speech("show me a cup of coffee")
    )
    r = body.results
    assert r["zero_shot"].labels[0].label == "cat"
    assert "coffee" in r["transcribe"].text.lower()
    assert r["search"].transcript == r["transcribe"].text  # one Whisper pass serves both
    assert r["search"].hits[0].metadata["file"] == "coffee"
    assert r["embed"].dim == 384 and len(r["embed"].embedding) == 384
    assert np.asarray(r["features"].features["mfcc"].data).shape[0] == 20
    assert r["fuse"].used == ["audio", "image", "text"]
    assert r["language"].language == r["transcribe"].language == "en"
    assert [type(r[k]).__name__ for k in ("classify", "transcribe", "embed", "fuse")] == [
        "ClassifyResponse",
        "VerboseTranscriptionResponse",
        "EmbedResult",
        "FusionResult",
    ]
    ops = [n.op for n in body.dag.nodes]
    assert ops.count("speech") == 1 and ops.count("decode_image") == 1 and ops.count("decode_audio") == 1
    assert ["speech:transcribe:auto", "embed:transcript"] in body.dag.edges
