"""What tracing costs served image throughput (issue 25 #6): ``image_throughput --tracing`` runs the
served sweeps (``--served-only``) with tracing off and with it on at sampling 1.0 (every request a
full trace, exported over OTLP/HTTP to a receiver in the benchmark process that only counts what it
gets), alternated over ``--rounds``, each in its own process (Serve reads tracing at start), and
prints the image throughput at the top concurrency of each, their ratio and the target:
"tracing at sampling 1.0 costs <= 5 % of served image throughput".

    python -m benchmarks.image_throughput --tracing --rounds 2 --concurrency 16 \
        --text-concurrency 1 --window 5 --out benchmarks/results/tracing_cost
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

from config.tracing import ENDPOINT_ENV, TracingConfig, with_tracing

MODES = ("off", "on")
MAX_COST = 0.05  # of served image throughput, at sampling 1.0


def runtime_env(mode: str | None):
    """The job's runtime_env for ``mode`` and the receiver its spans go to (``None, None`` when off)."""
    if mode != "on":
        return None, None
    from tests.otlp_receiver import Receiver

    receiver = Receiver(decode=False).__enter__()
    env = with_tracing(None, TracingConfig(enabled=True, sampling_ratio=1.0)) or {}
    env["env_vars"][ENDPOINT_ENV] = receiver.endpoint
    return env, receiver


def exported(receiver) -> dict:
    return {} if receiver is None else {"export_requests": receiver.requests, "export_bytes": receiver.bytes}


def run(args, child: list[str]) -> int:
    """The runs, alternated; a summary into <out>.json. Fails (1) when a run failed or the traced runs
    exported nothing (then it would not have measured tracing)."""
    runs, failed = [], 0
    for rnd in range(args.rounds):
        for mode in MODES:
            out = args.out.with_name(f"{args.out.name}_{mode}_r{rnd}")
            command = [sys.executable, "-m", "benchmarks.image_throughput", *child, "--served-only"]
            command += ["--tracing-mode", mode, "--out", str(out)]
            print(f"--- round {rnd} tracing {mode}: {' '.join(command[1:])}", flush=True)
            result = out.with_suffix(".json")
            result.unlink(missing_ok=True)
            rc = subprocess.run(command, check=False).returncode
            failed += rc != 0
            if result.exists():
                runs.append({"round": rnd, "mode": mode, "rc": rc} | row(json.loads(result.read_text())))
    summary = summarize(runs)
    for line in [*map(json.dumps, runs), json.dumps(summary)]:
        print(line)
    print(verdict(summary))
    no_spans = [r for r in runs if r["mode"] == "on" and not r.get("export_requests")]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    command = "python -m benchmarks.image_throughput " + " ".join(sys.argv[1:])
    Path(args.out).with_suffix(".json").write_text(
        json.dumps({"command": command, "runs": runs, "summary": summary}, indent=1)
    )
    return 1 if failed or no_spans else 0


def row(run: dict) -> dict:
    top = run["served"]["image"]["points"][-1]
    return {
        "c": top["load"],
        "images_per_s": round(top["throughput"], 1),
        "p99_ms": round(top["p99_ms"], 1),
        "errors": top["errors"],
        "load_average": [round(x, 2) for x in run["load_average_after"]],
        **run.get("tracing", {}),
    }


def summarize(runs: list[dict]) -> dict:
    rates = {m: [r["images_per_s"] for r in runs if r["mode"] == m] for m in MODES}
    if not all(rates.values()):
        return {"images_per_s": rates}
    off, on = statistics.median(rates["off"]), statistics.median(rates["on"])
    return {"images_per_s": rates, "median_off": off, "median_on": on, "on_over_off": round(on / off, 3)}


def verdict(summary: dict) -> str:
    if "on_over_off" not in summary:
        return "tracing cost: no comparison (a mode has no run)"
    cost = 1 - summary["on_over_off"]
    met = "met" if cost <= MAX_COST else "missed"
    rates = summary["images_per_s"]
    return (
        f"tracing at sampling 1.0: {summary['median_on']:.1f} img/s against {summary['median_off']:.1f} off "
        f"(medians of {len(rates['on'])} rounds; on {rates['on']}, off {rates['off']}; on/off "
        f"{summary['on_over_off']:.3f}, cost {100 * cost:.1f} %): <= {100 * MAX_COST:g} % {met}. "
        "Rounds that overlap more than the cost are noise: add rounds before quoting it."
    )
