"""The second carry bundle for the GPU machine's CPU run: a slimmed wheel still installs, and the
random-weight MiniLM stand-in loads through the production loader with the real tokenizer."""

import subprocess
import sys
import zipfile

from benchmarks.carry_cpu import _record_line, slim_wheel


def _wheel(path, members: dict[str, bytes]):
    info = "openvino-1.0.dist-info"
    members = members | {
        f"{info}/METADATA": b"Metadata-Version: 2.1\nName: openvino\nVersion: 1.0\n",
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "\n".join(_record_line(n, d) for n, d in members.items()) + f"\n{info}/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
        z.writestr(f"{info}/RECORD", record)
    return path


def test_slimmed_wheel_drops_what_matches_and_installs(tmp_path):
    (tmp_path / "src").mkdir()
    source = _wheel(
        tmp_path / "src" / "openvino-1.0-py3-none-any.whl",
        {
            "openvino/__init__.py": b"",
            "openvino/libs/libopenvino_intel_gpu_plugin.so": b"gpu" * 100,
            "openvino/libs/libopenvino_onnx_frontend.so.1": b"onnx",
        },
    )
    target = tmp_path / "openvino-1.0-py3-none-any.whl"
    dropped = slim_wheel(source, target, ("openvino/libs/libopenvino_intel_gpu_plugin.so",))
    assert dropped == ["openvino/libs/libopenvino_intel_gpu_plugin.so"]
    with zipfile.ZipFile(target) as z:
        names = set(z.namelist())
        record = z.read("openvino-1.0.dist-info/RECORD").decode().split()
    assert "openvino/libs/libopenvino_intel_gpu_plugin.so" not in names
    assert {line.split(",")[0] for line in record} == names  # RECORD lists exactly what is left
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-index",
            "--no-deps",
            "--no-compile",
            "--target",
            str(tmp_path / "site"),
            str(target),
        ],
        check=True,
    )
    assert (
        tmp_path / "site" / "openvino" / "libs" / "libopenvino_onnx_frontend.so.1"
    ).read_bytes() == b"onnx"


def test_random_minilm_loads_with_the_real_tokenizer(tmp_path):
    import torch

    from benchmarks.standins import minilm_files, random_minilm
    from models.registry import TextModelSpec, load_text

    files = minilm_files(tmp_path / "files")
    assert not (files / "model.safetensors").exists()  # the 90 MB of weights do not travel
    standin = load_text(TextModelSpec(path=str(random_minilm(files, tmp_path / "minilm"))))
    real = load_text(TextModelSpec())
    texts = ["a tabby cat naps on the window sill"]
    assert standin.dim == real.dim == 384
    assert standin.tokenizer(texts)["input_ids"] == real.tokenizer(texts)["input_ids"]
    assert (
        torch.nn.functional.cosine_similarity(
            torch.as_tensor(standin.embed(texts)), torch.as_tensor(real.embed(texts))
        ).item()
        < 0.9
    )  # random weights
