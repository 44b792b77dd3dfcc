"""``mlobs dashboards generate``: Grafana dashboards for your own metric names."""

from __future__ import annotations

from pathlib import Path

import click

from mlobs.cli.common import BadInput

_DATASOURCES = ("prometheus", "influxdb")


@click.group("dashboards")
def dashboards_cmd() -> None:
    """Grafana dashboards (JSON) for the series mlobs ships to Prometheus and InfluxDB."""


@dashboards_cmd.command("generate")
@click.option(
    "--metric",
    "metrics",
    multiple=True,
    metavar="NAME",
    help="A metric name as given to mlobs.log (repeat for several; default: loss, accuracy). "
    "The training dashboards get one panel each.",
)
@click.option(
    "--datasource",
    "datasources",
    multiple=True,
    type=click.Choice(_DATASOURCES),
    help="Build the dashboards for this datasource (repeat for both; default: both).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("dashboards"),
    show_default=True,
    help="Folder for the <uid>.json files.",
)
@click.option(
    "--uid-prefix",
    default="mlobs",
    show_default=True,
    help="Start of each dashboard's uid (mlobs-training, mlobs-gpu, ...).",
)
@click.option(
    "--check",
    is_flag=True,
    help="Write nothing: exit 1 and list the files in --out that differ from what would be "
    "written (for CI).",
)
def generate_cmd(
    metrics: tuple[str, ...],
    datasources: tuple[str, ...],
    out: Path,
    uid_prefix: str,
    check: bool,
) -> None:
    """Build the training, GPU, drift and quality, pipeline and serving and telemetry-health
    dashboards (Prometheus; training and drift also for InfluxDB) into --out, one file each.

    Import them in Grafana, or provision them with dashboards/provisioning/.
    """
    try:
        from mlobs import dashboards
    except ImportError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        boards = dashboards.build(
            metrics or dashboards.DEFAULT_METRICS,
            datasources or dashboards.DATASOURCES,
            uid_prefix,
        )
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    if check:
        lines = dashboards.differences(out, boards, uid_prefix)
        for line in lines:
            click.echo(line)
        if lines:
            raise click.ClickException(
                f"{len(lines)} dashboard file(s) differ; run mlobs dashboards generate "
                "with the same options to update them"
            )
        click.echo(f"{len(boards)} dashboard(s) in {out} are up to date")
        return
    for path in dashboards.write(out, boards):
        click.echo(f"{path}  {boards[path.stem]['title']}")
