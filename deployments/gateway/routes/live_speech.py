"""The live speech WebSocket (``deployments/gateway/live_speech.py``; docs/live_speech.md)."""

from __future__ import annotations

import contextlib

from fastapi import APIRouter, WebSocket

from deployments.gateway import live_speech
from models.errors import MMServeError

router = APIRouter()


@router.websocket(live_speech.PATH)
async def live_transcription(websocket: WebSocket) -> None:
    """PCM in, partial and final transcripts out; admitted on the handshake (``admitted``)."""
    async with contextlib.AsyncExitStack() as held:
        try:
            tenant, options = await _admitted(websocket, held)
        except MMServeError as err:
            return await live_speech.refuse(websocket, err)
        protocol = (
            live_speech.SUBPROTOCOL if live_speech.SUBPROTOCOL in live_speech.offered(websocket) else None
        )
        await websocket.accept(subprotocol=protocol)
        await live_speech.LiveSession(websocket, tenant, options).run()


async def _admitted(websocket: WebSocket, held: contextlib.AsyncExitStack):
    """The tenant (its key, its audio modality, a quota lease held while the socket is open) and the
    options, or the domain error that refuses the handshake."""
    services = websocket.app.state.services
    address = websocket.client.host if websocket.client else "unknown"
    tenant = services.admission.authenticate(
        live_speech.key_headers(websocket), address
    )  # first, as for HTTP
    services.encoders.use(tenant, "audio")  # 403 for a tenant without audio
    options = live_speech.options_of(websocket.query_params)
    sessions: live_speech.Sessions = websocket.app.state.live_sessions
    sessions.enter(services.settings.live_speech, services.settings.retry_after_s)
    held.callback(sessions.leave)
    lease = await services.admission.acquire(tenant)
    if lease is not None:
        held.callback(services.admission.release, tenant.id, lease)
    return tenant, options
