"""Contrastive fine-tuning of the adapter space on Ray Train (an offline tool; no Serve, no FastAPI).

``python -m tools.finetune MANIFEST --out DIR [--workers 2] [--gpu] [--epochs 30]``

1. The manifest (JSONL: image, caption, optional split/photo) is read and the frozen features of
   its train, val and test splits are computed once on the driver and cached (``models.adapter``).
2. The training pairs become a Ray Data dataset; a ``TorchTrainer`` runs ``--workers`` data-parallel
   workers (DDP; gloo on CPU) over its shards, CLIP's symmetric InfoNCE with a learnable temperature.
3. Every epoch each worker calls ``ray.train.report`` (loss, val R@1); rank 0 attaches a checkpoint
   (heads, optimizer, epoch). ``FailureConfig(max_failures=1)``: after a worker dies the run
   restarts from the last checkpoint, so it resumes, not restarts (``resumed_from`` says where).
4. The final heads are written to ``--out`` atomically with R@1/R@5 before (ConSE) and after, on
   val and, when the manifest has one, on test.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from models import adapter

STATE_FILE = "state.pt"
FINGERPRINT = "efficientnet-lite0+all-MiniLM-L6-v2+conse-top10"  # the frozen encoders the feature cache holds


def train_loop(config: dict) -> None:
    """One Ray Train worker: DDP over the heads, one report per epoch on every worker."""
    import ray.train
    import ray.train.torch

    cfg = adapter.TrainConfig(**config["train"])
    torch.manual_seed(cfg.seed)
    ctx = ray.train.get_context()
    heads = adapter.AdapterHeads(adapter.AdapterDims(**config["dims"]))
    optimizer = adapter.make_optimizer(heads, cfg)
    start, resumed_from, history = _restore(heads, optimizer)
    model = ray.train.torch.prepare_model(heads)
    val = adapter.FeatureSet(**config["val"]) if config["val"] else None
    shard = ray.train.get_dataset_shard("train")
    for epoch in range(start, cfg.epochs):
        started, losses = time.perf_counter(), []
        for b in shard.iter_torch_batches(batch_size=cfg.batch_size, local_shuffle_buffer_size=256,
                                          local_shuffle_seed=cfg.seed + epoch, drop_last=True):
            losses.append(adapter.train_step(model, _to_tensors(b), optimizer, group_positives=cfg.group_positives))
        # DDP steps in lockstep: every worker ran as many full batches as this one
        metrics = {"epoch": epoch, "loss": float(np.mean(losses)) if losses else float("nan"),
                   "resumed_from": resumed_from, "logit_scale": float(heads.scale().detach()),
                   "epoch_s": time.perf_counter() - started,
                   "samples": len(losses) * cfg.batch_size * ctx.get_world_size()}
        if val is not None:
            metrics.update({f"val_{k}": v for k, v in adapter.evaluate(heads, val).items()})
        history.append(metrics)
        if ctx.get_world_rank() == 0:
            print(f"[finetune] epoch {epoch + 1}/{cfg.epochs} loss {metrics['loss']:.4f} "
                  f"val t2i R@1 {metrics.get('val_t2i_r1', float('nan')):.3f}", flush=True)
            with tempfile.TemporaryDirectory() as tmp:
                torch.save({"heads": heads.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
                            "history": history},
                           os.path.join(tmp, STATE_FILE))
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
        else:
            ray.train.report(metrics)
        if config.get("fail_at_epoch") == epoch and resumed_from is None and ctx.get_world_rank() == 1:
            os._exit(1)  # fault injection for the resume test: this worker dies once


def _restore(heads: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[int, int | None, list[dict]]:
    """(first epoch to run, epoch resumed from or None, metrics of the epochs done) from the run's
    last checkpoint, if any."""
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return 0, None, []
    with checkpoint.as_directory() as path:
        state = torch.load(os.path.join(path, STATE_FILE), weights_only=True)
    heads.load_state_dict(state["heads"])
    optimizer.load_state_dict(state["optimizer"])
    return state["epoch"] + 1, state["epoch"], state["history"]


def _to_tensors(batch: dict) -> dict[str, torch.Tensor]:
    return {"image": batch["image"].float(), "tokens": batch["tokens"].float(), "mask": batch["mask"].float(),
            "group": batch["group"].long()}


def _dataset(features: adapter.FeatureSet):
    import ray.data

    rows = features.pairs()
    return ray.data.from_items([{k: v[i] for k, v in rows.items()} for i in range(len(rows["group"]))])


def finetune(manifest: str | Path, out: str | Path, *, workers: int = 2, use_gpu: bool = False,
             train: adapter.TrainConfig = adapter.TrainConfig(), storage: str | Path | None = None,
             name: str | None = None, cache_dir: str | Path | None = None,
             encoders_fn: Callable[[], adapter.FrozenEncoders] = adapter.FrozenEncoders.load_packaged,
             fail_at_epoch: int | None = None, log: Callable[[str], None] = print) -> dict:
    """Run the whole fine-tune on the current Ray (``ray.init`` first); returns the checkpoint's metadata
    plus ``history`` (metrics per epoch) and ``resumed_from``."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    out = Path(out).expanduser().resolve()
    name = name or out.name
    pairs = adapter.read_manifest(manifest)
    loaded: list[adapter.FrozenEncoders] = []

    def encoders() -> adapter.FrozenEncoders:
        if not loaded:
            loaded.append(encoders_fn())
        return loaded[0]

    cache = Path(cache_dir or out.parent / ".mmserve-features")
    fingerprint = FINGERPRINT
    log(f"[finetune] {len(pairs)} pairs; computing or loading frozen features in {cache}")
    feats = {s: adapter.cached_features(pairs, s, encoders_fn=encoders, cache_dir=cache, fingerprint=fingerprint)
             for s in adapter.SPLITS if any(p.split == s for p in pairs)}
    dims = adapter.AdapterDims(feats["train"].image_pooled.shape[1], feats["train"].text_tokens.shape[2], train.dim)
    val = feats.get("val")
    loop_config = {"train": asdict(train), "dims": asdict(dims), "val": val.__dict__ if val else None,
                   "fail_at_epoch": fail_at_epoch}
    trainer = TorchTrainer(
        train_loop, train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu),
        datasets={"train": _dataset(feats["train"])},
        run_config=RunConfig(name=f"finetune-{name}", storage_path=str(Path(storage or out.parent / ".ray-train")),
                             failure_config=FailureConfig(max_failures=1),
                             checkpoint_config=CheckpointConfig(num_to_keep=2)))
    result = trainer.fit()
    heads = adapter.AdapterHeads(dims)
    with result.checkpoint.as_directory() as path:
        state = torch.load(os.path.join(path, STATE_FILE), weights_only=True)
    heads.load_state_dict(state["heads"])
    history = state["history"]
    # before = ConSE; val chose nothing here, test (held-apart photos, if the manifest has them) is reported only
    metrics = {s: {"before": feats[s].base_metrics(), "after": adapter.evaluate(heads, feats[s])}
               for s in ("val", "test") if s in feats}
    training = {**asdict(train), "workers": workers, "use_gpu": use_gpu, "manifest": str(Path(manifest).resolve()),
                "pairs": {s: sum(p.split == s for p in pairs) for s in ("train", "val", "test")}}
    base = {**(encoders().describe() if loaded else {}), "fingerprint": fingerprint}
    meta = adapter.save_checkpoint(out, heads, name=name, base=base, training=training, metrics=metrics)
    resumed = [r.get("resumed_from") for r in history if r.get("resumed_from") is not None]
    return {**meta, "history": history, "resumed_from": resumed[0] if resumed else None}


