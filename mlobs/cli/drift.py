"""``mlobs drift profile DATA`` and ``mlobs drift compare PROFILE DATA``: drift from the shell.

CSV is read with pandas when it is installed and with the standard library otherwise (a column
is numeric when every non-empty value parses as a number); Parquet needs pandas and pyarrow.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import click
from rich.text import Text

from mlobs.cli import render
from mlobs.cli.common import BadInput


def read_table(path: Path) -> Any:
    """The rows of a ``.csv`` or ``.parquet`` file, as something ``mlobs.drift`` reads."""
    suffix = path.suffix.lower()
    if not path.is_file():
        raise BadInput(f"{path}: no such file")
    if suffix == ".parquet":
        try:
            import pandas as pd

            return pd.read_parquet(path)
        except ImportError as exc:
            raise BadInput(f"reading Parquet needs pandas and pyarrow: {exc}") from None
    if suffix != ".csv":
        raise BadInput(f"{path}: not a .csv or .parquet file")
    try:
        import pandas as pd
    except ImportError:
        return _read_csv(path)
    return pd.read_csv(path)


def _read_csv(path: Path) -> dict[str, list[Any]]:
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        columns: dict[str, list[Any]] = {name: [] for name in reader.fieldnames or ()}
        for row in reader:
            for name in columns:
                value = row.get(name)
                columns[name].append(None if value in (None, "") else value)
    for name, values in columns.items():
        try:
            columns[name] = [None if v is None else float(v) for v in values]
        except ValueError:
            pass  # not every value is a number: a categorical column
    return columns


@click.group("drift")
def drift_cmd() -> None:
    """Profile reference data and compare other data with it (needs mlobs[drift])."""


@drift_cmd.command("profile")
@click.argument("data", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Profile file to write (default: DATA with the suffix .profile.npz).",
)
@click.option("--categorical", multiple=True, help="Treat this column as categorical (repeatable).")
@click.option(
    "--sample-size",
    type=int,
    default=10_000,
    show_default=True,
    help="Values kept per numeric column.",
)
def profile_cmd(
    data: Path, out: Path | None, categorical: tuple[str, ...], sample_size: int
) -> None:
    """Build a reference profile of DATA (.csv or .parquet) and save it."""
    from mlobs import drift

    table = read_table(data)
    made = drift.profile(table, categorical=categorical or None, sample_size=sample_size)
    target = out or data.with_suffix(".profile.npz")
    saved = made.save(target)
    out_console = render.console()
    out_console.print(
        f"profile of {made.rows:,} rows, {len(made.numeric)} numeric and "
        f"{len(made.categorical)} categorical columns: {saved} ({saved.stat().st_size:,} bytes)"
    )
    for column, why in made.skipped.items():
        out_console.print(Text(f"skipped {column}: {why}", style="yellow"))


@drift_cmd.command("compare")
@click.argument("profile_path", metavar="PROFILE", type=click.Path(path_type=Path))
@click.argument("data", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="JSON report to write (default: DATA with the suffix .drift.json).",
)
@click.option(
    "--policy",
    type=click.Choice(["effect_size", "p_value"]),
    default="effect_size",
    show_default=True,
    help="What decides a column's verdict.",
)
@click.option(
    "--numeric-test", default=None, help="ks, wasserstein, psi, jensen_shannon, anderson."
)
@click.option(
    "--categorical-test", default=None, help="chi_square, psi, jensen_shannon, total_variation."
)
@click.option("--fail-on-drift", is_flag=True, help="Exit with code 1 when the dataset drifted.")
@click.pass_context
def compare_cmd(
    ctx: click.Context,
    profile_path: Path,
    data: Path,
    out: Path | None,
    policy: str,
    numeric_test: str | None,
    categorical_test: str | None,
    fail_on_drift: bool,
) -> None:
    """Compare DATA (.csv or .parquet) with a saved PROFILE: one row per column."""
    from mlobs import drift

    try:
        reference = drift.Profile.load(profile_path)
    except (FileNotFoundError, drift.ProfileError) as exc:
        raise BadInput(f"{profile_path}: {exc}") from None
    try:
        report = drift.compare(
            reference,
            read_table(data),
            policy=policy,  # type: ignore[arg-type]
            numeric_test=numeric_test,
            categorical_test=categorical_test,
        )
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    target = out or data.with_suffix(".drift.json")
    target.write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
    rows = report.table_rows()
    headers = list(rows[0]) if rows else ["column"]
    cells: list[list[render.Cell]] = []
    for row in rows:
        line: list[render.Cell] = [row[h] for h in headers]
        if "drifted" in row:
            verdict = row["drifted"]
            style = "bold red" if verdict.startswith("yes") else "green" if verdict == "no" else ""
            line[headers.index("drifted")] = Text(verdict, style)
        cells.append(line)
    out_console = render.console()
    out_console.print(
        render.table(headers, cells, title=f"drift of {data.name} against {profile_path.name}")
    )
    verdict = "drifted" if report.drifted else "no dataset drift"
    out_console.print(
        Text(
            f"{verdict}: {len(report.drifted_columns)} of {len(report.features)} columns "
            f"({report.share_drifted:.0%}, threshold {report.threshold:.0%}); report: {target}",
            style="bold red" if report.drifted else "green",
        )
    )
    if fail_on_drift and report.drifted:
        ctx.exit(1)
