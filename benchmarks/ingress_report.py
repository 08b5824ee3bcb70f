"""The committed reference of an ``image_throughput --ingress ... --profile`` run: a small JSON and a
markdown page (issue 24, parts 1 and 3) from the run's result files.

    python -m benchmarks.ingress_report --results benchmarks/results/ingress [more runs] \\
        --out benchmarks/reference/ingress_2core

Reads each ``<results>.json`` (the runs, one row per round and mode; the rounds of several runs are
numbered on) and each mode's own ``<results>_<mode>_r<round>.json`` (its profile tables, from the
first run and round that has them); writes ``<out>.json`` (no profiles) and ``<out>.md``: per mode
the median over rounds of throughput, p99 and CPU ms per request of the ingress hop and the gateway,
the checks, and each process's CPU ms per request and top self-time and own-code tables.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from benchmarks import pyspy

KEEP_SELF, KEEP_OWN = 20, 10
PREAMBLE = [
    "Served graph at c=16 (images, distinct photos, multipart) and c=32 (texts) on one machine, each Ray "
    "Serve ingress in its own Ray, side by side in one run; medians over rounds. CPU ms per request: the "
    "cores each process used over the sweep (/proc user+system) over the rate answered. *ingress*: Serve's "
    "ProxyActor, or HAProxy plus its HAProxyManager actor (and the idle head proxy Serve still starts); "
    "*all*: every Ray process plus the load generator (driver+loadgen, ~3 ms).",
    "",
    "Checks through each ingress: listening sockets of this Ray off loopback (`ss -ltnp`); the gateway's "
    "431 (40 KiB of headers), 413 (100 MB declared) and 404 in the error shape; the Ray log that says Serve "
    "called the proxy callback (`RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH`); `RAY_AUTH_MODE` of the driver, "
    "the proxy and the gateway.",
    "",
    "Profiles: py-spy at 100 Hz during one more image sweep at c=16; gateway and proxy with `--gil` (their "
    "sampled ms match /proc within ~15 %), the encoder without (it counts threads waiting in C). "
    "*~CPU ms*: the share of samples times the process's /proc CPU ms per image.",
    "",
]


def medians(runs: list[dict]) -> dict[str, dict]:
    """Per mode and sweep: the median over rounds of rate, p99 and CPU ms (ingress, gateway, all)."""
    out: dict[str, dict] = {}
    for mode in dict.fromkeys(r["mode"] for r in runs):
        mine = [r for r in runs if r["mode"] == mode]
        out[mode] = {
            sweep: {
                key: round(statistics.median(r[sweep][key] for r in mine), 2)
                for key in ("per_s", "p99_ms", "cpu_ms_ingress", "cpu_ms_gateway", "cpu_ms_all")
            }
            | {"c": mine[0][sweep]["c"], "rounds": len(mine), "errors": sum(r[sweep]["errors"] for r in mine)}
            for sweep in ("image", "text")
        }
    return out


def profiles(runs: list[dict]) -> dict[str, list[dict]]:
    """Each mode's profile tables from its first run that has them, trimmed to the top rows."""
    out: dict[str, list[dict]] = {}
    for row in runs:
        path = Path(row["result"])
        if row["mode"] in out or not path.exists():
            continue
        profiled = json.loads(path.read_text())["served"].get("image_profiled", {})
        tables = profiled.get("profile", [])
        out[row["mode"]] = [
            {
                "process": t["process"],
                "buckets": _buckets(Path(profiled["profile_dir"]), t),
                "cpu_ms_per_request": t["cpu_ms_per_request"],
                "sampled_ms_per_request": t["sampled_ms_per_request"],
                "top_self": t["top_self"][:KEEP_SELF],
                "top_own_inclusive": t.get("top_own_inclusive", [])[:KEEP_OWN],
            }
            for t in tables
        ]
    return out


def _buckets(folder: Path, table: dict) -> list[dict]:
    """The process's samples by bucket (``pyspy.BUCKETS``), from its collapsed stacks: share and share
    of its /proc CPU ms per image."""
    path = folder / f"{table['process']}.collapsed.txt"
    if not path.exists():
        return []
    stacks = pyspy.read_stacks(path)
    total, cpu = max(sum(stacks.values()), 1), table["cpu_ms_per_request"] or 0.0
    return [
        {"bucket": name, "share": round(n / total, 3), "cpu_ms": round(cpu * n / total, 2)}
        for name, n in pyspy.buckets(stacks)
    ]


def merged_runs(results: list[Path]) -> tuple[list[str], list[dict]]:
    """The commands and the runs of several ``--ingress`` results, rounds numbered on, each run with
    the path of its mode's own result file."""
    commands, runs, offset = [], [], 0
    for prefix in results:
        body = json.loads(prefix.with_suffix(".json").read_text())
        commands.append(body["command"])
        for row in body["runs"]:
            if row["rc"] != 0:  # a mode that failed may have left an older run's file where its own goes
                continue
            result = prefix.with_name(f"{prefix.name}_{row['mode']}_r{row['round']}.json")
            runs.append(row | {"round": row["round"] + offset, "result": str(result)})
        offset = max((r["round"] for r in runs), default=-1) + 1
    return commands, runs


