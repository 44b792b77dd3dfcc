"""``mlobs gpu-exporter``: serve every GPU of this host on ``/metrics`` until SIGTERM or SIGINT.

The exporter itself is :class:`mlobs.gpu.exporter.GpuExporter`; this module parses options, sets
up logging to stderr, prints the address it serves on, and stops cleanly on a signal (exit 0).
"""

from __future__ import annotations

import click

from mlobs.cli.common import BadInput, log_to_stderr, stop_on_signal
from mlobs.gpu.podresources import DEFAULT_SOCKET

# repeated from mlobs.gpu.exporter, which imports prometheus_client: the CLI must load without it
_DEFAULT_PORT = 9835
_DEFAULT_ADDR = "0.0.0.0"
_SOCKET_ENV = "MLOBS_GPU_EXPORTER_PODRESOURCES_SOCKET"


@click.command("gpu-exporter")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=_DEFAULT_PORT,
    show_default=True,
    help="Port for /metrics (0: a free one, printed on stderr).",
)
@click.option(
    "--addr",
    default=_DEFAULT_ADDR,
    show_default=True,
    help="Address to bind. Every interface by default, because Prometheus scrapes the exporter "
    "from another host; 127.0.0.1 keeps it to this machine.",
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0, min_open=True),
    default=5.0,
    show_default=True,
    help="Seconds between GPU samples.",
)
@click.option(
    "--podresources-socket",
    default=DEFAULT_SOCKET,
    show_default=True,
    envvar=_SOCKET_ENV,
    show_envvar=True,
    help="The kubelet's PodResources socket, for pod, namespace and container labels. Missing: "
    "those labels are empty.",
)
@click.option(
    "--certfile",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="TLS certificate (with --keyfile): serve https only.",
)
@click.option(
    "--keyfile",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="TLS private key (with --certfile).",
)
def gpu_exporter_cmd(
    port: int,
    addr: str,
    interval: float,
    podresources_socket: str,
    certfile: str | None,
    keyfile: str | None,
) -> None:
    """Serve every GPU of this host on /metrics (a standalone exporter for a DaemonSet).

    All GPUs are sampled, whatever CUDA_VISIBLE_DEVICES says. Without a driver or GPU the
    exporter keeps serving mlobs_gpu_exporter_up 0 and tries NVML again every minute.
    """
    if bool(certfile) != bool(keyfile):
        raise click.UsageError("--certfile and --keyfile go together")
    try:
        from mlobs.gpu.exporter import GpuExporter
    except ImportError as exc:
        raise BadInput(f"{exc}; install mlobs[gpu,prometheus]") from None
    log_to_stderr()  # why no GPU is sampled, pod attribution off
    exporter = GpuExporter(
        port=port,
        addr=addr,
        interval=interval,
        podresources_socket=podresources_socket,
        certfile=certfile,
        keyfile=keyfile,
    )
    with stop_on_signal() as stop:
        try:
            try:
                exporter.start()
            except OSError as exc:
                raise click.ClickException(
                    f"cannot serve /metrics on {addr}:{port}: {exc}"
                ) from None
            click.echo(f"mlobs gpu-exporter: serving /metrics on {exporter.url}", err=True)
            while not stop.wait(1.0):
                pass
            click.echo("mlobs gpu-exporter: stopping", err=True)
        finally:
            exporter.stop()
