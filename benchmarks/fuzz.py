"""A longer property-based fuzz pass over every route of a running mmserve (not a CI test; CI runs a
bounded one with a fixed seed in tests/http/test_ecosystem.py).

    python -m benchmarks.fuzz --url http://127.0.0.1:8000 --max-examples 500 [--seed N] [--api-key K]

It drives schemathesis over the served OpenAPI spec with every phase, stateful links included, and
fails on any 5xx, any response that breaks its documented schema, or any status the spec does not
list. Only loopback URLs are accepted: fuzzing is aimed at a server you run yourself.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from urllib.parse import urlparse

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def command(url: str, *, max_examples: int, seed: int | None, api_key: str | None) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        f"{url}/openapi.json",
        "--checks",
        "not_a_server_error,response_schema_conformance,status_code_conformance",
        "--max-examples",
        str(max_examples),
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--request-timeout",
        "120",
        "--no-color",
    ]
    if seed is not None:
        cmd += ["--seed", str(seed)]
    if api_key:
        cmd += ["--header", f"Authorization: Bearer {api_key}"]
    return cmd


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--max-examples", type=int, default=500)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--api-key", default=None)
    args = parser.parse_args(argv)
    if urlparse(args.url).hostname not in LOOPBACK:
        parser.error("fuzz only a server on this machine (a loopback URL)")
    return subprocess.run(
        command(args.url, max_examples=args.max_examples, seed=args.seed, api_key=args.api_key)
    ).returncode


if __name__ == "__main__":
    sys.exit(main())
