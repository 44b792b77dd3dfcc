"""``mlobs gpu-exporter`` end to end, against STAND-INS: no GPU, no driver, no kubelet here.

NVML is the stand-in library of tests/nvml_standin (a small C library built by the tests, not
NVIDIA's code), loaded by the exporter subprocess as ``libnvidia-ml.so.1`` through
LD_LIBRARY_PATH, so the real nvidia-ml-py runs unmodified. The kubelet is a stand-in too: the
grpcio server of tests/test_gpu_podresources.py, in this process, answering
``v1.PodResourcesLister/List`` on a unix socket with the kubelet's own message schema. The
exporter binds 127.0.0.1 only, on port 0, and prints the address it chose on stderr.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.nvml_standin import FakeNvml, device
from tests.servers.base import find_binary

pytest.importorskip("pynvml")
pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.slow

GIB = 1024**3
START_TIMEOUT = 20.0
_SERVING = re.compile(r"serving /metrics on (\S+)")
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

Sample = tuple[str, dict[str, str], float]


# -- the exporter in a subprocess -----------------------------------------------------------


class Exporter:
    """``mlobs gpu-exporter`` running in a subprocess; its stderr is collected by a thread."""

    def __init__(self, fake: FakeNvml, socket_path: str, env: dict[str, str] | None) -> None:
        cmd = [sys.executable, "-m", "mlobs.cli.main", "gpu-exporter", "--port", "0"]
        cmd += ["--addr", "127.0.0.1", "--interval", "0.2", "--podresources-socket", socket_path]
        self.proc = subprocess.Popen(
            cmd,
            env={**fake.subprocess_env(), **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._serving = threading.Event()
        self.url = ""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._serving.wait(START_TIMEOUT):
            self.stop()
            pytest.fail(f"the exporter did not report its address:\n{self.stderr}")

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            found = _SERVING.search(line)
            if found and not self.url:
                self.url = found[1]
                self._serving.set()
        self._serving.set()  # exited before serving: stop waiting

    @property
    def stderr(self) -> str:
        return "".join(self.lines)

    def scrape(self) -> str:
        return scrape(self.url)

    def wait_for(self, ready: Callable[[list[Sample]], bool], timeout: float = 15.0) -> str:
        """Scrape until ``ready`` holds on the parsed samples; the text of that scrape."""
        return scrape_until(self.url, ready, timeout, lambda: f"stderr:\n{self.stderr}")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(5)
        return self.proc.returncode


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path: a unix socket's path must fit in 108 bytes."""
    with tempfile.TemporaryDirectory(prefix="mlobs-k") as directory:
        yield Path(directory)


@pytest.fixture
def run_exporter(fake_nvml: FakeNvml, short_dir: Path) -> Iterator[Callable[..., Exporter]]:
    started: list[Exporter] = []

    def start(socket_path: str | None = None, env: dict[str, str] | None = None) -> Exporter:
        exporter = Exporter(fake_nvml, socket_path or str(short_dir / "absent.sock"), env)
        started.append(exporter)
        return exporter

    yield start
    for exporter in started:
        exporter.stop()


# -- the stand-in kubelet -------------------------------------------------------------------


@contextmanager
def kubelet(socket_path: Path, pods: list[tuple[str, str, str, str, list[str]]]) -> Iterator[Any]:
    """The stand-in kubelet of tests/test_gpu_podresources.py (a grpcio server answering
    ``v1.PodResourcesLister/List`` with the kubelet's fuller schema) on ``socket_path``; ``pods``
    are ``(pod, namespace, container, resource, device ids)``."""
    pytest.importorskip("grpc")
    from tests.test_gpu_podresources import KubeletStandin

    standin = KubeletStandin(socket_path)
    standin.pods = [
        {
            "name": pod,
            "namespace": namespace,
            "containers": [
                {"name": container, "devices": [{"resource_name": resource, "device_ids": ids}]}
            ],
        }
        for pod, namespace, container, resource, ids in pods
    ]
    standin.start()
    try:
        yield standin
    finally:
        standin.stop()


# -- scraping and parsing -----------------------------------------------------------------


def scrape(url: str) -> str:
    with _opener.open(url, timeout=10) as response:
        return str(response.read().decode())


def scrape_until(
    url: str,
    ready: Callable[[list[Sample]], bool],
    timeout: float = 15.0,
    context: Callable[[], str] = str,
) -> str:
    """Scrape ``url`` until ``ready`` holds on the parsed samples; the text of that scrape."""
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = scrape(url)
        if ready(samples(text)):
            return text
        time.sleep(0.05)
    pytest.fail(f"condition not met in {timeout} s; last scrape:\n{text}\n{context()}")


