"""One composed request at run time: each step of its DAG (``planner.Node``) run by the service that
owns it, for the request's tenant, and each task's result in its typed wire shape.

Adding a task type: its schema in ``api.schemas`` (``ComposeTask``), its nodes in ``planner.plan``,
the steps it needs in ``ComposedRequest.run`` (one service call each) and, when the step's value is
not already the wire result, a case in ``ComposedRequest.result``.
"""

from __future__ import annotations

from typing import Any

from api import schemas as s
from config.tenants import Tenant
from deployments.gateway import responses
from deployments.gateway.planner import Node
from deployments.gateway.services import GatewayServices


class ComposedRequest:
    """The steps of one composed request: its inputs, its tenant and the services that do the work."""

    def __init__(self, services: GatewayServices, tenant: Tenant, inputs: s.ComposeInputs) -> None:
        self.services, self.tenant, self.inputs = services, tenant, inputs

    def _input(self, modality: str) -> Any:
        return getattr(self.inputs, modality)

    async def run(self, node: Node, args: tuple) -> Any:
        """One node's step, given its dependencies' values in ``node.deps`` order."""
        if node.modality is not None:
            return await self._shared(node, args)
        svc, tenant, task = self.services, self.tenant, node.task
        match node.op:
            case "classify":
                return await svc.vision.classify(tenant, args[0], task.top_k)
            case "embed_labels":
                return await svc.encoders.label_embeddings(tenant, task.labels, task.template)
            case "zero_shot":
                return await svc.vision.score_labels(args[0], args[1], task.labels)
            case "speech":
                return await svc.speech.transcribe(tenant, args[0], task)
            case "features":
                return responses.features_response(
                    args[0], await svc.speech.features(tenant, args[0], task.features)
                )
            case "embed_transcript":
                text = args[0]["text"]
                return await svc.encoders.embed_transcript(tenant, text, param="inputs.audio"), text
            case "search":
                vector, transcript = args[0] if task.query == "audio" else (args[0], None)
                return await svc.search.query(
                    tenant, task.index, task.query, vector, transcript, top_k=task.top_k, where=task.where
                )
            case "fuse":
                row = {dep.removeprefix("fusion_features:"): value for dep, value in zip(node.deps, args)}
                return await svc.fusion.fuse(tenant, task.head, row)
            case "caption":
                return await svc.vision_language.caption(task, args[0])
            case "vqa":
                return await svc.vision_language.answer(task, args[0])
        raise ValueError(f"no step runs '{node.op}'")

    async def _shared(self, node: Node, args: tuple) -> Any:
        """The steps several tasks share, on one input: decode it, embed it, its fusion features."""
        svc, tenant, m = self.services, self.tenant, node.modality
        match node.op.removesuffix(f"_{m}"):
            case "decode":
                return await svc.media.decode(tenant, m, self._input(m), f"inputs.{m}")
            case "embed" if m == "text":
                return (await svc.encoders.embed_texts(tenant, [self.inputs.text]))[0]
            case "embed":
                return await svc.encoders.embed_media(
                    tenant, m, self._input(m), f"inputs.{m}", decoded=args[0]
                )
            case "fusion_features":
                return await svc.fusion.features(tenant, m, self.inputs.text if m == "text" else args[0])
        raise ValueError(f"no step runs '{node.op}'")

    async def result(self, task: s.ComposeTask, value: Any) -> s.ComposeResult:
        """The value of the node holding ``task``'s result, as the task's typed result."""
        match task:
            case s.EmbedTask():
                return responses.embedding_result(await self.services.encoders.info(task.modality), value)
            case s.TranscribeTask() | s.TranslateTask():
                return s.VerboseTranscriptionResponse.model_validate(value)
            case s.LanguageTask():
                return s.LanguageResult(
                    language=value["language"], language_probability=value["language_probability"]
                )
        return value
