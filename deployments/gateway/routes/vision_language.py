"""Vision-language routes: captions, visual question answering and OpenAI-style vision chat.

All three answer 503 naming ``vision_language.enabled`` when the VisionLanguage deployment is off.
Chat completions take the last user message: its one ``image_url`` part (a data URL; remote URLs are
not fetched) and its text parts. A caption model captions the image, starting with the text when
there is some; a VQA model answers the text (no text: the first caption model captions the image).
Streaming sends the finished answer word by word in OpenAI's chunk format: the model decodes a
whole batch at once, so the first chunk comes when the answer is done.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from api import schemas as s
from deployments import vl_requests
from deployments.gateway import deps, routing
from deployments.gateway.errors import media_invalid
from deployments.gateway.services.vision_language import VisionLanguageClient, VLModel
from models.errors import InvalidInput

router = APIRouter()
MODALITY = "image+text"


@routing.post(
    router, "/v1/captions", body=s.CaptionRequest, modality="image", response_model=s.CaptionResponse
)
async def captions(
    vl: deps.VisionLanguageDep, tenant: deps.CurrentTenant, body=routing.body_of(s.CaptionRequest)
):
    """Caption each image; with ``prompt``, each caption starts with it."""
    model = await vl.pick(body.model, "caption")
    images = await asyncio.gather(*(vl.image(tenant, raw, param) for raw, param in vl_requests.images(body)))
    outs = await asyncio.gather(
        *(
            vl.run(model, image, body.prompt, max_tokens=body.max_tokens, num_beams=body.num_beams)
            for image in images
        )
    )
    return vl_requests.captions(model.id, list(outs))


@routing.post(router, "/v1/vqa", body=s.VQARequest, modality=MODALITY, response_model=s.VQAResponse)
async def vqa(vl: deps.VisionLanguageDep, tenant: deps.CurrentTenant, body=routing.body_of(s.VQARequest)):
    """Answer each question about the image (ViLT also gives its top answers with probabilities)."""
    model = await vl.pick(body.model, "vqa")
    questions = vl_requests.questions(body)
    image = await vl.image(tenant, body.image, "image")
    outs = await asyncio.gather(
        *(
            vl.run(model, image, q, max_tokens=body.max_tokens, num_beams=body.num_beams, top_k=body.top_k)
            for q in questions
        )
    )
    return vl_requests.answers(model.id, questions, list(outs))


# ---- chat completions ----------------------------------------------------------------------
def refuse_unsupported(body: s.ChatCompletionRequest) -> None:
    """A 400 naming each parameter these models cannot honour, rather than silently ignoring it."""
    refused = {
        "tools": bool(body.tools),
        "functions": bool(body.functions),
        "tool_choice": body.tool_choice not in (None, "none"),
        "n": body.n not in (None, 1),
        "logprobs": bool(body.logprobs),
        "top_logprobs": body.top_logprobs is not None,
    }
    for param, bad in refused.items():
        if bad:
            raise InvalidInput(
                f"'{param}' is not supported: vision-language models answer one caption or answer "
                f"per request, without tools or token log-probabilities",
                param=param,
            )


def _image_bytes(url: str, param: str) -> bytes:
    if not url.strip().lower().startswith("data:"):
        raise InvalidInput(
            "remote image URLs are not fetched (the server answers offline): send the image as a "
            "data URL, data:image/jpeg;base64,...",
            param=param,
        )
    try:
        return s.media_bytes(url)
    except s.MediaError as exc:
        raise media_invalid(param, exc) from None


def user_turn(messages: list[s.ChatMessage]) -> tuple[str | None, bytes, str]:
    """(the text, the image bytes, the image's param) of the last user message, which must carry
    exactly one image."""
    at = next((n for n in range(len(messages) - 1, -1, -1) if messages[n].role == "user"), None)
    if at is None:
        raise InvalidInput("no user message", param="messages")
    content = messages[at].content
    parts = (
        [s.ChatContentPart(type="text", text=content)] if isinstance(content, str) else list(content or [])
    )
    texts = [p.text for p in parts if p.type == "text" and p.text]
    images = [(n, p) for n, p in enumerate(parts) if p.type == "image_url"]
    if len(images) != 1:
        found = "no image" if not images else f"{len(images)} images"
        raise InvalidInput(
            f"the last user message must carry exactly one image_url part; it has {found}",
            param=f"messages[{at}].content",
        )
    n, part = images[0]
    param = f"messages[{at}].content[{n}].image_url"
    if part.image_url is None:
        raise InvalidInput("an image_url part needs 'image_url': {'url': ...}", param=param)
    text = " ".join(t.strip() for t in texts).strip() or None
    return text, _image_bytes(part.image_url.url, f"{param}.url"), param


async def _chat_model(vl: VisionLanguageClient, name: str, text: str | None) -> VLModel:
    model = await vl.pick(name, None)
    return await vl.pick(None, "caption") if model.task == "vqa" and text is None else model


@routing.post(
    router,
    "/v1/chat/completions",
    body=s.ChatCompletionRequest,
    modality=MODALITY,
    multipart=False,
    responses={
        200: {
            "model": s.ChatCompletionResponse,
            "description": "JSON, or with stream: true server-sent ChatCompletionChunk events",
        }
    },
)
async def chat_completions(
    vl: deps.VisionLanguageDep, tenant: deps.CurrentTenant, body=routing.body_of(s.ChatCompletionRequest)
):
    """OpenAI's chat completions for an image and optional text (caption or visual question)."""
    refuse_unsupported(body)
    vl.deployment()
    text, raw, param = user_turn(body.messages)
    model = await _chat_model(vl, body.model, text)
    image = await vl.image(tenant, raw, param)
    out = await vl.run(
        model, image, text, max_tokens=body.max_completion_tokens or body.max_tokens, clamp=True
    )
    finish = "length" if model.engine != "vilt" and out["tokens"] >= out["max_tokens"] else "stop"
    reply = Reply(
        id=f"chatcmpl-{uuid.uuid4().hex[:24]}",
        created=int(time.time()),
        model=model.id,
        content=out["text"],
        finish=finish,
        usage=vl_requests.usage([out]),
    )
    if body.stream:
        return StreamingResponse(
            reply.events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )
    return reply.completion()


class Reply:
    def __init__(self, *, id: str, created: int, model: str, content: str, finish: str, usage: s.TokenUsage):
        self.id, self.created, self.model = id, created, model
        self.content, self.finish, self.usage = content, finish, usage

    def completion(self) -> s.ChatCompletionResponse:
        message = s.ChatResponseMessage(content=self.content)
        return s.ChatCompletionResponse(
            id=self.id,
            created=self.created,
            model=self.model,
            usage=self.usage,
            choices=[s.ChatChoice(message=message, finish_reason=self.finish)],
        )

    def _chunk(self, delta: s.ChatDelta, finish: str | None = None, usage: s.TokenUsage | None = None) -> str:
        chunk = s.ChatCompletionChunk(
            id=self.id,
            created=self.created,
            model=self.model,
            usage=usage,
            choices=[s.ChatChunkChoice(delta=delta, finish_reason=finish)],
        )
        return f"data: {json.dumps(chunk.model_dump(exclude_none=True))}\n\n"

    async def events(self):
        """The role, the content word by word, the finish reason with usage, then ``[DONE]``."""
        yield self._chunk(s.ChatDelta(role="assistant", content=""))
        for piece in re.findall(r"\s*\S+", self.content):
            yield self._chunk(s.ChatDelta(content=piece))
        yield self._chunk(s.ChatDelta(), finish=self.finish, usage=self.usage)
        yield "data: [DONE]\n\n"
