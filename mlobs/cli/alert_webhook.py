"""``mlobs alert-webhook``: run commands for Alertmanager alerts until SIGTERM or SIGINT.

The receiver itself is :class:`mlobs.alerts.webhook.AlertWebhook`; this module reads the options,
the configuration and the secret, logs to stderr, prints the address it listens on, and stops
cleanly on a signal (exit 0).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import click

from mlobs import runtime
from mlobs.alerts.actions import SECRET_ENV
from mlobs.alerts.webhook import DEFAULT_ADDR, DEFAULT_PORT, AlertWebhook, read_secret_file
from mlobs.alerts.webhook_config import ConfigError, load_config
from mlobs.cli.common import BadInput, log_to_stderr, spool_dir, stop_on_signal

logger = logging.getLogger("mlobs.alerts")


@click.command("alert-webhook")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Rules file (YAML or JSON): which alerts run which command.",
)
@click.option("--addr", default=DEFAULT_ADDR, show_default=True, help="Address to bind.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=DEFAULT_PORT,
    show_default=True,
    help="Port to listen on (0: a free one, printed on stderr).",
)
@click.option(
    "--secret-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help=f"File holding the shared secret (default: ${SECRET_ENV}). Alertmanager sends it as "
    "'Authorization: Bearer ...' (http_config.authorization.credentials_file).",
)
@click.option(
    "--insecure-no-secret",
    is_flag=True,
    help="Accept notifications without a secret. Anyone who can reach the port runs the commands.",
)
@click.pass_context
def alert_webhook_cmd(
    ctx: click.Context,
    config_path: Path,
    addr: str,
    port: int,
    secret_file: Path | None,
    insecure_no_secret: bool,
) -> None:
    """Receive Alertmanager notifications and run a command (a retraining job, say) for chosen
    alerts, with cooldown and de-duplication; every decision is recorded in the spool.

    Alert facts reach the command as MLOBS_ALERT_NAME, MLOBS_ALERT_RUN_ID, MLOBS_ALERT_STATUS,
    MLOBS_ALERT_LABELS (JSON), MLOBS_ALERT_FINGERPRINT and more.
    """
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        raise BadInput(str(exc)) from None
    secret = _secret(secret_file, insecure_no_secret)
    log_to_stderr()  # what the receiver does, one line per decision
    if secret is None:
        logger.warning(
            "mlobs alert-webhook: no shared secret (--insecure-no-secret): anyone who can reach "
            "%s:%s can run the configured commands",
            addr,
            port,
        )
    runtime.configure(dir=str(spool_dir(ctx)))
    with stop_on_signal() as stop:
        try:
            webhook = AlertWebhook(config, secret, addr=addr, port=port)
        except OSError as exc:
            raise click.ClickException(f"cannot listen on {addr}:{port}: {exc}") from None
        webhook.start()
        try:
            click.echo(f"mlobs alert-webhook: listening on {webhook.url}", err=True)
            while not stop.wait(1.0):
                pass
            click.echo("mlobs alert-webhook: stopping", err=True)
        finally:
            webhook.stop()
            runtime.flush()


def _secret(secret_file: Path | None, insecure: bool) -> str | None:
    if insecure:
        if secret_file is not None:
            raise click.UsageError("--secret-file and --insecure-no-secret exclude each other")
        return None
    if secret_file is not None:
        try:
            secret = read_secret_file(secret_file)
        except ValueError as exc:
            raise BadInput(str(exc)) from None
        if secret_file.stat().st_mode & 0o077:
            click.echo(
                f"mlobs alert-webhook: warning: {secret_file} is readable by other users",
                err=True,
            )
        return secret
    secret = os.environ.get(SECRET_ENV, "").strip()
    if not secret:
        raise click.UsageError(
            f"no shared secret: give --secret-file or set {SECRET_ENV} "
            "(or --insecure-no-secret to accept any request)"
        )
    return secret
