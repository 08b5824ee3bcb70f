"""Multi-tenant serving over real HTTP: keys, quotas shared by two gateway replicas, isolation of
indexes and fusion heads, and per-tenant metrics. The modality deployments are stand-ins
(tests/stub_backends.py); the gateway, QuotaKeeper, SearchIndex (Milvus Lite) and FusionHead are real."""

import asyncio
import concurrent.futures as cf
import json
import time
from pathlib import Path

import httpx
import pytest
import websockets
import yaml
from ray import serve

from clients.client import Client, MMServeError, RetryPolicy
from config import tenants
from deployments.fusion import FusionHead
from deployments.gateway.ingress import Gateway
from deployments.quota import QuotaKeeper
from deployments.search import SearchIndex
from models import fusion
from tests.assets import photo, scrape_metrics
from tests.stub_backends import DIM, stub_models

RATE, BURST = 4.0, 4
CEILING = 100
BATCH_FILE_BYTES = 4096  # failed authentications per gateway replica and minute, all addresses together


def _tenants(path: Path) -> dict[str, str]:
    keys = {t: tenants.add_key(path, t) for t in ("acme", "globex", "initech", "tiny", "metered", "frozen")}
    data = yaml.safe_load(path.read_text())
    by_id = {t["id"]: t for t in data["tenants"]}
    by_id["initech"]["disabled"] = True
    by_id["globex"]["modalities"] = ["image", "text"]
    by_id["tiny"]["rate_limit"] = {"requests_per_second": 1.0, "burst": 2}
    by_id["metered"]["rate_limit"] = {"requests_per_second": RATE, "burst": BURST}
    by_id["metered"]["max_concurrent"] = 64
    by_id["frozen"]["rate_limit"] = {"requests_per_second": 0.02, "burst": 1}  # one request per 50 s
    by_id["acme"]["allowed_root"] = str(path.parent / "shared")
    by_id["acme"]["operator"] = True
    by_id["acme"]["batch"] = {"max_file_bytes": BATCH_FILE_BYTES, "max_lines": 3, "max_running": 1}
    path.write_text(yaml.safe_dump(data))
    return keys


def _stub_head(store: Path, tenant: str, head_id: str) -> None:
    dims = fusion.FusionDims(
        pooled={"image": DIM, "text": DIM}, tokens={"image": DIM, "text": DIM}, hidden=8, heads=2
    )
    meta = fusion.HeadMeta(
        head_id=head_id,
        kind="late",
        labels=["x", "y"],
        dims=dims,
        encoders={"image": {"id": "stub-image"}, "text": {"id": "stub-text"}},
    )
    fusion.save_checkpoint(store / tenant, fusion.build_head("late", dims=dims, num_labels=2), meta)


@pytest.fixture(scope="module")
def tenant_app(ray_cluster, tmp_path_factory):
    data = tmp_path_factory.mktemp("tenants")
    keys = _tenants(data / "tenants.yaml")
    _stub_head(data / "heads", "acme", "acme-head")
    (data / "shared").mkdir()
    (data / "shared" / "cat.jpg").write_bytes(photo("chelsea"))
    models = stub_models("Stub")
    gateway = Gateway.options(name="TenantGateway", num_replicas=2, ray_actor_options={"num_cpus": 0}).bind(
        *models,
        {
            "tenants_file": str(data / "tenants.yaml"),
            "allowed_root": str(data / "shared"),
            "failed_auth": {"per_address": 20, "per_key_id": 20, "ceiling": CEILING},
        },
        search=SearchIndex.options(ray_actor_options={"num_cpus": 0}).bind(str(data / "search.db")),
        fusion=FusionHead.options(ray_actor_options={"num_cpus": 0}).bind(str(data / "heads"), 2),
        quota=QuotaKeeper.bind(),
        batch={"args": {"store": str(data / "batches")}, "models": {"vision": {}, "text": {}}},
    )
    serve.run(gateway, name="tenants", route_prefix="/tenants")
    yield {"url": f"http://127.0.0.1:{ray_cluster['port']}/tenants", "keys": keys}
    serve.delete("tenants")


