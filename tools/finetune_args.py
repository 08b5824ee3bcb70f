"""The options of ``mmserve finetune`` and of ``python -m tools.finetune``, in a module of their own:
the ``mmserve`` parser (``tools.cli``) builds them without importing torch and Ray Train, and
``tools.finetune`` without importing the command line that runs it."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_finetune_args(f: argparse.ArgumentParser) -> None:
    """Add the options of ``mmserve finetune`` to ``f``."""
    f.add_argument("manifest", type=Path)
    f.add_argument("--out", type=Path, required=True, help="checkpoint directory to write (atomically)")
    f.add_argument("--workers", type=int, default=2, help="data-parallel training workers")
    f.add_argument("--gpu", action="store_true", help="one GPU per worker")
    f.add_argument("--epochs", type=int, default=30)
    f.add_argument("--batch-size", type=int, default=64)
    f.add_argument("--lr", type=float, default=1e-3)
    f.add_argument(
        "--patience",
        type=int,
        default=10,
        help="stop after this many epochs without a better score on photo-held-out val (0 = never)",
    )
    f.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray started for the run")
    f.add_argument(
        "--family",
        choices=("adapter", "clip"),
        default="adapter",
        help="adapter: heads over the frozen packaged encoders (default); clip: a transformers CLIPModel "
        "from --base, full fine-tuning or --lock-image (plumbing only here: no CLIP weights offline)",
    )
    f.add_argument("--base", default=None, help="--family clip: CLIP hub id or local directory")
    f.add_argument("--lock-image", action="store_true", help="--family clip: freeze the image tower (LiT)")
