"""Contrastive fine-tuning of an image-text space on Ray Train (an offline tool; no Serve, no FastAPI).

``python -m tools.finetune MANIFEST --out DIR [--workers 2] [--gpu] [--epochs 30]
[--family adapter|clip] [--base CLIP_DIR_OR_HUB_ID] [--lock-image]``

One shared loop (``train_loop``/``_fit``) trains either model family; what differs is a small
strategy object (``models.finetune_families``). The default family, ``adapter``:

1. The manifest (JSONL: image, caption, optional split/photo) is read and the frozen features of
   its train, val and test splits are computed once on the driver and cached (``models.adapter``).
2. The training pairs become a Ray Data dataset; a ``TorchTrainer`` runs ``--workers`` data-parallel
   workers (DDP; gloo on CPU) over its shards, CLIP's symmetric InfoNCE with a learnable temperature.
3. Every epoch each worker calls ``ray.train.report`` (loss, val R@1); rank 0 attaches a checkpoint
   (heads, optimizer, epoch, the best epoch so far). ``FailureConfig(max_failures=1)``: after a worker
   dies the run restarts from the last checkpoint, so it resumes, not restarts (``resumed_from``).
4. Validation is held out **by photo** (``models.adapter.SPLIT_RULE``). The heads are residual over
   ConSE and start at zero, so epoch 0 *is* the base space; the epoch best on val is kept (epoch 0
   when none beats it) and training stops after ``--patience`` epochs without progress.
5. The kept heads are written to ``--out`` atomically with R@1/R@5 before (ConSE) and after on train,
   val and (when the manifest has one) test, the split rule, and the promotion verdict: whether they
   beat the base on val. Serving a checkpoint that does not needs ``allow_worse_than_base: true``.

``--family clip --base DIR``: a transformers ``CLIPModel`` goes through the same trainer (same
TorchTrainer, Ray Data, DDP, rank-0 checkpoints, FailureConfig): pixels and token ids are prepared
once on the driver, the whole model trains (or, with ``--lock-image``, only the text side and the
temperature: LiT) with CLIP's symmetric InfoNCE and its own learnable ``logit_scale``, and ``--out``
becomes a ``save_pretrained`` directory (model, tokenizer, image processor, ``mmserve-finetune.json``
with R@1/R@5 before = the base weights and after) that ``text.kind: clip`` / ``vision.embedder: clip``
load. **Plumbing only here**: no CLIP weights exist offline, so this path is tested with tiny random
CLIPs for a few steps; it says nothing about the quality of a real CLIP fine-tune.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from models import adapter, registry
from models.errors import InvalidInput
from models.finetune_families import AdapterFamily, ClipFamily, clip_rows, clip_split, save_clip_checkpoint
from tools.finetune_args import add_finetune_args

STATE_FILE = "state.pt"
FINGERPRINT = "efficientnet-lite0+all-MiniLM-L6-v2+conse-top10"  # the frozen encoders the feature cache holds


def train_loop(config: dict) -> None:
    """One Ray Train worker: DDP over the family's module, one report per epoch on every worker."""
    import ray.train
    import ray.train.torch

    cfg = adapter.TrainConfig(**config["train"])
    family = config["family"]
    torch.manual_seed(cfg.seed)
    ctx = ray.train.get_context()
    module = family.build()
    optimizer = family.optimizer(module, cfg)
    start, resumed_from, history, best = _restore(module, optimizer)
    val = config["val"]
    if best is None and val is not None and family.select_on_val:  # epoch 0: untrained = the base space
        best = adapter.BestEpoch(adapter.selection_score(family.evaluate(module, val)))
        best.state = {k: v.detach().clone() for k, v in module.state_dict().items()}
    model = ray.train.torch.prepare_model(module)
    shard = ray.train.get_dataset_shard("train")
    for epoch in range(start, cfg.epochs):
        started, losses = time.perf_counter(), []
        for b in shard.iter_torch_batches(
            batch_size=cfg.batch_size,
            local_shuffle_buffer_size=256,
            local_shuffle_seed=cfg.seed + epoch,
            drop_last=True,
        ):
            losses.append(family.step(model, b, optimizer, cfg))
        # DDP steps in lockstep: every worker ran as many full batches as this one
        metrics = {
            "epoch": epoch,
            "loss": float(np.mean(losses)) if losses else float("nan"),
            "resumed_from": resumed_from,
            "logit_scale": family.scale(module),
            "epoch_s": time.perf_counter() - started,
            "steps": len(losses),
            "samples": len(losses) * cfg.batch_size * ctx.get_world_size(),
        }
        if val is not None:
            measured = family.evaluate(module, val)
            metrics.update({f"val_{k}": v for k, v in measured.items()})
            if best is not None:
                best.update(epoch + 1, adapter.selection_score(measured), module)
                metrics["best_epoch"] = best.epoch
        history.append(metrics)
        if ctx.get_world_rank() == 0:
            print(
                f"[finetune] epoch {epoch + 1}/{cfg.epochs} loss {metrics['loss']:.4f} "
                f"val t2i R@1 {metrics.get('val_t2i_r1', float('nan')):.3f}",
                flush=True,
            )
            with tempfile.TemporaryDirectory() as tmp:
                torch.save(
                    {
                        "module": module.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "epoch": epoch,
                        "history": history,
                        "best": None if best is None else asdict(best),
                    },
                    os.path.join(tmp, STATE_FILE),
                )
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
        else:
            ray.train.report(metrics)
        if config.get("fail_at_epoch") == epoch and resumed_from is None and ctx.get_world_rank() == 1:
            os._exit(1)  # fault injection for the resume test: this worker dies once
        if best is not None and best.should_stop(cfg.patience):
            break  # every worker saw the same val score, so all stop at this epoch (DDP stays in step)


