"""The standalone GPU exporter (``mlobs gpu-exporter``): every GPU of the host on ``/metrics``.

Meant to run once per node, as a Kubernetes DaemonSet or a system service, the way NVIDIA's
dcgm-exporter does, but on NVML alone. A :class:`GpuExporter` owns one thread that samples every
GPU of the host (``scope="all"``: ``CUDA_VISIBLE_DEVICES`` is ignored) at an interval and asks the
kubelet which pod holds each GPU; a custom collector renders the latest sample at scrape time.

Series (names, kinds and HELP from :mod:`mlobs.gpu.names`):

- one family per GPU metric sampled, labelled with the reading's attributes (``gpu``, ``uuid``,
  ``model``, ``host``, ``driver_version`` and the series' own: ``clock``, ``pid``, ``state``,
  ``mig_uuid``, ...) except ``scope`` and ``this_run`` (which mean nothing host-wide), plus
  ``pod``, ``namespace`` and ``container``: the container the device is assigned to according to
  the kubelet's PodResources API (a MIG series looks up its ``mig_uuid``), empty strings when none
  is or when the socket is not there. Counters are NVML's own totals, rendered as they are.
- the exporter's health: ``mlobs_gpu_exporter_up`` (1 while GPUs are sampled),
  ``mlobs_gpu_exporter_gpus``, ``mlobs_gpu_exporter_sample_duration_seconds``,
  ``mlobs_gpu_exporter_last_sample_timestamp_seconds``,
  ``mlobs_gpu_exporter_samples_total{outcome="ok"|"error"}``,
  ``mlobs_gpu_exporter_podresources_up`` (1 when the kubelet answered the last query), mlobs'
  own error counters (``mlobs_internal_errors_total{where}``,
  ``mlobs_gpu_query_errors_total{function}``, ``mlobs_gpu_podresources_errors_total{reason}``)
  and prometheus_client's process metrics (``process_cpu_seconds_total``, ...).

Without a driver, an NVML library or a GPU, the exporter still serves ``/metrics`` with
``mlobs_gpu_exporter_up 0``, logs why, and tries NVML again every ``nvml_retry_interval``
seconds: a DaemonSet pod on a node without GPUs must not crash-loop. A failed sample removes the
GPU series until the next good one (no stale values are served) and counts an ``error``.

The kubelet is asked every ``pod_refresh_interval`` seconds (10 by default) from the sampling
thread, so a scrape never waits for it. Where no socket has ever been seen (outside Kubernetes),
it is not asked at all: one info line says so and nothing is counted as an error; once a socket
was seen, a failed query is counted in ``mlobs_gpu_podresources_errors_total{reason}`` and the
last pod labels known stay on the series. A GPU shared by time-slicing (device ids
``<uuid>::<n>``) is attributed only when every replica is held by the same container: one series
cannot belong to two pods.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from mlobs import safety
from mlobs.export.prometheus import metrics_url, unregister
from mlobs.gpu import names as n
from mlobs.gpu.collect import Reading
from mlobs.gpu.nvml import QUERY_ERRORS, Nvml
from mlobs.gpu.podresources import DEFAULT_SOCKET, PODRESOURCES_ERRORS, PodRef, PodResources
from mlobs.gpu.sampler import GpuSampler

__all__ = [
    "DEFAULT_ADDR",
    "DEFAULT_PORT",
    "PODRESOURCES_SOCKET_ENV",
    "GpuExporter",
    "GpuExporterCollector",
    "attribution",
    "render_readings",
]

logger = logging.getLogger("mlobs")

DEFAULT_PORT = 9835
"""Not dcgm-exporter's 9400, so that both can run on one node."""
DEFAULT_ADDR = "0.0.0.0"
"""Every interface: an exporter is meant to be scraped from another host."""
PODRESOURCES_SOCKET_ENV = "MLOBS_GPU_EXPORTER_PODRESOURCES_SOCKET"
"""Environment variable naming the kubelet PodResources socket (``--podresources-socket``)."""
NVML_RETRY_S = 60.0
POD_REFRESH_S = 10.0

UP = "mlobs_gpu_exporter_up"
GPUS = "mlobs_gpu_exporter_gpus"
SAMPLE_DURATION = "mlobs_gpu_exporter_sample_duration_seconds"
LAST_SAMPLE = "mlobs_gpu_exporter_last_sample_timestamp_seconds"
SAMPLES = "mlobs_gpu_exporter_samples_total"
PODRESOURCES_UP = "mlobs_gpu_exporter_podresources_up"

