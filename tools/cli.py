"""``mmserve``: the client commands of ``clients.cli`` plus the offline ones, which work on local
files without a server: ``tenant-key``, ``demo-data``, ``demo-captions``, ``train-fusion``,
``finetune`` (the adapter space on Ray Train; Ray is imported only when it runs) and ``render``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from clients import cli
from models.errors import MMServeError
from tools.finetune_args import add_finetune_args


def _add_offline(sub) -> None:
    key = sub.add_parser("tenant-key", help="add an API key for a tenant to a tenants file; prints it once")
    key.add_argument("tenants_file", type=Path)
    key.add_argument("tenant")
    demo = sub.add_parser("demo-data", help="build the demo dataset for fusion heads")
    demo.add_argument("output", type=Path)
    demo.add_argument("--per-class", type=int, default=40)
    demo.add_argument("--seed", type=int, default=0)
    t = sub.add_parser(
        "train-fusion", help="train a fusion head on a JSONL manifest and save it to the model store"
    )
    t.add_argument("manifest", type=Path)
    t.add_argument("--head", required=True, help="id of the head to save")
    t.add_argument("--kind", choices=["early", "late", "attention"], default="late")
    t.add_argument(
        "--config",
        type=Path,
        default=Path("serve_config.yaml"),
        help="the Serve config whose encoders and model store to use",
    )
    t.add_argument("--tenant", default="default")
    t.add_argument("--epochs", type=int, default=40)
    t.add_argument("--seed", type=int, default=0)
    r = sub.add_parser(
        "render", help="render a deployment manifest from a Serve config (k8s: the KubeRay RayService)"
    )
    r.add_argument("target", choices=["k8s"])
    r.add_argument("--source", type=Path, default=Path("configs/gpu_cluster.yaml"), help="the Serve config")
    r.add_argument("--manifest", type=Path, default=Path("configs/k8s/rayservice.yaml"))
    r.add_argument(
        "--check", action="store_true", help="change nothing; fail if the manifest is not up to date"
    )
    _add_finetune(sub)


def _add_finetune(sub) -> None:
    captions = sub.add_parser(
        "demo-captions", help="build the demo image-caption set (train/val/test splits)"
    )
    captions.add_argument("output", type=Path)
    captions.add_argument("--views", type=int, default=8)
    captions.add_argument("--seed", type=int, default=0)
    add_finetune_args(
        sub.add_parser(
            "finetune", help="fine-tune an image-text space on an image-caption JSONL manifest (Ray Train)"
        )
    )


def _tenant_key(args) -> dict:
    from config.tenants import add_key

    key = add_key(args.tenants_file, args.tenant)
    print(
        f"API key for tenant '{args.tenant}' (shown once; only its hash is stored in {args.tenants_file}):",
        file=sys.stderr,
    )
    print(key)
    return {}


def _demo_data(args) -> dict:
    from tools.demo_data import build

    manifest = build(args.output, seed=args.seed, per_class=args.per_class)
    print(f"wrote {manifest}", file=sys.stderr)
    return {"manifest": str(manifest)}


def _demo_captions(args) -> dict:
    from tools.demo_captions import build

    manifest = build(args.output, seed=args.seed, views=args.views)
    print(f"wrote {manifest}", file=sys.stderr)
    return {"manifest": str(manifest)}


def _finetune(args) -> dict:
    from tools.finetune import run_local

    return run_local(args)


def _train_fusion(args) -> dict:
    from tools.train_fusion import train_from_manifest

    return train_from_manifest(args)


def _render(args) -> dict:
    from tools.render import render_k8s

    result = render_k8s(args.source, args.manifest, check=args.check)
    print(f"{args.manifest}: {'rewritten' if result['changed'] else 'up to date'}", file=sys.stderr)
    return result


OFFLINE = {
    "tenant-key": _tenant_key,
    "demo-data": _demo_data,
    "demo-captions": _demo_captions,
    "train-fusion": _train_fusion,
    "finetune": _finetune,
    "render": _render,
}


def parser() -> argparse.ArgumentParser:
    parser, sub = cli.parser()
    _add_offline(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command not in OFFLINE:
        return cli.run(args)
    try:
        result = OFFLINE[args.command](args)
    except MMServeError as exc:
        print(f"mmserve: {exc.message}", file=sys.stderr)
        return 1
    if args.json and result:
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
