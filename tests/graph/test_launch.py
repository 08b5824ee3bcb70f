"""The embedded launcher refuses an unschedulable config file quickly, with a message."""

import subprocess
import sys
import time

import pytest
import yaml

pytestmark = pytest.mark.slow


def test_launcher_fails_fast_on_missing_gpu(tmp_path):
    config = yaml.safe_load(open("serve_config.yaml"))
    config["applications"][0]["args"]["vision"]["num_gpus"] = 1  # this machine's Ray has no GPU
    path = tmp_path / "gpu.yaml"
    path.write_text(yaml.safe_dump(config))
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "graphs.launch", str(path)], capture_output=True, text=True, timeout=120
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 2, done.stderr[-2000:]
    assert "deployment 'VisionEncoder' asks for GPU=1" in done.stderr
    assert elapsed < 60, elapsed  # Ray's start-up is most of it; without the guard it would wait forever
