"""The baseline mmserve is measured against: the multimodal guide's way of serving a model.

One process, one request -> one unbatched fp32 forward, FastAPI + uvicorn (the HTTP stack Serve's
proxy uses too), same model (ConSE over EfficientNet-Lite0) and same response shape.

    python -m benchmarks.naive_server --port 8100
"""
from __future__ import annotations

import argparse

import uvicorn
from fastapi import FastAPI, File, UploadFile

from models.media import decode_image
from models.registry import TextModelSpec, VisionModelSpec, load_classifier, load_embedder

app = FastAPI(title="naive baseline")
embedder = None


@app.get("/healthz")
def healthz() -> dict:
    return {"status": "ok" if embedder is not None else "loading"}


@app.post("/v1/embeddings/image")
def embed_image(images: list[UploadFile] = File(...)) -> dict:
    rows = [embedder.embed(embedder.preprocess(decode_image(f.file.read()))[None])[0] for f in images]
    return {"model": embedder.model_id, "space": embedder.space, "dim": embedder.dim,
            "data": [{"index": i, "embedding": row.tolist()} for i, row in enumerate(rows)]}


def main() -> None:
    global embedder
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8100)
    args = parser.parse_args()
    embedder = load_embedder(VisionModelSpec(), TextModelSpec(), classifier=load_classifier(VisionModelSpec()))
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
