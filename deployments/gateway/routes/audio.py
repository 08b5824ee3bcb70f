"""Audio routes: OpenAI-compatible transcription and translation, and audio features."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from api import schemas as s
from deployments.gateway import deps, responses, routing
from deployments.gateway.transcription import Transcription

router = APIRouter()
SPEECH = {200: {"model": s.VerboseTranscriptionResponse}}


@routing.post(
    router, "/v1/audio/transcriptions", body=s.TranscriptionRequest, modality="audio", responses=SPEECH
)
async def transcriptions(
    speech: deps.SpeechDep, tenant: deps.CurrentTenant, body=routing.body_of(s.TranscriptionRequest)
) -> Response:
    options = Transcription(
        task="transcribe",
        language=body.language,
        prompt=body.prompt,
        temperature=body.temperature,
        word_timestamps=body.word_timestamps(),
    )
    return await _speech(speech, tenant, body, options)


@routing.post(router, "/v1/audio/translations", body=s.TranslationRequest, modality="audio", responses=SPEECH)
async def translations(
    speech: deps.SpeechDep, tenant: deps.CurrentTenant, body=routing.body_of(s.TranslationRequest)
) -> Response:
    options = Transcription(task="translate", prompt=body.prompt, temperature=body.temperature)
    return await _speech(speech, tenant, body, options)


async def _speech(speech, tenant, body, options: Transcription) -> Response:
    audio = await speech.decode(tenant, body.file, "file")
    result = s.VerboseTranscriptionResponse.model_validate(await speech.transcribe(tenant, audio, options))
    return responses.render_transcript(result, body.response_format)


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
