"""One router per feature; ``ROUTERS`` is what the gateway app includes."""

from deployments.gateway.routes import (
    audio,
    batches,
    compose,
    embeddings,
    fusion,
    search,
    service,
    vision,
    vision_language,
)

ROUTERS = [
    service.router,
    embeddings.router,
    vision.router,
    audio.router,
    search.router,
    compose.router,
    fusion.router,
    vision_language.router,
    batches.router,
]
