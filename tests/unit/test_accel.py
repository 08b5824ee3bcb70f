"""models.accel on a tiny network (no packaged weights): export once into the cache, both runtimes
give torch's answer, threads are safe, and the specs refuse what a runtime cannot run."""

import threading

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from models import accel
from models.registry import TextModelSpec, VisionModelSpec


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MMSERVE_CACHE_DIR", str(tmp_path))
    return tmp_path / "compiled"


def _tiny() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU6(), torch.nn.Flatten(), torch.nn.LazyLinear(5)
    )


def _export(module: torch.nn.Module) -> tuple:
    example = torch.randn(1, 3, 8, 8)
    module(example)  # materialise the lazy layer
    path = accel.export_onnx(
        module, (example,), names=("x", "y"), dynamic_axes={"x": {0: "b"}, "y": {0: "b"}}, key="tiny"
    )
    return path, module


def test_export_is_cached_and_reused(cache):
    path, _ = _export(_tiny())
    assert path.parent == cache and path.is_file()
    stamp = path.stat().st_mtime_ns
    again, _ = _export(_tiny())
    assert again == path and path.stat().st_mtime_ns == stamp
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]  # no temp file left behind


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_compiled_runtime_gives_torchs_answer(cache, runtime):
    path, module = _export(_tiny())
    net = accel.compile_onnx(path, runtime=runtime, precision="fp32", threads=1)
    x = torch.randn(3, 3, 8, 8)
    with torch.no_grad():
        expected = module(x).numpy()
    np.testing.assert_allclose(net(x=x.numpy()), expected, rtol=1e-4, atol=1e-5)


def test_openvino_is_safe_from_several_threads(cache):
    path, module = _export(_tiny())
    net = accel.compile_onnx(path, runtime="openvino", precision="fp32", threads=1)
    inputs = [torch.randn(2, 3, 8, 8) for _ in range(8)]
    results: dict[int, np.ndarray] = {}

    def work(i: int) -> None:
        for _ in range(20):
            results[i] = net(x=inputs[i].numpy())

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with torch.no_grad():
        for i, x in enumerate(inputs):
            np.testing.assert_allclose(results[i], module(x).numpy(), rtol=1e-4, atol=1e-5)


def test_fingerprint_follows_the_weights(tmp_path):
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"1234")
    first = accel.fingerprint(weights)
    weights.write_bytes(b"12345")
    assert accel.fingerprint(weights) != first


def test_precisions_a_runtime_cannot_run_are_refused():
    with pytest.raises(ValueError, match="no bf16"):
        accel.resolve_precision("onnxruntime", "bf16")
    with pytest.raises(ValueError, match="fp16"):
        accel.resolve_precision("openvino", "fp16")
    assert accel.resolve_precision("onnxruntime", "auto") == "fp32"
    assert accel.resolve_precision("openvino", "auto") == (
        "bf16" if accel.openvino_bf16_supported() else "fp32"
    )


def test_specs_refuse_int8_on_torch_and_compiled_clip():
    with pytest.raises(ValidationError, match="int8 needs runtime"):
        VisionModelSpec(runtime="torch", precision="int8")
    with pytest.raises(ValidationError, match="int8 needs runtime"):
        TextModelSpec(runtime="torch", precision="int8")
    with pytest.raises(ValidationError, match="runtime openvino"):
        TextModelSpec(kind="clip", path="openai/clip-vit-base-patch32", runtime="openvino")
    with pytest.raises(ValidationError, match="CLIP runs on torch"):
        VisionModelSpec(embedder="clip", embedder_path="x", runtime="openvino")
    assert VisionModelSpec(runtime="onnxruntime", precision="int8").runtime == "onnxruntime"
