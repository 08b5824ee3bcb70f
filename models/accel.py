"""Compiled CPU runtimes for the encoders: ONNX Runtime and OpenVINO, run from an ONNX export of
the torch module made at load time and cached under the user's cache directory (never committed).

- ``fp32``: both runtimes.
- ``bf16``: OpenVINO only, and only where the CPU computes bf16 natively (AVX-512 BF16, AMX);
  ``auto`` picks it there and ``fp32`` elsewhere.
- ``int8``: post-training quantisation of the export: static (QDQ, activations calibrated on
  ``calibration`` inputs) or dynamic (weights only; activations scaled per call), run by either
  runtime (OpenVINO executes the QDQ graph with its int8 kernels).

The accuracy gates (cosine >= 0.99 against fp32 torch, the same top-1) are the quality tests of
``tests/quality/test_runtime_gates.py``; the speeds are ``benchmarks/runtime_compare.py``'s.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch

Runtime = Literal["torch", "onnxruntime", "openvino"]
Quantisation = Literal["static", "dynamic"]
OPSET = 17


def cache_dir() -> Path:
    """Where exports live: ``$MMSERVE_CACHE_DIR/compiled`` (default ``~/.cache/mmserve/compiled``)."""
    return Path(os.environ.get("MMSERVE_CACHE_DIR", "~/.cache/mmserve")).expanduser() / "compiled"


def fingerprint(*paths: Path, extra: str = "") -> str:
    """Identity of the weights (names, sizes, mtimes of the files), the exporter and ``extra``."""
    digest = hashlib.sha1(f"{torch.__version__}:{OPSET}:{extra}".encode())
    for path in paths:
        files = (
            sorted(p for p in Path(path).rglob("*") if p.is_file()) if Path(path).is_dir() else [Path(path)]
        )
        for f in files:
            stat = f.stat()
            digest.update(f"{f.name}:{stat.st_size}:{int(stat.st_mtime)}".encode())
    return digest.hexdigest()[:12]


def _publish(target: Path, write: Callable[[Path], None]) -> Path:
    """Write ``target`` once: into a private temp file, renamed into place (replicas may race)."""
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}-", suffix=".onnx", dir=target.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def export_onnx(
    module: torch.nn.Module,
    example: tuple[torch.Tensor, ...],
    *,
    names: Sequence[str],
    dynamic_axes: dict[str, dict[int, str]],
    key: str,
) -> Path:
    """``module`` as ONNX at ``cache_dir()/<key>.onnx`` (exported once; later loads reuse it). The
    external-data form is avoided: every weight is inside the one file."""

    def write(path: Path) -> None:
        with torch.inference_mode(False), torch.no_grad():
            torch.onnx.export(
                module.eval(),
                example,
                str(path),
                input_names=list(names[:-1]),
                output_names=[names[-1]],
                dynamic_axes=dynamic_axes,
                opset_version=OPSET,
                dynamo=False,
            )

    return _publish(cache_dir() / f"{key}.onnx", write)


def quantize_int8(
    fp32: Path, *, mode: Quantisation, calibration: Iterable[dict[str, np.ndarray]] = ()
) -> Path:
    """An int8 copy of the ``fp32`` export beside it: ``static`` calibrates activation ranges on
    ``calibration`` (input dicts, one per batch); ``dynamic`` quantises weights only."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self, batches: list[dict[str, np.ndarray]]) -> None:
            self.batches = iter(batches)

        def get_next(self):
            return next(self.batches, None)

    batches = list(calibration)

    def write(path: Path) -> None:
        if mode == "dynamic":
            quantize_dynamic(str(fp32), str(path), weight_type=QuantType.QInt8)
            return
        prepared = path.with_suffix(".pre.onnx")
        try:
            quant_pre_process(str(fp32), str(prepared))
            quantize_static(
                str(prepared),
                str(path),
                Reader(batches),
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                per_channel=True,
            )
        finally:
            prepared.unlink(missing_ok=True)

    return _publish(fp32.with_name(f"{fp32.stem}-int8-{mode}.onnx"), write)


def openvino_bf16_supported() -> bool:
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def resolve_precision(runtime: Runtime, precision: str) -> str:
    """``auto`` -> bf16 on OpenVINO where the CPU has it, else fp32; a precision the runtime cannot
    run is an error, not a silent fallback."""
    if precision == "auto":
        return "bf16" if runtime == "openvino" and openvino_bf16_supported() else "fp32"
    if precision == "fp16":
        raise ValueError(f"{runtime} on CPU runs fp32, bf16 (OpenVINO) or int8, not fp16")
    if precision == "bf16" and runtime == "onnxruntime":
        raise ValueError("onnxruntime has no bf16 CPU kernels: use runtime openvino for bf16")
    if precision == "bf16" and not openvino_bf16_supported():
        raise ValueError("this CPU has no native bf16 (AVX-512 BF16 or AMX): use precision fp32 or auto")
    return precision


class CompiledNet:
    """One compiled network: called with numpy inputs by name, returns its one output as float32
    numpy. Safe to call from several threads (OpenVINO: one infer request per thread)."""

    def __init__(
        self, runtime: Runtime, precision: str, run: Callable[[dict[str, np.ndarray]], np.ndarray]
    ) -> None:
        self.runtime, self.precision, self._run = runtime, precision, run

    def __call__(self, **inputs: np.ndarray) -> np.ndarray:
        return np.asarray(self._run(inputs), dtype=np.float32)


def compile_onnx(path: Path, *, runtime: Runtime, precision: str, threads: int) -> CompiledNet:
    """Load the ONNX file at ``path`` into ``runtime`` with ``threads`` intra-op threads."""
    if runtime == "onnxruntime":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return CompiledNet(runtime, precision, lambda inputs: session.run(None, inputs)[0])
    if runtime == "openvino":
        import openvino as ov

        compiled = ov.Core().compile_model(
            str(path),
            "CPU",
            {
                "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
                "INFERENCE_NUM_THREADS": threads,
                "PERFORMANCE_HINT": "LATENCY",
                "ENABLE_CPU_PINNING": False,
            },
        )
        local = threading.local()

        def run(inputs: dict[str, np.ndarray]) -> np.ndarray:
            if not hasattr(local, "request"):
                local.request = compiled.create_infer_request()
            return local.request.infer(inputs)[0].copy()

        return CompiledNet(runtime, precision, run)
    raise ValueError(f"unknown compiled runtime '{runtime}'")
