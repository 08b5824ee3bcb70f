"""Visual search over real HTTP: packaged photos indexed in Milvus Lite, queried by text, image and speech."""

import hashlib
import json

import numpy as np
import pytest

from clients.client import MMServeError
from tests.assets import photo, speech

PHOTOS = ["chelsea", "coffee", "rocket", "astronaut", "camera", "hubble_deep_field", "moon"]  # scikit-image


@pytest.fixture(scope="module")
def photos() -> dict[str, bytes]:
    return {name: photo(name) for name in PHOTOS + ["china", "flower"]}


@pytest.fixture(scope="module")
def gallery(client, photos) -> str:
    client.create_index("gallery")
    names = list(photos)
    result = client.add_images(
        "gallery",
        [photos[n] for n in names],
        metadata=[{"file": n, "source": "sklearn" if n in ("china", "flower") else "skimage"} for n in names],
    )
    assert result.added == len(names) and result.already_present == 0
    assert result.ids == [hashlib.sha256(photos[n]).hexdigest() for n in names]
    return "gallery"


def test_text_query_finds_the_cat(client, gallery):
    result = client.query(gallery, text="a cat", top_k=3)
    assert result.hits[0].metadata["file"] == "chelsea", result.hits
    assert result.hits[0].score > result.hits[1].score


def test_spoken_query_finds_the_coffee(client, gallery):
    result = client.query(gallery, audio=speech("show me a cup of coffee"), top_k=3)
    assert "coffee" in result.transcript.lower()
    assert result.hits[0].metadata["file"] == "coffee", result.hits


def test_bulk_indexing_from_the_cli_resumes(base_url, photos, tmp_path, capsys):
    from clients import cli

    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    for name in ("chelsea", "coffee", "rocket"):
        (folder / "sub" / f"{name}.jpg").write_bytes(photos[name])
    (folder / "broken.png").write_bytes(b"not an image at all")
    assert cli.main(["--url", base_url, "index", "add", "bulk", str(folder), "--batch-size", "2"]) == 0
    first = capsys.readouterr().err
    assert "added 3, already indexed 0, failed 1" in first and "broken.png" in first
    assert cli.main(["--url", base_url, "index", "add", "bulk", str(folder)]) == 0
    assert "added 0, already indexed 3, failed 1" in capsys.readouterr().err
    assert (
        cli.main(["--url", base_url, "index", "query", "bulk", "--text", "a cup of coffee", "--top-k", "1"])
        == 0
    )
    assert "sub/coffee.jpg" in capsys.readouterr().out


def _images_embedded(client) -> int:
    """Images VisionEncoder has embedded so far (read from the replica's batch counters)."""
    stats = json.loads(client.stats())
    return sum(int(size) * count for size, count in stats["VisionEncoder"].get("embed", {}).items())


def test_repeated_media_hits_the_embedding_cache(client, gallery):
    from tests.assets import photo

    fresh = photo("rocket", fmt="PNG")  # bytes no earlier test sent
    before = _images_embedded(client)
    first = client.query(gallery, image=fresh, top_k=1)
    assert _images_embedded(client) == before + 1
    second = client.query(gallery, image=fresh, top_k=1)
    assert _images_embedded(client) == before + 1  # the second query was answered from the cache
    assert second.hits == first.hits


def test_image_query_finds_itself_and_filters_apply(client, gallery, photos):
    assert client.query(gallery, image=photos["rocket"], top_k=1).hits[0].metadata["file"] == "rocket"
    only_sklearn = client.query(gallery, text="a flower", top_k=5, where={"source": "sklearn"})
    assert {h.metadata["file"] for h in only_sklearn.hits} <= {"china", "flower"}
    assert only_sklearn.hits[0].metadata["file"] == "flower"


def test_re_adding_is_idempotent_and_count_is_exact(client, gallery, photos):
    before = client.index(gallery).count
    again = client.add_images(gallery, [photos["chelsea"], photos["coffee"]])
    assert again.added == 0 and again.already_present == 2
    assert client.index(gallery).count == before == len(photos)


def test_delete_items_and_lookup(client, photos):
    client.create_index("scratch")
    ids = client.add_images("scratch", [photos["coffee"], photos["camera"]]).ids
    assert client.lookup("scratch", ids).present == ids
    assert client.delete_items("scratch", ids[:1]).deleted == 1
    assert client.lookup("scratch", ids).present == ids[1:]
    client.drop_index("scratch")
    with pytest.raises(MMServeError) as err:
        client.index("scratch")
    assert err.value.status == 404


def test_bad_requests_are_4xx(client, gallery):
    cases = [
        lambda: client.query("no-such-index", text="cat"),
        lambda: client.query(gallery, text="cat", top_k=0),
        lambda: client._json(f"/v1/indexes/{gallery}/query", {"text": "a", "image": "aGk="}, None),
        lambda: client.create_index("Bad Name!"),
        lambda: client.add_images(gallery, [b"not an image"]),
        lambda: client._json(f"/v1/indexes/{gallery}/items", {"items": [{"path": "/etc/passwd"}]}, None),
    ]
    statuses = []
    for case in cases:
        with pytest.raises(MMServeError) as err:
            case()
        statuses.append(err.value.status)
    assert statuses == [404, 422, 400, 422, 415, 403]


def test_query_against_an_index_of_another_encoder_is_refused(client, served):
    """An index built by another encoder (here: a 512-d one written straight to the same Milvus
    file by a second deployment configuration) is refused with a clear 4xx, not a crash."""
    from ray import serve

    handle = serve.get_deployment_handle("SearchIndex", app_name="mmserve")
    handle.create.remote(
        "default", "clip-index", encoder="clip-vit-b-32", space="clip:openai/clip-vit-base-patch32", dim=512
    ).result()
    rows = [("0" * 64, np.ones(512, dtype=np.float32), {})]
    handle.add.remote("default", "clip-index", rows, encoder="clip-vit-b-32").result()
    with pytest.raises(MMServeError) as err:
        client.query("clip-index", text="a cat")
    assert err.value.status == 400 and "512" in err.value.message and "384" in err.value.message
    with pytest.raises(MMServeError) as err:
        client.add_images("clip-index", [photo("chelsea")])
    assert err.value.status == 400


def test_index_survives_an_app_restart(client, gallery, served):
    from ray import serve

    from graphs.app import build_app

    count = client.index(gallery).count
    serve.delete(served["app"])
    serve.run(build_app(served["args"]), name=served["app"], route_prefix="/")
    assert client.index(gallery).count == count
    assert client.query(gallery, text="a cat", top_k=1).hits[0].metadata["file"] == "chelsea"
