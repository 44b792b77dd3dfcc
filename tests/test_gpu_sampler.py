"""The GPU sampler against the NVML STAND-IN (tests/nvml_standin: a C library the real
nvidia-ml-py loads in place of NVIDIA's; no GPU is involved): what one sample reads, isolation of
unsupported queries, no driver, a GPU lost and found again, XID events, MIG, and which devices a
process samples."""

from __future__ import annotations

import logging
import os
from typing import Any

import pytest

from mlobs.gpu import names as n
from mlobs.gpu.collect import Reading
from mlobs.gpu.devices import parse_visible
from mlobs.gpu.nvml import Nvml
from mlobs.gpu.sampler import GpuSampler
from tests.clock import FakeClock
from tests.nvml_standin import FakeNvml, device

pytest.importorskip("pynvml")


def sampler(
    fake: FakeNvml,
    *,
    env: dict[str, str] | None = None,
    scope: str = "run",
    clock: FakeClock | None = None,
    events: list[tuple[str, dict[str, Any]]] | None = None,
) -> GpuSampler:
    lib = fake.load_in_process()
    nvml = Nvml(lib, clock=clock or FakeClock())
    on_event = None if events is None else (lambda name, attrs: events.append((name, attrs)))
    return GpuSampler(
        lambda readings, ts: None, nvml=nvml, env=env or {}, scope=scope, on_event=on_event
    )


def values(readings: list[Reading], name: str, **match: str) -> list[float]:
    return [
        v
        for rname, v, attrs in readings
        if rname == name and all(attrs.get(k) == want for k, want in match.items())
    ]


def one(readings: list[Reading], name: str, **match: str) -> float:
    found = values(readings, name, **match)
    assert len(found) == 1, (name, match, found)
    return found[0]


def test_one_sample_reads_every_series_in_base_units(fake_nvml: FakeNvml) -> None:
    fake_nvml.write(
        {
            "driver_version": "550.54.15",
            "devices": [
                device(
                    0,
                    util_gpu=87,
                    util_mem=40,
                    enc_util=3,
                    dec_util=4,
                    mem_total=80 << 30,
                    mem_used=20 << 30,
                    mem_reserved=1 << 29,
                    temp=71,
                    mem_temp=85,
                    power_mw=350_500,
                    power_limit_mw=700_000,
                    energy_mj=5_000_000,
                    clock_sm=1755,
                    max_clock_sm=1980,
                    fan=45,
                    pcie_replay=2,
                    ecc_corrected=7,
                    ecc_uncorrected=1,
                    remapped_corr=3,
                    remapped_unc=1,
                    remapped_pending=1,
                    pstate=2,
                    throttle_reasons=0x4 | 0x40,  # sw power cap + hw thermal slowdown
                    processes=[
                        {"pid": os.getpid(), "used_memory": 12 << 30},
                        {"pid": 1, "used_memory": 3 << 30},
                    ],
                ),
            ],
        }
    )
    s = sampler(fake_nvml)
    assert s.open()
    r = s.sample_once()
    assert one(r, n.UTILIZATION) == pytest.approx(0.87)
    assert one(r, n.MEMORY_ACTIVITY) == pytest.approx(0.40)
    assert one(r, n.ENCODER_UTILIZATION) == pytest.approx(0.03)
    assert one(r, n.DECODER_UTILIZATION) == pytest.approx(0.04)
    assert one(r, n.MEMORY_USED) == 20 << 30
    assert one(r, n.MEMORY_TOTAL) == 80 << 30
    assert one(r, n.MEMORY_RESERVED) == 1 << 29
    assert one(r, n.MEMORY_FREE) == (80 << 30) - (20 << 30) - (1 << 29)
    assert one(r, n.MEMORY_USED_RATIO) == pytest.approx(0.25)
    assert one(r, n.TEMPERATURE, sensor="gpu") == 71
    assert one(r, n.TEMPERATURE, sensor="memory") == 85
    assert one(r, n.POWER) == pytest.approx(350.5)
    assert one(r, n.POWER_LIMIT) == 700
    assert one(r, n.ENERGY) == 5000
    assert one(r, n.CLOCK, clock="sm") == 1755e6
    assert one(r, n.CLOCK_MAX, clock="sm") == 1980e6
    assert one(r, n.FAN) == pytest.approx(0.45)
    assert one(r, n.PCIE_REPLAYS) == 2
    assert one(r, n.ECC_ERRORS, type="corrected", counter="volatile") == 7
    assert one(r, n.ECC_ERRORS, type="uncorrected", counter="aggregate") == 1
    assert one(r, n.REMAPPED_ROWS, cause="correctable") == 3
    assert one(r, n.REMAP_PENDING) == 1
    assert one(r, n.REMAP_FAILED) == 0
    assert one(r, n.PSTATE) == 2
    active = {a["reason"] for name, v, a in r if name == n.THROTTLE and v == 1.0}
    assert active == {"sw_power_cap", "hw_thermal_slowdown"}
    assert len(values(r, n.THROTTLE)) == len(n.THROTTLE_REASONS)
    assert one(r, n.PROCESS_MEMORY, this_run="true") == 12 << 30
    assert one(r, n.PROCESS_MEMORY, pid="1", this_run="false") == 3 << 30
    assert one(r, n.STATUS, state="ok") == 1
    assert one(r, n.STATUS, state="failed") == 0
    # every series carries the device's labels, and names stay inside the catalogue
    for name, _, attrs in r:
        assert name in n.METRICS
        assert attrs["gpu"] == "0" and attrs["uuid"] == device(0)["uuid"]
        assert attrs["model"] == device(0)["name"] and attrs["driver_version"] == "550.54.15"
        assert attrs["host"] and attrs["scope"] == "system"
    s.stop()


