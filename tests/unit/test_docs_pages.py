"""The generated pages of the docs site say what their sources say: the configuration reference what
the pydantic models of config/ declare."""
from pathlib import Path

from tools import config_reference

ROOT = Path(__file__).resolve().parents[2]


def test_configuration_reference_matches_the_models():
    committed = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert committed == config_reference.render(), \
        "run `python -m tools.config_reference` and commit docs/configuration.md"


def test_configuration_reference_lists_every_field():
    from config.args import AppArgs
    from config.tenants import Tenant

    page = config_reference.render()
    for model in config_reference.models_in_order([AppArgs]) + [Tenant]:
        assert f"### {model.__name__}\n" in page
        for name in model.model_fields:
            assert f"| `{name}` |" in page, f"{model.__name__}.{name}"

