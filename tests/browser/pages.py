"""Helpers of the browser tests: screenshots at two sizes and in-memory uploads."""

from __future__ import annotations

from pathlib import Path

ARTIFACTS = Path(__file__).parent / "artifacts"
DESKTOP, PHONE = {"width": 1280, "height": 800}, {"width": 390, "height": 844}
TIMEOUT_MS = 120_000  # model calls on a busy 2-core machine (Whisper on CPU) can take a while


def shoot(page, name: str, *, full_page: bool = True) -> list[Path]:
    """Screenshots of ``page`` as it is now (the whole page, or what the window shows), at desktop and
    phone sizes."""
    ARTIFACTS.mkdir(exist_ok=True)
    paths = []
    for size in (DESKTOP, PHONE):
        page.set_viewport_size(size)
        page.wait_for_timeout(150)  # let the layout settle
        path = ARTIFACTS / f"{name}-{size['width']}x{size['height']}.png"
        page.screenshot(path=str(path), full_page=full_page)
        paths.append(path)
    page.set_viewport_size(DESKTOP)
    return paths


def upload(name: str, data: bytes, mime: str) -> dict:
    """A file for ``set_input_files``, made in memory."""
    return {"name": name, "mimeType": mime, "buffer": data}
