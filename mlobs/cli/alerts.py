"""``mlobs alerts generate``: the Prometheus rule files and the Alertmanager configuration."""

from __future__ import annotations

from pathlib import Path

import click

from mlobs.cli.common import BadInput


@click.group("alerts")
def alerts_cmd() -> None:
    """Alert rules for Prometheus and an Alertmanager configuration."""


@alerts_cmd.command("generate")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Folder to write into (the repository keeps its output in alerting/).",
)
@click.option(
    "--param",
    "params",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a parameter of RuleParams or AlertmanagerParams (mlobs/alerts/params.py), "
    "e.g. training_selector='job=\"train\"' or gpu_temperature_celsius=80. Repeatable.",
)
@click.option(
    "--check",
    is_flag=True,
    help="Write nothing; exit 1 if a file in --out is missing or differs from a fresh generation.",
)
def generate_cmd(out: Path, params: tuple[str, ...], check: bool) -> None:
    """Write one rule file per area (training, gpu, drift, quality, serving, telemetry),
    alertmanager.yml and templates/mlobs.tmpl into OUT."""
    from mlobs import alerts

    try:
        rule_overrides, am_overrides = alerts.split_overrides(params)
        rule_params = alerts.apply_overrides(alerts.RuleParams(), rule_overrides)
        am_params = alerts.apply_overrides(alerts.AlertmanagerParams(), am_overrides)
        files = alerts.render_all(rule_params, am_params)
    except alerts.ParamError as exc:
        raise BadInput(str(exc)) from None
    except RuntimeError as exc:  # PyYAML missing
        raise click.ClickException(str(exc)) from None
    if check:
        stale = alerts.differences(out, files)
        for relative in stale:
            click.echo(f"out of date: {out / relative}", err=True)
        if stale:
            raise click.exceptions.Exit(1)
        click.echo(f"{len(files)} files in {out} are up to date")
        return
    for path in alerts.write(out, files):
        click.echo(f"wrote {path}")