def samples(text: str) -> list[Sample]:
    return [
        (s.name, dict(s.labels), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def find(found: list[Sample], name: str, **labels: str) -> list[Sample]:
    return [s for s in found if s[0] == name and labels.items() <= s[1].items()]


def value(found: list[Sample], name: str, **labels: str) -> float | None:
    matches = find(found, name, **labels)
    assert len(matches) <= 1, matches
    return matches[0][2] if matches else None


def sampled(found: list[Sample]) -> bool:
    return bool(find(found, "mlobs_gpu_utilization_ratio"))


def uuid(index: int) -> str:
    return str(device(index)["uuid"])


MIGS: list[dict[str, Any]] = [
    {"uuid": "MIG-cccccccc-0000-5000-8000-000000000000", "mem_total": 10 * GIB, "mem_used": GIB},
    {
        "uuid": "MIG-cccccccc-0000-5000-8000-000000000001",
        "mem_total": 10 * GIB,
        "mem_used": 3 * GIB,
    },
]
MIG_HELD = str(MIGS[1]["uuid"])


# -- tests ----------------------------------------------------------------------------------


def test_two_gpus_are_served_with_the_stand_in_values(
    fake_nvml: FakeNvml, run_exporter: Callable[..., Exporter]
) -> None:
    fake_nvml.write(
        {
            "driver_version": "555.42.06",
            "devices": [device(0, processes=[{"pid": 4321, "used_memory": 3 * GIB}]), device(1)],
        }
    )
    exporter = run_exporter()
    found = samples(exporter.wait_for(sampled))

    for gpu in (0, 1):
        assert value(found, "mlobs_gpu_utilization_ratio", gpu=str(gpu)) == pytest.approx(
            (10 + gpu) / 100
        )
        assert value(found, "mlobs_gpu_memory_used_bytes", gpu=str(gpu)) == (gpu + 1) * GIB
        assert value(found, "mlobs_gpu_memory_total_bytes", gpu=str(gpu)) == 80 * GIB
        assert value(found, "mlobs_gpu_power_watts", gpu=str(gpu)) == pytest.approx(100 + gpu)
        # NVML's energy counter in millijoules, as the total it is: 1_000_000 + gpu mJ
        assert value(found, "mlobs_gpu_energy_joules_total", gpu=str(gpu)) == pytest.approx(
            1000 + gpu / 1000
        )
        assert value(found, "mlobs_gpu_status", gpu=str(gpu), state="ok") == 1
    [(_, labels, _)] = find(found, "mlobs_gpu_utilization_ratio", gpu="0")
    assert labels == {
        "gpu": "0",
        "uuid": uuid(0),
        "model": "NVIDIA H100 80GB HBM3 (stand-in)",
        "host": labels["host"],
        "driver_version": "555.42.06",
        "pod": "",
        "namespace": "",
        "container": "",
    }
    [(_, proc_labels, used)] = find(found, "mlobs_gpu_process_memory_used_bytes")
    assert used == 3 * GIB and proc_labels["pid"] == "4321" and "this_run" not in proc_labels
    assert not any("scope" in s[1] or "this_run" in s[1] for s in found)

    assert value(found, "mlobs_gpu_exporter_up") == 1
    assert value(found, "mlobs_gpu_exporter_gpus") == 2
    assert (value(found, "mlobs_gpu_exporter_samples_total", outcome="ok") or 0) >= 1
    assert value(found, "mlobs_gpu_exporter_samples_total", outcome="error") == 0
    assert (
        abs((value(found, "mlobs_gpu_exporter_last_sample_timestamp_seconds") or 0) - time.time())
        < 30
    )
    assert 0 <= (value(found, "mlobs_gpu_exporter_sample_duration_seconds") or -1) < 5
    assert value(found, "mlobs_gpu_exporter_podresources_up") == 0
    assert value(found, "process_cpu_seconds_total") is not None
    assert exporter.stop() == 0
    assert not Path(os.environ["MLOBS_DIR"]).exists()  # the exporter keeps no spool


def test_every_gpu_of_the_host_whatever_cuda_visible_devices_says(
    fake_nvml: FakeNvml, run_exporter: Callable[..., Exporter]
) -> None:
    fake_nvml.write({"devices": [device(i) for i in range(8)]})
    exporter = run_exporter(env={"CUDA_VISIBLE_DEVICES": "0"})
    found = samples(exporter.wait_for(sampled))
    gpus = {s[1]["gpu"] for s in find(found, "mlobs_gpu_utilization_ratio")}
    assert gpus == {str(i) for i in range(8)}
    assert value(found, "mlobs_gpu_exporter_gpus") == 8


def test_series_of_a_gpu_held_by_a_pod_carry_its_pod_namespace_and_container(
    fake_nvml: FakeNvml, run_exporter: Callable[..., Exporter], short_dir: Path
) -> None:
    fake_nvml.write({"devices": [device(0), device(1, mig=MIGS), device(2)]})
    socket_path = short_dir / "kubelet.sock"
    pods = [
        ("train-0", "ml", "trainer", "nvidia.com/gpu", [uuid(0)]),
        ("infer-0", "serving", "server", "nvidia.com/mig-1g.10gb", [MIG_HELD]),
        ("web-1", "default", "nginx", "example.com/fpga", [uuid(2)]),  # not an NVIDIA device
    ]
    with kubelet(socket_path, pods):
        exporter = run_exporter(str(socket_path))
        found = samples(
            exporter.wait_for(lambda f: bool(find(f, "mlobs_gpu_mig_memory_used_bytes")))
        )
    assert value(found, "mlobs_gpu_exporter_podresources_up") == 1
    train = {"pod": "train-0", "namespace": "ml", "container": "trainer"}
    infer = {"pod": "infer-0", "namespace": "serving", "container": "server"}
    free = {"pod": "", "namespace": "", "container": ""}
    for name in ("mlobs_gpu_utilization_ratio", "mlobs_gpu_energy_joules_total"):
        assert value(found, name, gpu="0", **train) is not None, name
        assert value(found, name, gpu="2", **free) is not None, name
    assert value(found, "mlobs_gpu_mig_memory_used_bytes", mig_uuid=MIG_HELD, **infer) == 3 * GIB
    expected_by_device = {uuid(0): train, MIG_HELD: infer}
    checked = 0
    for name, labels, _ in found:
        if name.startswith("mlobs_gpu_") and "gpu" in labels:
            own = labels.get("mig_uuid") or labels["uuid"]
            expected = expected_by_device.get(own, free)
            assert {k: labels[k] for k in expected} == expected, (name, labels)
            checked += 1
    assert checked > 50


def test_without_the_pod_resources_socket_it_still_serves(
    fake_nvml: FakeNvml, run_exporter: Callable[..., Exporter], short_dir: Path
) -> None:
    fake_nvml.write({"devices": [device(0)]})
    exporter = run_exporter(str(short_dir / "not-mounted" / "kubelet.sock"))
    found = samples(exporter.wait_for(sampled))
    assert value(found, "mlobs_gpu_exporter_podresources_up") == 0
    assert value(found, "mlobs_gpu_exporter_up") == 1
    assert value(found, "mlobs_gpu_utilization_ratio", gpu="0", pod="") == pytest.approx(0.1)
    # not being on Kubernetes is not a failure: said once, not counted as an error
    assert find(found, "mlobs_gpu_podresources_errors_total") == []
    assert "no kubelet PodResources socket" in exporter.stderr
    assert exporter.stop() == 0


def test_a_socket_that_does_not_answer_is_counted_and_it_still_serves(
    fake_nvml: FakeNvml, run_exporter: Callable[..., Exporter], short_dir: Path
) -> None:
    fake_nvml.write({"devices": [device(0)]})
    stale = short_dir / "kubelet.sock"
    stale.write_text("")  # there, but nobody listens: a failing kubelet, not a missing one
    exporter = run_exporter(str(stale))
    found = samples(
        exporter.wait_for(
            lambda f: sampled(f) and bool(find(f, "mlobs_gpu_podresources_errors_total"))
        )
    )
    assert value(found, "mlobs_gpu_exporter_podresources_up") == 0
    assert value(found, "mlobs_gpu_utilization_ratio", gpu="0", pod="") == pytest.approx(0.1)
    assert "kubelet PodResources API at" in exporter.stderr
    assert exporter.stop() == 0


def test_without_a_driver_it_serves_up_0_and_exits_0_on_sigterm(
    fake_nvml: FakeNvml, run_exporter: Callable[..., Exporter]
) -> None:
    fake_nvml.write({"no_driver": True, "devices": [device(0)]})
    exporter = run_exporter()
    found = samples(exporter.wait_for(lambda f: bool(find(f, "mlobs_gpu_exporter_up"))))
    time.sleep(0.5)  # a few intervals: still serving, still down
    found = samples(exporter.scrape())
    assert value(found, "mlobs_gpu_exporter_up") == 0
    assert value(found, "mlobs_gpu_exporter_gpus") == 0
    assert not sampled(found)
    assert value(found, "mlobs_gpu_exporter_samples_total", outcome="ok") == 0
    assert exporter.stop(signal.SIGTERM) == 0, exporter.stderr
    assert "NVML did not initialise" in exporter.stderr
    assert "trying NVML again every 60 s" in exporter.stderr


def test_sigint_stops_it_cleanly_too(
    fake_nvml: FakeNvml, run_exporter: Callable[..., Exporter]
) -> None:
    fake_nvml.write({"devices": [device(0)]})
    exporter = run_exporter()
    exporter.wait_for(sampled)
    assert exporter.stop(signal.SIGINT) == 0, exporter.stderr
    assert "Traceback" not in exporter.stderr


def test_a_lost_gpu_is_failed_while_the_other_keeps_being_sampled(
    fake_nvml: FakeNvml, run_exporter: Callable[..., Exporter]
) -> None:
    fake_nvml.write({"devices": [device(0), device(1)]})
    exporter = run_exporter()
    exporter.wait_for(sampled)
    fake_nvml.update_device(1, lost=True)
    fake_nvml.update_device(0, util_gpu=77)
    found = samples(
        exporter.wait_for(
            lambda f: (
                value(f, "mlobs_gpu_status", gpu="1", state="failed") == 1
                and value(f, "mlobs_gpu_utilization_ratio", gpu="0") == pytest.approx(0.77)
            )
        )
    )
    assert value(found, "mlobs_gpu_status", gpu="1", state="ok") == 0
    assert value(found, "mlobs_gpu_status", gpu="0", state="ok") == 1
    assert value(found, "mlobs_gpu_status", gpu="0", state="failed") == 0
    assert value(found, "mlobs_gpu_utilization_ratio", gpu="1") is None
    assert value(found, "mlobs_gpu_exporter_up") == 1
    assert exporter.stop() == 0


def test_promtool_check_metrics_finds_nothing_to_report(
    fake_nvml: FakeNvml, run_exporter: Callable[..., Exporter], short_dir: Path
) -> None:
    promtool = find_binary("promtool")
    fake_nvml.write(
        {
            "devices": [
                device(0, processes=[{"pid": 4321, "used_memory": GIB}], ecc_corrected=2),
                device(1, throttle_reasons=0x4, mem_temp=45, gpm=True, mig=MIGS),
            ],
            "events": [{"device": 1, "xid": 79}],
        }
    )
    socket_path = short_dir / "kubelet.sock"
    with kubelet(socket_path, [("train-0", "ml", "trainer", "nvidia.com/gpu", [uuid(0)])]):
        exporter = run_exporter(str(socket_path))
        text = exporter.wait_for(
            lambda f: (
                bool(find(f, "mlobs_gpu_mig_utilization_ratio"))
                and bool(find(f, "mlobs_gpu_xid_errors_total", gpu="1"))
            )
        )
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), (
        result.stdout + result.stderr + "\n" + text
    )


def test_when_the_kubelet_stops_answering_the_last_pod_labels_stay(
    fake_nvml: FakeNvml, short_dir: Path
) -> None:
    # in this process (the stand-in handed to pynvml), to query the kubelet every 0.1 s
    from mlobs.gpu.exporter import GpuExporter

    fake_nvml.write({"devices": [device(0), device(1)]})
    fake_nvml.load_in_process()
    socket_path = short_dir / "kubelet.sock"
    exporter = GpuExporter(
        port=0,
        addr="127.0.0.1",
        interval=0.1,
        podresources_socket=str(socket_path),
        pod_refresh_interval=0.1,
        process_metrics=False,
    )
    train = {"pod": "train-0", "namespace": "ml", "container": "trainer"}
    try:
        with kubelet(socket_path, [("train-0", "ml", "trainer", "nvidia.com/gpu", [uuid(0)])]):
            exporter.start()
            assert exporter.url is not None
            found = samples(
                scrape_until(exporter.url, lambda f: bool(find(f, "mlobs_gpu_status", **train)))
            )
            assert value(found, "mlobs_gpu_exporter_podresources_up") == 1
        found = samples(
            scrape_until(
                exporter.url, lambda f: value(f, "mlobs_gpu_exporter_podresources_up") == 0
            )
        )
        assert value(found, "mlobs_gpu_utilization_ratio", gpu="0", **train) == pytest.approx(0.1)
        errors = find(found, "mlobs_gpu_podresources_errors_total")
        assert errors and all(s[2] >= 1 for s in errors), errors
    finally:
        exporter.stop()
    assert exporter.snapshot().up is False


def test_time_sliced_replicas_are_attributed_only_when_one_container_holds_them() -> None:
    from mlobs.gpu.exporter import attribution
    from mlobs.gpu.podresources import PodRef

    a, b = PodRef("a", "ns", "c"), PodRef("b", "ns", "c")
    mapping = {
        "GPU-1::0": a,
        "GPU-1::1": a,
        "GPU-2::0": a,
        "GPU-2::1": b,
        "GPU-3": b,
        "MIG-4": a,
    }
    assert attribution(mapping) == {"GPU-1": a, "GPU-3": b, "MIG-4": a}
