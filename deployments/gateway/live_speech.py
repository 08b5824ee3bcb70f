"""Live speech over a WebSocket (``/v1/audio/transcriptions/ws``; the protocol is in
docs/live_speech.md): the client sends its microphone as binary frames of 16 kHz mono PCM (s16le)
and JSON control messages; the gateway answers with partial transcripts of the utterance being
spoken (every ``partial_every_s`` of new audio) and a final one when the client commits it.

Admission happens on the handshake, before the socket is accepted: the same API keys as HTTP (the
``Authorization`` header, or, for browsers, which cannot set headers on a WebSocket, the subprotocol
``mmserve.key.<key>`` offered beside ``mmserve.v1``), the tenant's audio modality, one quota lease
held for the connection's life, and the replica's ``max_sessions``. A refusal is the HTTP answer of
the same error (401, 403, 429, 503) in the error shape. Every transcription is one call of the
AudioModel's ``transcribe`` (no second Whisper), under the audio in-flight budget and the
request deadline, like an HTTP transcription.

Bounds (``GatewaySettings.live_speech``): one utterance buffers at most ``max_buffer_s`` of audio
(beyond: close 1009); a connection that sends nothing while no transcription is in flight for
``idle_timeout_s`` is closed (4408); a frame that is neither PCM (an even number of bytes) nor a
known control message closes it (1003). A failed transcription is an ``error`` message, and the
connection stays open."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from enum import IntEnum

import numpy as np
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from config.settings import LiveSpeechLimits
from config.tenants import Tenant
from deployments import request_ids
from deployments.gateway import calls, errors
from deployments.gateway.transcription import Transcription
from models.errors import InvalidInput, MMServeError, Overloaded
from models.media import SAMPLE_RATE

log = logging.getLogger("ray.serve")

PATH = "/v1/audio/transcriptions/ws"
SUBPROTOCOL = "mmserve.v1"
KEY_PROTOCOL = "mmserve.key."  # + the API key: how a browser authenticates (it cannot set headers)
BYTES_PER_SAMPLE = 2  # s16le
CONTROLS = ("commit", "clear")


class Close(IntEnum):
    """The close codes of the live speech socket."""

    NORMAL = 1000  # the client closed it
    BAD_FRAME = 1003  # neither 16-bit PCM nor a known control message
    INTERNAL = 1011  # a bug of ours
    TOO_BIG = 1009  # the utterance outgrew max_buffer_s
    IDLE = 4408  # no frame, and no transcription in flight, for idle_timeout_s


class Closing(Exception):
    """The socket must close with ``code`` because of what the client did (or did not do)."""

    def __init__(self, code: Close, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason[:120]  # a close reason fits in 123 bytes


class Sessions:
    """Open live speech connections on this gateway replica, against ``max_sessions``."""

    def __init__(self) -> None:
        self.open = 0

    def enter(self, limits: LiveSpeechLimits, retry_after_s: float) -> None:
        if self.open >= limits.max_sessions:
            raise Overloaded(
                f"{limits.max_sessions} live speech connections are open on this replica (its "
                f"max_sessions); retry after {retry_after_s:g}s",
                retry_after=retry_after_s,
            )
        self.open += 1

    def leave(self) -> None:
        self.open -= 1


# ---- the handshake ------------------------------------------------------------------------------
def offered(websocket: WebSocket) -> list[str]:
    header = websocket.headers.get("sec-websocket-protocol", "")
    return [p.strip() for p in header.split(",") if p.strip()]


def key_headers(websocket: WebSocket) -> dict[str, str]:
    """The headers admission reads the API key from: the handshake's own, or a bearer header made
    from the ``mmserve.key.<key>`` subprotocol a browser offered."""
    headers = {k: v for k, v in websocket.headers.items() if k in ("authorization", "x-api-key")}
    for protocol in offered(websocket):
        if protocol.startswith(KEY_PROTOCOL) and "authorization" not in headers:
            headers["authorization"] = f"Bearer {protocol.removeprefix(KEY_PROTOCOL)}"
    return headers


def options_of(query) -> Transcription:
    """The transcription options from the handshake's query string: ``task`` (transcribe or
    translate), ``language`` (detected when absent) and ``prompt``."""
    task = query.get("task", "transcribe")
    if task not in ("transcribe", "translate"):
        raise InvalidInput(f"task must be transcribe or translate, not '{task[:32]}'", param="task")
    language = query.get("language") or None
    if language is not None and not (language.isascii() and language.isalpha() and len(language) <= 8):
        raise InvalidInput(
            f"language must be a language code such as 'en', not '{language[:16]}'", param="language"
        )
    prompt = query.get("prompt") or None
    if prompt is not None and len(prompt) > 1000:
        raise InvalidInput("prompt is over 1000 characters", param="prompt")
    return Transcription(task=task, language=None if task == "translate" else language, prompt=prompt)


async def refuse(websocket: WebSocket, err: MMServeError) -> None:
    """Answer the handshake with the HTTP error itself (401, 403, 429, 503 in the error shape), or,
    where the server cannot send an HTTP answer to a WebSocket handshake, close it unaccepted (the
    client then sees 403)."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(errors.domain_response(err))
    else:
        await websocket.close(code=1008, reason=err.message[:120])


