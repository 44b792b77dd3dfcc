"""The ``mlobs`` command group: the global ``--dir`` option and the commands under it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from mlobs import __version__
from mlobs.cli.alert_webhook import alert_webhook_cmd
from mlobs.cli.alerts import alerts_cmd
from mlobs.cli.common import BadInput
from mlobs.cli.dashboards import dashboards_cmd
from mlobs.cli.demo import demo_cmd
from mlobs.cli.doctor import doctor_cmd
from mlobs.cli.drift import drift_cmd
from mlobs.cli.export import export_cmd
from mlobs.cli.gpu_exporter import gpu_exporter_cmd
from mlobs.cli.replay import replay_cmd
from mlobs.cli.runs import runs_cmd
from mlobs.cli.show import show_cmd
from mlobs.cli.tail import tail_cmd
from mlobs.spool.catalog import CatalogError


class _Group(click.Group):
    """Turns the catalog's answers to bad questions (no such run, no spool) into exit code 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CatalogError as exc:
            raise BadInput(str(exc)) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--dir",
    "directory",
    type=click.Path(path_type=Path),
    default=None,
    help="Spool directory (default: $MLOBS_DIR, else .mlobs).",
)
@click.version_option(__version__, prog_name="mlobs")
def cli(directory: Path | None) -> None:
    """Look at what mlobs recorded: runs, metrics, steps, logs and errors from the local spool."""


for command in (
    runs_cmd,
    show_cmd,
    tail_cmd,
    export_cmd,
    replay_cmd,
    doctor_cmd,
    demo_cmd,
    gpu_exporter_cmd,
    alert_webhook_cmd,
    drift_cmd,
    dashboards_cmd,
    alerts_cmd,
):
    cli.add_command(command)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="mlobs")


if __name__ == "__main__":
    main()
