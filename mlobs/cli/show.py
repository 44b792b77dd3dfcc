"""``mlobs show RUN``: one run in full: lineage, params, per-epoch metrics, steps and errors."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import click
from rich.console import Console
from rich.text import Text

from mlobs.cli import render
from mlobs.cli.common import open_catalog, run_dict
from mlobs.spool.catalog import RunSummary

MAX_EPOCH_ROWS = 50


@click.command("show")
@click.argument("run")
@click.option("--json", "as_json", is_flag=True, help="Print everything as one JSON object.")
@click.pass_context
def show_cmd(ctx: click.Context, run: str, as_json: bool) -> None:
    """Show RUN (an id, a unique id prefix, or a run name: the latest run of that name)."""
    with open_catalog(ctx) as catalog:
        summary = catalog.summarize(catalog.find_run(run))
    if as_json:
        click.echo(render.dumps(summary_dict(summary)))
        return
    out = render.console()
    out.print(_header(summary))
    for title, values in (("params", summary.run.params), ("tags", summary.run.tags)):
        if values:
            out.print()
            out.print(render.table(["name", "value"], _flat_items(values), title=title))
    _print_epochs(out, summary)
    _print_gpus(out, summary)
    _print_steps(out, summary)
    _print_errors(out, summary)


def summary_dict(summary: RunSummary) -> dict[str, Any]:
    out = run_dict(summary.run, summary.last_metrics)
    out["error_type"] = summary.error_type
    out["epochs"] = [{"epoch": e, "metrics": summary.epoch_metrics[e]} for e in summary.epochs]
    out["steps"] = [
        {
            "name": s.name,
            "count": s.count,
            "failures": s.failures,
            "retries": s.retries,
            "mean_s": s.mean_s,
            "p50_s": s.p50_s,
            "max_s": s.max_s,
        }
        for s in summary.steps.values()
    ]
    out["errors"] = [asdict(p) for p in summary.errors]
    out["record_counts"] = summary.counts
    out["gpus"] = {gpu: stats.as_dict() for gpu, stats in sorted(summary.gpus.items())}
    return out


def _flat_items(values: dict[str, Any]) -> list[list[str]]:
    return [
        [k, v if isinstance(v, str) else render.dumps(v, indent=None)] for k, v in values.items()
    ]


def _name_version(resource: dict[str, Any], prefix: str) -> str:
    name, version = resource.get(f"{prefix}_name"), resource.get(f"{prefix}_version")
    if name is None:
        return ""
    return f"{name}:{version}" if version else str(name)


def _header(summary: RunSummary) -> Any:
    run, res = summary.run, summary.run.resource
    status = render.status(run.status)
    if run.error:
        status.append(f"  {run.error}", style="red")
    pairs: list[tuple[str, render.Cell]] = [
        ("run", f"{run.name}  ({run.run_id})"),
        ("status", status),
    ]
    if summary.error_type:
        pairs.append(("error type", summary.error_type))
    pairs += [
        ("experiment", str(res.get("experiment", ""))),
        ("model", _name_version(res, "model")),
        ("dataset", _name_version(res, "dataset")),
        ("git commit", str(res.get("git_commit", ""))[:12]),
        ("host", f"{res.get('host', '')} (pid {res.get('pid', '?')})"),
        ("rank", f"{res.get('rank', 0)} of world size {res.get('world_size', 1)}"),
        ("started", render.timestamp(run.start_ns)),
        ("duration", render.duration(run.duration_s)),
        ("last heartbeat", render.age(run.last_progress_ns)),
    ]
    if res.get("parent_run_id"):
        pairs.append(("parent run", str(res["parent_run_id"])))
    return render.key_values((k, v) for k, v in pairs if v)


def _print_epochs(out: Console, summary: RunSummary) -> None:
    epochs, names = summary.epochs, summary.metric_names
    if not epochs:
        if summary.last_metrics:
            out.print()
            last = [[k, render.number(v)] for k, v in summary.last_metrics.items()]
            out.print(render.table(["metric", "last value"], last, title="metrics"))
        return
    shown = epochs[-MAX_EPOCH_ROWS:]
    rows: list[list[render.Cell]] = [
        [str(e), *(render.number(summary.epoch_metrics[e].get(n)) for n in names)] for e in shown
    ]
    trend: list[render.Cell] = [Text("trend", style="dim")]
    trend += [Text(render.sparkline(summary.series(n)), style="cyan") for n in names]
    rows.append(trend)
    title = (
        "epochs"
        if len(shown) == len(epochs)
        else (f"epochs (last {len(shown)} of {len(epochs)}; the trend covers all)")
    )
    out.print()
    out.print(render.table(["epoch", *names], rows, title=title, numeric=["epoch", *names]))
    others = {k: v for k, v in summary.last_metrics.items() if k not in names}
    if others:
        out.print(
            render.table(
                ["metric", "last value"],
                [[k, render.number(v)] for k, v in others.items()],
                title="other metrics (outside epochs)",
            )
        )


def _print_gpus(out: Console, summary: RunSummary) -> None:
    if not summary.gpus:
        return
    rows: list[list[render.Cell]] = []
    for gpu, stats in sorted(summary.gpus.items()):
        facts = stats.as_dict()
        memory = facts["memory_used_max_bytes"]
        rows.append(
            [
                gpu,
                stats.model,
                render.number(facts["utilization_mean"]),
                render.number(memory / 2**30 if memory else None),
                render.number(facts["power_mean_watts"]),
                render.number(facts["temperature_max_celsius"]),
                Text("lost", style="red") if stats.failed else "ok",
            ]
        )
    headers = ["gpu", "model", "mean util", "peak mem GiB", "mean W", "max °C", "status"]
    out.print()
    out.print(
        render.table(
            headers,
            rows,
            title="GPUs (energy per epoch is in the epochs table)",
            numeric=headers[2:6],
        )
    )


def _print_steps(out: Console, summary: RunSummary) -> None:
    if not summary.steps:
        return
    rows: list[list[render.Cell]] = []
    for s in summary.steps.values():
        failures = Text(str(s.failures), style="red" if s.failures else "")
        rows.append(
            [
                s.name,
                str(s.count),
                failures,
                str(s.retries),
                render.duration(s.mean_s),
                render.duration(s.p50_s),
                render.duration(s.max_s),
            ]
        )
    out.print()
    out.print(
        render.table(
            ["step", "count", "failures", "retries", "mean", "p50", "max"],
            rows,
            title="steps",
            numeric=["count", "failures", "retries", "mean", "p50", "max"],
        )
    )


def _print_errors(out: Console, summary: RunSummary) -> None:
    if not summary.errors:
        return
    rows: list[list[render.Cell]] = []
    for p in summary.errors:
        where = p.kind if p.attempt is None else f"{p.kind} (attempt {p.attempt}"
        if p.attempt is not None:
            where += ", retried)" if p.retried else ")"
        rows.append([render.clock(p.ts_ns), where, p.source, p.error_type or "", p.message])
    out.print()
    out.print(render.table(["time", "what", "where", "type", "message"], rows, title="errors"))
