"""The command line of a generated docs page: write it, or with ``--check`` fail when the committed
page differs from what its generator renders now (what the docs-page tests and CI rely on)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path


def main(
    *,
    render: Callable[[], str],
    page: Path,
    command: str,
    description: str | None,
    argv: list[str] | None = None,
) -> int:
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed page is stale")
    parser.add_argument("--out", type=Path, default=page)
    args = parser.parse_args(argv)
    text = render()
    if not args.check:
        args.out.write_text(text, encoding="utf-8")
        return 0
    if args.out.read_text(encoding="utf-8") != text:
        print(f"{args.out} is stale: run `{command}`", file=sys.stderr)
        return 1
    return 0