def comparison_md(summary: dict[str, dict], runs: list[dict]) -> list[str]:
    lines = [
        "| mode | img/s c=16 | p99 ms | ingress CPU ms/img | gateway CPU ms/img | all CPU ms/img | "
        "text/s c=32 | p99 ms | ingress CPU ms/text | gateway CPU ms/text | all CPU ms/text |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for mode, s in summary.items():
        i, t = s["image"], s["text"]
        lines.append(
            f"| {mode} | {i['per_s']} | {i['p99_ms']:.0f} | {i['cpu_ms_ingress']} | {i['cpu_ms_gateway']} | "
            f"{i['cpu_ms_all']} | {t['per_s']} | {t['p99_ms']:.0f} | {t['cpu_ms_ingress']} | "
            f"{t['cpu_ms_gateway']} | {t['cpu_ms_all']} |"
        )
    lines += [
        "",
        "| mode | off loopback | 40 KiB header | 100 MB body | unknown route | proxy callback in | auth |",
    ]
    lines += ["|---|---|---|---|---|---|---|"]
    for mode in summary:
        c = next(r for r in runs if r["mode"] == mode)["checks"]
        off = ", ".join(f"{o['process']} {o['address']}" for o in c["off_loopback"]) or "nothing"
        limits = [f"{s} {'shape' if shaped else 'NOT the error shape'}" for s, shaped in c["limits"].values()]
        auth = "token" if all(v == "token" for v in c["auth_mode"].values()) else json.dumps(c["auth_mode"])
        logs = ", ".join(c["proxy_callback_logged_in"])
        lines.append(f"| {mode} | {off} | {' | '.join(limits)} | {logs} | {auth} |")
    return lines


def cpu_md(runs: list[dict]) -> list[str]:
    """CPU ms per request of every process, first round of each mode."""
    lines = ["| mode | sweep | rate/s | CPU ms per request by process |", "|---|---|---|---|"]
    firsts = {r["mode"]: r for r in reversed(runs)}  # each mode's first round
    for r in firsts.values():
        for sweep in ("image", "text"):
            ms = ", ".join(f"{k.replace('ray::', '')} {v}" for k, v in r[sweep]["cpu_ms"].items())
            lines.append(f"| {r['mode']} | {sweep} c={r[sweep]['c']} | {r[sweep]['per_s']} | {ms} |")
    return lines


def profile_md(tables: dict[str, list[dict]]) -> list[str]:
    lines = []
    for mode, processes in tables.items():
        for t in processes:
            parts = "; ".join(f"{b['bucket']} {b['cpu_ms']} ({b['share']:.0%})" for b in t["buckets"])
            lines += [
                "",
                f"{mode}, {t['process']}: CPU ms/img by bucket (first match on the stack): {parts}",
                f"#### {mode}: {t['process']}, {t['cpu_ms_per_request']} CPU ms/img (/proc), "
                f"{t['sampled_ms_per_request']} sampled",
                "",
                "| # | self share | ~CPU ms/img | function | | own code, inclusive | share | ~CPU ms/img |",
                "|---|---|---|---|---|---|---|---|",
            ]
            own = t["top_own_inclusive"] + [None] * KEEP_SELF
            for n, (row, mine) in enumerate(zip(t["top_self"], own), 1):
                right = (
                    f"`{mine['function']}` | {mine['share']:.1%} | {mine['cpu_ms_per_request']}"
                    if mine
                    else "| |"
                )
                left = f"{row['share']:.1%} | {row['cpu_ms_per_request']} | `{row['function']}`"
                lines.append(f"| {n} | {left} | | {right} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--results", type=Path, nargs="+", default=[Path("benchmarks/results/ingress")])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/reference/ingress_2core"))
    args = parser.parse_args(argv)
    commands, runs = merged_runs(args.results)
    summary, tables = medians(runs), profiles(runs)
    loads = [[r["mode"], r["round"], r["load_average"]] for r in runs]
    body = {"commands": commands, "load_averages": loads, "median_by_mode": summary, "runs": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(body, indent=1))  # the profiles: in the page
    page = [
        *PREAMBLE,
        *(f"`{c}`" for c in commands),
        "",
        f"Load averages (1, 5, 15 min) after each mode and round: {loads}",
    ]
    page += ["", *comparison_md(summary, runs), "", *cpu_md(runs), *profile_md(tables)]
    args.out.with_suffix(".md").write_text("\n".join(page) + "\n")
    print("\n".join(comparison_md(summary, runs)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