# ---- one utterance's audio ----------------------------------------------------------------------
class Utterance:
    """The PCM of the utterance being spoken, bounded by ``max_buffer_s``; ``number`` counts the
    utterances of the connection (a partial for an utterance already final is dropped)."""

    def __init__(self, max_buffer_s: float) -> None:
        self.max_samples = int(max_buffer_s * SAMPLE_RATE)
        self.chunks: list[bytes] = []
        self.samples = self.at_partial = self.number = 0

    def append(self, pcm: bytes) -> None:
        if len(pcm) % BYTES_PER_SAMPLE:
            raise Closing(Close.BAD_FRAME, f"a binary frame is 16-bit PCM: {len(pcm)} bytes is an odd count")
        if self.samples + len(pcm) // BYTES_PER_SAMPLE > self.max_samples:
            raise Closing(
                Close.TOO_BIG,
                f"the utterance is over {self.max_samples / SAMPLE_RATE:g} s of audio (max_buffer_s): commit sooner",
            )
        self.chunks.append(pcm)
        self.samples += len(pcm) // BYTES_PER_SAMPLE

    @property
    def seconds(self) -> float:
        return self.samples / SAMPLE_RATE

    def due(self, every_s: float) -> bool:
        """Whether ``every_s`` of audio came since the last partial."""
        return self.samples - self.at_partial >= every_s * SAMPLE_RATE

    def audio(self) -> np.ndarray:
        """The utterance so far as float32 in [-1, 1]."""
        pcm = np.frombuffer(b"".join(self.chunks), dtype="<i2")
        return pcm.astype(np.float32) / 32768.0

    def partial(self) -> np.ndarray:
        self.at_partial = self.samples
        return self.audio()

    def take(self) -> np.ndarray:
        """The whole utterance, which ends here: the next audio starts the next one."""
        audio = self.audio()
        self.chunks, self.samples, self.at_partial = [], 0, 0
        self.number += 1
        return audio

    def clear(self) -> None:
        self.take()


def control(text: str) -> str:
    """The type of a control message (``{"type": "commit"}`` or ``{"type": "clear"}``)."""
    try:
        message = json.loads(text)
    except ValueError:
        raise Closing(Close.BAD_FRAME, "a text frame is a JSON control message") from None
    kind = message.get("type") if isinstance(message, dict) else None
    if kind not in CONTROLS:
        raise Closing(Close.BAD_FRAME, f"a control message's type is one of {', '.join(CONTROLS)}")
    return kind