def _client(app, tenant: str | None, **kwargs) -> Client:
    return Client(app["url"], api_key=app["keys"][tenant] if tenant else None, **kwargs)


def _status(call) -> int:
    try:
        call()
        return 200
    except MMServeError as err:
        return err.status


def test_authentication_comes_before_any_decoding(tenant_app):
    url = tenant_app["url"]
    garbage = {"content": b"\x00not json", "headers": {"content-type": "application/json"}}
    r = httpx.post(f"{url}/v1/classify", **garbage)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert r.json()["error"]["type"] == "authentication_error"
    r = httpx.post(
        f"{url}/v1/classify", **{**garbage, "headers": {**garbage["headers"], "x-api-key": "mms_x_y"}}
    )
    assert r.status_code == 401
    disabled = {"authorization": f"Bearer {tenant_app['keys']['initech']}"}
    assert httpx.get(f"{url}/v1/models", headers=disabled).status_code == 403
    assert httpx.get(f"{url}/healthz").status_code == 200  # probes stay open


def test_a_tenant_calls_only_its_modalities(tenant_app):
    with _client(tenant_app, "globex") as globex, _client(tenant_app, "acme") as acme:
        assert _status(lambda: globex.embed_text(["fine"])) == 200
        assert _status(lambda: globex.embed_audio([b"RIFF...."])) == 403
        assert _status(lambda: acme.embed_text(["fine"])) == 200


def _live_speech(app, *, key: str | None = None, header: str | None = None):
    """A live speech session (tests/http/test_live_speech.py): its final transcript of 0.5 s of
    silence, or the HTTP answer that refused the handshake. ``key`` as a browser sends it (a
    subprotocol), ``header`` as an Authorization header."""
    protocols = ["mmserve.v1"] + ([f"mmserve.key.{key}"] if key else [])
    headers = {"authorization": f"Bearer {header}"} if header else None
    url = app["url"].replace("http://", "ws://") + "/v1/audio/transcriptions/ws"

    async def talk():
        async with websockets.connect(url, subprotocols=protocols, additional_headers=headers) as ws:
            await ws.send(bytes(16_000))
            await ws.send(json.dumps({"type": "commit"}))
            while (message := json.loads(await ws.recv()))["type"] != "transcript.final":
                pass
            return message

    try:
        return asyncio.run(talk())
    except websockets.InvalidStatus as refused:
        return refused.response


def test_the_live_speech_socket_takes_the_same_keys_on_its_handshake(tenant_app):
    keys = tenant_app["keys"]
    assert _live_speech(tenant_app, key=keys["acme"])["text"]  # the stand-in's words
    assert _live_speech(tenant_app, header=keys["acme"])["text"]
    for refused, status in [
        (_live_speech(tenant_app), 401),
        (_live_speech(tenant_app, key=_wrong_secret(keys["acme"])), 401),
        (_live_speech(tenant_app, key=keys["globex"]), 403),  # no audio modality
        (_live_speech(tenant_app, key=keys["initech"]), 403),  # disabled
    ]:
        assert refused.status_code == status, (refused.status_code, refused.body)
        assert json.loads(refused.body)["error"]["type"] in ("authentication_error", "permission_error")


def test_over_the_rate_gets_429_with_retry_after(tenant_app):
    headers = {"authorization": f"Bearer {tenant_app['keys']['tiny']}"}
    statuses = [httpx.get(f"{tenant_app['url']}/v1/models", headers=headers) for _ in range(4)]
    assert [r.status_code for r in statuses[:2]] == [200, 200]
    throttled = [r for r in statuses if r.status_code == 429]
    assert throttled and int(throttled[0].headers["retry-after"]) >= 1
    assert throttled[0].json()["error"]["type"] == "rate_limit_error"


