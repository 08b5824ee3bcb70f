"""Vision backends: ImageNet-style classifiers and image embedders.

Contracts, each split into pre / core / post so a deployment can batch the core:
- ``ImageClassifier``: ``labels``, ``preprocess(rgb) -> [3,H,W]``, ``probs(batch) -> [B, C]``.
- ``ImageEmbedder``: ``space``, ``dim``, ``logit_scale``, ``preprocess(rgb)``, ``embed(batch) -> [B, dim]``.

Token-level features (for cross-modal attention fusion): ``token_dim`` and ``tokens(batch) ->
[B, T, token_dim]`` float32 on the classifiers and embedders. EfficientNet-Lite (and ConSE over it):
its last conv feature map before pooling, 7x7x1280 -> 49 tokens for Lite0 (8x8 Lite1, 9x9 Lite2);
ViT and CLIP's image tower: the patch tokens of ``last_hidden_state`` (the CLS token dropped).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch

from models import accel
from models.image_input import Cropped, InputSize, resize_center_crop
from models.runtime import Precision, autocast, effective_precision, l2_normalize
from models.text import TextEmbedder, clip_space, prompt_embeddings

log = logging.getLogger(__name__)


class ImageClassifier(Protocol):
    model_id: str
    labels: list[str]

    def preprocess(self, image: np.ndarray) -> torch.Tensor: ...

    def probs(self, batch: torch.Tensor) -> np.ndarray: ...


class TokenImageModel(Protocol):
    """An image classifier or embedder that also exposes its token-level features."""

    token_dim: int

    def tokens(self, batch: torch.Tensor) -> np.ndarray: ...


class ImageEmbedder(Protocol):
    model_id: str
    space: str
    dim: int
    logit_scale: float

    def preprocess(self, image: np.ndarray) -> torch.Tensor: ...

    def embed(self, batch: torch.Tensor) -> np.ndarray: ...


def trace_and_freeze(module: torch.nn.Module, example: torch.Tensor) -> torch.jit.ScriptModule:
    with torch.inference_mode(False), torch.no_grad():
        return torch.jit.freeze(torch.jit.trace(module, example))


def patch_tokens(hidden: torch.Tensor) -> torch.Tensor:
    """``[B, T, d]`` tokens from a vision backbone's last hidden state: a ViT-style sequence loses its
    leading CLS token; a convolutional ``[B, C, H, W]`` map becomes ``H*W`` tokens of ``C`` channels."""
    if hidden.ndim == 4:
        return hidden.flatten(2).transpose(1, 2)
    return hidden[:, 1:]


class _FeatureMap(torch.nn.Module):
    """EfficientNet's last conv feature map (before pooling): ``[B, 1280, 7, 7]`` at 224 px."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(x)


class _TorchVisionModel:
    """Device, precision and the batched forward shared by the torch vision backends."""

    def __init__(self, *, model: torch.nn.Module, model_id: str, device: str, precision: Precision):
        self.model = model.to(device).eval()
        self.model_id = model_id
        self.device = device
        self.precision = effective_precision(precision, device)

    def freeze_graph(self, example: torch.Tensor) -> None:
        """Trace and freeze the network (fp32 only): a TorchScript forward runs without holding
        Python's GIL op by op, so a replica's event loop and its forward thread stop starving each
        other (measured 4x more batches/s beside a busy Python thread)."""
        if self.precision != "fp32":
            return
        self.model = trace_and_freeze(self.model, example.to(self.device))

    def _run(self, batch: torch.Tensor, fn) -> torch.Tensor:
        with torch.inference_mode(), autocast(self.precision, self.device):
            return fn(batch.to(self.device)).float()


# The TF-Lite release's evaluation resolution of each EfficientNet-Lite (``efficientnet_lite_builder``).
LITE_IMAGE_SIZE = {"efficientnet-lite0": 224, "efficientnet-lite1": 240, "efficientnet-lite2": 260}
CROP_PADDING = 32  # its eval preprocessing: a centred crop of size/(size+32) of the short side


def lite_input_size(name: str) -> InputSize:
    """What preprocess makes of an image for ``name``: short side to size+32, centred crop of size
    (256/224 for Lite0, 272/240 for Lite1, 292/260 for Lite2)."""
    size = LITE_IMAGE_SIZE[name]
    return InputSize(resize=size + CROP_PADDING, crop=size)


