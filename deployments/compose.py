"""``POST /v1/compose``: one request with any mix of image, text and audio, and several tasks.

``graphs.planner`` turns the tasks into a DAG; this mixin of ``Gateway`` supplies one coroutine per
node operation (decode, embed, classify, transcribe, fuse, search...) and shapes each task's result.
It also serves the fusion head listing. Fusion heads are routed per tenant with Serve model
multiplexing: the multiplexed model id is ``<tenant>/<head>``.
"""
from __future__ import annotations

import functools

import numpy as np
from fastapi import Request

from clients import schemas as s
from deployments import responses, tenancy
from deployments.http_app import app
from deployments.openapi import body
from deployments.parsing import parse_body
from deployments.search_routes import index_name
from graphs import planner
from models.errors import Unavailable

INFO_KEY = {"image": "vision", "text": "text", "audio": "audio"}


def _dag(the_plan: planner.Plan, run: planner.Execution) -> s.Dag:
    nodes = [s.DagNode(id=n.id, op=n.op, deps=list(n.deps), started_ms=run.timings[n.id].started_ms,
                       latency_ms=run.timings[n.id].latency_ms) for n in the_plan.nodes.values()]
    return s.Dag(nodes=nodes, edges=[list(edge) for edge in the_plan.edges()])


def _embedding_result(info: dict, row: np.ndarray) -> dict:
    model = info.get("embedder") or info["model"]
    return {"model": model, "space": info.get("space", f"audio:{model}"), "dim": int(row.shape[0]),
            "embedding": row.tolist()}


class ComposeRoutes:
    """Needs from the Gateway: ``fusion``, ``infos``, ``use``, ``_decode``, ``_embed_raw``,
    ``_label_embeddings``, ``_shared_space``; from SearchRoutes: ``search_vector``, ``query_space``,
    ``embed_transcript``."""

    # ---- fusion heads -------------------------------------------------------------------
    def _heads(self):
        if self.fusion is None:
            raise Unavailable("fusion heads are not configured in this deployment (fusion.enabled: false)")
        return self.fusion

    def _head(self, head: str):
        """The FusionHead handle routed (multiplexed) to this tenant's ``head``."""
        tenant = tenancy.current()
        tenant.require("head", head)
        return self._heads().options(multiplexed_model_id=f"{tenant.id}/{head}")

    @app.get("/v1/fusion/heads", response_model=s.FusionHeadList)
    async def list_fusion_heads(self) -> s.FusionHeadList:
        tenant = tenancy.current()
        cards = await self._heads().list_heads.remote(tenant.id)
        return s.FusionHeadList(data=[s.FusionHeadCard(**c) for c in cards if tenant.may_use("head", c["id"])])

    async def _running_encoders(self) -> dict[str, dict]:
        infos = await self.infos()
        return {m: {"id": infos[k].get("embedder") or infos[k]["model"], "pooled_dim": infos[k]["dim"],
                    "token_dim": infos[k]["token_dim"]} for m, k in INFO_KEY.items()}

    # ---- compose ------------------------------------------------------------------------
    @app.post("/v1/compose", openapi_extra=body(s.ComposeRequest, multipart=False), response_model=s.ComposeResponse)
    async def compose(self, request: Request) -> s.ComposeResponse:
        """Plan the tasks into a DAG over the deployments and run it: independent branches at once."""
        req = await parse_body(request, s.ComposeRequest)
        tasks = req.task_dicts()
        for task in (t for t in tasks if t["type"] == "fuse"):
            task["modalities"] = (await self._head(task["head"]).describe.remote())["modalities"]
        the_plan = planner.plan(tasks, req.inputs.present())
        run = await planner.execute(the_plan, functools.partial(self._run_node, req.inputs))
        results = {t["id"]: await self._task_result(t, run.results[the_plan.outputs[t["id"]]]) for t in tasks}
        return s.ComposeResponse(results=results, dag=_dag(the_plan, run),
                                 latency_ms=round(max((t.started_ms + t.latency_ms for t in run.timings.values()),
                                                      default=0.0), 2))

    async def _run_node(self, inputs: s.ComposeInputs, node: planner.Node, deps: dict):
        op = node.op
        if op.startswith("decode_"):
            modality = op.removeprefix("decode_")
            return await self._decode(modality, getattr(inputs, modality), f"inputs.{modality}")
        if op.startswith("fusion_features_"):
            modality = op.removeprefix("fusion_features_")
            value = inputs.text if modality == "text" else deps[f"decode:{modality}"]
            return await self.use(modality).fusion_features.remote(value)
        return await getattr(self, f"_op_{op}")(inputs, node, deps)

    # ---- node operations ------------------------------------------------------------------
    async def _op_embed_image(self, inputs, node, deps):
        return await self._embed_raw("image", inputs.image, "inputs.image", decoded=deps["decode:image"])

    async def _op_embed_audio(self, inputs, node, deps):
        return await self._embed_raw("audio", inputs.audio, "inputs.audio", decoded=deps["decode:audio"])

    async def _op_embed_text(self, inputs, node, deps):
        return (await self.use("text").embed.remote([inputs.text]))[0]

    async def _op_embed_labels(self, inputs, node, deps):
        return await self._label_embeddings(node.params["labels"], node.params["template"])

    async def _op_zero_shot(self, inputs, node, deps):
        info = await self._shared_space()
        return responses.zero_shot_response(info, deps["embed:image"], deps[node.deps[1]], node.params["labels"])

    async def _op_classify(self, inputs, node, deps):
        predictions = await self.use("image").classify.remote(deps["decode:image"], node.params["top_k"])
        return s.ClassifyResponse(model=(await self.infos())["vision"]["classifier"], predictions=predictions)

    async def _op_speech(self, inputs, node, deps):
        p = node.params
        options = {"task": p["task"], "language": p.get("language"), "prompt": p.get("prompt"),
                   "temperature": p.get("temperature", 0.0)}
        return await self.use("audio").transcribe.remote(deps["decode:audio"], options)

    async def _op_features(self, inputs, node, deps):
        audio = deps["decode:audio"]
        feats = await self.use("audio").features.remote(audio, list(dict.fromkeys(node.params["features"])))
        return responses.features_response(audio, feats)

    async def _op_embed_transcript(self, inputs, node, deps) -> tuple[np.ndarray, str]:
        text = deps[node.deps[0]]["text"]
        return await self.embed_transcript(text, param="inputs.audio"), text

    async def _op_search(self, inputs, node, deps):
        p, query = node.params, deps[node.deps[0]]
        vector, transcript = query if p["query"] == "audio" else (query, None)
        space = await self.query_space(p["query"])
        hits = await self.search_vector(index_name(p["index"]), vector, space=space, top_k=p["top_k"],
                                        where=p["where"])
        return s.QueryResponse(index=p["index"], query=p["query"], transcript=transcript, hits=hits)

    async def _op_fuse(self, inputs, node, deps):
        row = {dep.removeprefix("fusion_features:"): deps[dep] for dep in node.deps}
        head = node.params["head"]
        out = (await self._head(head).predict.remote([row], await self._running_encoders()))[0]
        return s.FusionResult(head=head, label=out["label"], scores=out["scores"], used=sorted(row),
                              missing=sorted(out["missing"]))

    async def _task_result(self, task: dict, value) -> dict:
        if task["type"] == "embed":
            return _embedding_result((await self.infos())[INFO_KEY[task["modality"]]], value)
        if task["type"] in ("transcribe", "translate"):
            return s.VerboseTranscriptionResponse.model_validate(value).model_dump()
        return value.model_dump()
