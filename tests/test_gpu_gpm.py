"""MigUtilization reads MIG GPU-instance utilization through GPM, against the NVML stand-in."""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import pytest

from mlobs.gpu.gpm import MigUtilization
from tests.nvml_standin import FakeNvml, device

pytest.importorskip("pynvml")

MIG = [
    {"uuid": "MIG-cccccccc-0000-5000-8000-000000000000", "util": 40},
    {"uuid": "MIG-cccccccc-0000-5000-8000-000000000001", "util": 70},
]


class CountingNvml:
    """Forwards to pynvml and counts calls of its ``nvml*`` functions."""

    def __init__(self, nvml: Any) -> None:
        self._nvml = nvml
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._nvml, name)
        if not (name.startswith("nvml") and callable(attr)):
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return attr(*args, **kwargs)

        return counted


def start(fake_nvml: FakeNvml, *devices: dict[str, Any]) -> Any:
    fake_nvml.write({"devices": list(devices)})
    n = fake_nvml.load_in_process()
    n.nvmlInit()
    return n


def test_first_read_is_none_then_the_configured_ratio(fake_nvml: FakeNvml) -> None:
    n = start(fake_nvml, device(0, gpm=True, mig=MIG))
    h0 = n.nvmlDeviceGetHandleByIndex(0)
    util = MigUtilization(n)
    assert util.read(h0, 0) is None
    assert util.read(h0, 0) == pytest.approx(0.40)
    assert util.read(h0, 1) is None
    assert util.read(h0, 1) == pytest.approx(0.70)
    fake_nvml.update_device(0, mig=[dict(MIG[0], util=85), MIG[1]])
    assert util.read(h0, 0) == pytest.approx(0.85)
    assert util.read(h0, 1) == pytest.approx(0.70)
    # One previous sample per instance; replaced ones are freed, close() frees the rest.
    assert fake_nvml.gpm_samples_in_use() == 2
    util.close()
    assert fake_nvml.gpm_samples_in_use() == 0
    assert util.read(h0, 0) is None
    util.close()
    assert fake_nvml.gpm_samples_in_use() == 0


def test_instances_of_two_gpus_are_kept_apart(fake_nvml: FakeNvml) -> None:
    other = [dict(MIG[0], uuid="MIG-dddddddd-0000-5000-8000-000000000000", util=5)]
    n = start(fake_nvml, device(0, gpm=True, mig=MIG), device(1, gpm=True, mig=other))
    h0, h1 = n.nvmlDeviceGetHandleByIndex(0), n.nvmlDeviceGetHandleByIndex(1)
    util = MigUtilization(n)
    assert util.read(h0, 0) is None
    assert util.read(h1, 0) is None
    # A fresh handle object for the same GPU finds the same previous sample (keyed by UUID).
    assert util.read(n.nvmlDeviceGetHandleByIndex(0), 0) == pytest.approx(0.40)
    assert util.read(h1, 0) == pytest.approx(0.05)
    util.close()
    assert fake_nvml.gpm_samples_in_use() == 0


def test_a_device_without_gpm_is_asked_once(fake_nvml: FakeNvml) -> None:
    n = start(fake_nvml, device(0, mig=MIG))
    counting = CountingNvml(n)
    h0 = n.nvmlDeviceGetHandleByIndex(0)
    util = MigUtilization(counting)
    assert util.read(h0, 0) is None
    assert util.read(h0, 0) is None
    assert util.read(h0, 1) is None
    assert counting.calls["nvmlGpmQueryDeviceSupport"] == 1
    assert counting.calls["nvmlGpmSampleAlloc"] == 0
    assert fake_nvml.gpm_samples_in_use() == 0


def test_nvml_errors_give_none_and_are_logged_once(
    fake_nvml: FakeNvml, caplog: pytest.LogCaptureFixture
) -> None:
    n = start(fake_nvml, device(0, gpm=True, mig=MIG))
    h0 = n.nvmlDeviceGetHandleByIndex(0)
    util = MigUtilization(n)
    caplog.set_level(logging.DEBUG, logger="mlobs")
    # An instance that does not exist: NOT_FOUND from the sample, the new sample freed.
    assert util.read(h0, 5) is None
    assert util.read(h0, 5) is None
    assert fake_nvml.gpm_samples_in_use() == 0
    assert len([r for r in caplog.records if "nvmlGpmMigSampleGet" in r.getMessage()]) == 1
    assert util.read(h0, 0) is None
    fake_nvml.update_device(0, lost=True)
    assert util.read(h0, 0) is None
    assert util.read(h0, 0) is None
    assert all(r.levelno == logging.DEBUG for r in caplog.records)
    util.close()
    assert fake_nvml.gpm_samples_in_use() == 0


def test_not_supported_answers_are_silent(
    fake_nvml: FakeNvml, caplog: pytest.LogCaptureFixture
) -> None:
    n = start(
        fake_nvml,
        device(0, gpm=True, mig=MIG, not_supported=["nvmlGpmMigSampleGet"]),
        device(1, mig=MIG),
    )
    caplog.set_level(logging.DEBUG, logger="mlobs")
    util = MigUtilization(n)
    for index in (0, 1):
        handle = n.nvmlDeviceGetHandleByIndex(index)
        assert util.read(handle, 0) is None
        assert util.read(handle, 0) is None
    assert caplog.records == []
    assert fake_nvml.gpm_samples_in_use() == 0


def test_a_broken_module_never_raises(
    fake_nvml: FakeNvml, caplog: pytest.LogCaptureFixture
) -> None:
    n = start(fake_nvml, device(0, gpm=True, mig=MIG))
    h0 = n.nvmlDeviceGetHandleByIndex(0)

    class NoGpm(CountingNvml):
        def __getattr__(self, name: str) -> Any:
            if name.startswith("nvmlGpm"):
                raise AttributeError(name)
            return super().__getattr__(name)

    caplog.set_level(logging.DEBUG, logger="mlobs")
    util = MigUtilization(NoGpm(n))
    assert util.read(h0, 0) is None
    assert util.read(h0, 0) is None
    assert len(caplog.records) == 1
