"""Prometheus sink benchmarks of issue #3: end-to-end throughput to a real Pushgateway and through
a scrape of ``/metrics``, CPU per million points, and the cost of a scrape, each against
prometheus-client alone.

Run from the repository root::

    python bench/bench_prometheus.py            # full run, prints the tables
    python bench/bench_prometheus.py --quick    # small sizes, a smoke test (cannot --write)
    python bench/bench_prometheus.py --write    # full run, rewrites the prometheus block

1. Pushgateway, in batches of B points (a point: one loss value at one step):

   - mlobs: B calls of ``mlobs.log(loss=x)`` in a run, then ``mlobs.flush()``, which returns once
     the Pushgateway answered the PUT of the run's group (recorder, SQLite spool, shipper, state,
     push; the shipper ships at most 5,000 records per push).
   - client: prometheus-client alone: B times ``loss.labels(...).set(x)`` and
     ``step.labels(...).set(i)`` on gauges with the run's four labels, then ``push_to_gateway``
     (PUT) of that registry to a group keyed by job and run id. The usual way to use it: the
     target peer.
   - client, children cached: the same with the two labelled children looked up once and their
     bound ``set`` called in the loop (the cheapest use of the client; for reference).

   A Pushgateway holds the latest value of a series, so both sides deliver the same thing: the
   run's last loss and step once per batch.

2. ``/metrics``, in batches of B points: the same logging (mlobs) or gauge updates (both client
   cases), then one scrape (HTTP GET) of the process's own endpoint, which is when Prometheus
   would see the values. For reference: no target is set for it in the issue.

3. Scrape cost: one GET of ``/metrics`` holding R runs x M metrics x 2 splits, mlobs'
   ``PrometheusExporter`` (self-metrics off, as the client has none) against a client registry
   with the same series, both served by prometheus-client's ``start_http_server``.

CPU is the process's user + system time over the case (every thread; the Pushgateway is another
process and is not counted).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from _report import Stats, table
from _sinks import (
    FULL_LOAD,
    QUICK_LOAD,
    Case,
    Load,
    Ratio,
    Server,
    Throughput,
    Timing,
    chunks,
    finish,
    get,
    interleave,
    mlobs_batches,
    parse_args,
    per_unit,
    report_throughput,
    stage,
    timed,
)

import mlobs

PEERS = ("prometheus-client",)
TARGET_VS_CLIENT = 0.8
LABELS = ("run_id", "run_name", "experiment", "rank")


def pushgateway() -> Server:
    return Server(
        "pushgateway",
        lambda address, data: [
            f"--web.listen-address={address}",
            # Debian's build persists to a system file by default: keep it in the temp dir
            f"--persistence.file={data}/pushgateway.data",
            "--log.level=warn",
        ],
        ready="/-/ready",
        binaries=("prometheus-pushgateway", "pushgateway"),
    )


# -- 1 and 2: end to end ---------------------------------------------------------------------------


def _client_gauges(registry: Any) -> tuple[Any, Any]:
    from prometheus_client import Gauge

    loss = Gauge("mlobs_loss", "Last loss.", LABELS, registry=registry)
    step = Gauge("mlobs_run_step", "Last step.", LABELS, registry=registry)
    return loss, step


def _client_case(
    gauges: tuple[Any, Any],
    n: int,
    batch: int,
    tag: str,
    cached: bool,
    deliver: Callable[[str], object],
) -> Timing:
    """B updates of the two labelled gauges, then ``deliver(run_id)``, until ``n`` points."""
    loss, step = gauges
    run_id = f"client-{tag}"
    values = (run_id, run_id, "default", "0")
    set_loss, set_step = loss.labels(*values).set, step.labels(*values).set

    def body() -> None:
        for chunk in chunks(n, batch):
            if cached:
                for i in chunk:
                    set_loss(i * 0.001)
                    set_step(i)
            else:
                for i in chunk:
                    loss.labels(*values).set(i * 0.001)
                    step.labels(*values).set(i)
            deliver(run_id)

    return timed(body)


def _client_push_case(url: str, n: int, batch: int, tag: str, cached: bool) -> Timing:
    from prometheus_client import CollectorRegistry, push_to_gateway

    registry = CollectorRegistry()

    def push(run_id: str) -> None:
        push_to_gateway(
            url, job="default", registry=registry, grouping_key={"run_id": run_id}, timeout=5
        )

    return _client_case(_client_gauges(registry), n, batch, tag, cached, push)


def bench_push(url: str, load: Load) -> Throughput:
    tmp = tempfile.mkdtemp(prefix="mlobs-bench-prom-")
    try:
        mlobs.configure(dir=tmp, pushgateway_url=url, git=False)
        n = load.points
        cases: dict[str, Case] = {
            "mlobs": lambda b, tag: mlobs_batches(n, b, tag, "pushgateway"),
            "client": lambda b, tag: _client_push_case(url, n, b, tag, False),
            "cached": lambda b, tag: _client_push_case(url, n, b, tag, True),
        }
        return interleave(load, cases)
    finally:
        mlobs.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


def bench_pull(load: Load) -> Throughput:
    from prometheus_client import CollectorRegistry, start_http_server

    from mlobs.export.prometheus import PrometheusExporter

    tmp = tempfile.mkdtemp(prefix="mlobs-bench-prom-")
    registry = CollectorRegistry()
    gauges = _client_gauges(registry)
    server, thread = start_http_server(0, "127.0.0.1", registry)
    client_url = f"http://127.0.0.1:{server.server_port}/metrics"

    def scrape(_run_id: str) -> None:
        get(client_url)

    try:
        # finished runs stay exposed: keep only a few, as a long process would
        exporter = PrometheusExporter(port=0, keep_finished_runs=2)
        mlobs.configure(dir=tmp, exporters=[exporter], git=False)
        url = exporter.url or ""
        n = load.points
        cases: dict[str, Case] = {
            "mlobs": lambda b, tag: mlobs_batches(n, b, tag, "prometheus", lambda: get(url)),
            "client": lambda b, tag: _client_case(gauges, n, b, tag, False, scrape),
            "cached": lambda b, tag: _client_case(gauges, n, b, tag, True, scrape),
        }
        return interleave(load, cases)
    finally:
        mlobs.shutdown()
        server.shutdown()
        server.server_close()
        thread.join(5)
        shutil.rmtree(tmp, ignore_errors=True)


def report(r: Throughput, title: str, scrape: bool, target: bool) -> tuple[str, bool]:
    """The end-to-end block for the Pushgateway (``scrape`` false) or ``/metrics``; the ratio to
    the client judged only with ``target``."""
    labels = {
        "mlobs": "mlobs: `mlobs.log` × B, `mlobs.flush()`",
        "client": "prometheus-client alone: B × 2 `Gauge.labels(...).set()`",
        "cached": "prometheus-client alone, children cached: B × 2 `child.set()`",
    }
    labels = {
        k: v + (", one scrape" if scrape else ", `push_to_gateway`") for k, v in labels.items()
    }
    if not scrape:
        labels["mlobs"] = "mlobs: `mlobs.log` × B, `mlobs.flush()` (the sink's PUT)"
    ratios = (
        Ratio("mlobs", "client", "mlobs / client", TARGET_VS_CLIENT if target else None),
        Ratio("mlobs", "cached", "mlobs / client, children cached"),
    )
    about = "; see the script's docstring for what each case does."
    return report_throughput(r, title, about, labels, ratios)


# -- 3. scrape cost --------------------------------------------------------------------------------


@dataclass
class ScrapeCost:
    runs: int
    metrics: int
    series: int
    ms: dict[str, list[float]] = field(default_factory=dict)
    size: dict[str, int] = field(default_factory=dict)


def bench_scrape(runs: int, metrics: int, scrapes: int, repeats: int) -> ScrapeCost:
    from prometheus_client import CollectorRegistry, Gauge, start_http_server

    from mlobs.export.base import Batch
    from mlobs.export.prometheus import PrometheusExporter
    from mlobs.record.types import Kind, Record
    from mlobs.spool.store import RunInfo

    splits = ({"split": "train"}, {"split": "val"})
    infos = {
        f"run{r:03d}": RunInfo(
            f"run{r:03d}", f"run {r}", "running", 0, resource={"experiment": "e", "rank": 0}
        )
        for r in range(runs)
    }
    records = []
    seq = 0
    for run_id in infos:
        for m in range(metrics):
            for attrs in splits:
                seq += 1
                records.append(Record(seq, Kind.GAUGE, 0, run_id, f"m{m}", 0.5, 1, 0, attrs))
    exporter = PrometheusExporter(port=0, self_metrics=False)
    exporter.export(Batch(records, infos))

    registry = CollectorRegistry()
    gauges = [
        Gauge(f"mlobs_m{m}", "m.", [*LABELS, "split"], registry=registry) for m in range(metrics)
    ]
    for run_id, info in infos.items():
        for gauge in gauges:
            for attrs in splits:
                gauge.labels(run_id, info.name, "e", "0", attrs["split"]).set(0.5)
    server, thread = start_http_server(0, "127.0.0.1", registry)
    urls = {
        "mlobs": exporter.url or "",
        "client": f"http://127.0.0.1:{server.server_port}/metrics",
    }

    def scrapes_of(url: str) -> Callable[[], None]:
        def scrape() -> None:
            for _ in range(scrapes):
                get(url)

        return scrape

    try:
        size = {name: len(get(url)) for name, url in urls.items()}  # also the warm-up
        cases = {name: scrapes_of(url) for name, url in urls.items()}
        ms = per_unit(cases, repeats, scrapes, 1e3, warm=False)
    finally:
        exporter.shutdown()
        server.shutdown()
        server.server_close()
        thread.join(5)
    return ScrapeCost(runs, metrics, len(records), ms, size)


def report_scrape(r: ScrapeCost) -> str:
    ratio = Stats.of([m / c for m, c in zip(r.ms["mlobs"], r.ms["client"], strict=True)])
    rows = [
        [
            "mlobs `PrometheusExporter` (self-metrics off)",
            Stats.of(r.ms["mlobs"]).fmt(".2f"),
            f"{r.size['mlobs']:,}",
        ],
        [
            "prometheus-client registry, same series",
            Stats.of(r.ms["client"]).fmt(".2f"),
            f"{r.size['client']:,}",
        ],
    ]
    return "\n\n".join(
        [
            "### 3. Cost of a scrape of `/metrics`",
            f"{r.runs} runs × {r.metrics} metrics × 2 splits = {r.series:,} user series (mlobs "
            "adds 8 run-level series per run: info, 3 statuses, start time, progress, step, "
            f"epoch), {len(r.ms['mlobs'])} repeats alternating order. ms per scrape (HTTP GET "
            f"on loopback, text format), median (min–max); mlobs / client: {ratio.fmt('.2f')}.",
            table(["endpoint", "ms per scrape", "bytes"], rows),
        ]
    )


# -- driver ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    load: Load
    scrape_runs: int
    scrape_metrics: int
    scrapes: int
    scrape_repeats: int


FULL = Sizes(FULL_LOAD, 20, 50, 50, 7)
QUICK = Sizes(QUICK_LOAD, 5, 20, 10, 3)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(__doc__, "prometheus", argv)
    sizes = QUICK if args.quick else FULL
    os.environ.pop("MLOBS_PROMETHEUS_PORT", None)
    os.environ.pop("MLOBS_PUSHGATEWAY_URL", None)

    with stage("pushgateway throughput"), pushgateway() as server:
        push, ok = report(
            bench_push(server.url, sizes.load),
            "### 1. Pushgateway, end to end: `mlobs.log` to the PUT answered",
            scrape=False,
            target=True,
        )
    with stage("/metrics throughput"):
        pull, _ = report(
            bench_pull(sizes.load),
            "### 2. `/metrics`, end to end: `mlobs.log` to a scrape that shows the values",
            scrape=True,
            target=False,
        )
    with stage("scrape cost"):
        scrape = report_scrape(
            bench_scrape(
                sizes.scrape_runs, sizes.scrape_metrics, sizes.scrapes, sizes.scrape_repeats
            )
        )
    return finish(
        args,
        "prometheus",
        "## Prometheus sinks (issue #3)",
        PEERS,
        [("Pushgateway throughput vs client", ok)],
        [push, pull, scrape],
    )


if __name__ == "__main__":
    sys.exit(main())
