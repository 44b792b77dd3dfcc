"""The NVML stand-in (tests/nvml_standin) drives the real nvidia-ml-py: values, device counts,
NOT_SUPPORTED, a GPU lost mid-run, XID events, no driver, MIG and running processes."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

import pytest

from tests.nvml_standin import FakeNvml, device

pytest.importorskip("pynvml")

# Runs in a subprocess that loads the stand-in as libnvidia-ml.so.1 through LD_LIBRARY_PATH.
# Prints one JSON snapshot per line; with argv[1] == "2" it waits for a line on stdin and
# takes a second snapshot.
SNAPSHOT = textwrap.dedent(
    """
    import json, sys
    import pynvml as n

    def call(fn, *args):
        try:
            v = fn(*args)
        except n.NVMLError as exc:
            return "!" + type(exc).__name__
        if isinstance(v, bytes):
            return v.decode()
        if hasattr(v, "_fields_"):
            return {f[0]: getattr(v, f[0]) for f in v._fields_}
        return v

    def snapshot():
        out = {"library": n.nvmlLib._name, "driver": call(n.nvmlSystemGetDriverVersion)}
        out["count"] = n.nvmlDeviceGetCount()
        out["devices"] = []
        for i in range(out["count"]):
            if i not in handles:
                handles[i] = n.nvmlDeviceGetHandleByIndex(i)
            h = handles[i]
            out["devices"].append({
                "index": call(n.nvmlDeviceGetIndex, h),
                "name": call(n.nvmlDeviceGetName, h),
                "uuid": call(n.nvmlDeviceGetUUID, h),
                "memory": call(n.nvmlDeviceGetMemoryInfo, h),
                "memory_v2": call(n.nvmlDeviceGetMemoryInfo, h, n.nvmlMemory_v2),
                "util": call(n.nvmlDeviceGetUtilizationRates, h),
                "power": call(n.nvmlDeviceGetPowerUsage, h),
                "power_limit": call(n.nvmlDeviceGetEnforcedPowerLimit, h),
                "energy": call(n.nvmlDeviceGetTotalEnergyConsumption, h),
                "temp": call(n.nvmlDeviceGetTemperature, h, n.NVML_TEMPERATURE_GPU),
                "clock_sm": call(n.nvmlDeviceGetClockInfo, h, n.NVML_CLOCK_SM),
                "clock_mem": call(n.nvmlDeviceGetClockInfo, h, n.NVML_CLOCK_MEM),
                "max_clock_sm": call(n.nvmlDeviceGetMaxClockInfo, h, n.NVML_CLOCK_SM),
                "fan": call(n.nvmlDeviceGetFanSpeed, h),
                "pcie_rx": call(n.nvmlDeviceGetPcieThroughput, h, n.NVML_PCIE_UTIL_RX_BYTES),
                "pstate": call(n.nvmlDeviceGetPerformanceState, h),
                "reasons": call(n.nvmlDeviceGetCurrentClocksEventReasons, h),
                "reasons_old": call(n.nvmlDeviceGetCurrentClocksThrottleReasons, h),
                "ecc_unc": call(n.nvmlDeviceGetTotalEccErrors, h,
                                n.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, n.NVML_VOLATILE_ECC),
                "remapped": call(n.nvmlDeviceGetRemappedRows, h),
                "enc": call(n.nvmlDeviceGetEncoderUtilization, h),
                "mig_mode": call(n.nvmlDeviceGetMigMode, h),
                "procs": [[p.pid, p.usedGpuMemory] for p in
                          n.nvmlDeviceGetComputeRunningProcesses(h)]
                          if not isinstance(call(n.nvmlDeviceGetIndex, h), str) else None,
            })
        return out

    handles = {}
    n.nvmlInit()
    print(json.dumps(snapshot()), flush=True)
    if sys.argv[1:] == ["2"]:
        sys.stdin.readline()
        print(json.dumps(snapshot()), flush=True)
    n.nvmlShutdown()
    """
)


def run_snapshot(fake: FakeNvml) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-c", SNAPSHOT],
        env=fake.subprocess_env(),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def test_two_devices_report_configured_values_through_ld_library_path(
    fake_nvml: FakeNvml,
) -> None:
    fake_nvml.write(
        {
            "driver_version": "555.42.06",
            "devices": [
                device(0, throttle_reasons=0x4, ecc_uncorrected=3, remapped_corr=2),
                device(1, name="NVIDIA A100-SXM4-40GB (stand-in)", mem_total=40 * 1024**3),
            ],
        }
    )
    snap = run_snapshot(fake_nvml)
    assert snap["library"] == "libnvidia-ml.so.1"
    assert snap["driver"] == "555.42.06"
    assert snap["count"] == 2
    d0, d1 = snap["devices"]
    assert d0["index"] == 0 and d1["index"] == 1
    assert d0["name"] == "NVIDIA H100 80GB HBM3 (stand-in)"
    assert d1["name"] == "NVIDIA A100-SXM4-40GB (stand-in)"
    assert d0["uuid"] == "GPU-5fa1e0c2-0000-4000-8000-000000000000"
    assert d1["uuid"] == "GPU-5fa1e0c2-0000-4000-8000-000000000001"
    gib = 1024**3
    assert d0["memory"] == {"total": 80 * gib, "free": 79 * gib, "used": gib}
    assert d1["memory"] == {"total": 40 * gib, "free": 38 * gib, "used": 2 * gib}
    assert d1["memory_v2"]["total"] == 40 * gib and d1["memory_v2"]["used"] == 2 * gib
    assert d0["util"] == {"gpu": 10, "memory": 5} and d1["util"] == {"gpu": 11, "memory": 6}
    assert (d0["power"], d1["power"]) == (100_000, 101_000)
    assert d0["power_limit"] == 700_000
    assert (d0["energy"], d1["energy"]) == (1_000_000, 1_000_001)
    assert (d0["temp"], d1["temp"]) == (40, 41)
    assert (d0["clock_sm"], d0["clock_mem"], d0["max_clock_sm"]) == (1500, 2619, 1980)
    assert (d0["fan"], d0["pcie_rx"], d0["pstate"]) == (30, 2000, 0)
    assert d0["reasons"] == d0["reasons_old"] == 0x4
    assert d0["ecc_unc"] == 3 and d0["remapped"] == [2, 0, 0, 0]
    assert d0["enc"][0] == 0
    assert d0["mig_mode"] == [0, 0]
    assert d0["procs"] == []


@pytest.mark.parametrize("count", [1, 8])
def test_device_counts(fake_nvml: FakeNvml, count: int) -> None:
    fake_nvml.write({"devices": [device(i) for i in range(count)]})
    snap = run_snapshot(fake_nvml)
    assert snap["count"] == count
    assert [d["uuid"][-2:] for d in snap["devices"]] == [f"{i:02d}" for i in range(count)]
    assert [d["temp"] for d in snap["devices"]] == [40 + i for i in range(count)]


def test_not_supported_functions_globally_and_per_device(fake_nvml: FakeNvml) -> None:
    fake_nvml.write(
        {
            "not_supported": ["nvmlDeviceGetFanSpeed"],
            "devices": [
                device(
                    0, not_supported=["nvmlDeviceGetPowerUsage", "nvmlDeviceGetEncoderUtilization"]
                ),
                device(1),
            ],
        }
    )
    d0, d1 = run_snapshot(fake_nvml)["devices"]
    assert d0["fan"] == d1["fan"] == "!NVMLError_NotSupported"
    assert d0["power"] == d0["enc"] == "!NVMLError_NotSupported"
    assert d1["power"] == 101_000 and d1["enc"] == [0, 167000]
    assert d0["temp"] == 40 and d0["memory"]["used"] == 1024**3


def test_gpu_lost_mid_run_in_a_subprocess(fake_nvml: FakeNvml) -> None:
    fake_nvml.write({"devices": [device(0), device(1)]})
    proc = subprocess.Popen(
        [sys.executable, "-c", SNAPSHOT, "2"],
        env=fake_nvml.subprocess_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdin is not None
    try:
        before = json.loads(proc.stdout.readline())
        fake_nvml.update_device(1, lost=True, temp=99)
        fake_nvml.update_device(0, temp=77)
        out, err = proc.communicate("go\n", timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    after = json.loads(out)
    assert before["devices"][1]["temp"] == 41
    d0, d1 = after["devices"]
    assert d0["temp"] == 77 and d0["util"] == {"gpu": 10, "memory": 5}
    assert {k: v for k, v in d1.items() if k != "procs"} == dict.fromkeys(
        (k for k in d1 if k != "procs"), "!NVMLError_GpuIsLost"
    )


def test_gpu_lost_mid_run_in_process(fake_nvml: FakeNvml) -> None:
    fake_nvml.write({"devices": [device(0), device(1)]})
    n = fake_nvml.load_in_process()
    n.nvmlInit()
    h0, h1 = n.nvmlDeviceGetHandleByIndex(0), n.nvmlDeviceGetHandleByIndex(1)
    assert n.nvmlDeviceGetPowerUsage(h1) == 101_000
    fake_nvml.update_device(1, lost=True)
    with pytest.raises(n.NVMLError_GpuIsLost):
        n.nvmlDeviceGetPowerUsage(h1)
    with pytest.raises(n.NVMLError_GpuIsLost):
        n.nvmlDeviceGetHandleByIndex(1)
    assert n.nvmlDeviceGetPowerUsage(h0) == 100_000
    assert n.nvmlDeviceGetName(h0) == "NVIDIA H100 80GB HBM3 (stand-in)"
    assert n.nvmlDeviceGetCount() == 2


def test_xid_event_is_delivered_once(fake_nvml: FakeNvml) -> None:
    fake_nvml.write({"devices": [device(0), device(1)]})
    n = fake_nvml.load_in_process()
    n.nvmlInit()
    h1 = n.nvmlDeviceGetHandleByIndex(1)
    assert n.nvmlDeviceGetSupportedEventTypes(h1) & n.nvmlEventTypeXidCriticalError
    event_set = n.nvmlEventSetCreate()
    n.nvmlDeviceRegisterEvents(h1, n.nvmlEventTypeXidCriticalError, event_set)
    with pytest.raises(n.NVMLError_Timeout):
        n.nvmlEventSetWait(event_set, 20)
    fake_nvml.write(
        {
            "devices": [device(0), device(1)],
            "events": [{"device": 0, "xid": 13, "id": 1}, {"device": 1, "xid": 79, "id": 2}],
        }
    )
    data = n.nvmlEventSetWait(event_set, 1000)
    assert data.eventType == n.nvmlEventTypeXidCriticalError
    assert data.eventData == 79
    assert n.nvmlDeviceGetIndex(data.device) == 1
    # Delivered once; the event on device 0 is not registered in this set.
    with pytest.raises(n.NVMLError_Timeout):
        n.nvmlEventSetWait(event_set, 20)
    n.nvmlEventSetFree(event_set)


def test_no_driver_makes_init_fail(fake_nvml: FakeNvml) -> None:
    fake_nvml.write({"no_driver": True, "devices": [device(0)]})
    n = fake_nvml.load_in_process()
    with pytest.raises(n.NVMLError_DriverNotLoaded):
        n.nvmlInit()
    with pytest.raises(n.NVMLError_Uninitialized):
        n.nvmlDeviceGetCount()


def test_mig_devices(fake_nvml: FakeNvml) -> None:
    gib = 1024**3
    mig = [
        {
            "uuid": "MIG-aaaaaaaa-0000-5000-8000-000000000000",
            "mem_total": 10 * gib,
            "mem_used": gib,
        },
        {
            "uuid": "MIG-aaaaaaaa-0000-5000-8000-000000000001",
            "name": "NVIDIA H100 80GB HBM3 MIG 1g.10gb",
            "mem_total": 10 * gib,
            "mem_used": 3 * gib,
            "processes": [{"pid": 4242, "used_memory": 2 * gib}],
        },
    ]
    fake_nvml.write({"devices": [device(0, mig=mig), device(1)]})
    n = fake_nvml.load_in_process()
    n.nvmlInit()
    h0, h1 = n.nvmlDeviceGetHandleByIndex(0), n.nvmlDeviceGetHandleByIndex(1)
    assert n.nvmlDeviceGetMigMode(h0) == [n.NVML_DEVICE_MIG_ENABLE] * 2
    assert n.nvmlDeviceGetMigMode(h1) == [n.NVML_DEVICE_MIG_DISABLE] * 2
    assert n.nvmlDeviceGetMaxMigDeviceCount(h0) == 7
    assert not n.nvmlDeviceIsMigDeviceHandle(h0).value
    m1 = n.nvmlDeviceGetMigDeviceHandleByIndex(h0, 1)
    assert n.nvmlDeviceIsMigDeviceHandle(m1).value
    assert n.nvmlDeviceGetUUID(m1) == mig[1]["uuid"]
    assert n.nvmlDeviceGetName(m1) == "NVIDIA H100 80GB HBM3 MIG 1g.10gb"
    memory = n.nvmlDeviceGetMemoryInfo(m1)
    assert (memory.total, memory.used, memory.free) == (10 * gib, 3 * gib, 7 * gib)
    assert [(p.pid, p.usedGpuMemory) for p in n.nvmlDeviceGetComputeRunningProcesses(m1)] == [
        (4242, 2 * gib)
    ]
    with pytest.raises(n.NVMLError_NotSupported):
        n.nvmlDeviceGetUtilizationRates(m1)
    with pytest.raises(n.NVMLError_NotFound):
        n.nvmlDeviceGetMigDeviceHandleByIndex(h0, 2)
    by_uuid = n.nvmlDeviceGetHandleByUUID(mig[0]["uuid"])
    assert n.nvmlDeviceGetMemoryInfo(by_uuid).total == 10 * gib
    assert n.nvmlDeviceGetMemoryInfo(h0).total == 80 * gib


def test_running_processes(fake_nvml: FakeNvml) -> None:
    procs = [{"pid": 100 + i, "used_memory": (i + 1) * 1024**2} for i in range(10)]
    fake_nvml.write({"devices": [device(0, processes=procs), device(1)]})
    n = fake_nvml.load_in_process()
    n.nvmlInit()
    h0, h1 = n.nvmlDeviceGetHandleByIndex(0), n.nvmlDeviceGetHandleByIndex(1)
    got = n.nvmlDeviceGetComputeRunningProcesses(h0)
    assert [(p.pid, p.usedGpuMemory) for p in got] == [(p["pid"], p["used_memory"]) for p in procs]
    assert n.nvmlDeviceGetComputeRunningProcesses(h1) == []
    fake_nvml.update_device(0, processes=procs[:1])
    assert [p.pid for p in n.nvmlDeviceGetComputeRunningProcesses(h0)] == [100]
    assert n.nvmlDeviceGetIndex(n.nvmlDeviceGetHandleByUUID(device(1)["uuid"])) == 1


def test_memory_temperature_through_field_values(fake_nvml: FakeNvml) -> None:
    mig = [{"uuid": "MIG-aaaaaaaa-0000-5000-8000-000000000000"}]
    fake_nvml.write({"devices": [device(0, mem_temp=52, mig=mig), device(1)]})
    n = fake_nvml.load_in_process()
    n.nvmlInit()
    h0, h1 = n.nvmlDeviceGetHandleByIndex(0), n.nvmlDeviceGetHandleByIndex(1)
    unknown_field = 9999
    temp, unknown = n.nvmlDeviceGetFieldValues(h0, [n.NVML_FI_DEV_MEMORY_TEMP, unknown_field])
    assert temp.fieldId == n.NVML_FI_DEV_MEMORY_TEMP
    assert temp.nvmlReturn == n.NVML_SUCCESS
    assert temp.valueType == n.NVML_VALUE_TYPE_UNSIGNED_INT
    assert temp.value.uiVal == 52
    assert temp.timestamp > 0
    assert unknown.fieldId == unknown_field
    assert unknown.nvmlReturn == n.NVML_ERROR_NOT_SUPPORTED
    fake_nvml.update_device(0, mem_temp=61)
    (temp,) = n.nvmlDeviceGetFieldValues(h0, [n.NVML_FI_DEV_MEMORY_TEMP])
    assert temp.value.uiVal == 61
    # No sensor configured: the entry says NOT_SUPPORTED, the call itself succeeds.
    (temp,) = n.nvmlDeviceGetFieldValues(h1, [n.NVML_FI_DEV_MEMORY_TEMP])
    assert temp.nvmlReturn == n.NVML_ERROR_NOT_SUPPORTED
    # MIG device handles answer no device fields.
    m0 = n.nvmlDeviceGetMigDeviceHandleByIndex(h0, 0)
    (temp,) = n.nvmlDeviceGetFieldValues(m0, [n.NVML_FI_DEV_MEMORY_TEMP])
    assert temp.nvmlReturn == n.NVML_ERROR_NOT_SUPPORTED


def test_field_values_honour_not_supported_and_lost(fake_nvml: FakeNvml) -> None:
    fake_nvml.write(
        {
            "devices": [
                device(0, mem_temp=50, not_supported=["nvmlDeviceGetFieldValues"]),
                device(1, mem_temp=51),
            ]
        }
    )
    n = fake_nvml.load_in_process()
    n.nvmlInit()
    h0, h1 = n.nvmlDeviceGetHandleByIndex(0), n.nvmlDeviceGetHandleByIndex(1)
    with pytest.raises(n.NVMLError_NotSupported):
        n.nvmlDeviceGetFieldValues(h0, [n.NVML_FI_DEV_MEMORY_TEMP])
    assert n.nvmlDeviceGetFieldValues(h1, [n.NVML_FI_DEV_MEMORY_TEMP])[0].value.uiVal == 51
    fake_nvml.update_device(1, lost=True)
    with pytest.raises(n.NVMLError_GpuIsLost):
        n.nvmlDeviceGetFieldValues(h1, [n.NVML_FI_DEV_MEMORY_TEMP])


MIG_PAIR = [
    {"uuid": "MIG-bbbbbbbb-0000-5000-8000-000000000000", "util": 40},
    {"uuid": "MIG-bbbbbbbb-0000-5000-8000-000000000001", "util": 70},
]


def gpm_metrics(n: Any, sample1: Any, sample2: Any, *metric_ids: int) -> list[tuple[int, float]]:
    """(nvmlReturn, value) per metric, through pynvml's own struct and wrapper."""
    request = n.c_nvmlGpmMetricsGet_t()
    request.version = n.NVML_GPM_METRICS_GET_VERSION
    request.numMetrics = len(metric_ids)
    request.sample1 = sample1
    request.sample2 = sample2
    for i, metric_id in enumerate(metric_ids):
        request.metrics[i].metricId = metric_id
    n.nvmlGpmMetricsGet(request)
    return [(m.nvmlReturn, m.value) for m in request.metrics[: len(metric_ids)]]


