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


def _checkpoint(path, *, seed=0) -> str:
    heads, _ = adapter.fit(toy_features(seed=seed), adapter.TrainConfig(epochs=1, dim=8, seed=seed))
    return adapter.save_checkpoint(path, heads, name=path.name, base={}, training={}, metrics={})["space"]


def _args(vision_path=None, text_path=None) -> dict:
    out = {}
    if vision_path:
        out["vision"] = {"model": {"embedder": "adapter", "embedder_path": str(vision_path)}}
    if text_path:
        out["text"] = {"model": {"kind": "adapter", "path": str(text_path)}}
    return out


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