# ---- the connection -----------------------------------------------------------------------------
class LiveSession:
    """One accepted connection: receives frames, sends partial and final transcripts."""

    def __init__(self, websocket: WebSocket, tenant: Tenant, options: Transcription) -> None:
        services = websocket.app.state.services
        self.websocket, self.tenant, self.options = websocket, tenant, options
        self.speech, self.budgets = services.speech, websocket.app.state.budgets
        self.limits: LiveSpeechLimits = services.settings.live_speech
        self.timeout_s = services.settings.request_timeout_s
        self.utterance = Utterance(self.limits.max_buffer_s)
        self.partial: asyncio.Task | None = None
        self.sending = asyncio.Lock()

    async def run(self) -> None:
        await self.send(
            type="session.created",
            request_id=request_ids.current(),
            session={
                "sample_rate": SAMPLE_RATE,
                "encoding": "pcm_s16le",
                "channels": 1,
                "task": self.options.task,
                "language": self.options.language,
                **self.limits.model_dump(exclude={"max_sessions"}),
            },
        )
        try:
            await self._frames()
        except Closing as closing:
            await self._close(closing.code, closing.reason)
        except (
            Exception
        ):  # a bug of ours: the client gets 1011, not a connection dropped without a close frame
            log.exception("live speech session failed")
            await self._close(Close.INTERNAL, "internal error")
        finally:
            await self._stop_partial()

    async def _frames(self) -> None:
        while (message := await self._receive()) is not None:
            if message.get("bytes") is not None:
                self.utterance.append(message["bytes"])
                self._maybe_partial()
            elif control(message.get("text") or "") == "commit":
                await self._final()
            else:
                await self._stop_partial()
                self.utterance.clear()

    async def _receive(self) -> dict | None:
        """The next frame (None once the client closed), waiting at most ``idle_timeout_s`` while no
        transcription is in flight."""
        while True:
            try:
                message = await asyncio.wait_for(self.websocket.receive(), self.limits.idle_timeout_s)
            except TimeoutError:
                if self.partial is None or self.partial.done():
                    raise Closing(
                        Close.IDLE, f"no frame for {self.limits.idle_timeout_s:g} s (idle_timeout_s)"
                    ) from None
                await asyncio.wait({self.partial})
                continue
            return None if message["type"] == "websocket.disconnect" else message

    def _maybe_partial(self) -> None:
        busy = self.partial is not None and not self.partial.done()
        if not busy and self.utterance.due(self.limits.partial_every_s):
            audio, number = self.utterance.partial(), self.utterance.number
            self.partial = asyncio.get_running_loop().create_task(self._send_partial(audio, number))

    async def _send_partial(self, audio: np.ndarray, number: int) -> None:
        heard = await self._transcribe(audio)
        if heard is not None and number == self.utterance.number:  # not final meanwhile
            await self.send(
                type="transcript.partial", utterance=number, text=heard["text"].strip(), audio_s=_s(audio)
            )

    async def _final(self) -> None:
        await self._stop_partial()
        number, audio = self.utterance.number, self.utterance.take()
        heard = (
            await self._transcribe(audio) if audio.size else {"text": "", "language": self.options.language}
        )
        if heard is not None:
            await self.send(
                type="transcript.final",
                utterance=number,
                text=heard["text"].strip(),
                language=heard.get("language"),
                audio_s=_s(audio),
            )

    async def _transcribe(self, audio: np.ndarray) -> dict | None:
        """One transcription under the audio budget and the deadline; a failure is sent as an
        ``error`` message (None here), and the connection goes on."""
        calls.start_deadline(self.timeout_s)
        started = time.perf_counter()
        try:
            with self.budgets.slot("audio"):
                heard = await self.speech.transcribe(self.tenant, audio, self.options)
        except Exception as exc:  # asyncio.CancelledError is no Exception: it passes
            await self.send(type="error", **errors.error_event(exc))
            return None
        heard["latency_ms"] = round((time.perf_counter() - started) * 1000, 1)
        return heard

    async def _stop_partial(self) -> None:
        if self.partial is not None and not self.partial.done():
            self.partial.cancel()
            await asyncio.wait({self.partial})
        self.partial = None

    async def send(self, **message) -> None:
        async with self.sending:
            if self.websocket.application_state is WebSocketState.CONNECTED:
                try:
                    await self.websocket.send_json(message)
                except (WebSocketDisconnect, RuntimeError):  # the client left meanwhile
                    pass

    async def _close(self, code: int, reason: str) -> None:
        async with self.sending:
            if self.websocket.application_state is WebSocketState.CONNECTED:
                await self.websocket.close(code=code, reason=reason)


def _s(audio: np.ndarray) -> float:
    return round(audio.size / SAMPLE_RATE, 3)
