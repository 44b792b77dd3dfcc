"""``mlobs replay``: ship spool files from offline or crashed runs to the configured sinks."""

from __future__ import annotations

import re
import time
from datetime import datetime

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from mlobs.cli import render
from mlobs.cli.common import BadInput, settings, spool_dir
from mlobs.export.sinks import SINKS, build_sinks
from mlobs.spool import replay as spool_replay

# The pull sink only serves the latest values to a scraper: there is nothing to replay into it.
_REPLAYABLE = tuple(spec.name for spec in SINKS if spec.name != "prometheus")
_UNITS_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(text: str, now_s: float | None = None) -> int:
    """``30m``, ``2h``, ``7d`` (ago) or an ISO date/time (local time unless it has an offset),
    as nanoseconds since the epoch."""
    now_s = time.time() if now_s is None else now_s
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text)
    if match:
        return int((now_s - float(match[1]) * _UNITS_S[match[2]]) * 1e9)
    try:
        return int(datetime.fromisoformat(text.strip()).timestamp() * 1e9)
    except ValueError:
        raise click.BadParameter(f"{text!r}: use 30m, 2h, 7d or an ISO date") from None


@click.command("replay")
@click.option(
    "--sink",
    "sinks",
    multiple=True,
    type=click.Choice(_REPLAYABLE),
    help="Replay to this sink only (repeatable). Default: every configured sink.",
)
@click.option("--since", default=None, help="Only records newer than 30m, 2h, 7d or an ISO date.")
@click.option(
    "--include-live",
    is_flag=True,
    help="Also replay files of processes still running (they ship those themselves).",
)
@click.option("--dry-run", is_flag=True, help="Show what would be shipped, ship nothing.")
@click.pass_context
def replay_cmd(
    ctx: click.Context, sinks: tuple[str, ...], since: str | None, include_live: bool, dry_run: bool
) -> None:
    """Ship what the spool holds to the sinks the settings turn on, from each sink's cursor.

    Sinks are configured as for training (MLOBS_INFLUXDB_URL, OTEL_EXPORTER_OTLP_ENDPOINT, ...).
    Running it twice ships nothing twice. Exit code 1 if a sink did not take everything.
    """
    config = settings(ctx)
    directory = spool_dir(ctx)
    if not directory.is_dir():
        raise BadInput(f"no spool directory: {directory} (set --dir or MLOBS_DIR)")
    since_ns = None if since is None else parse_since(since)
    exporters = build_sinks(config, only=set(sinks or _REPLAYABLE))
    if not exporters:
        raise BadInput(
            "no sink is configured: set MLOBS_INFLUXDB_URL, MLOBS_PUSHGATEWAY_URL, "
            "OTEL_EXPORTER_OTLP_ENDPOINT, MLOBS_FLUENTD_HOST or MLOBS_JSONL"
        )
    out = render.console()
    try:
        files = spool_replay.plan(directory, [e.name for e in exporters], include_live=include_live)
        total = sum(sum(f.pending.values()) for f in files if f.skipped is None)
        for item in files:
            if item.skipped is not None:
                out.print(f"skipping {item.path.name}: {item.skipped}")
        names = ", ".join(e.name for e in exporters)
        out.print(f"{total} records to ship from {len(files)} spool files to {names}")
        if dry_run or total == 0:
            return
        with Progress(
            TextColumn("replay"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=out,
            transient=False,
        ) as bar:
            task = bar.add_task("replay", total=total)
            outcome = spool_replay.replay(
                files,
                exporters,
                since_ns=since_ns,
                on_progress=lambda n: bar.advance(task, n),
            )
    finally:
        for exporter in exporters:
            exporter.force_flush()
            exporter.shutdown()
    for name, count in sorted(outcome.shipped.items()):
        old = outcome.skipped_old.get(name, 0)
        out.print(
            f"{name}: {count} records shipped" + (f", {old} older ones passed over" if old else "")
        )
    for where, reason in sorted(outcome.failed.items()):
        out.print(f"[red]{where}: {reason}[/red]")
    ctx.exit(1 if outcome.failed else 0)
