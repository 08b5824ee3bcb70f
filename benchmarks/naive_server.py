"""The baseline mmserve is measured against: the multimodal guide's way of serving a model.

One process, one request -> one unbatched fp32 torch forward, FastAPI + uvicorn (the HTTP stack Serve's
proxy uses too), same models (ConSE over EfficientNet-Lite0; all-MiniLM-L6-v2 for texts) and same
response shape.

    python -m benchmarks.naive_server --port 8100
    python -m benchmarks.naive_server --text-path DIR  # a local MiniLM directory (the graph's text.model.path)
"""

from __future__ import annotations

import argparse

import uvicorn
from fastapi import FastAPI, File, UploadFile
from pydantic import BaseModel

from models.media import decode_image
from models.registry import TextModelSpec, VisionModelSpec, load_classifier, load_embedder, load_text

app = FastAPI(title="naive baseline")
embedder = text = None


class Texts(BaseModel):
    texts: list[str]


@app.get("/healthz")
def healthz() -> dict:
    return {"status": "ok" if embedder is not None else "loading"}


@app.post("/v1/embeddings/image")
def embed_image(images: list[UploadFile] = File(...)) -> dict:
    rows = [embedder.embed(embedder.preprocess(decode_image(f.file.read()))[None])[0] for f in images]
    return {
        "model": embedder.model_id,
        "space": embedder.space,
        "dim": embedder.dim,
        "data": [{"index": i, "embedding": row.tolist()} for i, row in enumerate(rows)],
    }


@app.post("/v1/embeddings/text")
def embed_text(body: Texts) -> dict:
    rows = [text.embed([t])[0] for t in body.texts]
    return {
        "model": text.model_id,
        "space": text.space,
        "dim": text.dim,
        "data": [{"index": i, "embedding": row.tolist()} for i, row in enumerate(rows)],
    }


def main() -> None:
    global embedder, text
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument(
        "--text-path", help="MiniLM directory for texts and ConSE's class names (default: packaged)"
    )
    args = parser.parse_args()
    text_spec = TextModelSpec(path=args.text_path)
    embedder = load_embedder(VisionModelSpec(), text_spec, classifier=load_classifier(VisionModelSpec()))
    text = load_text(text_spec)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
