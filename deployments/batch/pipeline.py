"""A batch as a Ray Data pipeline: lines -> ``prepare`` (tasks) -> ``ModelWorker`` (an actor pool with
the resources ``batch.<modality>`` grants, no more) -> result blocks, streamed back to the runner."""

from __future__ import annotations

import functools
from collections.abc import Iterator

import ray

from deployments.batch.work import ModelWorker, Plan, prepare

PREPARE_CPUS = 0.1  # parsing a line is light; the model pool is what the config budgets
PREPARE_TASKS = 2  # at once: more only starts worker processes on a small machine
LINES_PER_READ_BLOCK = 256


def results(plan: Plan, pending: list[tuple[int, str]]) -> Iterator[list[dict]]:
    """Results of ``pending`` (line number, text), in blocks of at most ``plan.block_size``."""
    if not pending:
        return
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.verbose_stats_logs = False
    pool = plan.pool
    blocks = max(1, min(len(pending) // LINES_PER_READ_BLOCK, 64))
    ds = ray.data.from_items([{"line": n, "text": t} for n, t in pending], override_num_blocks=blocks)
    ds = ds.map_batches(
        functools.partial(prepare, plan),
        batch_format="numpy",
        batch_size=plan.block_size,
        num_cpus=PREPARE_CPUS,
        concurrency=PREPARE_TASKS,
    )
    ds = ds.map_batches(
        ModelWorker,
        fn_constructor_args=(plan,),
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=pool["max_actors"]),
        batch_size=pool["batch_size"],
        batch_format="numpy",
        num_cpus=pool["num_cpus"],
        num_gpus=pool["num_gpus"],
    )
    for batch in ds.iter_batches(batch_size=plan.block_size, batch_format="numpy"):
        columns = {k: v.tolist() for k, v in batch.items()}
        yield [dict(zip(columns, values)) for values in zip(*columns.values())]
