"""The generated pages of the docs site say what their sources say: the configuration reference what
the pydantic models of config/ declare, the performance page what benchmarks/reference/*.json holds."""

from pathlib import Path

from benchmarks import performance_page
from tools import config_reference

ROOT = Path(__file__).resolve().parents[2]


def test_configuration_reference_matches_the_models():
    committed = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert committed == config_reference.render(), (
        "run `python -m tools.config_reference` and commit docs/configuration.md"
    )


def test_configuration_reference_lists_every_field():
    from config.args import AppArgs
    from config.tenants import Tenant

    page = config_reference.render()
    for model in config_reference.models_in_order([AppArgs]) + [Tenant]:
        assert f"### {model.__name__}\n" in page
        for name in model.model_fields:
            assert f"| `{name}` |" in page, f"{model.__name__}.{name}"


def test_performance_page_matches_the_reference_results():
    committed = (ROOT / "docs" / "performance.md").read_text(encoding="utf-8")
    assert committed == performance_page.render(), (
        "run `python -m benchmarks.performance_page` and commit docs/performance.md"
    )


def test_every_reference_result_is_described():
    files = {p.name for p in (ROOT / "benchmarks" / "reference").glob("*.json")}
    assert files == set(performance_page.REFERENCES), (
        "describe each file of benchmarks/reference/ in performance_page.REFERENCES"
    )
