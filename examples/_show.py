"""Prints what an example recorded: each run this process wrote to the spool, with its status,
epochs and last metrics (what ``mlobs runs`` and ``mlobs show`` print, in a few lines)."""

from __future__ import annotations

import os

import mlobs
from mlobs import runtime
from mlobs.spool.catalog import Catalog


def show_runs() -> None:
    mlobs.flush()
    directory = runtime.get().config.dir
    with Catalog(directory) as catalog:
        runs = [r for r in catalog.runs() if r.resource.get("pid") == os.getpid()]
        print(f"{len(runs)} run(s) recorded in {directory}")
        for run in sorted(runs, key=lambda r: r.start_ns):
            summary = catalog.summarize(run)
            print(f"- {run.name} [{run.status}] epochs {summary.epochs or '-'}")
            if run.params:
                shown = dict(list(run.params.items())[:6])
                print(f"  params: {shown}{' ...' if len(run.params) > 6 else ''}")
            for name, value in list(summary.last_metrics.items())[:12]:
                print(f"  {name} = {value:.4g}")
