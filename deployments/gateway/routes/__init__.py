"""One router per feature; ``ROUTERS`` is what the gateway app includes."""

from deployments.gateway.routes import (
    audio,
    batches,
    compose,
    embeddings,
    fusion,
    live_speech,
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
    live_speech.router,
    search.router,
    compose.router,
    fusion.router,
    vision_language.router,
    batches.router,
]