def test_mmserve_client_recovers_through_retry_after(tenant_app):
    seen = []
    time.sleep(2.5)  # let 'tiny' refill its burst
    with _client(tenant_app, "tiny", retry=RetryPolicy(attempts=6)) as client:
        client._http.event_hooks["response"].append(lambda r: seen.append(r.status_code))
        results = [client.models() for _ in range(5)]
    assert len(results) == 5 and all(r.data for r in results)
    assert 429 in seen and seen.count(200) == 5


def test_two_gateway_replicas_share_one_quota(tenant_app):
    """Many concurrent callers for 4 s: what is admitted stays within 10% of burst + rate * time."""
    url, headers = tenant_app["url"], {"authorization": f"Bearer {tenant_app['keys']['metered']}"}
    stop = time.monotonic() + 4.0

    def hammer() -> list[tuple[float, int]]:
        out = []
        with httpx.Client(timeout=30) as http:
            while time.monotonic() < stop:
                out.append((time.monotonic(), http.get(f"{url}/v1/models", headers=headers).status_code))
        return out

    with cf.ThreadPoolExecutor(8) as pool:
        results = [x for f in [pool.submit(hammer) for _ in range(8)] for x in f.result()]
    admitted = [t for t, code in results if code == 200]
    window = max(admitted) - min(t for t, _ in results)
    allowed = BURST + RATE * window
    assert len(results) > 3 * allowed  # the limit was really tested
    assert abs(len(admitted) - allowed) <= 0.1 * allowed, (len(admitted), allowed)
    assert {code for _, code in results} == {200, 429}


def test_tenants_cannot_see_each_others_indexes(tenant_app):
    with _client(tenant_app, "acme") as acme, _client(tenant_app, "globex") as globex:
        acme.create_index("photos")
        added = acme.add_images("photos", [photo("chelsea")])
        assert [i.name for i in acme.indexes().data] == ["photos"]
        assert globex.indexes().data == []
        for call in (
            lambda: globex.index("photos"),
            lambda: globex.query("photos", text="cat"),
            lambda: globex.delete_items("photos", added.ids),
            lambda: globex.drop_index("photos"),
            lambda: globex.lookup("photos", added.ids),
        ):
            with pytest.raises(MMServeError) as err:
                call()
            assert err.value.status == 404 and err.value.message == "index 'photos' not found"
        with pytest.raises(MMServeError) as never:
            globex.index("never-created")
        assert (
            never.value.message == "index 'never-created' not found"
        )  # the same answer: existence does not leak
        globex.create_index("photos")  # its own, separate index of the same name
        assert globex.index("photos").count == 0 and acme.index("photos").count == 1
        assert acme.query("photos", text="cat").hits[0].id == added.ids[0]


def test_tenants_cannot_use_each_others_heads(tenant_app):
    with _client(tenant_app, "acme") as acme, _client(tenant_app, "globex") as globex:
        fused = acme.compose([{"type": "fuse", "head": "acme-head"}], image=photo("chelsea"), text="a cat")
        assert fused.results["fuse"].label in ("x", "y")
        assert [h.id for h in acme.fusion_heads().data] == ["acme-head"]
        assert globex.fusion_heads().data == []
        with pytest.raises(MMServeError) as err:
            globex.compose([{"type": "fuse", "head": "acme-head"}], image=photo("chelsea"), text="a cat")
        assert err.value.status == 404 and err.value.message == "fusion head 'acme-head' not found"


def test_metrics_carry_the_tenant(tenant_app, ray_cluster):
    with _client(tenant_app, "acme") as acme:
        acme.models()
    scrape_metrics(
        ray_cluster["metrics_port"],
        ['tenant="acme"', "ray_mmserve_refusals_total{", 'reason="tenant_rate"', 'tenant="tiny"'],
    )


