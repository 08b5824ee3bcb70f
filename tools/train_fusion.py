"""``mmserve train-fusion``: train a fusion head on a JSONL manifest and save it to the model store.

Features come from the encoders the Serve config names, loaded in this process through the same
``models.registry`` code the deployments use, so a head trained here matches the running service
(the checkpoint records encoder ids, versions and dimensions, and serving refuses a mismatch).
Manifest rows are ``{"image"?: path, "text"?: str, "audio"?: path, "label": str}``, paths relative
to the manifest.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from config.args import AppArgs
from config.serve_file import load_serve_config
from models import fusion, fusion_train
from models.batching import chunks
from models.fusion_features import MODALITIES, FeatureExtractor, ModalityFeatures
from models.media import MediaLimits, decode_audio, decode_image


def read_manifest(path: Path) -> list[dict]:
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if line.strip():
            row = json.loads(line)
            if "label" not in row or not any(m in row for m in MODALITIES):
                raise SystemExit(f"{path}:{n}: a row needs a label and at least one of image, text, audio")
            rows.append(row)
    return rows


def _decode(modality: str, value: str, base: Path):
    if modality == "text":
        return value
    raw = (base / value).read_bytes()
    limits = MediaLimits()
    return decode_image(raw, limits=limits) if modality == "image" else decode_audio(raw, limits=limits)


def extract(extractor: FeatureExtractor, rows: list[dict], base: Path, *, batch: int = 16) -> list[dict]:
    """Per row, ``{modality: ModalityFeatures}`` for the modalities it carries (progress on stderr)."""
    from tqdm import tqdm

    out: list[dict[str, ModalityFeatures]] = [{} for _ in rows]
    for modality in MODALITIES:
        where = [i for i, r in enumerate(rows) if modality in r]
        method = getattr(extractor, modality)
        for chunk in tqdm(
            list(chunks(where, batch)), desc=f"{modality} features", unit="batch", file=sys.stderr
        ):
            for i, feats in zip(chunk, method([_decode(modality, rows[i][modality], base) for i in chunk])):
                out[i][modality] = feats
    return out


def _on_epoch(epochs: int):
    """A progress bar over epochs, with one line of losses and validation accuracy per epoch."""
    from tqdm import tqdm

    bar = tqdm(total=epochs, desc="training", unit="epoch", file=sys.stderr)

    def show(stats: fusion_train.EpochStats) -> None:
        tqdm.write(
            f"epoch {stats.epoch:3d}/{epochs}  train loss {stats.train_loss:.4f}  val loss {stats.val_loss:.4f}"
            f"  val acc {stats.val_accuracy:.3f}",
            file=sys.stderr,
        )
        bar.set_postfix(val_acc=f"{stats.val_accuracy:.3f}")
        bar.update(1)
        if stats.epoch == epochs:
            bar.close()

    return show


@dataclass
class Dataset:
    examples: list
    test: list[bool]  # rows the manifest marks "split": "test" (held out from training and selection)
    encoders: dict[str, dict]


def load_examples(manifest: Path, cfg: AppArgs) -> Dataset:
    """The manifest's rows as training examples, and the encoders that made their features."""
    rows = read_manifest(manifest)
    used = [m for m in MODALITIES if any(m in r for r in rows)]
    extractor = FeatureExtractor.from_specs(
        cfg.vision.model, cfg.text.model, cfg.audio.model, modalities=used
    )
    feats = extract(extractor, rows, manifest.parent)
    examples = [fusion_train.Example(features=f, label=r["label"]) for f, r in zip(feats, rows)]
    return Dataset(examples, [r.get("split") == "test" for r in rows], extractor.encoders())


def splits(data: Dataset, *, seed: int) -> tuple[list, list, list]:
    """Train / validation (picks the epoch) / test (reported). The manifest's test rows when it marks
    some, else a stratified 20 %; validation is a stratified quarter of the rest."""
    if any(data.test):
        rest = [e for e, t in zip(data.examples, data.test) if not t]
        test = [e for e, t in zip(data.examples, data.test) if t]
    else:
        rest, test = fusion_train.split(data.examples, val_fraction=0.2, seed=seed)
    train, val = fusion_train.split(rest, val_fraction=0.25, seed=seed + 1)
    return train, val, test


def train_and_save(
    data: Dataset,
    *,
    kind: str,
    head_id: str,
    store: Path,
    epochs: int = 40,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Train ``kind``, save it as ``store/head_id`` with its metadata, return its metrics."""
    examples = data.examples
    labels = sorted({e.label for e in examples})
    train, val, test = splits(data, seed=seed)
    dims = fusion_train.infer_dims(examples)
    result = fusion_train.train_head(
        kind,
        train,
        val,
        dims=dims,
        labels=labels,
        epochs=epochs,
        seed=seed,
        on_epoch=_on_epoch(epochs) if progress else None,
    )
    metrics = {
        "test_accuracy": fusion_train.held_out_accuracy(result.head, test, labels=labels, dims=dims),
        "single_modality_test_accuracy": fusion_train.single_modality_baselines(
            train, test, labels=labels, dims=dims, seed=seed
        ),
        "val_accuracy": result.val_accuracy,
        "best_epoch": result.best_epoch,
        "examples": {"train": len(train), "val": len(val), "test": len(test)},
    }
    meta = fusion.HeadMeta(
        head_id=head_id,
        kind=kind,
        labels=labels,
        dims=dims,
        encoders=data.encoders,
        metrics=metrics,
        created=int(time.time()),
        mmserve_version=fusion.mmserve_version(),
    )
    path = fusion.save_checkpoint(store, result.head, meta, overwrite=True)
    return {"head": head_id, "kind": kind, "path": str(path), **metrics}


def train_from_manifest(args) -> dict:
    cfg = load_serve_config(args.config).app_args()
    data = load_examples(args.manifest, cfg)
    store = Path(cfg.fusion.store) / args.tenant
    out = train_and_save(
        data, kind=args.kind, head_id=args.head, store=store, epochs=args.epochs, seed=args.seed
    )
    singles = out["single_modality_test_accuracy"]
    print(
        f"{args.kind} head '{args.head}': test accuracy {out['test_accuracy']:.3f}; single modalities "
        f"{', '.join(f'{m} {a:.3f}' for m, a in singles.items())}; saved to {out['path']}",
        file=sys.stderr,
    )
    return out
