"""A fine-tuned adapter served over real HTTP, rolled out the way an operator would: ``serve deploy``
of a config (here the same call, ``deploy_apps``) whose ``args`` stay put while the VisionEncoder and
TextEncoder ``user_config`` name the new checkpoint. The app (its own, at /ft) starts in the ConSE
space; after the rollout /v1/models reports the adapter's space, zero-shot, retrieval and spoken
search answer in it, no replica of the app was restarted, and an index built before (ConSE space)
refuses the new queries with the existing 400."""

import time

import pytest
from ray import serve
from ray.serve.context import _get_global_client
from ray.serve.schema import ServeDeploySchema

from clients.client import Client, MMServeError
from config.args import AppArgs
from models import adapter, registry
from tests.assets import photo, speech
from tests.conftest import TEST_ARGS
from tools import demo_captions

APP, PREFIX = "finetuned", "/ft"
PHOTOS = [
    "chelsea",
    "rocket",
    "astronaut",
    "hubble_deep_field",
    "horse",
]  # training photos of the caption set


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> dict:
    """An adapter trained in this process on the training split of the demo caption set (frozen
    features of 4 views per photo, 30 epochs, the last epoch kept whatever val says, so it is served
    with ``allow_worse_than_base``; tests/graph/test_finetune.py covers Ray Train and early stopping)."""
    root = tmp_path_factory.mktemp("finetune")
    pairs = adapter.read_manifest(demo_captions.build(root, views=4))
    encoders = registry.load_frozen_encoders()
    feats = {s: encoders.features([p for p in pairs if p.split == s]) for s in ("train", "val")}
    heads, _ = adapter.fit(feats["train"], adapter.TrainConfig(epochs=30))
    val = {"before": feats["val"].base_metrics(), "after": adapter.evaluate(heads, feats["val"])}
    meta = adapter.save_checkpoint(
        root / "ckpt",
        heads,
        name="demo",
        base=encoders.describe(),
        training={"epochs": 30},
        metrics={"val": val},
        promoted=adapter.promotion(val["before"], val["after"], kept_epoch=30),
    )
    return {"path": str(root / "ckpt"), "space": meta["space"], "root": root, "val": val}


def _config(args: dict, overrides: list[dict] | None = None) -> ServeDeploySchema:
    app = {"name": APP, "route_prefix": PREFIX, "import_path": "graphs.app:build_app", "args": args}
    if overrides:
        app["deployments"] = overrides
    return ServeDeploySchema(applications=[app])


