"""tools.finetune on the session's local Ray (tests/conftest.py ray_cluster): 2 DDP workers on the demo caption set (features cached first)."""
import shutil
import time

import pytest

from tools import demo_captions
from models import adapter
from tools import finetune

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def caption_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("captions")
    manifest = demo_captions.build(root)
    encoders = adapter.FrozenEncoders.load_packaged()  # features cached before Ray starts
    pairs = adapter.read_manifest(manifest)
    for split in adapter.SPLITS:
        adapter.cached_features(pairs, split, encoders_fn=lambda: encoders, cache_dir=root / "cache",
                                fingerprint=finetune.FINGERPRINT)
    return root, manifest


def test_two_workers_train_and_beat_conse(caption_set, ray_cluster, tmp_path):
    root, manifest = caption_set
    started = time.monotonic()
    meta = finetune.finetune(manifest, tmp_path / "ckpt", workers=2, cache_dir=root / "cache",
                             storage=tmp_path / "runs", train=adapter.TrainConfig(epochs=8, batch_size=32))
    elapsed = time.monotonic() - started
    losses = [r["loss"] for r in meta["history"]]
    assert len(losses) == 8 and losses[-1] < losses[0], losses
    val = meta["metrics"]["val"]
    assert val["after"]["t2i_r1"] > val["before"]["t2i_r1"], val
    assert adapter.adapter_space(tmp_path / "ckpt") == meta["space"] and meta["resumed_from"] is None
    assert elapsed < 120, elapsed
    shutil.rmtree(tmp_path / "runs", ignore_errors=True)


def test_a_worker_killed_mid_run_resumes_from_the_last_checkpoint(caption_set, ray_cluster, tmp_path):
    root, manifest = caption_set
    meta = finetune.finetune(manifest, tmp_path / "ckpt", workers=2, cache_dir=root / "cache",
                             storage=tmp_path / "runs", train=adapter.TrainConfig(epochs=5, batch_size=32),
                             fail_at_epoch=2)
    assert meta["resumed_from"] is not None and meta["resumed_from"] <= 2, meta["history"]
    assert [r["epoch"] for r in meta["history"]] == list(range(5))  # resumed, not restarted from epoch 0
    assert (tmp_path / "ckpt" / adapter.WEIGHTS_FILE).is_file()
    shutil.rmtree(tmp_path / "runs", ignore_errors=True)
