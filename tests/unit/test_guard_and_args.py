import pytest
import yaml
from pydantic import ValidationError

from config.args import AppArgs
from graphs import guard
from graphs.app import demands

ONE_GPU_NODE = [{"CPU": 4.0, "GPU": 1.0, "memory": 8e9}]


def test_fractions_that_fit_pass():
    args = AppArgs.model_validate(
        {"vision": {"num_gpus": 0.25}, "text": {"num_gpus": 0.125}, "audio": {"num_gpus": 0.5}}
    )
    assert guard.problems(demands(args), ONE_GPU_NODE) == []


def test_replica_bigger_than_any_node_is_named():
    args = AppArgs.model_validate({"vision": {"num_gpus": 2}})
    found = guard.problems(demands(args), ONE_GPU_NODE)
    assert any("VisionEncoder" in f and "GPU=2" in f for f in found)


def test_sum_of_min_replicas_over_total():
    args = AppArgs.model_validate(
        {"audio": {"num_gpus": 0.5, "autoscaling": {"min_replicas": 3, "max_replicas": 3}}}
    )
    found = guard.problems(demands(args), ONE_GPU_NODE)
    assert found and "AudioModel 3x0.5" in found[0] and "'GPU'" in found[0]


def test_custom_resource_missing():
    args = AppArgs.model_validate({"text": {"resources": {"TPU": 1}}})
    with pytest.raises(guard.UnschedulableError, match="TextEncoder.*TPU"):
        guard.check(demands(args), ONE_GPU_NODE)


def test_batch_larger_than_ongoing_limit_rejected():
    with pytest.raises(ValidationError, match="batches could never fill"):
        AppArgs.model_validate({"text": {"max_ongoing_requests": 4, "batch": {"max_batch_size": 32}}})


def test_mismatched_spaces_rejected():
    with pytest.raises(ValidationError, match="share a space"):
        AppArgs.model_validate(
            {"vision": {"model": {"embedder": "clip", "embedder_path": "openai/clip-vit-base-patch32"}}}
        )


def test_clip_pair_accepted():
    clip = "openai/clip-vit-base-patch32"
    args = AppArgs.model_validate(
        {
            "vision": {"model": {"embedder": "clip", "embedder_path": clip}},
            "text": {"model": {"kind": "clip", "path": clip}},
        }
    )
    assert args.vision.model.space(args.text.model) == args.text.model.space


@pytest.mark.parametrize("path", ["serve_config.yaml", "configs/gpu_cluster.yaml"])
def test_config_files_validate(path):
    config = yaml.safe_load(open(path))
    for app in config["applications"]:
        args = AppArgs.model_validate(app["args"])
        assert app["import_path"] == "graphs.app:build_app"
        assert args.gateway.serve_options()["max_ongoing_requests"] >= 1


def test_gpu_config_fractions_fit_one_gpu():
    args = AppArgs.model_validate(yaml.safe_load(open("configs/gpu_cluster.yaml"))["applications"][0]["args"])
    gpus = {name: d.num_gpus for name, d in args.deployments().items()}
    assert gpus["VisionEncoder"] == 0.25 and gpus["TextEncoder"] == 0.125 and gpus["AudioModel"] == 0.5
    assert gpus["VisionLanguage"] == 0.125 and sum(gpus.values()) <= 1.0
    paths = {m.path for m in args.vision_language.models}
    assert paths == {
        "Salesforce/blip-image-captioning-base",
        "Salesforce/blip-vqa-base",
        "dandelin/vilt-b32-finetuned-vqa",
    }


def test_vision_language_is_off_by_default_and_needs_models_when_on():
    assert "VisionLanguage" not in AppArgs().deployments()
    with pytest.raises(ValueError, match="vision_language.models"):
        AppArgs.model_validate({"vision_language": {"enabled": True}})
    model = {"id": "cap", "task": "caption", "engine": "blip", "path": "/m/blip"}
    with pytest.raises(ValueError, match="unique"):
        AppArgs.model_validate({"vision_language": {"enabled": True, "models": [model, model]}})
    on = AppArgs.model_validate(
        {
            "vision_language": {
                "enabled": True,
                "models": [model],
                "num_gpus": 0.5,
                "batch": {"max_batch_size": 4},
            }
        }
    )
    assert (
        on.deployments()["VisionLanguage"].serve_options(user_config=on.vision_language.batch.model_dump())[
            "user_config"
        ]["max_batch_size"]
        == 4
    )
    assert [d.per_replica for d in demands(on) if d.deployment == "VisionLanguage"] == [
        {"CPU": 1.0, "GPU": 0.5}
    ]


def test_a_milvus_lite_file_keeps_search_at_one_replica():
    with pytest.raises(ValueError, match="one process at a time"):
        AppArgs.model_validate({"search": {"uri": "/tmp/x/search.db", "autoscaling": {"max_replicas": 2}}})
    server = AppArgs.model_validate(
        {"search": {"uri": "http://milvus:19530", "autoscaling": {"max_replicas": 4}}}
    )
    assert server.search.uri == "http://milvus:19530"
    assert "SearchIndex" in server.deployments() and "FusionHead" in server.deployments()
    off = AppArgs.model_validate({"search": {"enabled": False}, "fusion": {"enabled": False}})
    assert "SearchIndex" not in off.deployments() and "FusionHead" not in off.deployments()


def test_max_replicas_per_node_needs_enough_nodes_and_reaches_serve():
    args = AppArgs.model_validate(
        {
            "text": {
                "num_gpus": 0.125,
                "max_replicas_per_node": 1,
                "autoscaling": {"min_replicas": 1, "max_replicas": 2},
            }
        }
    )
    assert args.text.serve_options()["max_replicas_per_node"] == 1
    assert "max_replicas_per_node" not in args.vision.serve_options()  # unset: Serve's default, no limit
    found = guard.problems(demands(args), ONE_GPU_NODE)
    assert found == [
        "deployment 'TextEncoder': 2 replicas at its maximum, at most 1 per node "
        "(max_replicas_per_node), but 1 node(s) can host one"
    ]
    cpu_only = {"CPU": 4.0, "memory": 8e9}  # a node that cannot host a GPU replica does not count
    assert guard.problems(demands(args), ONE_GPU_NODE + [cpu_only]) == found
    assert guard.problems(demands(args), ONE_GPU_NODE * 2) == []
