"""Audio routes: OpenAI-compatible transcription and translation, and audio features."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from api import schemas as s
from deployments.gateway import deps, responses, routing
from deployments.gateway.calls import call

router = APIRouter()
SPEECH = {200: {"model": s.VerboseTranscriptionResponse}}


@routing.post(
    router, "/v1/audio/transcriptions", body=s.TranscriptionRequest, modality="audio", responses=SPEECH
)
async def transcriptions(enc: deps.Encoders, body=routing.body_of(s.TranscriptionRequest)) -> Response:
    return await _speech(enc, body, task="transcribe", language=body.language, words=body.word_timestamps())


@routing.post(router, "/v1/audio/translations", body=s.TranslationRequest, modality="audio", responses=SPEECH)
async def translations(enc: deps.Encoders, body=routing.body_of(s.TranslationRequest)) -> Response:
    return await _speech(enc, body, task="translate", language=None)


async def _speech(enc, body, *, task: str, language: str | None, words: bool = False) -> Response:
    audio = await enc.media.decode("audio", body.file, "file")
    options = {
        "task": task,
        "language": language,
        "prompt": body.prompt,
        "temperature": body.temperature,
        "word_timestamps": words,
    }
    result = s.VerboseTranscriptionResponse.model_validate(
        await call(enc.use("audio").transcribe, audio, options)
    )
    return responses.render_transcript(result, body.response_format)


@routing.post(
    router, "/v1/audio/features", body=s.FeaturesRequest, modality="audio", response_model=s.FeaturesResponse
)
async def features(enc: deps.Encoders, body=routing.body_of(s.FeaturesRequest)):
    audio = await enc.media.decode("audio", body.audio, "audio")
    feats = await call(enc.use("audio").features, audio, list(dict.fromkeys(body.features)))
    return await responses.rendered(responses.features_response, audio, feats)
