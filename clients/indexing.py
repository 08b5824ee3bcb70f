"""Bulk indexing of an image folder (``mmserve index add NAME DIR [--caption]``).

Streams the folder in batches: each batch's content hashes are looked up first and only new
images are uploaded, so an interrupted run resumes where it stopped and re-running is free. A batch
the server refuses is retried image by image, so one bad file costs only itself. Each new image's
metadata keeps its file name and, unless turned off, a 128-pixel JPEG thumbnail (which hits return,
so the playground can show them); with ``caption``, also its generated caption (``/v1/captions``).
"""

from __future__ import annotations

import base64
import io
import sys
from dataclasses import dataclass, field
from pathlib import Path

from api import schemas as s
from clients.client import Client, MMServeError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


@dataclass
class IndexReport:
    added: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _hashed(path: Path) -> tuple[Path, bytes, str]:
    raw = path.read_bytes()
    return path, raw, s.content_id(raw)


def thumbnail(raw: bytes, *, size: int = 128) -> str | None:
    """A JPEG data URL of the image scaled to fit ``size`` x ``size`` pixels, as small as the server's
    limit for it needs; None when Pillow cannot read the image (the server then says why it cannot either)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(raw)) as image:
            image.thumbnail((size, size))  # decodes a JPEG at a reduced scale: never the full image
            small = ImageOps.exif_transpose(image).convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return None
    for quality in (75, 55, 35):
        buf = io.BytesIO()
        small.save(buf, format="JPEG", quality=quality, optimize=True)
        url = "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
        if len(url) <= s.MAX_THUMBNAIL_CHARS:
            return url
    return None


def _metadata(
    client: Client,
    batch: list[tuple[Path, bytes, str]],
    folder: Path,
    caption: str | None,
    thumbnails: bool = True,
) -> list[dict]:
    """Each image's file name, its thumbnail (unless ``thumbnails`` is off) and its generated caption when
    ``caption`` names a model ("" = the default)."""
    meta = [{"file": str(path.relative_to(folder))} for path, _, _ in batch]
    if thumbnails:
        for row, (_, raw, _) in zip(meta, batch):
            small = thumbnail(raw)
            if small is not None:
                row[s.THUMBNAIL_KEY] = small
    if caption is not None:
        captions = client.captions([raw for _, raw, _ in batch], model=caption or None).data
        for row, generated in zip(meta, captions):
            row["caption"] = generated.caption
    return meta


def _upload(
    client: Client,
    name: str,
    batch: list[tuple[Path, bytes, str]],
    folder: Path,
    report: IndexReport,
    caption: str | None = None,
    thumbnails: bool = True,
):
    files = [raw for _, raw, _ in batch]
    try:
        result = client.add_images(
            name, files, metadata=_metadata(client, batch, folder, caption, thumbnails)
        )
        report.added += result.added
        report.skipped += result.already_present
    except MMServeError as exc:
        if len(batch) == 1:
            report.failed.append((str(batch[0][0]), exc.message))
            return
        for one in batch:
            _upload(client, name, [one], folder, report, caption, thumbnails)


def index_folder(
    client: Client,
    name: str,
    folder: Path,
    *,
    batch_size: int = 16,
    progress: bool = True,
    caption: str | None = None,
    thumbnails: bool = True,
) -> IndexReport:
    """Add every image under ``folder`` to index ``name`` (created if missing); ``caption``: a captioning
    model id ("" for the server's default) whose caption each image's metadata keeps; ``thumbnails``: keep
    a 128-pixel thumbnail of each image in its metadata."""
    from tqdm import tqdm

    files, report = image_files(folder), IndexReport()
    client.create_index(name)
    with tqdm(
        total=len(files), desc=f"index {name}", unit="img", disable=not progress, file=sys.stderr
    ) as bar:
        for paths in (files[i : i + batch_size] for i in range(0, len(files), batch_size)):
            batch = [_hashed(p) for p in paths]
            present = set(client.lookup(name, [h for _, _, h in batch]).present)
            report.skipped += len(present)
            todo = [b for b in batch if b[2] not in present]
            if todo:
                _upload(client, name, todo, folder, report, caption, thumbnails)
            bar.update(len(paths))
            bar.set_postfix(added=report.added, skipped=report.skipped, failed=len(report.failed))
    return report
