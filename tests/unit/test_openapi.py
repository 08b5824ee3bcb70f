import json
from pathlib import Path

from deployments.gateway.app import create_app


def test_committed_openapi_matches_the_code():
    committed = json.loads((Path(__file__).resolve().parents[2] / "openapi.json").read_text())
    assert create_app().openapi() == committed, "run `make openapi` and commit openapi.json"


def test_every_post_route_documents_its_body_and_errors():
    spec = create_app().openapi()
    for path, ops in spec["paths"].items():
        if "post" in ops:
            op = ops["post"]
            if path.endswith("/cancel"):  # an action without a body (routing.action)
                assert "requestBody" not in op, path
                continue
            assert "application/json" in op["requestBody"]["content"], path
            assert {"400", "413", "415", "422"} <= set(op["responses"]), path
