"""One line naming the CPU a test run is on, and the features that change code paths.

CI machines differ from run to run (AVX2 only, AVX-512, AVX-512 BF16, AMX), and the numeric gates
of the quality tests depend on which path the kernels took: ``make test`` prints this line first,
and pytest puts it in its header (``tests/conftest.py``), so a CI log says which machine it ran on.

    python -m tests.cpu_line
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

# /proc/cpuinfo flag -> the name printed (the kernels these select: oneDNN, OpenVINO, CTranslate2)
FEATURES = {
    "avx2": "avx2",
    "avx512f": "avx512",
    "avx512_vnni": "avx512-vnni",
    "avx_vnni": "avx-vnni",
    "avx512_bf16": "avx512-bf16",
    "amx_tile": "amx",
    "amx_bf16": "amx-bf16",
    "amx_int8": "amx-int8",
}


def _cpuinfo() -> tuple[str, set[str]]:
    """(model name, flags) of the first processor in /proc/cpuinfo; ("", set()) off Linux."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor(), set()
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    name = fields.get("model name", platform.processor())
    if "cpu family" in fields:  # names can be as bare as "AMD EPYC": family and model say which generation
        name += f" (family {fields['cpu family']}, model {fields.get('model', '?')})"
    return name, set(fields.get("flags", "").split())


def native_bf16() -> dict[str, bool]:
    """What each runtime decides about bf16 on this CPU (the decisions ``precision: auto`` makes)."""
    from models import accel, runtime

    return {"torch": runtime.bf16_is_fast("cpu"), "openvino": accel.openvino_bf16_supported()}


def line() -> str:
    model, flags = _cpuinfo()
    present = [name for flag, name in FEATURES.items() if flag in flags] or [
        "none of " + ",".join(FEATURES.values())
    ]
    bf16 = ", ".join(f"{rt} {'yes' if ok else 'no'}" for rt, ok in native_bf16().items())
    return f"CPU: {model} | {os.cpu_count()} cores | {' '.join(present)} | native bf16: {bf16}"


if __name__ == "__main__":
    print(line(), flush=True)
