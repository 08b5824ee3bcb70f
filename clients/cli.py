"""``mmserve``: the command line over the typed client.

Human-readable output by default, ``--json`` for scripts; a progress bar (stderr) when a command
works through several files.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pydantic import BaseModel

from api import schemas as s
from clients.client import Client, MMServeError


def parser() -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    """The client commands, and their subparsers for ``tools.cli`` to add the offline ones to."""
    parser = argparse.ArgumentParser(prog="mmserve", description="Talk to an mmserve server.")
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="server base URL")
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--json", action="store_true", help="print the server's JSON answers")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("models", help="list served models")
    c = sub.add_parser("classify", help="ImageNet top-k of images")
    c.add_argument("images", nargs="+", type=Path)
    c.add_argument("--top-k", type=int, default=5)
    z = sub.add_parser("zero-shot", help="pick the best label for each image")
    z.add_argument("images", nargs="+", type=Path)
    z.add_argument("--labels", nargs="+", required=True)
    z.add_argument("--template", default="a photo of a {}")
    e = sub.add_parser("embed", help="embed texts, images or audio files")
    e.add_argument("modality", choices=["text", "image", "audio"])
    e.add_argument("inputs", nargs="+", help="texts, or file paths for image/audio")
    r = sub.add_parser("retrieval", help="rank texts for images and images for texts")
    r.add_argument("--images", nargs="+", type=Path, required=True)
    r.add_argument("--texts", nargs="+", required=True)
    r.add_argument("--top-k", type=int, default=3)
    for name in ("transcribe", "translate"):
        a = sub.add_parser(name, help=f"{name} speech with Whisper")
        a.add_argument("audio", nargs="+", type=Path)
        a.add_argument("--format", default="text", choices=["text", "srt", "vtt", "verbose_json"])
        a.add_argument("--output", type=Path, help="write here (one file: this path; several: this folder)")
        if name == "transcribe":
            a.add_argument("--language", default=None)
        a.add_argument("--stream", action="store_true", help="print the text as it is decoded (text format)")
    f = sub.add_parser("features", help="mel spectrogram, MFCC and chroma, plotted to a PNG")
    f.add_argument("audio", type=Path)
    f.add_argument("--output", type=Path, required=True, help="PNG path")
    cap = sub.add_parser("caption", help="caption images with a vision-language model")
    cap.add_argument("images", nargs="+", type=Path)
    cap.add_argument("--prompt", help="the text each caption starts with")
    _generation_args(cap)
    ask = sub.add_parser("ask", help="ask a question about an image (visual question answering)")
    ask.add_argument("image", type=Path)
    ask.add_argument("question")
    ask.add_argument("--top-k", type=int, default=None, help="answers to list (ViLT)")
    _generation_args(ask)
    comp = sub.add_parser("compose", help="several tasks on one request's image, text and audio")
    comp.add_argument("--image", type=Path)
    comp.add_argument("--text")
    comp.add_argument("--audio", type=Path)
    comp.add_argument(
        "--task", action="append", required=True, help="a task type (classify) or a task as JSON; repeatable"
    )
    comp.add_argument("--stream", action="store_true", help="print each node as it finishes")
    _index_parser(sub)
    return parser, sub


def _generation_args(p) -> None:
    p.add_argument(
        "--model", default=None, help="a model id from `mmserve models` (default: the first of its task)"
    )
    p.add_argument("--max-tokens", type=int, default=None)
    p.add_argument("--num-beams", type=int, default=None)


def _index_parser(sub) -> None:
    idx = sub.add_parser("index", help="visual search indexes").add_subparsers(dest="action", required=True)
    idx.add_parser("list", help="your indexes")
    for action, text in (
        ("create", "create an index"),
        ("info", "describe an index (encoder, dim, count)"),
        ("drop", "delete an index and its items"),
    ):
        idx.add_parser(action, help=text).add_argument("name")
    add = idx.add_parser("add", help="index every image under a folder (resumable)")
    add.add_argument("name")
    add.add_argument("folder", type=Path)
    add.add_argument("--batch-size", type=int, default=16)
    add.add_argument(
        "--caption",
        nargs="?",
        const="",
        default=None,
        metavar="MODEL",
        help="store each image's generated caption in its metadata (a captioning model id, or the "
        "server's default); needs vision-language models on the server",
    )
    add.add_argument(
        "--no-thumbnails",
        dest="thumbnails",
        action="store_false",
        help="do not store a 128-pixel thumbnail of each image in its metadata (stored by default)",
    )
    q = idx.add_parser("query", help="search by text, image or speech")
    q.add_argument("name")
    group = q.add_mutually_exclusive_group(required=True)
    group.add_argument("--text")
    group.add_argument("--image", type=Path)
    group.add_argument("--audio", type=Path, help="a spoken query: transcribed, then searched as text")
    q.add_argument("--top-k", type=int, default=5)
    q.add_argument("--where", nargs="*", default=[], metavar="KEY=VALUE", help="metadata equality filters")


def _progress(items: list, label: str):
    from tqdm import tqdm

    return tqdm(items, desc=label, unit="file", disable=len(items) < 2, file=sys.stderr)


def _per_image(args, label: str, call, scores) -> list:
    """Run ``call(path)`` for each image with a progress bar; print ``label score`` pairs unless --json."""
    results = []
    for path in _progress(args.images, label):
        result = call(path)
        results.append(result)
        if not args.json:
            print(f"{path}: " + ", ".join(f"{x.label} {x.score:.3f}" for x in scores(result)))
    return results


def _classify(client: Client, args) -> list:
    return _per_image(
        args, "classify", lambda p: client.classify(p, top_k=args.top_k), lambda r: r.predictions
    )


def _zero_shot(client: Client, args) -> list:
    return _per_image(
        args,
        "zero-shot",
        lambda p: client.zero_shot(p, args.labels, template=args.template),
        lambda r: r.labels,
    )


def _embed(client: Client, args) -> BaseModel:
    method = {"text": client.embed_text, "image": client.embed_images, "audio": client.embed_audio}[
        args.modality
    ]
    result = method(args.inputs if args.modality == "text" else [Path(p) for p in args.inputs])
    if not args.json:
        print(f"{len(result.data)} x {result.dim} embeddings from {result.model} (space {result.space})")
    return result


def _speech(client: Client, args) -> list | None:
    language = getattr(args, "language", None)
    if args.stream:
        return _speech_streamed(client, args, language)
    outputs = []
    for path in _progress(args.audio, args.command):
        text = client.subtitles(path, fmt=args.format, task=args.command, language=language)
        outputs.append(text)
        target = _target(args.output, path, args.format, many=len(args.audio) > 1)
        if target is not None:
            target.write_text(text)
            print(f"wrote {target}", file=sys.stderr)
        elif not args.json:
            print(text.rstrip())
    return outputs


def _target(output: Path | None, source: Path, fmt: str, *, many: bool) -> Path | None:
    if output is None:
        return None
    if not many:
        return output
    output.mkdir(parents=True, exist_ok=True)
    return output / f"{source.stem}.{'json' if fmt == 'verbose_json' else fmt}"


def _features(client: Client, args) -> BaseModel:
    from clients.plots import plot_features

    result = client.features(args.audio)
    plot_features(result, args.output, title=args.audio.name)
    print(f"wrote {args.output}", file=sys.stderr)
    return result


def _retrieval(client: Client, args) -> BaseModel:
    result = client.retrieval(args.images, args.texts, top_k=args.top_k)
    if not args.json:
        for path, row in zip(args.images, result.image_to_text):
            print(f"{path}: " + ", ".join(f"'{args.texts[m.index]}' {m.score:.3f}" for m in row))
    return result


def _caption(client: Client, args) -> list:
    results = []
    for path in _progress(args.images, "caption"):
        result = client.captions(
            [path], prompt=args.prompt, max_tokens=args.max_tokens, num_beams=args.num_beams, model=args.model
        )
        results.append(result)
        if not args.json:
            print(f"{path}: {result.data[0].caption}")
    return results


def _ask(client: Client, args) -> BaseModel:
    result = client.ask(
        args.image,
        args.question,
        max_tokens=args.max_tokens,
        num_beams=args.num_beams,
        top_k=args.top_k,
        model=args.model,
    )
    if not args.json:
        answer = result.data[0]
        print(answer.answer)
        for scored in answer.answers[1:]:
            print(f"  or {scored.answer} ({scored.probability:.3f})")
    return result


def _models(client: Client, args) -> BaseModel:
    result = client.models()
    if not args.json:
        for m in result.data:
            print(f"{m.id:32s} {m.modality:10s} {m.task:15s} {m.space or ''}")
    return result


def _where(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--where takes KEY=VALUE, not '{pair}'")
        out[key] = value
    return out


def _print_hits(result) -> None:
    if result.transcript is not None:
        print(f"heard: {result.transcript!r}")
    for hit in result.hits:
        print(f"{hit.score:.3f}  {hit.metadata.get('file', hit.id[:12])}")


def _index(client: Client, args):
    from clients.indexing import index_folder

    if args.action == "add":
        report = index_folder(
            client,
            args.name,
            args.folder,
            batch_size=args.batch_size,
            caption=args.caption,
            thumbnails=args.thumbnails,
        )
        print(
            f"added {report.added}, already indexed {report.skipped}, failed {len(report.failed)}",
            file=sys.stderr,
        )
        for path, message in report.failed:
            print(f"  {path}: {message}", file=sys.stderr)
        return {"added": report.added, "skipped": report.skipped, "failed": report.failed}
    if args.action == "query":
        result = client.query(
            args.name,
            text=args.text,
            image=args.image,
            audio=args.audio,
            top_k=args.top_k,
            where=_where(args.where),
        )
        if not args.json:
            _print_hits(result)
        return result
    calls = {
        "list": client.indexes,
        "create": lambda: client.create_index(args.name),
        "info": lambda: client.index(args.name),
        "drop": lambda: client.drop_index(args.name),
    }
    result = calls[args.action]()
    if not args.json:
        print(result if isinstance(result, str) else result.model_dump_json(indent=2))
    return result


def _task(text: str) -> dict:
    return json.loads(text) if text.lstrip().startswith("{") else {"type": text}


def _speech_streamed(client: Client, args, language: str | None) -> None:
    """Each recording's deltas printed as they come (``--json``: one event per line), then a newline."""
    if args.format != "text" or args.output is not None:
        raise SystemExit("--stream prints text as it is decoded: it takes neither --format nor --output")
    for path in args.audio:
        for event in client.transcribe_stream(path, task=args.command, language=language):
            if args.json:
                print(event.model_dump_json(), flush=True)
            elif isinstance(event, s.TranscriptTextDeltaEvent):
                print(event.delta, end="", flush=True)
        if not args.json:
            print()
    return None


