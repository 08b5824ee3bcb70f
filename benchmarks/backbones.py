"""The packaged vision backbones under ConSE, measured: EfficientNet-Lite0, -Lite1 and -Lite2.

``python -m benchmarks.quality --backbones [--seconds 5] [--threads 1 2] [--json OUT]``

Quality (fp32 torch, the reference every runtime is gated against), each on the photos as they are
and on seven transformed versions (``TRANSFORMS``: two crops, two rotations, blur, greyscale, JPEG
quality 30):

- ImageNet top-1 of the labelled photos (``LABELLED``: 7 photos, each with the ImageNet classes of
  what it shows, several where several are right, as ImageNet-ReaL labels them; written from the
  photos, not from any model's answer);
- zero-shot top-1 over the 18 demo caption photos (``tools.demo_captions``): the photo's label among
  the 18 labels, as prompts "a photo of a <label>" in MiniLM's space;
- text-to-image R@1 of the 90 demo captions and of the 54 typed sentence queries
  (``benchmarks.quality_queries``) among the 18 photos, transformed as the column says;
- image-to-image R@1: each transformed photo finds its original among the 18 originals.

Speed: in-process images/s of the embedding (classifier forward + ConSE head) on the served runtime
(``config.args.SERVED_RUNTIME``: OpenVINO, precision auto) at batch 1 and 16, on distinct
preprocessed crops of the test photos (``benchmarks.inputs.distinct_photos``), per thread count
(the served replica has one: num_cpus 0.25 gives OMP_NUM_THREADS=1). ``runtime cosine`` is the
lowest cosine between the served runtime's and fp32 torch's embeddings of the 18 photos (the gate
the compiled runtimes pass is 0.99). 7 and 18 photos are few: one photo is 0.14 and 0.056 of a
top-1; read differences of one or two photos as noise.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image, ImageFilter

from benchmarks.inputs import distinct_photos
from benchmarks.quality_queries import SENTENCES
from benchmarks.timing import throughput
from config.args import SERVED_RUNTIME
from models import packaged
from models.adapter import retrieval_metrics
from models.media import decode_image
from models.registry import LITE_BACKBONES, TextModelSpec, VisionModelSpec, load_classifier, load_text
from models.vision import CLASS_PROMPT, ConSEEmbedder, ImageClassifier, class_name_embeddings
from tools import demo_captions

# photo -> the ImageNet-1k classes of what it shows (any of them counts as right)
LABELLED: dict[str, tuple[str, ...]] = {
    "chelsea": ("tabby", "tiger cat", "Egyptian cat"),
    "coffee": ("espresso", "cup"),
    "rocket": ("missile", "projectile", "space shuttle"),
    "camera": ("tripod", "reflex camera", "trench coat"),
    "china": ("palace", "monastery", "stupa"),
    "motorcycle": ("moped", "motor scooter"),  # ImageNet-1k has no motorcycle class
    "grace_hopper": ("military uniform", "Windsor tie"),  # matplotlib's sample photo
}


def labelled_photo(name: str) -> np.ndarray:
    if name == "grace_hopper":
        from matplotlib import cbook

        with cbook.get_sample_data("grace_hopper.jpg") as f:
            return np.asarray(Image.open(f).convert("RGB"))
    return demo_captions.caption_photo(name)


def _pil(fn: Callable[[Image.Image], Image.Image]) -> Callable[[np.ndarray], np.ndarray]:
    return lambda pixels: np.ascontiguousarray(np.asarray(fn(Image.fromarray(pixels)).convert("RGB")))


def _crop(img: Image.Image, left: float, top: float, side: float) -> Image.Image:
    w, h = img.size
    x, y = int(w * left), int(h * top)
    return img.crop((x, y, x + int(w * side), y + int(h * side)))


def _jpeg(img: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue()))


TRANSFORMS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "original": lambda pixels: pixels,
    "crop centre 60%": _pil(lambda i: _crop(i, 0.2, 0.2, 0.6)),
    "crop top-left 75%": _pil(lambda i: _crop(i, 0.0, 0.0, 0.75)),
    "rotate 15°": _pil(lambda i: i.rotate(15, resample=Image.BICUBIC)),
    "rotate 90°": _pil(lambda i: i.transpose(Image.ROTATE_90)),
    "blur (1% of side)": _pil(lambda i: i.filter(ImageFilter.GaussianBlur(min(i.size) / 100))),
    "greyscale": _pil(lambda i: i.convert("L")),
    "JPEG q30": _pil(lambda i: _jpeg(i, 30)),
}


def r_at_1(queries: np.ndarray, gallery: np.ndarray, truth: Sequence[int]) -> float:
    """The share of ``queries`` whose nearest ``gallery`` row is their ``truth`` (ties count against)."""
    return retrieval_metrics(gallery, queries, np.asarray(truth))["t2i_r1"]


def imagenet_top1(
    classifier: ImageClassifier, photos: Sequence[np.ndarray], accepted: Sequence[set[int]]
) -> float:
    probs = classifier.probs(torch.stack([classifier.preprocess(p) for p in photos]))
    return float(np.mean([int(i) in ok for i, ok in zip(probs.argmax(1), accepted, strict=True)]))


def embed(embedder: ConSEEmbedder, photos: Sequence[np.ndarray]) -> np.ndarray:
    return embedder.embed(torch.stack([embedder.preprocess(p) for p in photos]))


class Queries:
    """The text side, the same for every backbone: label prompts, captions, sentences (MiniLM)."""

    def __init__(self, text, photos: Sequence[str]):
        self.photos = list(photos)
        self.labels = text.embed([CLASS_PROMPT.format(demo_captions.PHOTOS[p][0]) for p in self.photos])
        self.captions = text.embed([c for p in self.photos for c in demo_captions.PHOTOS[p][1]])
        self.caption_truth = [i for i, p in enumerate(self.photos) for _ in demo_captions.PHOTOS[p][1]]
        self.sentences = text.embed([s for p in self.photos for s in SENTENCES[p]])
        self.sentence_truth = [i for i, p in enumerate(self.photos) for _ in SENTENCES[p]]


def quality(
    embedder: ConSEEmbedder, queries: Queries, labelled: dict[str, tuple[np.ndarray, set[int]]], photos
) -> dict[str, dict[str, float]]:
    """Per transform: ImageNet top-1, zero-shot top-1, caption and sentence R@1, image-to-image R@1."""
    originals = embed(embedder, photos)
    truth = list(range(len(photos)))
    rows = {}
    for name, transform in TRANSFORMS.items():
        gallery = embed(embedder, [transform(p) for p in photos])
        rows[name] = {
            "imagenet_top1": imagenet_top1(
                embedder.classifier,
                [transform(pixels) for pixels, _ in labelled.values()],
                [ok for _, ok in labelled.values()],
            ),
            "zero_shot_top1": r_at_1(gallery, queries.labels, truth),
            "captions_r1": r_at_1(queries.captions, gallery, queries.caption_truth),
            "sentences_r1": r_at_1(queries.sentences, gallery, queries.sentence_truth),
            "image_to_image_r1": r_at_1(gallery, originals, truth),
        }
    return {t: {k: round(v, 3) for k, v in row.items()} for t, row in rows.items()}


def summary(rows: dict[str, dict[str, float]]) -> dict[str, float]:
    """Each measure on the originals and its mean over the seven transformed versions."""
    out = {}
    for measure in rows["original"]:
        out[f"{measure} original"] = rows["original"][measure]
        out[f"{measure} transformed"] = round(
            statistics.mean(row[measure] for t, row in rows.items() if t != "original"), 3
        )
    return out


def speed(embedder: ConSEEmbedder, pool: list[torch.Tensor], batch: int, seconds: float) -> float:
    """images/s of ``embed`` over consecutive distinct images of ``pool``, ``batch`` at a time."""
    batches = [torch.stack(pool[i : i + batch]) for i in range(0, len(pool) - batch + 1, batch)]
    state = {"i": 0}

    def one() -> None:
        embedder.embed(batches[state["i"] % len(batches)])
        state["i"] += 1

    return throughput(one, batch, seconds, warmups=2)[0]


def served(name: str, classes: np.ndarray, space: str, top_t: int) -> ConSEEmbedder:
    spec = VisionModelSpec(classifier=name, conse_top_t=top_t, **SERVED_RUNTIME)
    return ConSEEmbedder(classifier=load_classifier(spec), class_embeddings=classes, space=space, top_t=top_t)


def measure(name: str, args, queries: Queries, labelled, photos, classes: np.ndarray, space: str) -> dict:
    top_t = VisionModelSpec().conse_top_t
    torch.set_num_threads(max(args.threads))
    spec = VisionModelSpec(classifier=name, runtime="torch", precision="fp32")
    reference = ConSEEmbedder(
        classifier=load_classifier(spec), class_embeddings=classes, space=space, top_t=top_t
    )
    rows = quality(reference, queries, labelled, photos)
    result: dict = {"backbone": name, "input_px": reference.input_size.crop, "quality": rows}
    result["summary"] = summary(rows)
    jpegs = distinct_photos(args.images)
    result["speed"] = {}
    for threads in args.threads:
        torch.set_num_threads(threads)  # a compiled runtime takes its threads from torch's when it loads
        fast = served(name, classes, space, top_t)
        if threads == args.threads[0]:
            result["runtime_cosine_min"] = round(
                float((embed(fast, photos) * embed(reference, photos)).sum(1).min()), 4
            )
        pool = [fast.preprocess(decode_image(j)) for j in jpegs]
        for batch in args.batches:
            rate = speed(fast, pool, batch, args.seconds)
            result["speed"][f"threads {threads} batch {batch}"] = round(rate, 1)
            print(f"{name}  threads {threads}  batch {batch:2d}  {rate:7.1f} images/s", flush=True)
    return result


def table(results: list[dict]) -> list[str]:
    """The summary table (markdown) and one row per transform and backbone."""
    measures = list(results[0]["summary"])
    speeds = list(results[0]["speed"])
    lines = [
        "| backbone | px | "
        + " | ".join(m.replace("_", " ") for m in measures)
        + " | "
        + " | ".join(f"img/s {s}" for s in speeds)
        + " | runtime cosine |",
        "|---" * (3 + len(measures) + len(speeds)) + "|",
    ]
    for r in results:
        lines.append(
            f"| {r['backbone']} | {r['input_px']} | "
            + " | ".join(f"{r['summary'][m]:.3f}" for m in measures)
            + " | "
            + " | ".join(f"{r['speed'][s]:.1f}" for s in speeds)
            + f" | {r['runtime_cosine_min']:.4f} |"
        )
    columns = list(results[0]["quality"]["original"])
    lines += ["", "| backbone | version | " + " | ".join(c.replace("_", " ") for c in columns) + " |"]
    lines.append("|---" * (2 + len(columns)) + "|")
    for r in results:
        for transform, row in r["quality"].items():
            lines.append(
                f"| {r['backbone']} | {transform} | " + " | ".join(f"{row[c]:.3f}" for c in columns) + " |"
            )
    return lines


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(max(args.threads))
    photos_names = list(demo_captions.PHOTOS)
    text = load_text(TextModelSpec(runtime="torch", precision="fp32"))
    queries = Queries(text, photos_names)
    labels = packaged.imagenet_labels()
    index = {label: i for i, label in enumerate(labels)}
    labelled = {
        name: (labelled_photo(name), {index[c] for c in classes}) for name, classes in LABELLED.items()
    }
    photos = [demo_captions.caption_photo(p) for p in photos_names]
    classes = class_name_embeddings(text, labels)
    results = [
        measure(name, args, queries, labelled, photos, classes, text.space) for name in args.backbone_names
    ]
    lines = table(results)
    print("\n".join(lines))
    command = "python -m benchmarks.quality " + " ".join(sys.argv[1:])
    print(f"command: {command}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "command": command,
                    "threads_available": torch.get_num_threads(),
                    "served_runtime": SERVED_RUNTIME,
                    "labelled": LABELLED,
                    "transforms": list(TRANSFORMS),
                    "results": results,
                },
                indent=2,
            )
            + "\n"
        )
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("--backbones")
    group.add_argument(
        "--backbone-names", nargs="+", default=list(LITE_BACKBONES), choices=LITE_BACKBONES, metavar="NAME"
    )
    group.add_argument("--seconds", type=float, default=5.0, help="timing window per cell (%(default)s)")
    group.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts (%(default)s)")
    group.add_argument("--batches", type=int, nargs="+", default=[1, 16], help="batch sizes (%(default)s)")
    group.add_argument(
        "--images", type=int, default=96, help="distinct images in the timing pool (%(default)s)"
    )


if __name__ == "__main__":  # the entry point is benchmarks.quality, which holds the other quality modes
    sys.exit("run it as: python -m benchmarks.quality --backbones")