class EfficientNetLiteClassifier(_TorchVisionModel):
    """EfficientNet-Lite0, -Lite1 or -Lite2 (ImageNet-1k) at its own resolution (224, 240, 260 px),
    inputs scaled to [-1, 1] as in the TF-Lite release."""

    def __init__(self, *, model, labels: list[str], model_id: str, device: str, precision: Precision):
        super().__init__(model=model, model_id=model_id, device=device, precision=precision)
        self.runtime: accel.Runtime = "torch"
        self.labels = labels
        self.input_size = lite_input_size(model_id)  # what preprocess makes of an image
        self.image_size = self.input_size.crop
        self.token_dim = int(model._conv_head.out_channels)
        self._eager = self.model  # freeze_graph replaces self.model; the feature map is built from this
        self._feature_net: torch.nn.Module | None = None
        self._feature_lock = threading.Lock()

    @classmethod
    def load(
        cls,
        weights,
        *,
        labels: list[str],
        name: str = "efficientnet-lite0",
        device="cpu",
        precision: Precision | str = "fp32",
        torchscript: bool = True,
        runtime: accel.Runtime = "torch",
    ):
        """``name``'s network with ``weights``; ``runtime`` torch (TorchScript when ``torchscript``), or
        a compiled CPU runtime (``models.accel``) for the classification forward; token features
        stay on torch."""
        from efficientnet_lite_pytorch import EfficientNet

        if name not in LITE_IMAGE_SIZE:
            raise ValueError(f"unknown EfficientNet-Lite '{name}'; known: {', '.join(LITE_IMAGE_SIZE)}")
        model = EfficientNet.from_name(name, num_classes=len(labels))
        model.load_state_dict(torch.load(str(weights), map_location="cpu", weights_only=True))
        if runtime != "torch" and device != "cpu":
            log.warning("runtime %s is a CPU runtime: running torch on %s", runtime, device)
            runtime = "torch"
        obj = cls(
            model=model,
            labels=labels,
            model_id=name,
            device=device,
            precision=precision if runtime == "torch" else "fp32",
        )
        if runtime != "torch":
            obj.compile(runtime, accel.resolve_precision(runtime, precision), weights)
        elif torchscript:
            obj.freeze_graph(torch.zeros(2, 3, obj.image_size, obj.image_size))
        return obj

    def compile(self, runtime: accel.Runtime, precision: str, weights) -> None:
        """Export the network to ONNX (cached) and run its forward on ``runtime`` at ``precision``;
        int8 is quantised statically, activations calibrated on the packaged sample photos."""
        from models.sample_photos import calibration_photos

        size = self.image_size
        path = accel.export_onnx(
            self._eager,
            (torch.zeros(1, 3, size, size),),
            names=("pixels", "logits"),
            dynamic_axes={"pixels": {0: "batch"}, "logits": {0: "batch"}},
            key=f"{self.model_id}-{accel.fingerprint(weights)}",
        )
        if precision == "int8":
            pixels = [self.preprocess(p).numpy() for p in calibration_photos()]
            path = accel.quantize_int8(
                path,
                mode="static",
                calibration=({"pixels": np.stack(pixels[i : i + 8])} for i in range(0, len(pixels), 8)),
            )
        net = accel.compile_onnx(path, runtime=runtime, precision=precision, threads=torch.get_num_threads())
        self.model = lambda pixels: torch.from_numpy(net(pixels=pixels.contiguous().numpy()))
        self.runtime, self.compiled_precision = runtime, precision

    def preprocess(self, image: np.ndarray | Cropped) -> torch.Tensor:
        """[3, size, size] in [-1, 1] (224 px for Lite0); a ``Cropped`` image (the gateway did the
        resize and crop) is only scaled."""
        if isinstance(image, Cropped):
            pixels = image.pixels
            if pixels.shape != (self.image_size, self.image_size, 3):
                raise ValueError(
                    f"a cropped input must be {self.image_size}x{self.image_size} RGB, not {pixels.shape}"
                )
        else:
            pixels = resize_center_crop(image, self.input_size)
        return torch.from_numpy((pixels.astype(np.float32) - 127.0) / 128.0).permute(2, 0, 1)

    def probs(self, batch: torch.Tensor) -> np.ndarray:
        return self._run(batch, self.model).softmax(-1).cpu().numpy()

    def tokens(self, batch: torch.Tensor) -> np.ndarray:
        """The last conv feature map before pooling as ``[B, H*W, 1280]`` (49 tokens at 224 px, 64 at
        240, 81 at 260)."""
        return patch_tokens(self._run(batch, self._features())).contiguous().cpu().numpy()

    def probs_from_pooled(self, pooled: np.ndarray) -> np.ndarray:
        """Class probabilities from the mean of ``tokens`` (the classifier's own head on its pooled
        features, as its forward does), so one feature-map pass gives both."""
        with torch.inference_mode():
            return self._eager._fc(torch.from_numpy(pooled).to(self.device)).float().softmax(-1).cpu().numpy()

    def _features(self) -> torch.nn.Module:
        """The feature-map network, built on first use; traced and frozen like the classifier when it is."""
        with self._feature_lock:
            if self._feature_net is None:
                net = _FeatureMap(self._eager).eval()
                if isinstance(self.model, torch.jit.ScriptModule) or self.runtime != "torch":
                    example = torch.zeros(2, 3, self.image_size, self.image_size, device=self.device)
                    net = trace_and_freeze(net, example)
                self._feature_net = net
            return self._feature_net


