"""``mlobs runs``: the runs in the spool, newest first."""

from __future__ import annotations

import click
from rich.text import Text

from mlobs.cli import render
from mlobs.cli.common import headline_metrics, open_catalog, run_dict

RECENT_RECORDS = 20_000
"""Last metrics come from each spool file's newest records: a listing of long runs stays fast."""


@click.command("runs")
@click.option(
    "--limit",
    "-n",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="Show at most this many runs.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the runs as a JSON list.")
@click.pass_context
def runs_cmd(ctx: click.Context, limit: int, as_json: bool) -> None:
    """List runs: id, name, status, start, duration and a few last metric values."""
    with open_catalog(ctx) as catalog:
        runs = catalog.runs()[:limit]
        metrics = catalog.last_metrics([r.run_id for r in runs], recent=RECENT_RECORDS)
        directory = catalog.directory
    if as_json:
        click.echo(render.dumps([run_dict(r, metrics[r.run_id]) for r in runs]))
        return
    out = render.console()
    if not runs:
        out.print(Text(f"no runs in {directory}"))
        return
    rows: list[list[render.Cell]] = []
    for run in runs:
        headline = "  ".join(
            f"{k}={render.number(v)}" for k, v in headline_metrics(metrics[run.run_id])
        )
        rows.append(
            [
                render.short_id(run.run_id),
                run.name,
                render.status(run.status),
                render.timestamp(run.start_ns),
                render.duration(run.duration_s),
                headline,
            ]
        )
    out.print(
        render.table(
            ["id", "name", "status", "started", "duration", "last metrics"],
            rows,
            numeric=["duration"],
        )
    )