def _compose(client: Client, args):
    tasks = [_task(t) for t in args.task]
    inputs = {"image": args.image, "text": args.text, "audio": args.audio}
    if not args.stream:
        return client.compose(tasks, **inputs)
    for event in client.compose_stream(tasks, **inputs):
        if args.json:
            print(event.model_dump_json(), flush=True)
        elif isinstance(event, s.ComposeNodeEvent):
            _print_node(event)
        else:
            print(f"{event.latency_ms:9.1f} ms  done")
    return None


def _print_node(event) -> None:
    print(f"{event.started_ms + event.latency_ms:9.1f} ms  {event.id}", flush=True)
    for task_id, result in event.results.items():
        print(f"{'':14}{task_id}: {_summary(result)}", flush=True)


def _summary(result) -> str:
    """One line for a task's result: the top label, the transcript, or the start of its JSON."""
    if isinstance(result, s.ClassifyResponse):
        return f"{result.predictions[0].label} ({result.predictions[0].score:.2f})"
    if isinstance(result, s.ZeroShotResponse):
        return f"{result.labels[0].label} ({result.labels[0].score:.2f})"
    if isinstance(getattr(result, "text", None), str):
        return result.text.strip()
    text = result.model_dump_json() if isinstance(result, BaseModel) else json.dumps(result)
    return text[:120] + ("..." if len(text) > 120 else "")


COMMANDS = {
    "models": _models,
    "classify": _classify,
    "zero-shot": _zero_shot,
    "embed": _embed,
    "retrieval": _retrieval,
    "transcribe": _speech,
    "translate": _speech,
    "features": _features,
    "index": _index,
    "caption": _caption,
    "ask": _ask,
    "compose": _compose,
}


def _as_json(result) -> object:
    if isinstance(result, list):
        return [_as_json(r) for r in result]
    return result.model_dump() if isinstance(result, BaseModel) else result


def run(args: argparse.Namespace) -> int:
    """Run a parsed client command against the server."""
    with Client(args.url, api_key=args.api_key) as client:
        try:
            result = COMMANDS[args.command](client, args)
        except MMServeError as exc:
            print(f"mmserve: {exc}", file=sys.stderr)
            return 1
    if args.json and result:
        print(json.dumps(_as_json(result), indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run(parser()[0].parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