def _restore(
    module: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> tuple[int, int | None, list[dict], adapter.BestEpoch | None]:
    """(first epoch to run, epoch resumed from or None, metrics of the epochs done, early stopping's
    best epoch so far) from the run's last checkpoint, if any."""
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return 0, None, [], None
    with checkpoint.as_directory() as path:
        state = torch.load(os.path.join(path, STATE_FILE), weights_only=True)
    module.load_state_dict(state["module"])
    optimizer.load_state_dict(state["optimizer"])
    best = state.get("best")
    if best is not None:
        best = adapter.BestEpoch(**{**best, "score": tuple(best["score"])})
    return state["epoch"] + 1, state["epoch"], state["history"], best


def _fit(
    family,
    rows: list[dict],
    val: dict | None,
    *,
    train: adapter.TrainConfig,
    workers: int,
    use_gpu: bool,
    storage: Path,
    name: str,
    fail_at_epoch: int | None,
) -> tuple[torch.nn.Module, list[dict]]:
    """The shared trainer: ``TorchTrainer`` over a Ray Data dataset of ``rows``; returns the family's
    module with the weights of the best epoch on ``val`` (early stopping; epoch 0 = untrained), or of
    the last epoch without ``val``, and the metrics per epoch."""
    import ray.data
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    loop_config = {"train": asdict(train), "family": family, "val": val, "fail_at_epoch": fail_at_epoch}
    trainer = TorchTrainer(
        train_loop,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu),
        datasets={"train": ray.data.from_items(rows)},
        run_config=RunConfig(
            name=f"finetune-{name}",
            storage_path=str(storage),
            failure_config=FailureConfig(max_failures=1),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
        ),
    )
    result = trainer.fit()
    module = family.build()
    with result.checkpoint.as_directory() as path:
        state = torch.load(os.path.join(path, STATE_FILE), weights_only=True)
    best = state.get("best")
    module.load_state_dict(best["state"] if best and best["state"] is not None else state["module"])
    return module, state["history"]


