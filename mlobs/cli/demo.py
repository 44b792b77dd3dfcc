"""``mlobs demo``: train a small model with mlobs turned on, then say what to look at."""

from __future__ import annotations

from pathlib import Path

import click

from mlobs.cli.common import spool_dir


@click.command("demo")
@click.option("--epochs", type=click.IntRange(1, 1000), default=8, show_default=True)
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Spool directory for the demo run (default: the global --dir).",
)
@click.pass_context
def demo_cmd(ctx: click.Context, epochs: int, directory: Path | None) -> None:
    """Train softmax regression on synthetic data (numpy) with runs, epochs, steps and logs."""
    try:
        from mlobs import demo
    except ModuleNotFoundError as exc:
        if exc.name != "numpy":
            raise
        raise click.ClickException(str(exc)) from None
    given = directory or ctx.find_root().params.get("directory")
    target = directory or spool_dir(ctx)
    prefix = "mlobs" if given is None else f"mlobs --dir {target}"
    ctx.exit(demo.main(epochs, target, cli_prefix=prefix))
