"""The offline tools and the client load none of the server: no Ray Serve, no FastAPI, no gateway."""

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "module",
    [
        "tools.cli",
        "tools.train_fusion",
        "tools.demo_data",
        "tools.demo_captions",
        "tools.finetune",
        "tools.config_reference",
        "config.tenants",
        "clients.client",
    ],
)
def test_offline_modules_do_not_load_the_server(module):
    code = (
        f"import sys, {module}; "
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {{'fastapi','deployments','graphs'}} "
        f"or m.startswith('ray.serve')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", f"{module} loads {out.stdout.strip()}"