POD_LABELS = ("pod", "namespace", "container")
_DROPPED_ATTRS = frozenset({"scope", "this_run"})
_SELF_COUNTERS = {
    safety.INTERNAL_ERRORS: ("where", "Failures inside mlobs, by place; never raised."),
    QUERY_ERRORS: ("function", "NVML calls that failed other than by being unsupported."),
    PODRESOURCES_ERRORS: ("reason", "Failed queries of the kubelet PodResources API."),
}
_NO_POD = PodRef("", "", "")


# -- rendering ------------------------------------------------------------------------------


def attribution(by_device: dict[str, PodRef]) -> dict[str, PodRef]:
    """Device id -> container, with time-slicing replicas (``<uuid>::<n>``) folded onto their
    device; a device whose replicas are held by different containers is left out."""
    found: dict[str, PodRef | None] = {}
    for device_id, ref in by_device.items():
        device = device_id.split("::", 1)[0]
        if device in found and found[device] != ref:
            found[device] = None
        else:
            found.setdefault(device, ref)
    return {device: ref for device, ref in found.items() if ref is not None}


def render_readings(readings: Iterable[Reading], pods: dict[str, PodRef]) -> list[Metric]:
    """One family per GPU metric in ``readings`` (unknown names skipped), with the pod labels of
    ``pods`` (device id -> container, as :func:`attribution` gives it).

    Every series of a family has the same label names (absent ones are empty strings) and a
    series read twice keeps its last value.
    """
    series: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for name, value, attrs in readings:
        if name not in n.METRICS:
            continue
        labels = {k: str(v) for k, v in attrs.items() if k not in _DROPPED_ATTRS}
        device = attrs.get("mig_uuid") if "mig_uuid" in attrs else attrs.get("uuid")
        ref = pods.get(str(device), _NO_POD)
        labels.update(pod=ref.pod, namespace=ref.namespace, container=ref.container)
        series.setdefault(name, {})[tuple(labels.items())] = float(value)
    families: list[Metric] = []
    for name, by_labels in series.items():
        names: dict[str, None] = {}
        for key in by_labels:
            names.update(dict.fromkeys(k for k, _ in key))
        for pod_label in POD_LABELS:  # keep the pod labels last, after the device's own
            names.pop(pod_label)
            names[pod_label] = None
        label_names = list(names)
        metric = n.METRICS[name]
        family: GaugeMetricFamily | CounterMetricFamily
        if metric.kind == n.COUNTER:
            family = CounterMetricFamily(name, metric.help, labels=label_names)
        else:
            family = GaugeMetricFamily(name, metric.help, labels=label_names)
        for key, value in by_labels.items():
            values = dict(key)
            family.add_metric([values.get(label, "") for label in label_names], value)
        families.append(family)
    return families


# -- state and collector --------------------------------------------------------------------


@dataclass
class _State:
    """What the sampling thread publishes and a scrape reads (copied under the exporter's lock)."""

    readings: list[Reading] = field(default_factory=list)
    pods: dict[str, PodRef] = field(default_factory=dict)
    up: bool = False
    gpus: int = 0
    podresources_up: bool = False
    sample_seconds: float | None = None
    last_sample_s: float | None = None
    samples: dict[str, int] = field(default_factory=lambda: {"ok": 0, "error": 0})


class GpuExporterCollector:
    """Renders an exporter's latest sample and health at scrape time; never raises."""

    def __init__(self, exporter: GpuExporter) -> None:
        self._exporter = exporter

    def describe(self) -> Iterable[Metric]:
        return ()

    def collect(self) -> Iterable[Metric]:
        try:
            state = self._exporter.snapshot()
            out = _health(state)
            out.extend(_self_counters())
            out.extend(render_readings(state.readings, state.pods))
            return out
        except Exception as exc:  # a scrape must not fail: report and serve nothing from here
            safety.self_metrics.inc(safety.INTERNAL_ERRORS, "gpu_exporter.collect")
            safety.warn("gpu_exporter.collect", "mlobs: GPU exporter scrape failed: %r", exc)
            return ()


def _health(state: _State) -> list[Metric]:
    out: list[Metric] = [
        GaugeMetricFamily(
            UP, "1 while the exporter samples GPUs, 0 without NVML or GPUs.", value=float(state.up)
        ),
        GaugeMetricFamily(GPUS, "GPUs the exporter samples.", value=float(state.gpus)),
        GaugeMetricFamily(
            PODRESOURCES_UP,
            "1 when the kubelet PodResources API answered the last query, 0 when it failed or "
            "its socket is not mounted.",
            value=float(state.podresources_up),
        ),
    ]
    samples = CounterMetricFamily(SAMPLES, "GPU samples taken, by outcome.", labels=["outcome"])
    for outcome, count in state.samples.items():
        samples.add_metric([outcome], float(count))
    out.append(samples)
    if state.sample_seconds is not None:
        out.append(
            GaugeMetricFamily(
                SAMPLE_DURATION, "How long the last sample took.", value=state.sample_seconds
            )
        )
    if state.last_sample_s is not None:
        out.append(
            GaugeMetricFamily(
                LAST_SAMPLE, "Wall-clock time of the last good sample.", value=state.last_sample_s
            )
        )
    return out


