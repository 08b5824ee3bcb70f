"""Audio routes: OpenAI-compatible transcription and translation, and audio features."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from api import schemas as s
from deployments.gateway import deps, responses, routing, sse, transcript_stream
from deployments.gateway.transcription import Transcription
from models.errors import InvalidInput
from models.media import SAMPLE_RATE

router = APIRouter()
_EVENTS_DOC = (
    "with stream: 'transcript.text.delta' events (TranscriptTextDeltaEvent) as segments are decoded, "
    "then 'transcript.text.done' (TranscriptTextDoneEvent), then [DONE]"
)
SPEECH = {200: {"model": s.VerboseTranscriptionResponse, **sse.documented(_EVENTS_DOC)[200]}}
STREAMABLE = ("json", "text")


@routing.post(
    router, "/v1/audio/transcriptions", body=s.TranscriptionRequest, modality="audio", responses=SPEECH
)
async def transcriptions(
    speech: deps.SpeechDep, tenant: deps.CurrentTenant, body=routing.body_of(s.TranscriptionRequest)
) -> Response:
    return await _speech(speech, tenant, body, Transcription(task="transcribe", **body.decoding()))


@routing.post(router, "/v1/audio/translations", body=s.TranslationRequest, modality="audio", responses=SPEECH)
async def translations(
    speech: deps.SpeechDep, tenant: deps.CurrentTenant, body=routing.body_of(s.TranslationRequest)
) -> Response:
    options = Transcription(task="translate", prompt=body.prompt, temperature=body.temperature)
    return await _speech(speech, tenant, body, options)


async def _speech(speech, tenant, body, options: Transcription) -> Response:
    if body.stream:
        return await _streamed(speech, tenant, body, options)
    audio = await speech.decode(tenant, body.file, "file")
    result = s.VerboseTranscriptionResponse.model_validate(await speech.transcribe(tenant, audio, options))
    return responses.render_transcript(result, body.response_format)


async def _streamed(speech, tenant, body, options: Transcription) -> Response:
    """OpenAI's transcript.text events (``transcript_stream``), once the first segment came."""
    if body.response_format not in STREAMABLE:
        raise InvalidInput(
            f"stream answers with text events: response_format must be json or text, not "
            f"'{body.response_format}'",
            param="response_format",
        )
    audio = await speech.decode(tenant, body.file, "file")
    segments = await transcript_stream.started(speech.transcribe_stream(tenant, audio, options))
    return sse.response(transcript_stream.events(segments, seconds=audio.size / SAMPLE_RATE))


@routing.post(
    router, "/v1/audio/features", body=s.FeaturesRequest, modality="audio", response_model=s.FeaturesResponse
)
async def features(
    speech: deps.SpeechDep, tenant: deps.CurrentTenant, body=routing.body_of(s.FeaturesRequest)
):
    audio = await speech.decode(tenant, body.audio, "audio")
    feats = await speech.features(tenant, audio, body.features)
    floats = sum(v.size for v in feats.values())
    return await responses.rendered(responses.features_response, audio, feats, floats=floats)
