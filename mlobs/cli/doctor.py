"""``mlobs doctor``: the configuration in force and whether everything it names works."""

from __future__ import annotations

from pathlib import Path

import click
from rich.text import Text

from mlobs.cli import render
from mlobs.cli import sink_checks as _network_checks  # noqa: F401 (registers the checks)
from mlobs.cli.checks import Check, resolve_recording, sink_checks, spool_checks
from mlobs.cli.gpu_check import gpu_check
from mlobs.config import SETTINGS, Config, Setting
from mlobs.spool.catalog import Catalog


@click.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="Print settings and checks as JSON.")
@click.pass_context
def doctor_cmd(ctx: click.Context, as_json: bool) -> None:
    """Check settings, the spool directory and the sinks. Exit code 1 if anything failed."""
    directory = ctx.find_root().params.get("directory")
    config, checks = resolve_recording({"dir": str(directory)} if directory is not None else None)
    catalog = Catalog(config.dir) if Path(config.dir).is_dir() else None
    try:
        checks += spool_checks(config, catalog)
        checks += sink_checks(config, catalog)
        checks.append(gpu_check(config))
    finally:
        if catalog is not None:
            catalog.close()
    failed = any(not c.ok for c in checks)
    if as_json:
        report = {
            "settings": _settings(config),
            "checks": [c._asdict() for c in checks],
            "ok": not failed,
        }
        click.echo(render.dumps(report))
    else:
        _print(config, checks)
    ctx.exit(1 if failed else 0)


def _settings(config: Config) -> list[dict[str, object]]:
    return [
        {
            "name": s.field,
            "env": s.env,
            "value": _shown(s, getattr(config, s.field)),
            "source": config.sources.get(s.field, "default"),
        }
        for s in SETTINGS
    ]


def _shown(setting: Setting, value: object) -> object:
    if setting.secret and value is not None:
        return "*** (set)"
    return value


def _print(config: Config, checks: list[Check]) -> None:
    out = render.console()
    rows: list[list[render.Cell]] = [
        [
            str(s["name"]),
            str(s["env"]),
            "" if s["value"] is None else str(s["value"]),
            Text(str(s["source"]), style="" if s["source"] == "default" else "cyan"),
        ]
        for s in _settings(config)
    ]
    out.print(render.table(["setting", "variable", "value", "source"], rows, title="settings"))
    out.print()
    marks: list[list[render.Cell]] = [
        [Text("ok", style="green") if c.ok else Text("FAIL", style="bold red"), c.name, c.detail]
        for c in checks
    ]
    out.print(render.table(["", "check", "detail"], marks, title="checks"))
    failed = sum(not c.ok for c in checks)
    out.print(
        Text(
            f"{failed} check(s) failed" if failed else "all checks passed",
            style="bold red" if failed else "green",
        )
    )
