"""``mlobs tail [RUN]``: log records (and metric points) as they reach the spool."""

from __future__ import annotations

import json
import logging
import time

import click
from rich.console import Console
from rich.text import Text

from mlobs.cli import render
from mlobs.cli.common import open_catalog
from mlobs.record.types import METRIC_KINDS, Kind, Record
from mlobs.spool.catalog import metric_key


@click.command("tail")
@click.argument("run", required=False)
@click.option(
    "-n",
    "--lines",
    "last",
    type=click.IntRange(min=0),
    default=20,
    show_default=True,
    help="Print this many of the latest records first.",
)
@click.option("-f", "--follow", is_flag=True, help="Keep printing new records until Ctrl-C.")
@click.option("--metrics", is_flag=True, help="Print metric points too.")
@click.option("--json", "as_json", is_flag=True, help="Print raw records as JSON lines.")
@click.option(
    "--interval",
    type=click.FloatRange(min=0.01),
    default=0.5,
    show_default=True,
    help="Seconds between polls with --follow.",
)
@click.pass_context
def tail_cmd(
    ctx: click.Context,
    run: str | None,
    last: int,
    follow: bool,
    metrics: bool,
    as_json: bool,
    interval: float,
) -> None:
    """Print the latest log records of RUN (of every run when omitted)."""
    kinds = (Kind.LOG, *sorted(METRIC_KINDS)) if metrics else (Kind.LOG,)
    out = render.console()
    with open_catalog(ctx) as catalog:
        run_id = catalog.find_run(run).run_id if run is not None else None
        tail = catalog.tail(run_id, kinds)
        _emit(out, tail.backlog(last), as_json)
        if not follow:
            return
        try:
            while True:
                time.sleep(interval)
                _emit(out, tail.poll(), as_json)
        except KeyboardInterrupt:
            pass


def _emit(out: Console, records: list[Record], as_json: bool) -> None:
    for record in records:
        if as_json:
            out.file.write(json.dumps(render.json_safe(record.to_json_dict()), default=str) + "\n")
        else:
            out.print(line(record), soft_wrap=True)
    out.file.flush()


def line(record: Record) -> Text:
    """``time level logger [run/epoch/step] message``; a metric point reads ``time METRIC name
    [run/epoch/step] value``."""
    attrs = record.attrs
    if record.kind is Kind.LOG:
        level = str(attrs.get("level") or logging.getLevelName(int(record.value or 0)))
        source, message = record.name, str(attrs.get("message", ""))
    else:
        level, source, message = "METRIC", metric_key(record), render.number(record.value)
    where = "/".join(
        "-" if v is None else str(v)
        for v in (render.short_id(record.run_id) or None, record.epoch, record.step)
    )
    text = Text(f"{render.clock(record.ts_ns)} ", style="dim")
    text.append(f"{level:<8}", style=render.LEVEL_STYLES.get(level, ""))
    text.append(f" {source} ")
    text.append(f"[{where}] ", style="dim")
    text.append(message)
    exception = attrs.get("exception")
    if exception:
        text.append("\n" + str(exception), style="red")
    return text
