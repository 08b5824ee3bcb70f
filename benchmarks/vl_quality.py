"""Captioning and VQA on the test photos, for anyone with real vision-language weights.

    python -m benchmarks.vl_quality MODEL_DIR [MODEL_DIR ...] [--speed 10] [--out results.json]
    python -m benchmarks.vl_quality --tiny --speed 10      # tiny random checkpoints: speed only

Each MODEL_DIR is a transformers checkpoint directory (or hub id, where a hub is reachable) of
BLIP captioning, BLIP VQA, ViLT VQA or GIT captioning; the engine and task come from the config's
``architectures``. Captioning models caption every photo without a prompt and with ``PROMPT``;
VQA models answer ``QUESTIONS``. Each caption is scored by whether it names what the photo shows
(``SUBJECTS``), each answer by whether it is one of the accepted answers: a rough check that the
weights do their job, not a benchmark score. No such weights exist offline; ``--tiny`` builds the
test suite's random checkpoints (real WordPiece vocabulary, garbage text) to show the output shape
and measure speed.

``--speed S`` adds captions (or answers) per second at batch 1 and batch 8 over distinct photos
(greedy, ``--max-tokens`` new tokens), each measured for S seconds; the model's own call counter
confirms one generate call per batch of 8.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from benchmarks.timing import throughput
from models.registry import VisionLanguageModelSpec, load_vision_language
from models.vision_language import VisionLanguageModel, run_batch
from tools.demo_data import source_photo

PHOTOS = ("chelsea", "coffee", "rocket", "astronaut", "flower", "china", "horse", "camera")
SUBJECTS = {  # words a right caption of the photo contains (any one)
    "chelsea": ("cat", "kitten", "tabby"),
    "coffee": ("coffee", "cup", "mug", "espresso", "latte", "cappuccino"),
    "rocket": ("rocket", "shuttle", "launch", "missile"),
    "astronaut": ("astronaut", "woman", "flag", "suit", "nasa", "space"),
    "flower": ("flower", "dahlia", "petal", "bloom", "daisy"),
    "china": ("temple", "pagoda", "building", "palace", "roof", "tree", "china", "chinese"),
    "horse": ("horse", "silhouette", "pony", "animal"),
    "camera": ("camera", "man", "photographer", "tripod", "person"),
}
PROMPT = "a photography of"
QUESTIONS = [  # (photo, question, accepted answers)
    ("chelsea", "what animal is this?", {"cat", "kitten", "tabby cat"}),
    ("chelsea", "what color are the cat's eyes?", {"green", "yellow", "brown"}),
    ("coffee", "what is in the cup?", {"coffee", "espresso", "latte", "cappuccino"}),
    ("coffee", "is there a spoon?", {"yes"}),
    ("rocket", "what is this?", {"rocket", "space shuttle", "shuttle", "launch pad"}),
    ("astronaut", "is this a man or a woman?", {"woman", "female"}),
    ("astronaut", "what is she wearing?", {"suit", "space suit", "uniform", "jumpsuit", "orange"}),
    ("flower", "what color is the flower?", {"pink", "red", "purple", "magenta"}),
    ("china", "is there a building?", {"yes"}),
    ("horse", "what animal is this?", {"horse", "pony"}),
    ("camera", "what is the man holding?", {"camera"}),
    ("camera", "is it a color photo?", {"no"}),
]
ARCHITECTURES = {
    "BlipForConditionalGeneration": ("caption", "blip"),
    "BlipForQuestionAnswering": ("vqa", "blip"),
    "ViltForQuestionAnswering": ("vqa", "vilt"),
    "GitForCausalLM": ("caption", "git"),
}


def spec_for(path: str, *, max_tokens: int, num_beams: int) -> VisionLanguageModelSpec:
    from transformers import AutoConfig

    architectures = AutoConfig.from_pretrained(path).architectures or []
    found = [ARCHITECTURES[a] for a in architectures if a in ARCHITECTURES]
    if not found:
        raise SystemExit(f"{path}: architectures {architectures} are none of {', '.join(ARCHITECTURES)}")
    task, engine = found[0]
    return VisionLanguageModelSpec(
        id=Path(path).name or path,
        task=task,
        engine=engine,
        path=path,
        max_tokens=max_tokens,
        num_beams=1 if engine == "vilt" else num_beams,
    )


def caption_report(model: VisionLanguageModel) -> dict:
    images = [source_photo(name) for name in PHOTOS]
    settings = model.settings()
    plain = run_batch(model, [(image, None) for image in images], settings)
    prompted = run_batch(model, [(image, PROMPT) for image in images], settings)
    rows = []
    for name, a, b in zip(PHOTOS, plain, prompted):
        hit = any(word in f"{a.text} {b.text}".lower().split() for word in SUBJECTS[name])
        rows.append(
            {"photo": name, "caption": a.text, "tokens": a.tokens, "prompted": b.text, "names_subject": hit}
        )
    return {"captions": rows, "subject_named": sum(r["names_subject"] for r in rows) / len(rows)}


def vqa_report(model: VisionLanguageModel) -> dict:
    items = [(source_photo(photo), question) for photo, question, _ in QUESTIONS]
    outs = run_batch(model, items, model.settings())
    rows = []
    for (photo, question, accepted), out in zip(QUESTIONS, outs):
        row = {
            "photo": photo,
            "question": question,
            "answer": out.text,
            "correct": out.text.lower() in accepted,
        }
        if out.answers:
            row["top"] = [[a.answer, a.probability] for a in out.answers]
        rows.append(row)
    return {"answers": rows, "accuracy": sum(r["correct"] for r in rows) / len(rows)}


def speed(model: VisionLanguageModel, *, seconds: float, max_tokens: int) -> dict:
    """Items per second at batch 1 (photo after photo) and batch 8 (all eight photos at once)."""
    text = None if model.task == "caption" else "what is in the picture?"
    inputs = [model.preprocess(source_photo(name), text) for name in PHOTOS]
    settings = model.settings(max_tokens=max_tokens, num_beams=1)
    turn = itertools.count()

    def one() -> None:
        model.generate([inputs[next(turn) % len(inputs)]], settings)

    out = {}
    for size, fn in ((1, one), (8, lambda: model.generate(inputs, settings))):
        calls, items = model.stats.calls, model.stats.items
        rate, ms = throughput(fn, size, seconds)
        ran_calls, ran_items = model.stats.calls - calls, model.stats.items - items
        assert ran_items == ran_calls * size, "every batch must be one generate call over all its items"
        out[f"batch_{size}"] = {
            "items_per_s": round(rate, 2),
            "ms_per_call": round(ms, 1),
            "calls": ran_calls,
        }
    out["tokens_per_item"] = float(np.mean([o.tokens for o in model.generate(inputs, settings)]))
    out["torch_threads"] = torch.get_num_threads()
    return out


def tiny_dirs(root: Path) -> list[str]:
    from tests import checkpoints

    builders = {
        "tiny-blip-caption": lambda p: checkpoints.blip_checkpoint(p, "caption"),
        "tiny-blip-vqa": lambda p: checkpoints.blip_checkpoint(p, "vqa"),
        "tiny-vilt-vqa": checkpoints.vilt_checkpoint,
        "tiny-git-caption": checkpoints.git_checkpoint,
    }
    for name, build in builders.items():
        build(root / name)
    return [str(root / name) for name in builders]


def report(path: str, args) -> dict:
    spec = spec_for(path, max_tokens=args.max_tokens, num_beams=args.num_beams)
    model = load_vision_language(spec, device=args.device)
    out = {
        "model": spec.id,
        "path": path,
        "task": spec.task,
        "engine": spec.engine,
        "settings": vars(model.defaults),
    }
    out.update(caption_report(model) if spec.task == "caption" else vqa_report(model))
    if args.speed:
        out["speed"] = speed(model, seconds=args.speed, max_tokens=args.speed_tokens)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dirs", nargs="*", metavar="MODEL_DIR")
    parser.add_argument(
        "--tiny", action="store_true", help="also run the test suite's tiny random checkpoints"
    )
    parser.add_argument("--max-tokens", type=int, default=30)
    parser.add_argument("--num-beams", type=int, default=3)
    parser.add_argument("--speed", type=float, default=0.0, help="seconds per speed measurement (0: none)")
    parser.add_argument("--speed-tokens", type=int, default=20, help="new tokens per caption when timing")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        dirs = list(args.model_dirs) + (tiny_dirs(Path(tmp)) if args.tiny else [])
        if not dirs:
            parser.error("give MODEL_DIR(s) or --tiny")
        results = [report(path, args) for path in dirs]
    text = json.dumps(
        {"results": results, "numpy": np.__version__, "torch": torch.__version__},
        indent=1,
        ensure_ascii=False,
    )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