class _HFImageModel(_TorchVisionModel):
    """A transformers vision model with its own image processor (hub id or local directory)."""

    def __init__(self, *, processor, **kwargs):
        super().__init__(**kwargs)
        self.processor = processor

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        return self.processor(images=image, return_tensors="pt")["pixel_values"][0]

    def tokens(self, batch: torch.Tensor) -> np.ndarray:
        """Patch tokens of the backbone's ``last_hidden_state`` (CLS dropped): ``[B, T, token_dim]``."""
        return patch_tokens(self._run(batch, self._hidden)).contiguous().cpu().numpy()

    def _hidden(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.base_model(pixel_values=pixels).last_hidden_state


class ViTClassifier(_HFImageModel):
    """``ViTForImageClassification`` (or any AutoModelForImageClassification) with its id2label."""

    @classmethod
    def load(cls, path, *, model_id: str, device="cpu", precision: Precision = "fp32"):
        from transformers import AutoImageProcessor, AutoModelForImageClassification

        model = AutoModelForImageClassification.from_pretrained(str(path))
        obj = cls(
            processor=AutoImageProcessor.from_pretrained(str(path)),
            model=model,
            model_id=model_id,
            device=device,
            precision=precision,
        )
        obj.labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
        obj.token_dim = _hidden_size(model.config)
        return obj

    def probs(self, batch: torch.Tensor) -> np.ndarray:
        return self._run(batch, lambda x: self.model(pixel_values=x).logits).softmax(-1).cpu().numpy()


class CLIPImageEmbedder(_HFImageModel):
    """The image tower of a CLIP checkpoint; shares its space with ``CLIPTextEncoder`` of the same id."""

    logit_scale = 100.0  # CLIP's trained temperature (clamped at 100)

    @classmethod
    def load(cls, path, *, model_id: str, device="cpu", precision: Precision = "fp32"):
        from transformers import AutoImageProcessor, CLIPVisionModelWithProjection

        model = CLIPVisionModelWithProjection.from_pretrained(str(path))
        obj = cls(
            processor=AutoImageProcessor.from_pretrained(str(path)),
            model=model,
            model_id=model_id,
            device=device,
            precision=precision,
        )
        obj.space, obj.dim = clip_space(model_id), model.config.projection_dim
        obj.token_dim = model.config.hidden_size
        return obj

    def embed(self, batch: torch.Tensor) -> np.ndarray:
        return l2_normalize(self._run(batch, lambda x: self.model(pixel_values=x).image_embeds))

    def _hidden(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.vision_model(pixel_values=pixels).last_hidden_state


def _hidden_size(config) -> int:
    """Channels of a backbone's last hidden state (``hidden_size``, or the last stage of a CNN)."""
    size = getattr(config, "hidden_size", None)
    return int(size if size is not None else config.hidden_sizes[-1])


class ConSEEmbedder:
    """ConSE (Norouzi et al., 2014): an image's embedding is the probability-weighted sum of the
    text embeddings of its top-T classes, so images land in the text encoder's space.

    It knows what the classifier knows (ImageNet's 1000 concepts), nothing about colours or scenes.
    """

    logit_scale = 25.0  # chosen on ImageNet-style prompts: ConSE cosines span a narrower range than CLIP's

    def __init__(
        self, *, classifier: ImageClassifier, class_embeddings: np.ndarray, space: str, top_t: int = 10
    ):
        if class_embeddings.shape[0] != len(classifier.labels):
            raise ValueError("one class embedding per classifier label is required")
        self.classifier = classifier
        self.class_embeddings = torch.from_numpy(np.ascontiguousarray(class_embeddings, dtype=np.float32))
        self.model_id = f"conse-{classifier.model_id}"
        self.input_size: InputSize | None = getattr(classifier, "input_size", None)
        self.space, self.dim, self.top_t = space, class_embeddings.shape[1], top_t

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        return self.classifier.preprocess(image)

    def embed(self, batch: torch.Tensor) -> np.ndarray:
        return self.embed_from_probs(self.classifier.probs(batch))

    @property
    def token_dim(self) -> int:
        return self.classifier.token_dim

    def tokens(self, batch: torch.Tensor) -> np.ndarray:
        """The classifier's token-level features (ConSE itself only pools class names)."""
        return self.classifier.tokens(batch)

    def embed_from_probs(self, probs: np.ndarray) -> np.ndarray:
        weights, idx = torch.from_numpy(probs).topk(self.top_t, dim=-1)
        weights = weights / weights.sum(-1, keepdim=True)
        return l2_normalize(torch.einsum("bt,btd->bd", weights, self.class_embeddings[idx]))


CLASS_PROMPT = "a photo of a {}"
# A prompt ensemble for class names (a few of CLIP's ImageNet templates, the ones that read as captions).
ENSEMBLE_PROMPTS = (
    "a photo of a {}",
    "a picture of a {}",
    "a close-up photo of the {}",
    "a photo of the {}",
    "a bright photo of a {}",
    "a black and white photo of the {}",
    "a cropped photo of a {}",
    "a good photo of the {}",
)


def class_name_embeddings(
    text: TextEmbedder,
    labels: Sequence[str],
    *,
    templates: Sequence[str] = (CLASS_PROMPT,),
    batch_size: int = 64,
) -> np.ndarray:
    """One embedding per class label (its first synonym): the prompt 'a photo of a <name>', or the
    mean over a prompt ensemble when several ``templates`` are given."""
    names = [label.split(",")[0].strip() for label in labels]
    return prompt_embeddings(text, names, templates, batch_size=batch_size)