def test_quota_state_survives_a_gateway_restart(tenant_app):
    """The buckets live in QuotaKeeper: replacing every gateway replica does not refill them."""
    import ray

    headers = {"authorization": f"Bearer {tenant_app['keys']['frozen']}"}
    url = f"{tenant_app['url']}/v1/models"
    assert httpx.get(url, headers=headers).status_code == 200
    assert httpx.get(url, headers=headers).status_code == 429
    gateways = [a for a in ray.util.list_named_actors(all_namespaces=True) if "TenantGateway" in a["name"]]
    assert len(gateways) == 2
    for actor in gateways:
        ray.kill(ray.get_actor(actor["name"], namespace=actor["namespace"]), no_restart=False)
    deadline, status = time.monotonic() + 60, None
    while time.monotonic() < deadline and status not in (200, 429):
        try:
            status = httpx.get(url, headers=headers, timeout=5).status_code
        except httpx.HTTPError:
            status = None
        time.sleep(0.5)
    assert status == 429


def test_index_items_by_server_side_path_stay_under_the_allowed_root(tenant_app):
    with _client(tenant_app, "acme") as acme:
        acme.create_index("by-path")
        added = acme._json("/v1/indexes/by-path/items", {"items": [{"path": "cat.jpg"}]}, None)
        assert '"added":1' in added
        for bad in ("../tenants.yaml", "/etc/passwd", "missing.jpg"):
            with pytest.raises(MMServeError) as err:
                acme._json("/v1/indexes/by-path/items", {"items": [{"path": bad}]}, None)
            assert err.value.status == 400 and err.value.param == "items[0]"
        with pytest.raises(MMServeError) as err:
            acme._json("/v1/indexes/by-path/items", {"items": [{"path": "cat\u0000.jpg"}]}, None)
        assert err.value.status == 400 and "NUL" in err.value.message
    with _client(tenant_app, "globex") as globex:  # no allowed_root of its own; the shared one is off
        globex.create_index("by-path")
        with pytest.raises(MMServeError) as err:
            globex._json("/v1/indexes/by-path/items", {"items": [{"path": "cat.jpg"}]}, None)
        assert err.value.status == 403


def _wait_for_both_gateways(timeout_s: float = 120.0) -> None:
    """Both TenantGateway replicas RUNNING: a test before this one kills them, and Serve may still be
    starting a replacement (CI once sent all 40 requests to the one replica up)."""
    deadline, states = time.monotonic() + timeout_s, {}
    while time.monotonic() < deadline:
        states = serve.status().applications["tenants"].deployments["TenantGateway"].replica_states
        running = sum(n for state, n in states.items() if getattr(state, "value", str(state)) == "RUNNING")
        if running == 2 and len([n for n in states.values() if n]) == 1:
            return
        time.sleep(0.5)
    raise AssertionError(f"TenantGateway replicas not both RUNNING within {timeout_s:g}s: {states}")


def test_the_embedding_cache_is_per_tenant(tenant_app):
    """Tenant B must not learn from timing (or anything) which images A sent: A's cached embedding
    is not B's, so B's request reaches the model like any first request."""
    _wait_for_both_gateways()
    image = serve.get_deployment_handle("StubImage", app_name="tenants")
    calls = lambda: image.embed_calls.remote().result()  # noqa: E731
    fresh = photo("rocket", fmt="PNG")
    with _client(tenant_app, "acme") as acme, _client(tenant_app, "metered") as other:
        before = calls()
        for _ in range(40):  # each of the two gateway replicas has its own cache: fill both for acme
            acme.embed_images([fresh])
            if calls() == before + 2:
                break
        assert calls() == before + 2, "acme's requests never reached the second gateway replica"
        for _ in range(5):
            acme.embed_images([fresh])
        assert calls() == before + 2  # acme hits, wherever its requests land
        for _ in range(5):
            other.embed_images([fresh])
        assert calls() > before + 2  # the other tenant misses: acme's entries are not its own


