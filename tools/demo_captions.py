"""A small image-caption set for contrastive fine-tuning and retrieval checks, from bundled photos.

``python -m tools.demo_captions OUT_DIR [--seed 0] [--views 8]`` writes::

    OUT_DIR/captions.jsonl   one JSON row per (image, caption) pair (image paths relative to the manifest)
    OUT_DIR/images/*.jpg     OUT_DIR/captions_about.json

Row: ``{"image", "caption", "split", "photo", "label"}``. ``split`` is one of:

- ``train``: augmented views of the training photos, each paired with every one of their first
  four captions;
- ``val``: the *validation* photos (``VAL_PHOTOS``), which no train row shows, each once uncropped
  and paired with all of its five captions: held out by photo, so it measures what a new photo
  gets, and it is what ``tools.finetune`` keeps the best epoch and decides promotion on;
- ``test``: the *held-apart* photos (``TEST_PHOTOS``), which no train or val row shows, each once
  uncropped and paired with all of its five captions, reported only.

Captions are written as sentences about the scene, not class names; ``label`` is a short name of
what the photo shows (for zero-shot checks), never a training target. Photos come from
scikit-image's bundled files and scikit-learn's sample images, nothing is downloaded.
Deterministic: the same seed and views give byte-identical files.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from models.errors import InvalidInput
from tools.demo_data import make_image

CAPTIONS_FILE = "captions.jsonl"
# photo -> (label, five captions). Photos are loaded by ``caption_photo``.
PHOTOS: dict[str, tuple[str, list[str]]] = {
    "astronaut": (
        "astronaut",
        [
            "A smiling astronaut in an orange flight suit poses in front of the flag.",
            "Portrait of a woman astronaut holding her helmet.",
            "The space shuttle commander smiles for her official portrait.",
            "An astronaut wearing a pressure suit with mission patches on it.",
            "A NASA pilot in her launch suit with the stars and stripes behind her.",
        ],
    ),
    "brick": (
        "brick wall",
        [
            "A grey wall built from rows of rectangular bricks.",
            "Close-up of old brickwork with mortar between the blocks.",
            "The bricks are laid in a regular staggered pattern.",
            "A weathered masonry wall seen straight on.",
            "Rough bricks stacked in even courses make up this wall.",
        ],
    ),
    "camera": (
        "cameraman",
        [
            "A man in a dark coat looks through an old camera on a tripod.",
            "A photographer stands in a field behind his film camera.",
            "Black and white picture of a cameraman at work outdoors.",
            "Someone adjusts a camera mounted on a tall tripod in the park.",
            "A man filming on a grassy field with buildings far behind him.",
        ],
    ),
    "chelsea": (
        "cat",
        [
            "A tabby cat stares straight at the camera.",
            "Close-up of a striped kitten with long white whiskers.",
            "The ginger and grey cat sits still and looks curious.",
            "A domestic cat with green eyes and a striped coat.",
            "My pet cat resting on the floor and watching me.",
        ],
    ),
    "coffee": (
        "coffee",
        [
            "A cup of espresso on a white saucer with a spoon.",
            "Fresh coffee with a light crema served on a red table.",
            "A small coffee cup seen from above next to a teaspoon.",
            "Morning espresso in a porcelain cup.",
            "A hot drink in a white cup on a matching plate.",
        ],
    ),
    "coins": (
        "coins",
        [
            "Rows of old metal coins laid out on a dark background.",
            "A collection of antique coins in neat lines.",
            "Many small round coins photographed in black and white.",
            "Historic currency arranged in a grid for a museum catalogue.",
            "Worn silver coins with faces and letters stamped on them.",
        ],
    ),
    "grass": (
        "grass",
        [
            "A dense patch of grass blades seen from above.",
            "Thin green leaves of a lawn crossing each other.",
            "Texture of long grass growing in a meadow.",
            "Close-up of the turf in a garden.",
            "Blades of grass filling the whole picture.",
        ],
    ),
    "gravel": (
        "gravel",
        [
            "Small stones and pebbles covering the ground.",
            "A gravel path made of loose grey rocks.",
            "Close-up of crushed stone of many sizes.",
            "Pebbles scattered over a driveway.",
            "Texture of rough gravel in black and white.",
        ],
    ),
    "horse": (
        "horse",
        [
            "The black silhouette of a horse standing on a white background.",
            "A horse shown in profile as a dark shape.",
            "Outline of a pony with its four legs and tail.",
            "A stallion drawn as a solid black shadow.",
            "Side view of a horse cut out in black.",
        ],
    ),
    "hubble_deep_field": (
        "galaxies",
        [
            "Countless distant galaxies scattered across the dark sky.",
            "A deep space telescope image full of faint galaxies.",
            "Spiral and elliptical galaxies glowing against black space.",
            "The universe seen through the Hubble telescope.",
            "Tiny colourful smudges of light from far away galaxies.",
        ],
    ),
    "moon": (
        "moon",
        [
            "Craters on the surface of the moon.",
            "The grey lunar landscape seen from orbit.",
            "A close view of the cratered moon surface.",
            "Rocky plains and impact craters on the moon.",
            "Black and white photograph of the lunar surface.",
        ],
    ),
    "rocket": (
        "rocket",
        [
            "A rocket stands on the launch pad before lift-off.",
            "The space launch vehicle waits beside its service tower.",
            "A tall rocket ready for launch under a blue sky.",
            "Launch day at the space centre with the rocket on the pad.",
            "A white rocket with boosters on its launch platform.",
        ],
    ),
    "china": (
        "temple",
        [
            "The temple stands on the hill above the river.",
            "An old Chinese pagoda among green trees.",
            "A traditional temple with a curved tiled roof on a hillside.",
            "Ancient palace buildings surrounded by a forest.",
            "A historic shrine overlooking the valley on a sunny day.",
        ],
    ),
    "flower": (
        "flower",
        [
            "A pink dahlia blooming in the garden.",
            "Close-up of a flower with many petals.",
            "A bright blossom with a yellow centre.",
            "Petals of a dahlia opening in the sun.",
            "A single flower in full bloom among green leaves.",
        ],
    ),
    "motorcycle": (
        "motorcycle",
        [
            "A motorcycle parked in a workshop.",
            "A motorbike standing in a garage full of tools.",
            "A shiny motorbike with a fuel tank and handlebars.",
            "Somebody's motorcycle stored indoors.",
            "A parked bike with a leather seat inside a shed.",
        ],
    ),
    "clock": (
        "clock",
        [
            "A round wall clock with hands and numbers.",
            "An old clock face showing the time.",
            "A clock with a white dial photographed in black and white.",
            "The hands of a clock point to the hour.",
            "A simple analogue clock seen close up.",
        ],
    ),
    "ihc": (
        "microscope stain",
        [
            "Tissue under a microscope stained brown and blue.",
            "A microscope slide of stained cells.",
            "Immunohistochemistry sample with brown dots on a blue background.",
            "A magnified biological tissue sample with coloured stains.",
            "Cells seen through a microscope after staining.",
        ],
    ),
    "page": (
        "page of text",
        [
            "A printed page of text in an old book.",
            "Lines of writing on a sheet of paper.",
            "A scanned page covered with printed words.",
            "Black letters on a white page in paragraphs.",
            "A document with several lines of text.",
        ],
    ),
}
VAL_PHOTOS = ("brick", "coins", "flower", "clock")  # held out by photo for validation
TEST_PHOTOS = (
    "china",
    "coffee",
    "moon",
    "motorcycle",
    "gravel",
)  # held apart: no train or val row shows them


def caption_photo(name: str) -> np.ndarray:
    """An RGB uint8 photo for ``PHOTOS`` (bundled with scikit-image or scikit-learn)."""
    from tools.demo_data import source_photo

    if name in ("motorcycle", "clock", "ihc"):
        from skimage import data

        pixels = {
            "motorcycle": lambda: data.stereo_motorcycle()[0],
            "clock": data.clock,
            "ihc": data.immunohistochemistry,
        }[name]()
        if pixels.ndim == 2:
            pixels = np.stack([pixels] * 3, axis=-1)
        return np.ascontiguousarray(pixels[..., :3], dtype=np.uint8)
    return source_photo(name)


def _jpeg(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def photo_rows(out_dir: Path, name: str, *, seed: int, views: int) -> list[dict]:
    """The rows of one photo: its training views, or its one val or test view with every caption."""
    label, captions = PHOTOS[name]
    base = {"photo": name, "label": label}
    held = "test" if name in TEST_PHOTOS else "val" if name in VAL_PHOTOS else None
    if held:
        path = _write(out_dir, f"images/{name}-{held}.jpg", _jpeg(caption_photo(name)))
        return [{**base, "image": path, "caption": c, "split": held} for c in captions]
    rng = np.random.default_rng([seed, list(PHOTOS).index(name)])
    rows = []
    for view in range(views):
        path = _write(
            out_dir,
            f"images/{name}-{view}.jpg",
            make_image(rng, name, hard=False, pixels=caption_photo(name)),
        )
        rows += [{**base, "image": path, "caption": c, "split": "train"} for c in captions[:4]]
    return rows


def _write(out_dir: Path, relative: str, data: bytes) -> str:
    (out_dir / relative).write_bytes(data)
    return relative


def build(out_dir: Path, *, seed: int = 0, views: int = 8) -> Path:
    """Write the caption set into ``out_dir`` and return the manifest path."""
    if views < 1:
        raise InvalidInput("views must be at least 1", param="views")
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    rows = [row for name in PHOTOS for row in photo_rows(out_dir, name, seed=seed, views=views)]
    manifest = out_dir / CAPTIONS_FILE
    manifest.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows), encoding="utf-8")
    counts = {s: sum(r["split"] == s for r in rows) for s in ("train", "val", "test")}
    about = {
        "name": "mmserve demo caption set",
        "seed": seed,
        "views": views,
        "photos": len(PHOTOS),
        "val_photos": list(VAL_PHOTOS),
        "test_photos": list(TEST_PHOTOS),
        "rows_per_split": counts,
        "built_by": f"python -m tools.demo_captions OUT_DIR --seed {seed} --views {views}",
        "caveats": [
            "18 photos, 5 captions each: tiny; 9 train, 4 val and 5 test photos, so val and test R@1 are "
            "coarse (chance 0.25 and 0.2) and 9 photos can teach the heads little beyond those photos",
        ],
    }
    (out_dir / "captions_about.json").write_text(json.dumps(about, indent=2) + "\n", encoding="utf-8")
    return manifest


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.demo_captions", description=__doc__.splitlines()[0]
    )
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--views", type=int, default=8, help="augmented views per training photo (%(default)s)"
    )
    args = parser.parse_args(argv)
    manifest = build(args.out_dir, seed=args.seed, views=args.views)
    print(f"{manifest}: {sum(1 for _ in manifest.open())} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