def run_local(args) -> dict:
    """``mmserve finetune`` / ``python -m tools.finetune``: start a private local Ray, fine-tune, stop it;
    returns the checkpoint's space, path and val metrics before and after."""
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    context = ray.init(num_cpus=args.num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1")
    try:
        meta = finetune(args.manifest, args.out, workers=args.workers, use_gpu=args.gpu,
                        train=adapter.TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr))
    finally:
        ray.shutdown()
        _remove_session_dir(context)
    val = meta["metrics"].get("val", {})
    print(f"{args.out}: space {meta['space']}; val before {val.get('before')} after {val.get('after')}",
          file=sys.stderr)
    return {"out": str(Path(args.out).resolve()), "space": meta["space"], "metrics": meta["metrics"],
            "resumed_from": meta["resumed_from"], "epochs": len(meta["history"])}


def _remove_session_dir(context) -> None:
    """Leave no Ray session folder of this run behind."""
    import shutil

    session = getattr(context, "address_info", {}).get("session_dir")
    if session:
        shutil.rmtree(session, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.finetune", description=__doc__.splitlines()[0])
    parser.add_argument("manifest", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="checkpoint directory to write")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--gpu", action="store_true", help="one GPU per worker")
    parser.add_argument("--epochs", type=int, default=adapter.TrainConfig.epochs)
    parser.add_argument("--batch-size", type=int, default=adapter.TrainConfig.batch_size)
    parser.add_argument("--lr", type=float, default=adapter.TrainConfig.lr)
    parser.add_argument("--num-cpus", type=int, default=None, help="for a local Ray started here")
    run_local(parser.parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