def test_pcie_bytes_are_integrated_from_throughput(fake_nvml: FakeNvml) -> None:
    fake_nvml.write({"devices": [device(0, pcie_tx_kbs=1000, pcie_rx_kbs=4000)]})
    s = sampler(fake_nvml)
    assert s.open()
    reader = s.readers[0]
    first = reader.read(now=10.0)
    assert one(first, n.PCIE_IO, direction="tx") == 0.0  # no interval yet
    second = reader.read(now=12.0)
    assert one(second, n.PCIE_IO, direction="tx") == pytest.approx(1000 * 1024 * 2.0)
    assert one(second, n.PCIE_IO, direction="rx") == pytest.approx(4000 * 1024 * 2.0)
    s.stop()


def test_an_unsupported_query_drops_one_series_not_the_sample(fake_nvml: FakeNvml) -> None:
    fake_nvml.write(
        {
            "not_supported": ["nvmlDeviceGetFanSpeed"],
            "devices": [
                device(0, not_supported=["nvmlDeviceGetPowerUsage", "nvmlDeviceGetTotalEccErrors"]),
                device(1),
            ],
        }
    )
    s = sampler(fake_nvml)
    assert s.open()
    r = s.sample_once()
    assert values(r, n.FAN) == []
    assert values(r, n.POWER, gpu="0") == [] and values(r, n.ECC_ERRORS, gpu="0") == []
    assert values(r, n.POWER, gpu="1") == [101.0]
    assert len(values(r, n.ECC_ERRORS, gpu="1")) == 4
    assert one(r, n.UTILIZATION, gpu="0") == pytest.approx(0.10)
    assert values(r, n.TEMPERATURE, sensor="memory") == []  # no memory sensor configured
    s.stop()


