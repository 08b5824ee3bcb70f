"""What an encoder deployment says about itself: one typed record for every modality, read by the
gateway's routes, compose and fusion (it crosses Ray handles as a pickled dataclass)."""

from __future__ import annotations

from dataclasses import dataclass, field

from models.image_input import InputSize


@dataclass(frozen=True)
class EncoderInfo:
    modality: str  # "image", "text" or "audio"
    model: str  # the embedder's id: what embedding responses name and indexes record
    space: str  # vectors from encoders of the same space are comparable (zero-shot, search)
    dim: int  # pooled embedding dimension
    token_dim: int  # token-level feature dimension (fusion heads)
    device: str
    logit_scale: float = 1.0  # zero-shot softmax temperature (image-text spaces)
    task_model: str | None = None  # the model of the deployment's other task: classifier or recogniser
    input_size: InputSize | None = None  # what the embedder's preprocess makes of an image (image transports)
    quality: dict | None = None  # a fine-tuned adapter's measured figures (models.adapter.quality)
    placement: dict = field(default_factory=dict, compare=False)
    batch: dict = field(default_factory=dict, compare=False)

    def fusion_encoder(self) -> dict:
        """What a fusion head records of the encoder that made its features, and checks on use."""
        return {"id": self.model, "pooled_dim": self.dim, "token_dim": self.token_dim}