def test_gpm_support_query(fake_nvml: FakeNvml) -> None:
    fake_nvml.write({"devices": [device(0, gpm=True, mig=MIG_PAIR), device(1)]})
    n = fake_nvml.load_in_process()
    n.nvmlInit()
    h0, h1 = n.nvmlDeviceGetHandleByIndex(0), n.nvmlDeviceGetHandleByIndex(1)
    assert n.nvmlGpmQueryDeviceSupport(h0).isSupportedDevice == 1
    assert n.nvmlGpmQueryDeviceSupport(h1).isSupportedDevice == 0
    m1 = n.nvmlDeviceGetMigDeviceHandleByIndex(h0, 1)
    assert n.nvmlGpmQueryDeviceSupport(m1).isSupportedDevice == 1


def test_gpm_mig_sample_pair_reports_configured_utilization(fake_nvml: FakeNvml) -> None:
    fake_nvml.write({"devices": [device(0, gpm=True, util_gpu=33, mig=MIG_PAIR)]})
    n = fake_nvml.load_in_process()
    n.nvmlInit()
    h0 = n.nvmlDeviceGetHandleByIndex(0)
    s1, s2 = n.nvmlGpmSampleAlloc(), n.nvmlGpmSampleAlloc()
    assert fake_nvml.gpm_samples_in_use() == 2
    n.nvmlGpmMigSampleGet(h0, 1, s1)
    n.nvmlGpmMigSampleGet(h0, 1, s2)
    graphics, sm, dram = n.NVML_GPM_METRIC_GRAPHICS_UTIL, n.NVML_GPM_METRIC_SM_UTIL, 10
    assert gpm_metrics(n, s1, s2, graphics, sm, dram) == [
        (n.NVML_SUCCESS, 70.0),
        (n.NVML_SUCCESS, 70.0),
        (n.NVML_ERROR_NOT_SUPPORTED, 0.0),
    ]
    # The later sample carries the value configured when it was taken.
    mig = [dict(MIG_PAIR[0], util=15), MIG_PAIR[1]]
    fake_nvml.update_device(0, mig=mig)
    n.nvmlGpmMigSampleGet(h0, 0, s1)
    n.nvmlGpmMigSampleGet(h0, 0, s2)
    assert gpm_metrics(n, s1, s2, graphics) == [(n.NVML_SUCCESS, 15.0)]
    # Samples of different instances, or of an instance and the whole GPU, do not pair.
    n.nvmlGpmMigSampleGet(h0, 1, s2)
    with pytest.raises(n.NVMLError_InvalidArgument):
        gpm_metrics(n, s1, s2, graphics)
    n.nvmlGpmSampleGet(h0, s1)
    with pytest.raises(n.NVMLError_InvalidArgument):
        gpm_metrics(n, s1, s2, graphics)
    n.nvmlGpmSampleGet(h0, s2)
    assert gpm_metrics(n, s1, s2, graphics) == [(n.NVML_SUCCESS, 33.0)]
    with pytest.raises(n.NVMLError_NotFound):
        n.nvmlGpmMigSampleGet(h0, 2, s1)
    n.nvmlGpmSampleFree(s1)
    n.nvmlGpmSampleFree(s2)
    assert fake_nvml.gpm_samples_in_use() == 0
    with pytest.raises(n.NVMLError_InvalidArgument):
        n.nvmlGpmSampleFree(s1)


def test_gpm_on_an_unsupported_device_is_not_supported(fake_nvml: FakeNvml) -> None:
    fake_nvml.write({"devices": [device(0, mig=MIG_PAIR)]})
    n = fake_nvml.load_in_process()
    n.nvmlInit()
    h0 = n.nvmlDeviceGetHandleByIndex(0)
    sample = n.nvmlGpmSampleAlloc()
    with pytest.raises(n.NVMLError_NotSupported):
        n.nvmlGpmMigSampleGet(h0, 0, sample)
    with pytest.raises(n.NVMLError_NotSupported):
        n.nvmlGpmSampleGet(h0, sample)
    n.nvmlGpmSampleFree(sample)
