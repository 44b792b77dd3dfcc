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

import argparse
import gc
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _report import Stats, measured_line, table, verdict, write_section

import mlobs

PEERS = ("prometheus-client",)
TARGET_VS_CLIENT = 0.8
LABELS = ("run_id", "run_name", "experiment", "rank")
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Pushgateway:
    """A Pushgateway child process on 127.0.0.1, stopped by PID."""

    def __init__(self) -> None:
        binary = shutil.which("prometheus-pushgateway") or shutil.which("pushgateway")
        if binary is None:
            sys.exit("pushgateway missing: run scripts/backends.sh")
        self.dir = tempfile.mkdtemp(prefix="mlobs-bench-pgw-")
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        self._log = open(Path(self.dir) / "pushgateway.log", "wb")  # noqa: SIM115 (closed in stop)
        self._proc = subprocess.Popen(
            [
                binary,
                f"--web.listen-address=127.0.0.1:{port}",
                # Debian's build persists to a system file by default: keep it in the temp dir
                f"--persistence.file={Path(self.dir) / 'pushgateway.data'}",
                "--log.level=warn",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                with _opener.open(self.url + "/-/ready", timeout=1) as reply:
                    if reply.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline or self._proc.poll() is not None:
                self.stop()
                sys.exit("pushgateway did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def _timed(body: Callable[[], None]) -> tuple[float, float]:
    """Wall and CPU seconds of ``body``."""
    gc.collect()
    c0, t0 = time.process_time(), time.perf_counter()
    body()
    return time.perf_counter() - t0, time.process_time() - c0


def _scrape(url: str) -> bytes:
    with _opener.open(url, timeout=30) as reply:
        body: bytes = reply.read()
        return body


# -- 1 and 2: end to end ---------------------------------------------------------------------------


def _mlobs_case(n: int, batch: int, tag: str, scrape_url: str | None) -> tuple[float, float]:
    log = mlobs.log

    def body() -> None:
        with mlobs.run(f"bench-{tag}"):
            for start in range(0, n, batch):
                for i in range(start, min(n, start + batch)):
                    log(loss=i * 0.001)
                if not mlobs.flush(60):
                    raise RuntimeError("the sink did not catch up")
                if scrape_url is not None:
                    _scrape(scrape_url)

    return _timed(body)


def _client_gauges(registry: Any) -> tuple[Any, Any]:
    from prometheus_client import Gauge

    loss = Gauge("mlobs_loss", "Last loss.", LABELS, registry=registry)
    step = Gauge("mlobs_run_step", "Last step.", LABELS, registry=registry)
    return loss, step


def _client_push_case(url: str, n: int, batch: int, tag: str, cached: bool) -> tuple[float, float]:
    from prometheus_client import CollectorRegistry, push_to_gateway

    registry = CollectorRegistry()
    loss, step = _client_gauges(registry)
    run_id = f"client-{tag}"
    values = (run_id, run_id, "default", "0")
    set_loss, set_step = loss.labels(*values).set, step.labels(*values).set

    def body() -> None:
        for start in range(0, n, batch):
            if cached:
                for i in range(start, min(n, start + batch)):
                    set_loss(i * 0.001)
                    set_step(i)
            else:
                for i in range(start, min(n, start + batch)):
                    loss.labels(*values).set(i * 0.001)
                    step.labels(*values).set(i)
            push_to_gateway(
                url, job="default", registry=registry, grouping_key={"run_id": run_id}, timeout=5
            )

    return _timed(body)


def _client_scrape_case(
    n: int, batch: int, tag: str, gauges: Any, url: str, cached: bool
) -> tuple[float, float]:
    loss, step = gauges
    run_id = f"client-{tag}"
    values = (run_id, run_id, "default", "0")
    set_loss, set_step = loss.labels(*values).set, step.labels(*values).set

    def body() -> None:
        for start in range(0, n, batch):
            if cached:
                for i in range(start, min(n, start + batch)):
                    set_loss(i * 0.001)
                    set_step(i)
            else:
                for i in range(start, min(n, start + batch)):
                    loss.labels(*values).set(i * 0.001)
                    step.labels(*values).set(i)
            _scrape(url)

    return _timed(body)


@dataclass
class Throughput:
    sink: str
    n: int
    batches: Sequence[int]
    wall: dict[tuple[str, int], list[float]] = field(default_factory=dict)
    cpu: dict[tuple[str, int], list[float]] = field(default_factory=dict)

    def rate(self, case: str, batch: int) -> Stats:
        return Stats.of([self.n / w for w in self.wall[case, batch]])

    def cpu_per_million(self, case: str, batch: int) -> Stats:
        return Stats.of([c / self.n * 1e6 for c in self.cpu[case, batch]])

    def ratio(self, batch: int, peer: str = "client") -> Stats:
        pairs = zip(self.wall[peer, batch], self.wall["mlobs", batch], strict=True)
        return Stats.of([p / c for p, c in pairs])  # throughput ratio = inverse time ratio


def _interleave(
    result: Throughput,
    cases: dict[str, Callable[[int, str], tuple[float, float]]],
    repeats: int,
) -> None:
    for case in cases.values():  # warm-up: connections, imports, caches
        case(min(result.batches), "warmup")
    order = list(cases)
    for rep in range(repeats):
        for batch in result.batches:
            shift = rep % len(order)
            for name in order[shift:] + order[:shift]:
                wall, cpu = cases[name](batch, f"{batch}-{rep}")
                result.wall.setdefault((name, batch), []).append(wall)
                result.cpu.setdefault((name, batch), []).append(cpu)


def bench_push(url: str, n: int, batches: Sequence[int], repeats: int) -> Throughput:
    result = Throughput("pushgateway", n, batches)
    tmp = tempfile.mkdtemp(prefix="mlobs-bench-prom-")
    try:
        mlobs.configure(dir=tmp, pushgateway_url=url, git=False)
        cases: dict[str, Callable[[int, str], tuple[float, float]]] = {
            "mlobs": lambda b, tag: _mlobs_case(n, b, tag, None),
            "client": lambda b, tag: _client_push_case(url, n, b, tag, False),
            "cached": lambda b, tag: _client_push_case(url, n, b, tag, True),
        }
        _interleave(result, cases, repeats)
    finally:
        mlobs.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    return result


def bench_pull(n: int, batches: Sequence[int], repeats: int) -> Throughput:
    from prometheus_client import CollectorRegistry, start_http_server

    from mlobs.export.prometheus import PrometheusExporter

    result = Throughput("/metrics", n, batches)
    tmp = tempfile.mkdtemp(prefix="mlobs-bench-prom-")
    registry = CollectorRegistry()
    gauges = _client_gauges(registry)
    server, thread = start_http_server(0, "127.0.0.1", registry)
    client_url = f"http://127.0.0.1:{server.server_port}/metrics"
    try:
        # finished runs stay exposed: keep only a few, as a long process would
        exporter = PrometheusExporter(port=0, keep_finished_runs=2)
        mlobs.configure(dir=tmp, exporters=[exporter], git=False)
        url = exporter.url or ""
        cases: dict[str, Callable[[int, str], tuple[float, float]]] = {
            "mlobs": lambda b, tag: _mlobs_case(n, b, tag, url),
            "client": lambda b, tag: _client_scrape_case(n, b, tag, gauges, client_url, False),
            "cached": lambda b, tag: _client_scrape_case(n, b, tag, gauges, client_url, True),
        }
        _interleave(result, cases, repeats)
    finally:
        mlobs.shutdown()
        server.shutdown()
        server.server_close()
        thread.join(5)
        shutil.rmtree(tmp, ignore_errors=True)
    return result


def report_throughput(r: Throughput, title: str, scrape: bool, target: bool) -> tuple[str, bool]:
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
    rows = []
    ratios = []
    ok = True
    for batch in r.batches:
        for case in ("mlobs", "client", "cached"):
            rows.append(
                [
                    f"{batch:,}",
                    labels[case],
                    r.rate(case, batch).fmt(",.0f"),
                    r.cpu_per_million(case, batch).fmt(".2f"),
                ]
            )
        ratio = r.ratio(batch)
        passed = ratio.median >= TARGET_VS_CLIENT
        if target:
            ok = ok and passed
        ratios.append(
            [
                f"{batch:,}",
                "mlobs / client",
                ratio.fmt(".2f"),
                f"≥ {TARGET_VS_CLIENT}" if target else "",
                verdict(passed) if target else "",
            ]
        )
        cached = r.ratio(batch, "cached").fmt(".2f")
        ratios.append([f"{batch:,}", "mlobs / client, children cached", cached, "", ""])
    n_rep = len(r.wall["mlobs", r.batches[0]])
    text = "\n\n".join(
        [
            title,
            f"{r.n:,} points per case and repeat, in batches of B, {n_rep} repeats after a "
            "warm-up, cases interleaved (order rotated each repeat); see the script's docstring "
            "for what each case does. Throughput in points/s and CPU seconds of this process "
            "per million points: median (min–max).",
            table(["B", "case", "points/s", "CPU s per 1M points"], rows),
            "Throughput ratios, taken per repeat:",
            table(["B", "ratio", "median (min–max)", "target", "result"], ratios),
        ]
    )
    return text, ok


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
    result = ScrapeCost(runs, metrics, len(records), {k: [] for k in urls})
    try:
        for name, url in urls.items():
            result.size[name] = len(_scrape(url))
        for rep in range(repeats):
            for name in list(urls) if rep % 2 == 0 else list(reversed(urls)):
                gc.collect()
                t0 = time.perf_counter()
                for _ in range(scrapes):
                    _scrape(urls[name])
                result.ms[name].append((time.perf_counter() - t0) / scrapes * 1e3)
    finally:
        exporter.shutdown()
        server.shutdown()
        server.server_close()
        thread.join(5)
    return result


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
    points: int
    batches: tuple[int, ...]
    repeats: int
    scrape_runs: int
    scrape_metrics: int
    scrapes: int
    scrape_repeats: int


FULL = Sizes(200_000, (1_000, 10_000), 7, 20, 50, 50, 7)
QUICK = Sizes(20_000, (1_000, 10_000), 2, 5, 20, 10, 3)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small sizes, a smoke test")
    parser.add_argument(
        "--write", action="store_true", help="rewrite the prometheus block of BENCHMARKS.md"
    )
    args = parser.parse_args(argv)
    if args.write and args.quick:
        parser.error("--write needs a full run (no --quick)")
    sizes = QUICK if args.quick else FULL
    os.environ.pop("MLOBS_PROMETHEUS_PORT", None)
    os.environ.pop("MLOBS_PUSHGATEWAY_URL", None)

    print("[bench] pushgateway throughput ...", file=sys.stderr, flush=True)
    server = Pushgateway()
    try:
        push, ok = report_throughput(
            bench_push(server.url, sizes.points, sizes.batches, sizes.repeats),
            "### 1. Pushgateway, end to end: `mlobs.log` to the PUT answered",
            scrape=False,
            target=True,
        )
    finally:
        server.stop()
    print("[bench] /metrics throughput ...", file=sys.stderr, flush=True)
    pull, _ = report_throughput(
        bench_pull(sizes.points, sizes.batches, sizes.repeats),
        "### 2. `/metrics`, end to end: `mlobs.log` to a scrape that shows the values",
        scrape=True,
        target=False,
    )
    print("[bench] scrape cost ...", file=sys.stderr, flush=True)
    scrape = report_scrape(
        bench_scrape(sizes.scrape_runs, sizes.scrape_metrics, sizes.scrapes, sizes.scrape_repeats)
    )
    section = "\n\n".join(
        [
            "## Prometheus sinks (issue #3)",
            measured_line(*PEERS)
            + (" **Quick run: sizes too small to quote.**" if args.quick else ""),
            "Rerun: `python bench/bench_prometheus.py --write`.",
            table(["benchmark", "result"], [["Pushgateway throughput vs client", verdict(ok)]]),
            push,
            pull,
            scrape,
        ]
    )
    print(section)
    if args.write:
        write_section("prometheus", section)
        print("\n[bench] wrote the prometheus block of BENCHMARKS.md", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
