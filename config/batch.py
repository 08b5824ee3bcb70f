"""The ``batch:`` section: the Batch API's store, its per-tenant limits and the resources its Ray Data
pools may take per modality. Ray-free.

Online traffic keeps priority: a batch's actor pools get only what ``image`` / ``text`` / ``audio`` /
``vision_language`` grant here (at most ``max_actors`` actors of ``num_cpus`` / ``num_gpus`` each), never more.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from config.settings import absolute

BATCH_MODALITIES = ("image", "text", "audio", "vision_language")


class BatchLimits(BaseModel):
    """What one tenant may put into the Batch API (a tenant's ``batch:`` in the tenants file overrides
    the service's defaults)."""

    model_config = ConfigDict(extra="forbid")
    max_file_bytes: int = Field(
        64 * 1024 * 1024, ge=1024, description="largest input file, checked while it is read (413)"
    )
    max_lines: int = Field(50_000, ge=1, description="most requests (lines) in one input file (400)")
    max_running: int = Field(2, ge=1, description="batches of one tenant not yet finished at once (429)")


class BatchPool(BaseModel):
    """The Ray Data actor pool a batch of one modality runs on."""

    model_config = ConfigDict(extra="forbid")
    max_actors: int = Field(1, ge=1, description="model actors at most (each loads the modality's model)")
    num_cpus: float = Field(0.5, ge=0, description="CPUs each actor reserves")
    num_gpus: float = Field(0.0, ge=0, description="GPUs each actor reserves (fractions allowed)")
    batch_size: int = Field(16, ge=1, le=1024, description="requests handed to an actor at once")


class BatchArgs(BaseModel):
    """The Batch API (``/v1/files``, ``/v1/batches``): where its state lives and what it may use."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    store: str = Field(
        "~/.local/share/mmserve/batches",
        description=(
            "folder of the files and batches (<store>/<tenant>/files, <store>/<tenant>/batches); on a "
            "cluster a path every node mounts (shared filesystem), since a batch's runner may run on any node"
        ),
    )
    block_size: int = Field(
        32, ge=1, le=4096, description="requests committed to the store at once (what a crash can redo)"
    )
    limits: BatchLimits = BatchLimits()
    image: BatchPool = Field(
        BatchPool(), description="pool of /v1/embeddings/image and /v1/classify (vision.model's backends)"
    )
    text: BatchPool = Field(
        BatchPool(), description="pool of /v1/embeddings (text.model's; vision.model's for image models)"
    )
    audio: BatchPool = Field(
        BatchPool(batch_size=4),
        description="pool of /v1/audio/transcriptions (audio.model's Whisper; one batched pass per "
        "batch_size short greedy clips)",
    )
    vision_language: BatchPool = Field(
        BatchPool(batch_size=8),
        description="pool of /v1/captions and /v1/vqa (vision_language.models, each loaded on first use)",
    )

    @field_validator("store")
    @classmethod
    def _absolute(cls, store: str) -> str:
        return absolute(store)

    def pool(self, modality: str) -> BatchPool:
        pools = {
            "image": self.image,
            "text": self.text,
            "audio": self.audio,
            "vision_language": self.vision_language,
        }
        return pools[modality]
