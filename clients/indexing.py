"""Bulk indexing of an image folder (``mmserve index add NAME DIR [--caption]``).

Streams the folder in batches: each batch's content hashes are looked up first and only new
images are uploaded, so an interrupted run resumes where it stopped and re-running is free. A batch
the server refuses is retried image by image, so one bad file costs only itself. With ``caption``,
each new image's generated caption (``/v1/captions``) is stored in its metadata, so hits return it.
"""
from __future__ import annotations

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


def _metadata(client: Client, batch: list[tuple[Path, bytes, str]], folder: Path, caption: str | None) -> list[dict]:
    """Each image's file name, and its generated caption when ``caption`` names a model ("" = the default)."""
    meta = [{"file": str(path.relative_to(folder))} for path, _, _ in batch]
    if caption is not None:
        captions = client.captions([raw for _, raw, _ in batch], model=caption or None).data
        for row, generated in zip(meta, captions):
            row["caption"] = generated.caption
    return meta


def _upload(client: Client, name: str, batch: list[tuple[Path, bytes, str]], folder: Path, report: IndexReport,
            caption: str | None = None):
    files = [raw for _, raw, _ in batch]
    try:
        result = client.add_images(name, files, metadata=_metadata(client, batch, folder, caption))
        report.added += result.added
        report.skipped += result.already_present
    except MMServeError as exc:
        if len(batch) == 1:
            report.failed.append((str(batch[0][0]), exc.message))
            return
        for one in batch:
            _upload(client, name, [one], folder, report, caption)


def index_folder(client: Client, name: str, folder: Path, *, batch_size: int = 16, progress: bool = True,
                 caption: str | None = None) -> IndexReport:
    """Add every image under ``folder`` to index ``name`` (created if missing); ``caption``: a captioning
    model id ("" for the server's default) whose caption each image's metadata keeps."""
    from tqdm import tqdm

    files, report = image_files(folder), IndexReport()
    client.create_index(name)
    with tqdm(total=len(files), desc=f"index {name}", unit="img", disable=not progress, file=sys.stderr) as bar:
        for paths in (files[i:i + batch_size] for i in range(0, len(files), batch_size)):
            batch = [_hashed(p) for p in paths]
            present = set(client.lookup(name, [h for _, _, h in batch]).present)
            report.skipped += len(present)
            todo = [b for b in batch if b[2] not in present]
            if todo:
                _upload(client, name, todo, folder, report, caption)
            bar.update(len(paths))
            bar.set_postfix(added=report.added, skipped=report.skipped, failed=len(report.failed))
    return report