def _self_counters() -> list[Metric]:
    counts: dict[str, dict[str, int]] = {name: {} for name in _SELF_COUNTERS}
    for (name, label), count in safety.self_metrics.snapshot().items():
        if name in counts:
            counts[name][label] = counts[name].get(label, 0) + count
    out: list[Metric] = []
    for name, (label, doc) in _SELF_COUNTERS.items():
        family = CounterMetricFamily(name, doc, labels=[label])
        for value_label, count in sorted(counts[name].items()):
            family.add_metric([value_label], float(count))
        out.append(family)
    return out


# -- the exporter ---------------------------------------------------------------------------


class GpuExporter:
    """Samples every GPU of the host and serves the latest sample on ``/metrics``.

    Args:
        port: the port to serve on (0: a free one, see :attr:`port`).
        addr: the address to bind (every interface by default).
        interval: seconds between samples.
        podresources_socket: the kubelet's PodResources socket, for pod labels.
        certfile: TLS certificate (with ``keyfile``): the server speaks https only.
        keyfile: TLS private key.
        registry: where the collectors are registered (a fresh one by default).
        nvml: the NVML session (a new one over ``pynvml`` by default).
        nvml_retry_interval: seconds between attempts to find NVML and GPUs while there are none.
        pod_refresh_interval: seconds between queries of the PodResources API.
        process_metrics: also serve prometheus_client's ``process_*`` metrics.
    """

    def __init__(
        self,
        port: int = DEFAULT_PORT,
        addr: str = DEFAULT_ADDR,
        interval: float = 5.0,
        podresources_socket: str = DEFAULT_SOCKET,
        certfile: str | None = None,
        keyfile: str | None = None,
        *,
        registry: CollectorRegistry | None = None,
        nvml: Nvml | None = None,
        nvml_retry_interval: float = NVML_RETRY_S,
        pod_refresh_interval: float = POD_REFRESH_S,
        process_metrics: bool = True,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be positive, not {interval}")
        if bool(certfile) != bool(keyfile):
            raise ValueError("TLS needs both a certificate and a key file")
        self.requested_port = port
        self.addr = addr
        self.interval = interval
        self.certfile = certfile
        self.keyfile = keyfile
        self.nvml_retry_interval = nvml_retry_interval
        self.pod_refresh_interval = pod_refresh_interval
        self.registry = registry if registry is not None else CollectorRegistry()
        self.port: int | None = None
        """The port ``/metrics`` is served on, once started (the bound one when asked for 0)."""
        self.url: str | None = None
        # the exporter paces its own queries: the client must ask the kubelet on every call
        self.podresources = PodResources(podresources_socket, refresh_interval=0.0)
        self.sampler = GpuSampler(self._publish, interval=interval, scope="all", nvml=nvml, env={})
        self._process_metrics = process_metrics
        self._collectors: list[Any] = []
        self._lock = threading.Lock()
        self._state = _State()  # guarded by _lock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._server: Any = None
        self._server_thread: threading.Thread | None = None
        self._sampling = False
        self._pods_seen = False
        self._said_no_gpu = False
        self._said_no_pods = False

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        """Serve ``/metrics`` and start sampling. Raises ``OSError`` (port in use, unreadable
        TLS files) when ``/metrics`` cannot be served; a missing GPU or driver does not."""
        if self._thread is not None:
            return
        if self.certfile and self.keyfile:  # the files' own error, before the port is bound
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(self.certfile, self.keyfile)
        collectors: list[Any] = [GpuExporterCollector(self)]
        for collector in collectors:
            self.registry.register(collector)
        if self._process_metrics:
            collectors.append(ProcessCollector(registry=self.registry))
        self._collectors = collectors
        try:
            self._server, self._server_thread = start_http_server(
                self.requested_port,
                self.addr,
                self.registry,
                certfile=self.certfile,
                keyfile=self.keyfile,
            )
        except BaseException:
            self._unregister()
            raise
        self.port = int(self._server.server_port)
        self.url = metrics_url(self.addr, self.port, tls=bool(self.certfile))
        logger.debug("mlobs: GPU exporter serving /metrics on %s", self.url)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="mlobs-gpu-exporter", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop sampling and serving; NVML is shut down and the kubelet channel closed."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._server_thread is not None:
            self._server_thread.join(timeout)
            self._server_thread = None
        if self._sampling:
            self.sampler.stop(timeout)
            self._sampling = False
        self.podresources.close()
        self._unregister()
        with self._lock:
            self._state.up = False

    def _unregister(self) -> None:
        unregister(self.registry, self._collectors)
        self._collectors = []

    def snapshot(self) -> _State:
        """A copy of what a scrape renders."""
        with self._lock:
            s = self._state
            return _State(
                list(s.readings),
                dict(s.pods),
                s.up,
                s.gpus,
                s.podresources_up,
                s.sample_seconds,
                s.last_sample_s,
                dict(s.samples),
            )

    # -- the sampling thread --------------------------------------------------------------
    def _run(self) -> None:
        next_open = next_pods = time.monotonic()
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                if not self._sampling and started >= next_open:
                    next_open = started + self.nvml_retry_interval
                    self._open()
                if started >= next_pods:
                    next_pods = started + self.pod_refresh_interval
                    self._refresh_pods()
                if self._sampling:
                    self._sample()
            except Exception as exc:  # the loop outlives any fault: count it and go on
                _count_error("gpu_exporter.loop", exc)
            elapsed = time.monotonic() - started
            self._stop.wait(max(0.0, self.interval - elapsed))

    def _open(self) -> None:
        if self.sampler.open():
            self._sampling = True
            devices = self.sampler.devices
            migs = sum(len(d.mig) for d in devices)
            logger.info(
                "mlobs: GPU exporter samples %d GPUs (%d MIG devices), driver %s",
                len(devices),
                migs,
                self.sampler.nvml.driver_version or "unknown",
            )
            with self._lock:
                self._state.up = True
                self._state.gpus = len(devices)
            self._said_no_gpu = False
            return
        if not self._said_no_gpu:  # the sampler logged why; say what the exporter does about it
            self._said_no_gpu = True
            logger.warning(
                "mlobs: GPU exporter finds no GPU to sample (see the line above); serving %s 0 "
                "and trying NVML again every %g s",
                UP,
                self.nvml_retry_interval,
            )

    def _sample(self) -> None:
        started = time.monotonic()
        try:
            readings = self.sampler.sample_once()
        except Exception as exc:
            seconds = time.monotonic() - started
            _count_error("gpu_exporter.sample", exc)
            with self._lock:
                self._state.readings = []
                self._state.sample_seconds = seconds
                self._state.samples["error"] += 1
            return
        self.sampler.last_sample_seconds = time.monotonic() - started
        self._publish(readings, time.time_ns())

    def _publish(self, readings: list[Reading], ts_ns: int) -> None:
        """The sampler's ``on_sample``: the latest readings become what a scrape renders."""
        with self._lock:
            state = self._state
            state.readings = readings
            state.sample_seconds = self.sampler.last_sample_seconds
            state.last_sample_s = ts_ns / 1e9
            state.gpus = len(self.sampler.devices)
            state.samples["ok"] += 1

    def _refresh_pods(self) -> None:
        pods = self.podresources
        if not self._pods_seen and _absent(pods.socket_path):
            with self._lock:
                self._state.podresources_up = False
            if not self._said_no_pods:
                self._said_no_pods = True
                logger.info(
                    "mlobs: GPU exporter: no kubelet PodResources socket at %s (outside "
                    "Kubernetes, or not mounted); GPU series carry empty pod labels",
                    pods.socket_path,
                )
            return
        # once the socket was there, every failure (even a missing socket while the kubelet
        # restarts) is a failed query: counted, and the last mapping is kept
        self._pods_seen = True
        # PodResources never raises and counts each failed query; with refresh_interval=0 every
        # call is one query, so an unchanged count means the kubelet answered this one
        errors_before = safety.self_metrics.get(PODRESOURCES_ERRORS)
        mapping = attribution(pods.by_device())
        answered = safety.self_metrics.get(PODRESOURCES_ERRORS) == errors_before
        with self._lock:
            self._state.pods = mapping
            self._state.podresources_up = answered


def _absent(path: str) -> bool:
    """Nothing at ``path`` (or on the way to it): not on Kubernetes, or not mounted. A path that
    cannot be looked at (permissions) is not absent: querying it names the problem."""
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return True
    except OSError:
        return False
    return False


def _count_error(where: str, exc: BaseException) -> None:
    """Count and log (rate-limited) a fault of the exporter's own thread; never raises, even in
    strict mode: the thread serving a node's GPUs must not die."""
    safety.self_metrics.inc(safety.INTERNAL_ERRORS, where)
    safety.warn(where, "mlobs: GPU exporter: %s failed: %r", where.rsplit(".", 1)[-1], exc)
