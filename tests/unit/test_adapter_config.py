"""Serving a fine-tuned adapter from config (no weights loaded, no Ray): AppArgs resolves and checks
the checkpoint, the one-space check names both sides, and the live-rollout user_config is refused
when it cannot work."""

import os

import pytest
from pydantic import ValidationError

from config.args import AppArgs
from deployments.common import checkpoint_path
from models import adapter
from tests.unit.test_adapter import toy_features


def _checkpoint(path, *, seed=0, after_r1=0.8, measured=True) -> str:
    """A checkpoint whose recorded val verdict compares ``after_r1`` with a base R@1 of 0.6."""
    heads, _ = adapter.fit(toy_features(seed=seed), adapter.TrainConfig(epochs=1, seed=seed))
    before, after = {"t2i_r1": 0.6, "t2i_mrr": 0.7}, {"t2i_r1": after_r1, "t2i_mrr": 0.7}
    verdict = adapter.promotion(before, after, kept_epoch=1) if measured else None
    metrics = {"val": {"before": before, "after": after}} if measured else {}
    return adapter.save_checkpoint(
        path, heads, name=path.name, base={}, training={}, metrics=metrics, promoted=verdict
    )["space"]


def _args(vision_path=None, text_path=None, **flags) -> dict:
    out = {}
    if vision_path:
        out["vision"] = {"model": {"embedder": "adapter", "embedder_path": str(vision_path), **flags}}
    if text_path:
        out["text"] = {"model": {"kind": "adapter", "path": str(text_path), **flags}}
    return out


@pytest.mark.parametrize("after_r1", [0.6, 0.4])  # equal to the base is not better
def test_a_checkpoint_that_does_not_beat_its_base_needs_the_flag(tmp_path, after_r1):
    space = _checkpoint(tmp_path / "worse", after_r1=after_r1)
    for side in ("vision", "text"):
        with pytest.raises(ValidationError, match="allow_worse_than_base: true") as err:
            AppArgs.model_validate(_args(tmp_path / "worse", tmp_path / "worse") | {side: {}})
        field = "vision.model.embedder_path" if side == "text" else "text.model.path"
        assert f"{field}: adapter checkpoint 'worse' does not beat its base" in str(err.value)
    args = AppArgs.model_validate(_args(tmp_path / "worse", tmp_path / "worse", allow_worse_than_base=True))
    assert args.text.model.space == space and args.text.model.allow_worse_than_base
    # the replica's loader refuses it too (a user_config rollout does not pass through AppArgs)
    from models.errors import InvalidInput
    from models.registry import TextModelSpec, load_text

    with pytest.raises(InvalidInput, match="allow_worse_than_base"):
        load_text(TextModelSpec(kind="adapter", path=str(tmp_path / "worse")))


def test_a_checkpoint_without_a_verdict_is_refused_and_a_better_one_served(tmp_path):
    _checkpoint(tmp_path / "unmeasured", measured=False)
    with pytest.raises(ValidationError, match="records no validation against its base"):
        AppArgs.model_validate(_args(tmp_path / "unmeasured", tmp_path / "unmeasured"))
    space = _checkpoint(tmp_path / "better", after_r1=0.61)
    assert AppArgs.model_validate(_args(tmp_path / "better", tmp_path / "better")).text.model.space == space


def test_one_checkpoint_on_both_sides_is_one_space_with_absolute_paths(tmp_path, monkeypatch):
    space = _checkpoint(tmp_path / "ft")
    monkeypatch.chdir(tmp_path)
    args = AppArgs.model_validate(_args("ft", "./ft"))
    assert args.vision.model.embedder_path == args.text.model.path == str(tmp_path / "ft")
    assert os.path.isabs(args.text.model.path)
    assert args.vision.model.space(args.text.model) == args.text.model.space == space


def test_two_checkpoints_are_refused_naming_both_spaces(tmp_path):
    one, two = _checkpoint(tmp_path / "one"), _checkpoint(tmp_path / "two", seed=1)
    with pytest.raises(ValidationError) as err:
        AppArgs.model_validate(_args(tmp_path / "one", tmp_path / "two"))
    assert one in str(err.value) and two in str(err.value) and "share a space" in str(err.value)


def test_adapter_on_one_side_only_is_refused_naming_both(tmp_path):
    space = _checkpoint(tmp_path / "ft")
    with pytest.raises(ValidationError) as err:
        AppArgs.model_validate(_args(vision_path=tmp_path / "ft"))
    assert space in str(err.value) and "text:all-MiniLM-L6-v2" in str(err.value)
    # ConSE would otherwise embed ImageNet class names with the adapter's text head and claim its space
    with pytest.raises(ValidationError) as err:
        AppArgs.model_validate(_args(text_path=tmp_path / "ft"))
    assert space in str(err.value) and "conse" in str(err.value)


def test_a_missing_checkpoint_fails_the_config_not_a_replica(tmp_path):
    with pytest.raises(ValidationError, match="text.model.path: no adapter checkpoint"):
        AppArgs.model_validate(_args(text_path=tmp_path / "nowhere"))


def test_rollout_user_config_needs_absolute_checkpoint_paths():
    checkpoint_path("/srv/ckpt/v2", "path")
    checkpoint_path(None, "path")
    with pytest.raises(ValueError, match="absolute"):
        checkpoint_path("ckpt/v2", "embedder_path")
