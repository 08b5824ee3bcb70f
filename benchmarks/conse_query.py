"""Query-side ConSE and prompt ensembles, measured on the demo caption set (real packaged weights, no Ray).

``python -m benchmarks.conse_query [--data DIR] [--json OUT]`` builds the caption set when DIR has
none (``tools.demo_captions``), then reports for each variant:

- zero-shot top-1 over the caption set's photo labels (18-way), on the 5 held-apart test photos
  and on all 18 photos uncropped;
- text-to-image R@1 for the sentence captions: on ``val`` (20 captions of the 4 validation photos;
  the settings are *chosen* here) and on ``test`` (25 captions of the 5 held-apart photos;
  *reported* only, never used to choose). The figures quoted in ``QueryConSESpec`` were measured
  on the earlier caption set, whose val was 13 crops of training photos.

Variants: the image side with the single class prompt or the prompt ensemble; the text side raw
(ConSE as shipped) or query-side ConSE over a small grid of top-T, softmax temperature and mix.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np

from models.media import decode_image
from models.registry import TextModelSpec, VisionModelSpec, load_classifier, load_text
from models.text import ConSEQueryEncoder, prompt_embeddings
from models.vision import CLASS_PROMPT, ENSEMBLE_PROMPTS, ConSEEmbedder, class_name_embeddings
from tools import demo_captions

GRID = {"top_t": (5, 10, 20), "temperature": (0.02, 0.05, 0.1), "mix": (0.0, 0.25, 0.5)}


def load_rows(data: Path) -> list[dict]:
    manifest = data / demo_captions.CAPTIONS_FILE
    if not manifest.is_file():
        demo_captions.build(data)
    return [json.loads(line) for line in manifest.read_text(encoding="utf-8").splitlines()]


def t2i_r1(text_vecs: np.ndarray, image_vecs: np.ndarray, truth: np.ndarray) -> float:
    """Share of captions whose own image ranks first among the split's images."""
    return float(np.mean((text_vecs @ image_vecs.T).argmax(1) == truth))


def split_arrays(rows: list[dict], split: str) -> tuple[list[str], list[str], np.ndarray]:
    """(distinct image paths, captions, index of each caption's image) for one split."""
    chosen = [r for r in rows if r["split"] == split]
    images = sorted({r["image"] for r in chosen})
    return images, [r["caption"] for r in chosen], np.array([images.index(r["image"]) for r in chosen])


class Bench:
    def __init__(self, data: Path):
        self.rows = load_rows(data)
        self.classifier = load_classifier(VisionModelSpec())
        self.text = load_text(TextModelSpec())
        self.photos = list(demo_captions.PHOTOS)
        self.labels = [demo_captions.PHOTOS[p][0] for p in self.photos]
        paths = sorted({r["image"] for r in self.rows})
        self.probs = dict(zip(paths, self._probs([decode_image((data / p).read_bytes()) for p in paths])))
        self.photo_probs = self._probs([demo_captions.caption_photo(p) for p in self.photos])
        self.class_embeddings = {
            "single": class_name_embeddings(self.text, self.classifier.labels),
            "ensemble": class_name_embeddings(self.text, self.classifier.labels, templates=ENSEMBLE_PROMPTS),
        }
        self.splits = {s: split_arrays(self.rows, s) for s in ("val", "test")}
        self.raw = {s: self.text.embed(caps) for s, (_, caps, _) in self.splits.items()}
        self.label_prompts = {
            "single": prompt_embeddings(self.text, self.labels, (CLASS_PROMPT,)),
            "ensemble": prompt_embeddings(self.text, self.labels, ENSEMBLE_PROMPTS),
        }

    def _probs(self, images: list[np.ndarray]) -> np.ndarray:
        batch = np.stack([self.classifier.preprocess(i).numpy() for i in images])
        import torch

        return self.classifier.probs(torch.from_numpy(batch))

    def measure(self, *, image_prompts: str, label_prompts: str, query: dict | None) -> dict:
        classes = self.class_embeddings[image_prompts]
        conse = ConSEEmbedder(classifier=self.classifier, class_embeddings=classes, space="bench")
        project = (
            ConSEQueryEncoder(base=self.text, class_embeddings=classes, **query).project
            if query
            else (lambda x: x)
        )
        out = {"image_prompts": image_prompts, "label_prompts": label_prompts, "query_conse": query}
        photo_vecs = conse.embed_from_probs(self.photo_probs)
        zero_shot = (photo_vecs @ project(self.label_prompts[label_prompts]).T).argmax(1) == np.arange(
            len(self.photos)
        )
        test_idx = [self.photos.index(p) for p in demo_captions.TEST_PHOTOS]
        out["zero_shot_top1_test_photos"] = float(zero_shot[test_idx].mean())
        out["zero_shot_top1_all_photos"] = float(zero_shot.mean())
        for split, (images, _, truth) in self.splits.items():
            image_vecs = conse.embed_from_probs(np.stack([self.probs[p] for p in images]))
            out[f"t2i_r1_{split}"] = t2i_r1(project(self.raw[split]), image_vecs, truth)
        return out


def run(data: Path) -> dict:
    bench = Bench(data)
    baseline = bench.measure(image_prompts="single", label_prompts="single", query=None)
    results = [
        bench.measure(image_prompts=img, label_prompts=lab, query=None)
        for img, lab in itertools.product(("single", "ensemble"), repeat=2)
    ]
    for image_prompts, values in itertools.product(("single", "ensemble"), itertools.product(*GRID.values())):
        query = dict(zip(GRID, values))
        results.append(bench.measure(image_prompts=image_prompts, label_prompts=image_prompts, query=query))
    # choose on val (then zero-shot over all photos), never on test
    best = max(results[4:], key=lambda r: (r["t2i_r1_val"], r["zero_shot_top1_all_photos"]))
    return {
        "baseline": baseline,
        "best_on_val": best,
        "all": results,
        "sizes": {s: {"images": len(a[0]), "captions": len(a[1])} for s, a in bench.splits.items()},
    }


def _row(r: dict) -> str:
    q = r["query_conse"]
    query = f"top{q['top_t']} T={q['temperature']} mix={q['mix']}" if q else "raw"
    return (
        f"{r['image_prompts']:>8} {r['label_prompts']:>8} {query:>24} | zs test "
        f"{r['zero_shot_top1_test_photos']:.2f}  zs all {r['zero_shot_top1_all_photos']:.2f} | "
        f"t2i R@1 val {r['t2i_r1_val']:.2f}  test {r['t2i_r1_test']:.2f}"
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.conse_query", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--data", type=Path, default=Path("/tmp/mmserve-demo-captions"))
    parser.add_argument("--json", type=Path, help="write every variant's figures here")
    args = parser.parse_args(argv)
    report = run(args.data)
    print(f"splits: {report['sizes']}")
    print("image-prompts label-prompts query | zero-shot top-1 | text-to-image R@1")
    for r in report["all"][:4]:
        print(_row(r))
    print("best query-side ConSE on val:")
    print(_row(report["best_on_val"]))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
