"""Device and precision choices shared by the torch backends."""

from __future__ import annotations

import contextlib
import logging
from typing import Literal

import numpy as np
import torch

Precision = Literal["fp32", "bf16", "fp16", "auto"]
log = logging.getLogger(__name__)

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(want_gpu: bool) -> str:
    """CUDA when the caller was granted a GPU and CUDA really exists; CPU otherwise."""
    if want_gpu and torch.cuda.is_available():
        return "cuda"
    if want_gpu:
        log.warning("a GPU was requested but CUDA is not available: running on CPU")
    return "cpu"


def bf16_is_fast(device: str) -> bool:
    """bf16 pays off on CUDA GPUs that support it and on CPUs with native bf16 (AVX512-BF16, AMX)."""
    if device == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def effective_precision(precision: Precision, device: str) -> Precision:
    """Resolve ``auto`` (bf16 where it is fast, else fp16 on GPU / fp32 on CPU); fp16 has no fast
    CPU kernels, so it falls back to fp32 there rather than run slower."""
    if precision == "auto":
        return "bf16" if bf16_is_fast(device) else ("fp16" if device == "cuda" else "fp32")
    if precision == "fp16" and device == "cpu":
        log.warning("fp16 is not supported on CPU: using fp32")
        return "fp32"
    return precision


def autocast(precision: Precision, device: str) -> contextlib.AbstractContextManager:
    """Mixed-precision context for a forward pass (no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device, dtype=_DTYPES[precision])


def l2_normalize(x: torch.Tensor) -> np.ndarray:
    """Row-normalise and return float32 numpy (the wire format between deployments)."""
    return torch.nn.functional.normalize(x.float(), dim=-1).cpu().numpy()