def _wait_running(timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        app = serve.status().applications.get(APP)
        if app is not None and app.status == "RUNNING":
            return
        if app is not None and app.status == "DEPLOY_FAILED":
            raise AssertionError(app.message)
        time.sleep(1)
    raise AssertionError(f"{APP} not running after {timeout_s}s: {serve.status().applications.get(APP)}")


def _replicas() -> set[str]:
    import ray

    return {a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if f"{APP}#" in a["name"]}


@pytest.fixture(scope="module")
def rollout(ray_cluster, checkpoint, tmp_path_factory):
    """Deploy the app in the ConSE space, index the photos there, then roll the adapter out."""
    data = tmp_path_factory.mktemp("ft-data")
    args = {**TEST_ARGS, "search": {"uri": str(data / "search.db"), "num_cpus": 0}}
    started = time.monotonic()
    client = _get_global_client()
    client.deploy_apps(_config(args))
    _wait_running()
    base_url = f"http://127.0.0.1:{ray_cluster['port']}{PREFIX}"
    with Client(base_url, timeout=120) as c:
        before = {m.modality: m.space for m in c.models().data if m.task == "embedding"}
        c.create_index("conse-photos")
        c.add_images("conse-photos", [photo(p) for p in PHOTOS], metadata=[{"file": p} for p in PHOTOS])
        replicas = _replicas()
        cfg = AppArgs.model_validate(args)
        overrides = [
            {
                "name": "VisionEncoder",
                "user_config": {
                    **cfg.vision.batch.model_dump(),
                    "model": {
                        "embedder": "adapter",
                        "embedder_path": checkpoint["path"],
                        "allow_worse_than_base": True,
                    },
                },
            },
            {
                "name": "TextEncoder",
                "user_config": {
                    **cfg.text.batch.model_dump(),
                    "model": {"kind": "adapter", "path": checkpoint["path"], "allow_worse_than_base": True},
                },
            },
        ]
        swapped = time.monotonic()
        client.deploy_apps(_config(args, overrides))  # args unchanged: a lightweight update
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            cards = [m for m in c.models().data if m.task == "embedding"]
            after = {m.modality: m.space for m in cards}
            if after.get("image") == after.get("text") == checkpoint["space"]:
                break
            time.sleep(1)
        print(
            f"\nConSE app up and indexed in {swapped - started:.1f}s; "
            f"adapter live {time.monotonic() - swapped:.1f}s later"
        )
        yield {
            "client": c,
            "before": before,
            "after": after,
            "quality": {m.modality: m.quality for m in cards},
            "replicas_before": replicas,
            "replicas_after": _replicas(),
        }
    serve.delete(APP)


def test_models_report_the_adapter_space_and_no_replica_restarted(rollout, checkpoint):
    assert rollout["before"]["image"] == rollout["before"]["text"] == "text:all-MiniLM-L6-v2", rollout[
        "before"
    ]
    assert rollout["after"]["image"] == rollout["after"]["text"] == checkpoint["space"], rollout["after"]
    assert checkpoint["space"].startswith("adapter:demo@")
    # /v1/models shows the measured figures of the adapter being served, on both sides
    for side in ("image", "text"):
        quality = rollout["quality"][side]
        assert quality["metrics"]["val"]["before"]["t2i_r1"] == round(
            checkpoint["val"]["before"]["t2i_r1"], 3
        )
        assert quality["beats_base"] is adapter.promotion(**checkpoint["val"], kept_epoch=30)["beats_base"]
    # the rollout reconfigured VisionEncoder and TextEncoder in place: every replica of the app is the same actor
    restarted = sorted(name.split("#")[1] for name in rollout["replicas_before"] - rollout["replicas_after"])
    assert not restarted and len(rollout["replicas_before"]) >= 5, f"replicas replaced: {restarted}"


def test_zero_shot_and_retrieval_answer_in_the_adapter_space(rollout):
    c = rollout["client"]
    labels = ["cat", "rocket", "astronaut", "galaxies", "horse"]
    for name, label in zip(PHOTOS, labels):
        result = c.zero_shot(photo(name), labels)
        assert result.model == "adapter-demo" and result.labels[0].label == label, (name, result.labels)
    texts = ["a tabby cat with whiskers", "a rocket on its launch pad", "faint galaxies in deep space"]
    found = c.retrieval([photo(p) for p in PHOTOS], texts, top_k=1)
    assert [m[0].index for m in found.text_to_image] == [0, 1, 3], found.text_to_image


def test_spoken_search_in_an_adapter_index(rollout):
    c = rollout["client"]
    c.create_index("adapter-photos")
    c.add_images("adapter-photos", [photo(p) for p in PHOTOS], metadata=[{"file": p} for p in PHOTOS])
    assert c.index("adapter-photos").space == rollout["after"]["image"]
    result = c.query("adapter-photos", audio=speech("a rocket on the launch pad"), top_k=2)
    assert "rocket" in result.transcript.lower() and result.hits[0].metadata["file"] == "rocket", result


def test_an_index_built_in_the_conse_space_refuses_adapter_queries(rollout):
    c = rollout["client"]
    assert c.index("conse-photos").space == rollout["before"]["image"]
    for query in ({"text": "a cat"}, {"image": photo("chelsea")}):
        with pytest.raises(MMServeError) as err:
            c.query("conse-photos", **query)
        assert err.value.status == 400, err.value
        before = rollout["before"]["image"]
        assert f"space '{before}'" in err.value.message, err.value.message