def finetune(
    manifest: str | Path,
    out: str | Path,
    *,
    workers: int = 2,
    use_gpu: bool = False,
    train: adapter.TrainConfig = adapter.TrainConfig(),
    storage: str | Path | None = None,
    name: str | None = None,
    cache_dir: str | Path | None = None,
    encoders_fn: Callable[[], adapter.FrozenEncoders] = registry.load_frozen_encoders,
    family: str = "adapter",
    base: str | None = None,
    lock_image: bool = False,
    fail_at_epoch: int | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Run the whole fine-tune on the current Ray (``ray.init`` first); returns the checkpoint's metadata
    plus ``history`` (metrics per epoch) and ``resumed_from``. ``family`` ``adapter`` (the default) or
    ``clip`` (a transformers CLIP from ``base``, hub id or directory; ``lock_image`` for LiT)."""
    out = Path(out).expanduser().resolve()
    name = name or out.name
    pairs = adapter.read_manifest(manifest)
    run = {
        "train": train,
        "workers": workers,
        "use_gpu": use_gpu,
        "name": name,
        "fail_at_epoch": fail_at_epoch,
        "storage": Path(storage or out.parent / ".ray-train"),
    }
    training = {
        **asdict(train),
        "workers": workers,
        "use_gpu": use_gpu,
        "manifest": str(Path(manifest).resolve()),
        "pairs": {s: sum(p.split == s for p in pairs) for s in adapter.SPLITS},
        "family": family,
        "split_rule": adapter.SPLIT_RULE,
    }
    check_family(family, base, lock_image)
    if not any(p.split == "val" for p in pairs):
        raise InvalidInput(
            f"{manifest}: no validation photos: early stopping and the promotion check need rows of "
            "photos no training row shows ('split': 'val', or rows without a split)",
            param="manifest",
        )
    if family == "clip":
        meta, history = _finetune_clip(
            pairs, out, base=base, lock_image=lock_image, training=training, run=run, log=log
        )
    else:
        meta, history = _finetune_adapter(
            pairs, out, cache_dir=cache_dir, encoders_fn=encoders_fn, training=training, run=run, log=log
        )
    resumed = [r.get("resumed_from") for r in history if r.get("resumed_from") is not None]
    return {**meta, "history": history, "resumed_from": resumed[0] if resumed else None}


def check_family(family: str, base: str | None, lock_image: bool) -> None:
    """``InvalidInput`` for a family and options that do not go together (before any Ray starts)."""
    if family not in ("adapter", "clip"):
        raise InvalidInput(f"unknown family '{family}' (adapter or clip)", param="family")
    if family == "clip" and not base:
        raise InvalidInput("--family clip needs --base (a CLIP hub id or directory)", param="base")
    if family == "adapter" and (base or lock_image):
        raise InvalidInput("--base and --lock-image are for --family clip", param="family")


def _finetune_adapter(pairs, out: Path, *, cache_dir, encoders_fn, training: dict, run: dict, log):
    loaded: list[adapter.FrozenEncoders] = []

    def encoders() -> adapter.FrozenEncoders:
        if not loaded:
            loaded.append(encoders_fn())
        return loaded[0]

    cache = Path(cache_dir or out.parent / ".mmserve-features")
    fingerprint = FINGERPRINT
    log(f"[finetune] {len(pairs)} pairs; computing or loading frozen features in {cache}")
    feats = {
        s: adapter.cached_features(pairs, s, encoders_fn=encoders, cache_dir=cache, fingerprint=fingerprint)
        for s in adapter.SPLITS
        if any(p.split == s for p in pairs)
    }
    dims = adapter.AdapterDims(
        feats["train"].image_pooled.shape[1],
        feats["train"].text_tokens.shape[2],
        feats["train"].base_image.shape[1],
    )
    family = AdapterFamily(dims)
    rows = feats["train"].pairs()
    heads, history = _fit(
        family,
        [{k: v[i] for k, v in rows.items()} for i in range(len(rows["group"]))],
        feats["val"].__dict__,
        **run,
    )
    # before = ConSE (= the untrained residual heads); val (photos no train row shows) chose the epoch,
    # test (held-apart photos, if the manifest has them) is reported only
    metrics = {
        s: {"before": feats[s].base_metrics(), "after": adapter.evaluate(heads, feats[s])}
        for s in adapter.SPLITS
        if s in feats
    }
    kept = history[-1].get("best_epoch", 0) if history else 0
    promoted = adapter.promotion(metrics["val"]["before"], metrics["val"]["after"], kept_epoch=kept)
    log(
        f"[finetune] kept epoch {kept} (0 = the base space); "
        f"{'beats' if promoted['beats_base'] else 'does NOT beat'} its base on photo-held-out val"
    )
    base = {**(encoders().describe() if loaded else {}), "fingerprint": fingerprint}
    return adapter.save_checkpoint(
        out, heads, name=run["name"], base=base, training=training, metrics=metrics, promoted=promoted
    ), history


def _finetune_clip(pairs, out: Path, *, base: str, lock_image: bool, training: dict, run: dict, log):
    family = ClipFamily(base, lock_image=lock_image)
    log(
        f"[finetune] {len(pairs)} pairs; CLIP '{base}'{' with a locked image tower (LiT)' if lock_image else ''}"
    )
    splits = {
        s: clip_split([p for p in pairs if p.split == s], base)
        for s in adapter.SPLITS
        if any(p.split == s for p in pairs)
    }
    pretrained = family.build()
    before = {s: family.evaluate(pretrained, splits[s]) for s in ("val", "test") if s in splits}
    del pretrained
    module, history = _fit(family, clip_rows(splits["train"]), splits.get("val"), **run)
    metrics = {s: {"before": before[s], "after": family.evaluate(module, splits[s])} for s in before}
    return save_clip_checkpoint(
        out, module, family=family, name=run["name"], training=training, metrics=metrics
    ), history


def run_local(args) -> dict:
    """``mmserve finetune`` / ``python -m tools.finetune``: start a private local Ray, fine-tune, stop it;
    returns the checkpoint's space, path and val metrics before and after."""
    import ray

    check_family(args.family, args.base, args.lock_image)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    context = ray.init(num_cpus=args.num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1")
    try:
        meta = finetune(
            args.manifest,
            args.out,
            workers=args.workers,
            use_gpu=args.gpu,
            train=adapter.TrainConfig(
                epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, patience=args.patience
            ),
            family=args.family,
            base=args.base,
            lock_image=args.lock_image,
        )
    finally:
        ray.shutdown()
        _remove_session_dir(context)
    val = meta["metrics"].get("val", {})
    print(
        f"{args.out}: space {meta['space']}; val before {val.get('before')} after {val.get('after')}",
        file=sys.stderr,
    )
    verdict = meta.get("promotion")
    if verdict and not verdict["beats_base"]:
        print(
            f"{args.out} does not beat its base on photo-held-out val (kept epoch {verdict['kept_epoch']}): "
            "serving it needs allow_worse_than_base: true",
            file=sys.stderr,
        )
    return {
        "out": str(Path(args.out).resolve()),
        "space": meta["space"],
        "metrics": meta["metrics"],
        "resumed_from": meta["resumed_from"],
        "epochs": len(meta["history"]),
        "promotion": meta.get("promotion"),
    }


def _remove_session_dir(context) -> None:
    """Leave no Ray session folder of this run behind."""
    import shutil

    session = getattr(context, "address_info", {}).get("session_dir")
    if session:
        shutil.rmtree(session, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.finetune", description=__doc__.splitlines()[0])
    add_finetune_args(parser)
    run_local(parser.parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
