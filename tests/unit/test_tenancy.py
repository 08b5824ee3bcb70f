"""Tenants: key hashing and lookup, allow-lists, and the token-bucket arithmetic behind quotas."""
import pytest
import yaml

from config import tenants
from deployments import tenancy
from deployments.quota import TokenBuckets
from models.errors import Forbidden, NotFound, Throttled, Unauthorized


@pytest.fixture()
def tenants_file(tmp_path):
    path = tmp_path / "tenants.yaml"
    key_a = tenants.add_key(path, "acme")
    key_b = tenants.add_key(path, "globex")
    data = yaml.safe_load(path.read_text())
    data["tenants"][1]["disabled"] = True
    data["tenants"][0]["modalities"] = ["image", "text"]
    data["tenants"][0]["indexes"] = ["photos"]
    path.write_text(yaml.safe_dump(data))
    return path, key_a, key_b


def test_keys_are_stored_only_as_salted_hashes(tenants_file):
    path, key_a, _ = tenants_file
    text = path.read_text()
    secret = key_a.split("_", 2)[2]
    assert secret not in text and key_a not in text
    entry = tenants.load_tenants(path)[0].keys[0]
    scheme, key_id, salt, digest = entry.split("$")
    assert scheme == "sha256" and key_a.startswith(f"mms_{key_id}_") and len(salt) == 32 and len(digest) == 64


def test_authenticate_finds_the_tenant_and_refuses_bad_keys(tenants_file):
    path, key_a, key_b = tenants_file
    directory = tenancy.Directory.build(tenants.load_tenants(path))
    assert directory.authenticate(key_a).id == "acme"
    with pytest.raises(Forbidden, match="disabled"):
        directory.authenticate(key_b)
    for bad in (None, "", "nonsense", key_a[:-1] + ("x" if key_a[-1] != "x" else "y"), "mms_deadbeef_secret"):
        with pytest.raises(Unauthorized):
            directory.authenticate(bad)


def test_headers_bearer_or_x_api_key():
    assert tenancy.key_from_headers({"authorization": "Bearer abc"}) == "abc"
    assert tenancy.key_from_headers({"x-api-key": "xyz"}) == "xyz"
    assert tenancy.key_from_headers({}) is None


def test_allow_lists_look_like_missing_resources(tenants_file):
    path, *_ = tenants_file
    acme = tenants.load_tenants(path)[0]
    acme.require("index", "photos")
    with pytest.raises(NotFound, match="not found"):
        acme.require("index", "secret-index")
    acme.require_modality("image")
    with pytest.raises(Forbidden, match="audio"):
        acme.require_modality("audio")


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_token_bucket_admits_the_burst_then_the_rate():
    clock = Clock()
    buckets = TokenBuckets(clock=clock)
    admitted = [buckets.acquire("a", rate=2.0, burst=3, max_concurrent=None)[0] for _ in range(5)]
    assert sum(x is not None for x in admitted) == 3
    lease, wait, limit = buckets.acquire("a", rate=2.0, burst=3, max_concurrent=None)
    assert lease is None and wait == pytest.approx(0.5) and limit == "rate_limit"
    clock.now += 0.5
    assert buckets.acquire("a", rate=2.0, burst=3, max_concurrent=None)[0] is not None
    assert buckets.acquire("b", rate=2.0, burst=3, max_concurrent=None)[0] is not None  # tenants are separate


def test_concurrency_leases_are_released_and_expire():
    clock = Clock()
    buckets = TokenBuckets(lease_s=10, clock=clock)
    first, *_ = buckets.acquire("a", rate=None, burst=1, max_concurrent=2)
    second, *_ = buckets.acquire("a", rate=None, burst=1, max_concurrent=2)
    assert buckets.acquire("a", rate=None, burst=1, max_concurrent=2)[::2] == (None, "max_concurrent")
    buckets.release("a", first)
    assert buckets.acquire("a", rate=None, burst=1, max_concurrent=2)[0] is not None
    clock.now += 11  # a gateway that died holding leases frees them after lease_s
    assert buckets.acquire("a", rate=None, burst=1, max_concurrent=2)[0] is not None
    assert len(buckets.buckets["a"].leases) == 1


def test_renewed_leases_outlive_lease_s_and_unrenewed_ones_expire():
    """A live gateway renews its leases; a dead one stops, and its tenant's slots free in lease_s."""
    clock = Clock()
    buckets = TokenBuckets(lease_s=15, clock=clock)
    live, *_ = buckets.acquire("a", rate=None, burst=1, max_concurrent=2)
    dead, *_ = buckets.acquire("a", rate=None, burst=1, max_concurrent=2)
    for _ in range(6):  # 60 s of renewals every 10 s for the live gateway's lease only
        clock.now += 10
        buckets.renew("a", [live])
    third, *_ = buckets.acquire("a", rate=None, burst=1, max_concurrent=2)  # takes the dead one's slot
    assert third is not None and set(buckets.buckets["a"].leases) == {live, third}
    buckets.renew("a", [dead])  # an expired lease cannot be revived
    assert dead not in buckets.buckets["a"].leases


def test_failed_logins_throttle_an_address_then_forgive_it():
    clock = Clock()
    failures = tenancy.FailedLogins(limit=3, window_s=60, clock=clock)
    for _ in range(3):
        failures.check("10.0.0.9")
        failures.record("10.0.0.9")
    with pytest.raises(Throttled) as err:
        failures.check("10.0.0.9")
    assert err.value.retry_after == pytest.approx(60)
    failures.check("10.0.0.8")  # other addresses are not affected
    clock.now += 61
    failures.check("10.0.0.9")


def test_domain_errors_keep_param_and_retry_after_across_pickling():
    import pickle

    from models.errors import Throttled

    back = pickle.loads(pickle.dumps(Throttled("slow down", param="tenant", retry_after=2.5)))
    assert (type(back), back.message, back.param, back.retry_after) == (Throttled, "slow down", "tenant", 2.5)
    gone = pickle.loads(pickle.dumps(NotFound("index 'x' not found", param="index")))
    assert (gone.message, gone.param) == ("index 'x' not found", "index")


def test_tenant_key_refuses_a_bad_id_with_a_message_not_a_traceback(tmp_path, capsys):
    from tools import cli

    assert cli.main(["tenant-key", str(tmp_path / "tenants.yaml"), "Bad Id"]) == 1
    err = capsys.readouterr().err
    assert "tenant ids match" in err and "Traceback" not in err
    assert not (tmp_path / "tenants.yaml").exists()