def test_service_statistics_are_for_operators(tenant_app):
    with _client(tenant_app, "acme") as acme:
        assert "VisionEncoder" in acme.stats()
    with _client(tenant_app, "globex") as globex:
        assert _status(globex.stats) == 403


def _from(address: str) -> httpx.Client:
    """A client whose connections come from ``address`` (any 127.x.y.z is this machine on Linux)."""
    return httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=10)


def _models_status(url: str, key: str, address: str) -> httpx.Response:
    with _from(address) as http:
        return http.get(f"{url}/v1/models", headers={"authorization": f"Bearer {key}"})


# The three tests below run last in this module, in this order: they leave addresses, key ids and
# finally both gateway replicas throttled for bad keys for a minute.
def test_failed_authentication_is_throttled_per_address_but_never_a_valid_key(tenant_app):
    """A guesser behind the same NAT or proxy as real users: its 429s do not lock them out."""
    url, statuses = f"{tenant_app['url']}/v1/models", []
    with _from("127.0.0.2") as guesser:
        for n in range(
            80
        ):  # two gateway replicas, 20 failures each per minute (80: both get 20, whatever the routing)
            statuses.append(
                guesser.get(url, headers={"authorization": f"Bearer mms_{n:08x}_guess"}).status_code
            )
    assert statuses[0] == 401 and statuses[-5:] == [429] * 5, statuses
    assert statuses.count(401) <= 40, statuses
    with _from("127.0.0.2") as guesser:
        throttled = guesser.get(url, headers={"authorization": "Bearer mms_ffffffff_guess"})
        assert throttled.status_code == 429 and int(throttled.headers["retry-after"]) >= 1
        assert throttled.json()["error"]["type"] == "rate_limit_error"
        for _ in range(4):  # both replicas, whichever the proxy picks: the valid key gets in
            assert (
                guesser.get(
                    url, headers={"authorization": f"Bearer {tenant_app['keys']['acme']}"}
                ).status_code
                == 200
            )
    with _client(tenant_app, "acme") as acme:  # other addresses are untouched
        assert acme.models().data


def _wrong_secret(key: str) -> str:
    return key[:-4] + ("aaaa" if not key.endswith("aaaa") else "bbbb")


def test_guessing_one_key_id_from_many_addresses_is_throttled_like_an_unknown_id(tenant_app):
    """Per key id, from 100 addresses each: a real id with wrong secrets and an id that does not exist
    get the same answers (the throttle does not tell which ids exist), and the id's owner gets in."""
    url, key = tenant_app["url"], tenant_app["keys"]["globex"]
    real = [_models_status(url, _wrong_secret(key), f"127.0.1.{n}").status_code for n in range(100)]
    unknown = [_models_status(url, "mms_0000beef_guess", f"127.0.2.{n}").status_code for n in range(100)]
    for statuses in (real, unknown):
        assert statuses[0] == 401 and statuses[-5:] == [429] * 5, statuses
        assert statuses.count(401) <= 40 and set(statuses) == {401, 429}, statuses
    refused = _models_status(url, _wrong_secret(key), "127.0.1.200")
    assert refused.status_code == 429 and "for this key id" in refused.json()["error"]["message"]
    assert all(_models_status(url, key, "127.0.1.0").status_code == 200 for _ in range(4))


def test_failed_authentication_has_a_ceiling_across_addresses(tenant_app):
    """Guesses from 300 addresses with 300 key ids: past CEILING per gateway replica, every bad key
    is refused 429, from addresses never seen before too; valid keys still get in."""
    url = tenant_app["url"]
    statuses = [
        _models_status(url, f"mms_{n:08x}_spray", f"127.0.{3 + n // 250}.{n % 250}").status_code
        for n in range(300)
    ]
    assert 401 in statuses and statuses[-10:] == [429] * 10, statuses
    assert statuses.count(401) <= 2 * CEILING, statuses
    fresh = _models_status(url, "mms_12345678_spray", "127.0.5.1")
    assert fresh.status_code == 429 and "on this gateway" in fresh.json()["error"]["message"]
    assert int(fresh.headers["retry-after"]) >= 1
    assert all(
        _models_status(url, tenant_app["keys"]["acme"], "127.0.5.1").status_code == 200 for _ in range(4)
    )


