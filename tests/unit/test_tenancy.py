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


def _fail(failures, address, key_id=None) -> int:
    """The status a failed authentication gets: 401 when counted, 429 when throttled."""
    try:
        failures.failed(address, key_id)
        return 401
    except Throttled:
        return 429


def test_failed_logins_throttle_an_address_then_forgive_it():
    clock = Clock()
    failures = tenancy.FailedLogins(per_address=3, window_s=60, clock=clock)
    assert [_fail(failures, "10.0.0.9") for _ in range(4)] == [401, 401, 401, 429]
    with pytest.raises(Throttled, match="from this address") as err:
        failures.failed("10.0.0.9", None)
    assert err.value.retry_after == pytest.approx(60)
    assert _fail(failures, "10.0.0.8") == 401  # other addresses are not affected
    clock.now += 30
    assert [_fail(failures, "10.0.0.9") for _ in range(3)] == [
        429
    ] * 3  # refused: not counted, no longer wait
    clock.now += 31
    assert _fail(failures, "10.0.0.9") == 401


def _admission(tenants_file, **limits):
    from deployments.gateway.admission import Admission

    path, key_a, _ = tenants_file
    clock = Clock()
    failures = tenancy.FailedLogins(clock=clock, **limits)
    return (
        Admission(tenancy.Directory.build(tenants.load_tenants(path)), None, failures=failures),
        key_a,
        clock,
    )


def _wrong_secret(key: str) -> str:
    return key[:-4] + ("aaaa" if not key.endswith("aaaa") else "bbbb")


def _status(admission, key, address) -> int:
    try:
        admission.authenticate({"authorization": f"Bearer {key}"}, address)
        return 200
    except Unauthorized:
        return 401
    except Throttled:
        return 429


def test_a_valid_key_passes_from_an_address_that_others_got_throttled(tenants_file):
    """One guesser behind a NAT or reverse proxy must not lock out the valid keys behind it."""
    admission, key, _ = _admission(tenants_file, per_address=20)
    statuses = [_status(admission, f"mms_{n:08x}_guess", "192.0.2.1") for n in range(25)]
    assert statuses[:20] == [401] * 20 and statuses[20:] == [429] * 5
    assert _status(admission, key, "192.0.2.1") == 200
    assert _status(admission, "not-a-key", "192.0.2.1") == 429  # the address stays throttled for bad keys


def test_guessing_one_key_id_from_many_addresses_is_throttled_like_an_unknown_id(tenants_file):
    """Per key id, whichever addresses the guesses come from; an id that exists and one that does not
    get the same answers, so the throttle does not tell which ids are real."""
    admission, key, _ = _admission(tenants_file, per_key_id=5)
    real = [_status(admission, _wrong_secret(key), f"198.51.100.{n}") for n in range(8)]
    unknown = [_status(admission, "mms_0000beef_guess", f"203.0.113.{n}") for n in range(8)]
    assert real == unknown == [401] * 5 + [429] * 3
    assert _status(admission, key, "198.51.100.99") == 200  # the owner still gets in
    assert _status(admission, "mms_1111beef_guess", "198.51.100.99") == 401  # other ids are not affected


def test_keys_that_do_not_parse_count_against_the_address_only():
    failures = tenancy.FailedLogins(per_address=100, per_key_id=2, clock=Clock())
    for key in (
        "nonsense",
        None,
        "mms__x",
        "mms_" + "a" * 65 + "_x",
    ):  # no id, or one longer than any of ours
        assert tenancy.throttle_key_id(key) is None
    assert tenancy.throttle_key_id("mms_0a1b2c3d_secret_with_underscores") == "0a1b2c3d"
    assert [_fail(failures, f"10.0.1.{n}", tenancy.throttle_key_id("nonsense")) for n in range(5)] == [
        401
    ] * 5
    assert failures.by_key_id.times == {}


def test_the_ceiling_across_addresses_refuses_bad_keys_but_not_valid_ones(tenants_file):
    admission, key, clock = _admission(tenants_file, per_address=5, per_key_id=5, ceiling=50, window_s=60)
    statuses = [_status(admission, f"mms_{n:08x}_guess", f"10.1.{n // 250}.{n % 250}") for n in range(60)]
    assert statuses == [401] * 50 + [429] * 10
    with pytest.raises(Throttled, match="on this gateway"):
        admission.authenticate({"x-api-key": "mms_ffffffff_guess"}, "10.9.9.9")  # a fresh address too
    assert _status(admission, key, "10.9.9.9") == 200
    clock.now += 61
    assert _status(admission, "mms_ffffffff_guess", "10.9.9.9") == 401


def test_the_state_stays_bounded_however_many_addresses_fail():
    """Counted failures per window are at most the ceiling, so keeping that many names suffices and
    never forgets one still inside its window."""
    clock = Clock()
    failures = tenancy.FailedLogins(per_address=3, per_key_id=3, ceiling=100, window_s=10, clock=clock)
    for n in range(5_000):
        clock.now += 0.01  # 50 s of failures from 5,000 addresses and 5,000 key ids
        _fail(failures, f"10.2.{n // 250}.{n % 250}", f"{n:08x}")
    assert len(failures.by_address.times) <= 100 and len(failures.by_key_id.times) <= 100
    assert sum(map(len, failures.by_address.times.values())) <= 100
    kept = [times[-1] for times in failures.by_address.times.values()]
    assert min(kept) > max(kept) - 10  # what is kept is one window's failures


def test_a_throttled_address_keeps_its_throttle_while_others_fail():
    """Forgetting the least recent names must not free a throttled address early."""
    clock = Clock()
    failures = tenancy.FailedLogins(per_address=3, ceiling=20, window_s=60, clock=clock)
    for _ in range(3):
        failures.failed("10.3.0.1", None)
    for n in range(100):  # others fail up to the ceiling; those past it are refused and not kept
        clock.now += 0.1
        _fail(failures, f"10.3.1.{n}", None)
    assert len(failures.by_address.times) == 1 + 17  # 3 failures of its own, 17 of others: the ceiling
    with pytest.raises(Throttled, match="from this address"):
        failures.failed("10.3.0.1", None)


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
