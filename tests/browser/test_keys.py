"""The playground behind a tenants file: the page and its files load without a key, the API answers
401 until the user types one, and with a valid key (kept in sessionStorage) the views work. The model
deployments are stand-ins (tests/stub_backends.py); the gateway and its admission are real."""

from __future__ import annotations

import pytest
import requests
from playwright.sync_api import expect
from ray import serve

from config import tenants
from deployments.gateway.ingress import Gateway
from tests.assets import photo
from tests.browser.pages import shoot, upload
from tests.stub_backends import stub_models

pytestmark = [pytest.mark.slow, pytest.mark.browser]


@pytest.fixture(scope="module")
def locked(ray_cluster, tmp_path_factory):
    path = tmp_path_factory.mktemp("ui-tenants") / "tenants.yaml"
    key = tenants.add_key(path, "acme")
    models = stub_models("Stub")
    gateway = Gateway.options(name="LockedGateway", ray_actor_options={"num_cpus": 0}).bind(
        *models, {"tenants_file": str(path)}
    )
    serve.run(gateway, name="ui-locked", route_prefix="/locked")
    yield {"url": f"http://127.0.0.1:{ray_cluster['port']}/locked", "key": key}
    serve.delete("ui-locked")


def test_a_missing_key_shows_the_401_and_a_valid_key_works(page, locked):
    refusal = requests.get(f"{locked['url']}/v1/models", timeout=30)
    assert refusal.status_code == 401
    page.goto(f"{locked['url']}/ui/#image")
    expect(page.locator("#error-message")).to_have_text(refusal.json()["error"]["message"])
    expect(page.locator("#error-title")).to_contain_text("(HTTP 401)")
    expect(page.locator("#server")).to_contain_text("Not connected")
    shoot(page, "locked")

    page.fill("#api-key", locked["key"])
    page.locator("#api-key").blur()
    expect(page.locator("#server")).to_contain_text("models")
    expect(page.locator("#error")).to_be_hidden()
    page.set_input_files("#image-file", upload("chelsea.jpg", photo("chelsea"), "image/jpeg"))
    expect(page.locator("#classify-bars li")).to_have_count(1)  # the stand-in's one class

    page.reload()  # the key stays for the tab's session
    expect(page.locator("#api-key")).to_have_value(locked["key"])
    expect(page.locator("#server")).to_contain_text("models")
    expect(page.locator("#error")).to_be_hidden()
