"""The demo fusion dataset: real photos and espeak-ng speech, built offline, deterministic."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from models.media import SAMPLE_RATE, decode_audio, decode_image
from tools import demo_data

PER_CLASS = 8


def _rows(manifest: Path) -> list[dict]:
    return [json.loads(line) for line in manifest.read_text(encoding="utf-8").splitlines()]


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    return demo_data.build(tmp_path_factory.mktemp("demo"), seed=0, per_class=PER_CLASS)


def test_manifest_rows_are_balanced_and_well_formed(built):
    rows = _rows(built)
    assert len(rows) == PER_CLASS * len(demo_data.LABELS)
    assert {label: sum(r["label"] == label for r in rows) for label in demo_data.LABELS} == dict.fromkeys(
        demo_data.LABELS, PER_CLASS
    )
    assert len({r["id"] for r in rows}) == len(rows)
    for row in rows:
        assert set(row) <= {"id", "label", "split", "image", "text", "audio", "meta"}
        assert any(m in row for m in ("image", "text", "audio")), row
        assert row["split"] in ("train", "test")
    for label in demo_data.LABELS:
        assert sum(r["split"] == "test" for r in rows if r["label"] == label) == round(PER_CLASS * 0.2)


def test_files_exist_and_decode(built):
    root = built.parent
    for row in _rows(built):
        if "image" in row:
            pixels = decode_image((root / row["image"]).read_bytes())
            assert pixels.ndim == 3 and pixels.shape[2] == 3 and min(pixels.shape[:2]) >= 64
        if "audio" in row:
            audio = decode_audio((root / row["audio"]).read_bytes())
            assert 0.5 * SAMPLE_RATE < audio.size < 6 * SAMPLE_RATE and float(abs(audio).max()) > 0.05
        if "text" in row:
            assert row["text"].strip()


def test_modalities_are_imperfect(built):
    """Some rows lack a modality, some texts are vague, some images are hard crops."""
    rows = _rows(built)
    for modality in ("image", "text", "audio"):
        assert 0 < sum(modality in r for r in rows) < len(rows), modality
    kinds = {m: {r["meta"][m] for r in rows} for m in ("image", "text", "audio")}
    assert {"normal", "hard"} <= kinds["image"]
    assert {"informative", "vague"} <= kinds["text"]
    assert {"informative", "generic"} <= kinds["audio"]
    vague = {r["text"] for r in rows if r["meta"]["text"] == "vague"}
    assert vague <= set(demo_data.VAGUE_TEXTS)


def test_about_describes_the_build(built):
    about = json.loads((built.parent / "about.json").read_text())
    assert (
        about["seed"] == 0 and about["per_class"] == PER_CLASS and about["labels"] == list(demo_data.LABELS)
    )
    assert about["counts"]["rows"] == PER_CLASS * len(demo_data.LABELS)
    assert {s["name"] for s in about["sources"]["drink"]} == {"coffee"}
    assert about["caveats"] and about["versions"]["espeak-ng"]


def test_same_seed_same_bytes_other_seed_differs(built, tmp_path):
    again = demo_data.build(tmp_path / "again", seed=0, per_class=PER_CLASS)
    assert _digest(again.parent) == _digest(built.parent)
    other = demo_data.build(tmp_path / "other", seed=1, per_class=PER_CLASS)
    assert _rows(other) != _rows(built)


def test_refuses_a_directory_with_other_files(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        demo_data.build(tmp_path, per_class=1)


def test_cli_builds_and_reports(tmp_path, capsys):
    assert demo_data.main([str(tmp_path / "cli"), "--per-class", "2", "--seed", "3"]) == 0
    assert "8 rows" in capsys.readouterr().out
    assert len(_rows(tmp_path / "cli" / "manifest.jsonl")) == 8