def test_no_driver_logs_one_info_line_and_stays_off(
    fake_nvml: FakeNvml, caplog: pytest.LogCaptureFixture
) -> None:
    fake_nvml.write({"no_driver": True, "devices": [device(0)]})
    caplog.set_level(logging.INFO, logger="mlobs")
    s = sampler(fake_nvml)
    assert s.start() is False
    assert s._thread is None
    lines = [r for r in caplog.records if "GPU sampling is off" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.INFO


def test_no_gpu_stays_off(fake_nvml: FakeNvml, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mlobs")
    s = sampler(fake_nvml)  # the stand-in starts with no devices
    assert s.start() is False
    assert "no GPU visible" in caplog.text


def test_a_lost_gpu_is_an_event_and_a_failed_status_while_others_keep_sampling(
    fake_nvml: FakeNvml,
) -> None:
    fake_nvml.write({"devices": [device(0), device(1)]})
    clock = FakeClock()
    events: list[tuple[str, dict[str, Any]]] = []
    s = sampler(fake_nvml, clock=clock, events=events)
    assert s.open()
    s.sample_once()
    fake_nvml.update_device(1, lost=True)
    r = s.sample_once()
    assert one(r, n.STATUS, gpu="1", state="failed") == 1.0
    assert one(r, n.STATUS, gpu="1", state="ok") == 0.0
    assert values(r, n.UTILIZATION, gpu="1") == []
    assert one(r, n.UTILIZATION, gpu="0") == pytest.approx(0.10)
    assert [name for name, _ in events] == [n.LOST_EVENT]
    assert events[0][1]["uuid"] == device(1)["uuid"]
    inits = s.nvml.inits
    # the GPU comes back: NVML is re-initialised (after the backoff) and it is sampled again
    fake_nvml.update_device(1, lost=False)
    clock.now += 2.0
    s.sample_once()
    assert s.nvml.inits == inits + 1
    r = s.sample_once()
    assert one(r, n.STATUS, gpu="1", state="ok") == 1.0
    assert one(r, n.UTILIZATION, gpu="1") == pytest.approx(0.11)
    assert len(events) == 1  # lost once, reported once
    s.stop()


def test_reinitialisation_backs_off(fake_nvml: FakeNvml) -> None:
    fake_nvml.write({"devices": [device(0)]})
    clock = FakeClock()
    s = sampler(fake_nvml, clock=clock)
    assert s.open()
    fake_nvml.update_device(0, lost=True)
    first = s.nvml.inits
    for _ in range(5):  # a lost GPU that stays lost: one re-init per backoff period
        s.sample_once()
    assert s.nvml.inits == first + 1
    clock.now += 1.5  # the first backoff is 1 s, the next 2 s
    s.sample_once()
    assert s.nvml.inits == first + 2
    clock.now += 1.5
    s.sample_once()
    assert s.nvml.inits == first + 2
    s.stop()


def test_xid_events_are_counted_per_code_and_reported(fake_nvml: FakeNvml) -> None:
    fake_nvml.write({"devices": [device(0), device(1)], "events": []})
    events: list[tuple[str, dict[str, Any]]] = []
    s = sampler(fake_nvml, events=events)
    assert s.open()
    assert values(s.sample_once(), n.XID_ERRORS) == []
    fake_nvml.write(
        {
            "devices": [device(0), device(1)],
            "events": [{"device": 1, "xid": 79, "id": 0}, {"device": 1, "xid": 79, "id": 1}],
        }
    )
    r = s.sample_once()
    assert one(r, n.XID_ERRORS, gpu="1", xid="79") == 2.0
    assert [(name, a["xid"], a["gpu"]) for name, a in events] == [(n.XID_EVENT, 79, "1")] * 2
    assert one(s.sample_once(), n.XID_ERRORS, gpu="1", xid="79") == 2.0  # a total: stays
    s.stop()


MIG_A = "MIG-1b2c3d4e-0000-4000-8000-00000000000a"
MIG_B = "MIG-1b2c3d4e-0000-4000-8000-00000000000b"


def mig_config() -> dict[str, Any]:
    return {
        "devices": [
            device(0),
            device(
                1,
                gpm=True,
                mig=[
                    {"uuid": MIG_A, "name": "1g.10gb", "mem_total": 10 << 30, "mem_used": 2 << 30},
                    {
                        "uuid": MIG_B,
                        "name": "2g.20gb",
                        "mem_total": 20 << 30,
                        "mem_used": 5 << 30,
                        "util": 40,
                    },
                ],
            ),
        ]
    }


def test_mig_devices_have_their_own_memory_and_utilization(fake_nvml: FakeNvml) -> None:
    fake_nvml.write(mig_config())
    s = sampler(fake_nvml)
    assert s.open()
    assert values(s.sample_once(), n.MIG_UTILIZATION) == []  # GPM needs two samples
    r = s.sample_once()
    assert one(r, n.MIG_UTILIZATION, mig_uuid=MIG_B) == pytest.approx(0.40)
    assert one(r, n.MIG_MEMORY_USED, mig_uuid=MIG_A) == 2 << 30
    assert one(r, n.MIG_MEMORY_TOTAL, mig_uuid=MIG_B) == 20 << 30
    attrs = next(a for name, _, a in r if name == n.MIG_MEMORY_USED and a["mig_uuid"] == MIG_B)
    assert attrs["gpu"] == "1" and attrs["uuid"] == device(1)["uuid"]
    assert attrs["mig_profile"] == "2g.20gb"
    s.stop()


@pytest.mark.parametrize(
    ("visible", "expected"),
    [
        (None, {"0": None, "1": None, "2": None}),
        ("2", {"2": None}),
        ("2,0", {"0": None, "2": None}),
        ("GPU-b0ffe1", {"1": None}),
        ("GPU-b", {"1": None}),  # a unique prefix
        ("GPU-", {}),  # a prefix of every UUID names none of them
        ("", {}),
        ("-1", {}),
        ("0,bogus,2", {"0": None}),  # CUDA stops at the first entry it cannot read
    ],
)
def test_only_the_devices_this_process_can_use(
    fake_nvml: FakeNvml, visible: str | None, expected: dict[str, None]
) -> None:
    fake_nvml.write({"devices": [device(0), device(1, uuid="GPU-b0ffe1"), device(2)]})
    env = {} if visible is None else {"CUDA_VISIBLE_DEVICES": visible}
    s = sampler(fake_nvml, env=env)
    if not expected:
        assert not s.open()
        return
    assert s.open()
    assert {str(d.index) for d in s.devices} == set(expected)
    s.stop()


def test_a_mig_uuid_selects_that_mig_device_and_all_selects_the_host(fake_nvml: FakeNvml) -> None:
    fake_nvml.write(mig_config())
    s = sampler(fake_nvml, env={"CUDA_VISIBLE_DEVICES": MIG_B})
    assert s.open()
    assert [d.index for d in s.devices] == [1]
    assert [m.uuid for m in s.devices[0].mig] == [MIG_B]
    r = s.sample_once()
    assert values(r, n.MIG_MEMORY_USED, mig_uuid=MIG_A) == []
    s.stop()
    everything = sampler(fake_nvml, env={"CUDA_VISIBLE_DEVICES": MIG_B}, scope="all")
    assert everything.open()
    assert [d.index for d in everything.devices] == [0, 1]
    assert len(everything.devices[1].mig) == 2
    everything.stop()


def test_parse_visible() -> None:
    assert parse_visible(None).everything
    v = parse_visible("1, GPU-abc ,MIG-xyz")
    assert v.indices == {1} and v.uuid_prefixes == ("GPU-abc",) and v.mig_uuids == {"MIG-xyz"}
    assert not parse_visible("").everything and parse_visible("").indices == frozenset()


def test_eight_gpus(fake_nvml: FakeNvml) -> None:
    fake_nvml.write({"devices": [device(i) for i in range(8)]})
    s = sampler(fake_nvml)
    assert s.open()
    r = s.sample_once()
    assert sorted(a["gpu"] for name, _, a in r if name == n.UTILIZATION) == [
        str(i) for i in range(8)
    ]
    assert len({a["uuid"] for _, _, a in r}) == 8
    s.stop()
