"""``mmserve``: a small command line over the typed client (prints JSON)."""
from __future__ import annotations

import argparse
import json
import sys

from clients.client import Client, MMServeError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmserve", description="Talk to an mmserve server.")
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="server base URL")
    parser.add_argument("--api-key", default=None)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("models", help="list served models")
    c = sub.add_parser("classify", help="ImageNet top-k of an image")
    c.add_argument("image"), c.add_argument("--top-k", type=int, default=5)
    z = sub.add_parser("zero-shot", help="pick the best label for an image")
    z.add_argument("image"), z.add_argument("labels", nargs="+")
    for name in ("transcribe", "translate"):
        a = sub.add_parser(name, help=f"{name} speech (Whisper)")
        a.add_argument("audio")
        a.add_argument("--format", default="verbose_json", choices=["verbose_json", "text", "srt", "vtt"])
    e = sub.add_parser("embed-text", help="embed texts")
    e.add_argument("texts", nargs="+")
    return parser


def _run(client: Client, args: argparse.Namespace) -> object:
    if args.command == "models":
        return client.models().model_dump()
    if args.command == "classify":
        return client.classify(args.image, top_k=args.top_k).model_dump()
    if args.command == "zero-shot":
        return client.zero_shot(args.image, args.labels).model_dump()
    if args.command in ("transcribe", "translate") and args.format in ("text", "srt", "vtt"):
        return client.subtitles(args.audio, fmt=args.format, task=args.command)
    if args.command == "transcribe":
        return client.transcribe(args.audio).model_dump()
    if args.command == "translate":
        return client.translate(args.audio).model_dump()
    return client.embed_text(args.texts).model_dump()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    with Client(args.url, api_key=args.api_key) as client:
        try:
            result = _run(client, args)
        except MMServeError as exc:
            print(exc, file=sys.stderr)
            return 1
    print(result if isinstance(result, str) else json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
