"""``mlobs export RUN``: a run's records as CSV or JSON lines, for a notebook or a spreadsheet."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TextIO

import click

from mlobs.cli import render
from mlobs.cli.common import open_catalog
from mlobs.record.types import METRIC_KINDS, Kind, Record

CSV_COLUMNS = ("seq", "kind", "ts_ns", "run_id", "name", "value", "step", "epoch", "split", "attrs")
KIND_GROUPS: dict[str, tuple[Kind, ...]] = {
    "metric": tuple(sorted(METRIC_KINDS)),
    "log": (Kind.LOG,),
    "span": (Kind.SPAN,),
    "event": (Kind.EVENT,),
}


@click.command("export")
@click.argument("run")
@click.option(
    "--format", "fmt", type=click.Choice(["csv", "jsonl"]), default="csv", show_default=True
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="File to write (default: standard output).",
)
@click.option(
    "--kind",
    "kinds",
    type=click.Choice(sorted(KIND_GROUPS)),
    multiple=True,
    help="Only records of this kind (repeatable; default: all).",
)
@click.pass_context
def export_cmd(
    ctx: click.Context, run: str, fmt: str, output: Path | None, kinds: tuple[str, ...]
) -> None:
    """Write every record of RUN, in time order. ``seq`` is per spool file."""
    selected = [k for group in kinds for k in KIND_GROUPS[group]] if kinds else None
    with open_catalog(ctx) as catalog:
        info = catalog.find_run(run)
        records = catalog.records(info.run_id, selected)
        if output is None:
            count = write(records, sys.stdout, fmt)
            return
        with open(output, "w", encoding="utf-8", newline="") as stream:
            count = write(records, stream, fmt)
    click.echo(f"wrote {count} records of run {info.name} ({info.run_id}) to {output}", err=True)


def write(records: Iterable[Record], stream: TextIO, fmt: str) -> int:
    """Write ``records`` in ``fmt`` (``csv`` or ``jsonl``); returns how many."""
    count = 0
    if fmt == "jsonl":
        for record in records:
            stream.write(json.dumps(render.json_safe(record.to_json_dict()), default=str) + "\n")
            count += 1
        return count
    writer = csv.writer(stream)
    writer.writerow(CSV_COLUMNS)
    for r in records:
        attrs = {k: v for k, v in r.attrs.items() if k != "split"}
        extra = json.dumps(render.json_safe(attrs), default=str, separators=(",", ":"))
        writer.writerow(
            [
                r.seq,
                r.kind.name.lower(),
                r.ts_ns,
                r.run_id,
                r.name,
                "" if r.value is None else repr(float(r.value)),
                "" if r.step is None else r.step,
                "" if r.epoch is None else r.epoch,
                r.attrs.get("split", ""),
                extra if attrs else "",
            ]
        )
        count += 1
    return count