def _batch_line(custom_id: str) -> bytes:
    # a line every batch refuses before any model runs (this app's models are stand-ins)
    body = {"custom_id": custom_id, "method": "POST", "url": "/v1/classify", "body": {}}
    return json.dumps(body).encode() + b"\n"


def test_tenants_cannot_see_each_others_files_and_batches(tenant_app):
    url, keys = tenant_app["url"], tenant_app["keys"]
    acme, globex = ({"Authorization": f"Bearer {keys[t]}"} for t in ("acme", "globex"))
    upload = {"file": ("in.jsonl", _batch_line("x"))}
    file_id = httpx.post(f"{url}/v1/files", headers=acme, files=upload, data={"purpose": "batch"}).json()[
        "id"
    ]
    body = {"input_file_id": file_id, "endpoint": "/v1/classify", "completion_window": "24h"}
    batch_id = httpx.post(f"{url}/v1/batches", headers=acme, json=body).json()["id"]
    assert httpx.get(f"{url}/v1/files/{file_id}", headers=acme).status_code == 200
    assert httpx.get(f"{url}/v1/batches", headers=globex).json()["data"] == []

    def answer(response: httpx.Response, the_id: str) -> tuple[int, dict]:
        error = response.json()["error"]
        return response.status_code, {
            **error,
            "message": error["message"].replace(the_id, "ID"),
            "request_id": 0,
        }

    missing_file, missing_batch = "file-" + "0" * 24, "batch_" + "0" * 24
    for the_id, missing, call in (
        (file_id, missing_file, lambda i: httpx.get(f"{url}/v1/files/{i}", headers=globex)),
        (file_id, missing_file, lambda i: httpx.get(f"{url}/v1/files/{i}/content", headers=globex)),
        (file_id, missing_file, lambda i: httpx.delete(f"{url}/v1/files/{i}", headers=globex)),
        (
            file_id,
            missing_file,
            lambda i: httpx.post(f"{url}/v1/batches", headers=globex, json={**body, "input_file_id": i}),
        ),
        (batch_id, missing_batch, lambda i: httpx.get(f"{url}/v1/batches/{i}", headers=globex)),
        (batch_id, missing_batch, lambda i: httpx.post(f"{url}/v1/batches/{i}/cancel", headers=globex)),
    ):
        foreign = answer(call(the_id), the_id)
        assert foreign[0] == 404 and foreign == answer(call(missing), missing)
    assert httpx.get(f"{url}/v1/files/{file_id}", headers=acme).status_code == 200  # still there


def test_a_tenants_batch_limits_are_enforced(tenant_app):
    url, acme = tenant_app["url"], {"Authorization": f"Bearer {tenant_app['keys']['acme']}"}

    def upload(content: bytes) -> httpx.Response:
        return httpx.post(
            f"{url}/v1/files", headers=acme, files={"file": ("in.jsonl", content)}, data={"purpose": "batch"}
        )

    lines = upload(b"".join(_batch_line(f"l{i}") for i in range(4)))
    assert (
        lines.status_code == 400
        and lines.json()["error"]["param"] == "file"
        and "3 lines" in lines.json()["error"]["message"]
    )
    big = _batch_line("big") + b" " * (
        2 * BATCH_FILE_BYTES
    )  # within the announced-length slack: cut while copied
    assert upload(big).status_code == 413
    announced = upload(b" " * (200 * 1024))  # refused from Content-Length, before the body is read
    assert announced.status_code == 413 and announced.json()["error"]["type"] == "payload_too_large"
    assert [
        f["purpose"]
        for f in httpx.get(f"{url}/v1/files", headers=acme).json()["data"]
        if f["bytes"] > BATCH_FILE_BYTES
    ] == []
