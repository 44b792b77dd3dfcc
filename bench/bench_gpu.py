"""GPU sampler benchmark of issue #4: the cost of one sample of 1, 2 and 8 GPUs against the bare
pynvml calls it makes, and the CPU share of sampling 8 GPUs every second, by the sampler thread
alone and inside a run that writes the samples to the spool; beside ``nvidia-smi`` polling when a
real GPU is present.

Run from the repository root::

    python bench/bench_gpu.py            # full run, prints the tables
    python bench/bench_gpu.py --quick    # fewer samples, 5 s windows, a smoke test (cannot --write)
    python bench/bench_gpu.py --write    # full run, rewrites the gpu block of BENCHMARKS.md

The cost and CPU-share figures always come from the test suite's NVML STAND-IN (tests/nvml_standin:
a C library that the real nvidia-ml-py loads in place of NVIDIA's, answering from a config file;
it needs gcc and nvidia-nvml-dev), so they hold for 8 GPUs on any machine and show mlobs' own work
per sample on top of pynvml, not the cost of real NVML calls (driver ioctls). Only the
``nvidia-smi`` comparison uses the real NVML, and only when ``nvidia-smi`` and a GPU are present.
Repeats are interleaved (order rotated each repeat) after a warm-up; the garbage collector stays
on; nothing is subtracted from a timing.
"""

from __future__ import annotations

import functools
import gc
import inspect
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _report import ROOT, Stats, table, verdict
from _sinks import finish, parse_args, rotated, stage

import mlobs
from mlobs import safety
from mlobs.gpu.nvml import Nvml
from mlobs.gpu.sampler import SAMPLES, GpuSampler

sys.path.insert(0, str(ROOT))  # for the test suite's NVML stand-in
from tests.nvml_standin import FakeNvml, device

PEERS = ("nvidia-ml-py",)
GOAL_CORE_PERCENT = 0.5
GPU_COUNTS = (1, 2, 8)
WINDOW_GPUS = 8
INTERVAL_S = 1.0
SMI_FIELDS = (
    "utilization.gpu,memory.used,memory.total,temperature.gpu,power.draw,clocks.sm,clocks.mem"
)
SMI_COMMAND = ("nvidia-smi", f"--query-gpu={SMI_FIELDS}", "--format=csv,noheader,nounits")

STANDIN_NOTE = (
    "**The NVML calls of the first two parts go to a stand-in**, not to a driver: "
    "tests/nvml_standin, a C library that the real nvidia-ml-py loads in place of NVIDIA's and "
    "that answers from a config file (each call takes a mutex and `stat`s that file). The "
    "absolute cost of real NVML calls (driver ioctls) is therefore not measured here; what is "
    "measured is mlobs' own work per sample on top of pynvml's (Python, ctypes), and the CPU "
    "share the sampling thread and the spool writes take. Only the comparison with `nvidia-smi` "
    "uses a real GPU."
)

Call = tuple[Callable[..., Any], tuple[Any, ...]]
"""One pynvml call: the function and its arguments."""


def _discard(_readings: object, _ts: int) -> None:
    """A sampler callback that keeps nothing."""


# -- the stand-in ---------------------------------------------------------------------------------


def standin(directory: Path) -> tuple[FakeNvml, Any]:
    """The stand-in with 8 H100-like devices, each running this process (1 GiB) and PID 1 (2 GiB)
    so that the process series are read too; pynvml pointed at it."""
    fake = FakeNvml(directory)
    processes = [
        {"pid": os.getpid(), "used_memory": 1 << 30},
        {"pid": 1, "used_memory": 2 << 30},
    ]
    fake.write({"devices": [device(i, processes=processes) for i in range(WINDOW_GPUS)]})
    return fake, fake.load_in_process()


class Recording:
    """Passes every attribute of the pynvml module through, and records each call of an
    ``nvml*`` function (with its arguments) into :attr:`calls`."""

    def __init__(self, module: Any) -> None:
        self._module = module
        self.calls: list[Call] = []

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._module, name)
        if not name.startswith("nvml") or not inspect.isfunction(value):
            return value
        calls = self.calls

        def recorded(*args: Any) -> Any:
            calls.append((value, args))
            return value(*args)

        return recorded


def record_sample(sampler: GpuSampler) -> list[Call]:
    """The pynvml calls one ``sample_once()`` of ``sampler`` makes, in order, with the same
    handles, event set and arguments."""
    nvml = sampler.nvml
    module = nvml.nvml
    recording = Recording(module)
    nvml.nvml = recording
    try:
        sampler.sample_once()
    finally:
        nvml.nvml = module
    return recording.calls


def bare_sample(calls: Sequence[Call], error: type[Exception]) -> None:
    """The peer: the same pynvml calls in a flat loop, results discarded (the calls that the
    stand-in does not support raise, as they do under mlobs)."""
    for fn, args in calls:
        try:
            fn(*args)
        except error:
            pass


# -- cost per sample ------------------------------------------------------------------------------


@dataclass
class SampleCost:
    """Wall and CPU microseconds per sample, one entry per repeat, by (GPUs, case)."""

    samples: dict[int, int]
    calls: dict[int, int] = field(default_factory=dict)
    readings: dict[int, int] = field(default_factory=dict)
    wall: dict[tuple[int, str], list[float]] = field(default_factory=dict)
    cpu: dict[tuple[int, str], list[float]] = field(default_factory=dict)

    def add(self, gpus: int, case: str, wall_us: float, cpu_us: float) -> None:
        self.wall.setdefault((gpus, case), []).append(wall_us)
        self.cpu.setdefault((gpus, case), []).append(cpu_us)

    def repeats(self) -> int:
        return len(next(iter(self.wall.values())))

    def ratio(self, gpus: int) -> Stats:
        """mlobs time over bare time, per repeat."""
        pairs = zip(self.wall[gpus, "mlobs"], self.wall[gpus, "bare"], strict=True)
        return Stats.of([m / b for m, b in pairs])

    def own(self, gpus: int) -> Stats:
        """mlobs time minus bare time per sample, per repeat (µs)."""
        pairs = zip(self.wall[gpus, "mlobs"], self.wall[gpus, "bare"], strict=True)
        return Stats.of([m - b for m, b in pairs])


def per_sample(body: Callable[[], object], samples: int) -> tuple[float, float]:
    """Wall and CPU microseconds per call of ``body`` over ``samples`` calls, after a collection."""
    gc.collect()
    c0, t0 = time.process_time(), time.perf_counter()
    for _ in range(samples):
        body()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return wall / samples * 1e6, cpu / samples * 1e6


def bench_cost(lib: Any, sizes: Sizes) -> SampleCost:
    """``sample_once()`` of a sampler of the first 1, 2 and 8 devices against the replay of the
    pynvml calls it makes, interleaved."""
    result = SampleCost({g: max(10, sizes.samples // g) for g in GPU_COUNTS})
    samplers: dict[int, GpuSampler] = {}
    cases: dict[tuple[int, str], Callable[[], object]] = {}
    try:
        for gpus in GPU_COUNTS:
            visible = ",".join(str(i) for i in range(gpus))
            sampler = GpuSampler(
                _discard,
                interval=INTERVAL_S,
                scope="run",
                nvml=Nvml(lib),
                env={"CUDA_VISIBLE_DEVICES": visible},
            )
            if not sampler.open() or len(sampler.devices) != gpus:
                raise RuntimeError(f"the stand-in did not give {gpus} GPUs")
            samplers[gpus] = sampler
            result.readings[gpus] = len(sampler.sample_once())  # first sample: /proc look-ups
            calls = record_sample(sampler)
            result.calls[gpus] = len(calls)
            cases[gpus, "mlobs"] = sampler.sample_once
            cases[gpus, "bare"] = functools.partial(bare_sample, calls, lib.NVMLError)
        for (gpus, _case), body in cases.items():  # warm-up
            per_sample(body, result.samples[gpus])
        for rep in range(sizes.repeats):
            for gpus in GPU_COUNTS:
                for case in rotated(["mlobs", "bare"], rep):
                    result.add(gpus, case, *per_sample(cases[gpus, case], result.samples[gpus]))
    finally:
        for sampler in samplers.values():
            sampler.stop()
    return result


def report_cost(r: SampleCost) -> str:
    labels = {
        "mlobs": "mlobs `GpuSampler.sample_once()`",
        "bare": "bare pynvml, the same calls",
    }
    rows = [
        [
            str(gpus),
            label,
            str(r.calls[gpus]),
            Stats.of(r.wall[gpus, case]).fmt(",.0f"),
            Stats.of(r.cpu[gpus, case]).fmt(",.0f"),
        ]
        for gpus in GPU_COUNTS
        for case, label in labels.items()
    ]
    ratio_rows = []
    for gpus in GPU_COUNTS:
        own = r.own(gpus)
        ratio_rows.append(
            [
                str(gpus),
                str(r.readings[gpus]),
                r.ratio(gpus).fmt(".2f"),
                own.fmt(",.0f"),
                Stats.of([v / gpus for v in r.wall[gpus, "mlobs"]]).fmt(",.0f"),
            ]
        )
    samples = ", ".join(f"{r.samples[g]:,}" for g in GPU_COUNTS)
    return "\n\n".join(
        [
            "### Cost of one sample",
            f"The first 1, 2 and 8 of the stand-in's 8 devices (`CUDA_VISIBLE_DEVICES`), each "
            "with two compute processes. mlobs: `GpuSampler(...).open()`, then "
            f"`sample_once()` in a loop ({samples} samples per repeat for 1, 2, 8 GPUs), the "
            "readings discarded. Bare: the pynvml calls one mlobs sample makes, recorded once "
            "(same functions, same handles and arguments, the XID event poll included) and "
            "replayed in a flat loop, each in a `try`/`except NVMLError`, results discarded: the "
            "floor any Python sampler over pynvml pays. The NVML calls go to the stand-in, not "
            "to a driver. "
            f"{r.repeats()} repeats after a warm-up, mlobs and bare interleaved (order rotated "
            "each repeat). Wall and CPU (this process) microseconds per sample: median (min–max).",
            table(["GPUs", "case", "NVML calls", "µs per sample", "CPU µs per sample"], rows),
            "mlobs' own share, per repeat: time over bare time, and time minus bare time "
            "(µs per sample); readings are what one sample hands to the callback.",
            table(
                [
                    "GPUs",
                    "readings per sample",
                    "mlobs / bare",
                    "mlobs − bare µs",
                    "mlobs µs per GPU",
                ],
                ratio_rows,
            ),
        ]
    )


# -- CPU share at a 1 s interval ------------------------------------------------------------------


WINDOW_CASES = ("thread", "run", "run_off")
WINDOW_LABELS = {
    "thread": "sampler thread alone (`GpuSampler.start()`, callback discards)",
    "run": '`with mlobs.run(..., gpu="all")`: sampler, recorder, flusher, spool',
    "run_off": "`with mlobs.run(..., gpu=False)`: the run without sampling (peer)",
}


@dataclass
class Window:
    """One window: wall and process CPU seconds, and samples taken."""

    wall: float
    cpu: float
    samples: int

    @property
    def percent(self) -> float:
        return self.cpu / self.wall * 100.0


def _window(seconds: float, before: int | None) -> Window:
    """Sleep ``seconds`` on this thread and measure the process meanwhile. With ``before`` (the
    sample count before sampling started), wait for the first sample first; either way the window
    opens half an interval later, so that the samples fall mid-window rather than on its edges
    and the start-up (thread, first sample) is left out."""
    if before is not None:
        deadline = time.monotonic() + 30
        while safety.self_metrics.get(SAMPLES) == before:
            if time.monotonic() > deadline:
                raise RuntimeError("the sampler took no sample")
            time.sleep(0.01)
    time.sleep(INTERVAL_S / 2)
    s0 = safety.self_metrics.get(SAMPLES)
    c0, t0 = time.process_time(), time.perf_counter()
    time.sleep(seconds)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return Window(wall, cpu, safety.self_metrics.get(SAMPLES) - s0)


def window_thread(lib: Any, seconds: float) -> Window:
    sampler = GpuSampler(_discard, interval=INTERVAL_S, scope="all", nvml=Nvml(lib), env={})
    before = safety.self_metrics.get(SAMPLES)
    if not sampler.start():
        raise RuntimeError("the sampler did not start on the stand-in")
    try:
        return _window(seconds, before)
    finally:
        sampler.stop()


def window_run(seconds: float, directory: str, gpu: bool | str) -> Window:
    mlobs.configure(
        dir=directory,
        gpu="auto",
        gpu_interval=INTERVAL_S,
        flush_interval=INTERVAL_S,
    )
    before = safety.self_metrics.get(SAMPLES)
    try:
        with mlobs.run("bench-gpu", gpu=gpu):
            return _window(seconds, before if gpu else None)
    finally:
        mlobs.shutdown()


def bench_share(lib: Any, sizes: Sizes, directory: Path) -> dict[str, list[Window]]:
    """Each case for ``sizes.window`` seconds, ``sizes.windows`` times, interleaved."""
    spool = str(directory / "spool")
    cases: dict[str, Callable[[], Window]] = {
        "thread": lambda: window_thread(lib, sizes.window),
        "run": lambda: window_run(sizes.window, spool, "all"),
        "run_off": lambda: window_run(sizes.window, spool, False),
    }
    window_run(0.5, spool, "all")  # warm-up: lazy imports, the spool's schema
    out: dict[str, list[Window]] = {name: [] for name in cases}
    for rep in range(sizes.windows):
        for name in rotated(list(cases), rep):
            out[name].append(cases[name]())
    return out


def report_share(windows: dict[str, list[Window]], readings: int) -> tuple[str, bool, bool]:
    """The CPU-share block; ``readings`` is the number one sample of the window's GPUs gives."""
    rows = [
        [
            WINDOW_LABELS[case],
            Stats.of([float(w.samples) for w in windows[case]]).fmt(".0f"),
            Stats.of([w.cpu for w in windows[case]]).fmt(".0f", 1e3),
            Stats.of([w.percent for w in windows[case]]).fmt(".3f"),
        ]
        for case in WINDOW_CASES
    ]
    thread = windows["thread"]
    pairs = list(zip(windows["run"], windows["run_off"], strict=True))
    thread_share = Stats.of([w.percent for w in thread])
    run_share = Stats.of([on.percent - off.percent for on, off in pairs])
    thread_ok = thread_share.median < GOAL_CORE_PERCENT
    run_ok = run_share.median < GOAL_CORE_PERCENT
    n = len(thread)
    text = "\n\n".join(
        [
            f"### CPU share, {WINDOW_GPUS} GPUs every {INTERVAL_S:g} s",
            f"The stand-in's {WINDOW_GPUS} devices sampled every {INTERVAL_S:g} s for a window "
            f"of {thread[0].wall:.0f} s while the main thread sleeps, so the process CPU time "
            "(user + sys, every thread) over the window is mlobs' background work, given as "
            'percent of one core. Thread: `GpuSampler(callback, interval=1.0, scope="all")'
            '.start()`. Run: `mlobs.configure(dir=<tmp>, gpu="auto", gpu_interval=1.0, '
            "flush_interval=1.0)` and a `with mlobs.run(...)` block around the window, so each "
            f"sample's {readings} readings go through the recorder and the flusher "
            "into the SQLite spool; the same run with `gpu=False` is the peer, for what the "
            "run's own threads (flusher, heartbeat) cost without GPUs, and the run's GPU share "
            "is the difference within each pair of windows. "
            f"{n} window{'s' if n > 1 else ''} of each case, interleaved (order rotated each "
            "repeat); samples are counted by the sampler (`mlobs_gpu_samples_total`). Each "
            "window opens half an interval after the first sample, so start-up is left out and "
            "no sample straddles its edges. Median (min–max).",
            table(["case", "samples", "CPU ms in the window", "% of one core"], rows),
            table(
                ["GPU sampling", "% of one core", "CPU ms per sample", "goal (%)", "result"],
                [
                    [
                        "sampler thread",
                        thread_share.fmt(".3f"),
                        Stats.of([w.cpu / max(1, w.samples) for w in thread]).fmt(".2f", 1e3),
                        f"< {GOAL_CORE_PERCENT}",
                        verdict(thread_ok),
                    ],
                    [
                        'in a run, `gpu="all"` − `gpu=False`',
                        run_share.fmt(".3f"),
                        Stats.of(
                            [(on.cpu - off.cpu) / max(1, on.samples) for on, off in pairs]
                        ).fmt(".2f", 1e3),
                        f"< {GOAL_CORE_PERCENT}",
                        verdict(run_ok),
                    ],
                ],
            ),
        ]
    )
    return text, thread_ok, run_ok


# -- beside nvidia-smi (a real GPU only) ----------------------------------------------------------


def real_nvml() -> Any | None:
    """The pynvml module initialised on the real NVML when ``nvidia-smi`` and a GPU are present
    (before the stand-in is loaded); ``None`` otherwise."""
    if shutil.which(SMI_COMMAND[0]) is None:
        return None
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:
        return None
    try:
        if pynvml.nvmlDeviceGetCount() > 0:
            return pynvml
    except Exception:
        pass
    pynvml.nvmlShutdown()
    return None


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _smi_once() -> None:
    subprocess.run(SMI_COMMAND, capture_output=True, check=True)


def bench_smi(lib: Any, sizes: Sizes) -> str:
    """``sample_once()`` of every GPU on the real NVML against one ``nvidia-smi`` query per call,
    interleaved: wall and CPU (this process and its children) milliseconds per call."""
    sampler = GpuSampler(_discard, interval=INTERVAL_S, scope="all", nvml=Nvml(lib), env={})
    if not sampler.open():
        return "The real NVML did not open; the `nvidia-smi` comparison was not run."
    calls = max(5, sizes.smi_calls)
    queries = len(record_sample(sampler))
    cases: dict[str, Callable[[], object]] = {"mlobs": sampler.sample_once, "nvidia-smi": _smi_once}
    wall: dict[str, list[float]] = {name: [] for name in cases}
    cpu: dict[str, list[float]] = {name: [] for name in cases}
    try:
        for body in cases.values():
            body()
        for rep in range(sizes.repeats):
            for name in rotated(list(cases), rep):
                gc.collect()
                c0, k0, t0 = time.process_time(), _children_cpu(), time.perf_counter()
                for _ in range(calls):
                    cases[name]()
                t1 = time.perf_counter()
                spent = time.process_time() - c0 + _children_cpu() - k0
                wall[name].append((t1 - t0) / calls * 1e3)
                cpu[name].append(spent / calls * 1e3)
    finally:
        sampler.stop()
    gpus = len(sampler.devices)
    model = sampler.devices[0].model if sampler.devices else "unknown"
    labels = {
        "mlobs": "mlobs `sample_once()` (every series)",
        "nvidia-smi": "`nvidia-smi --query-gpu=<7 fields> --format=csv,...`",
    }
    rows = [
        [label, Stats.of(wall[name]).fmt(".2f"), Stats.of(cpu[name]).fmt(".2f")]
        for name, label in labels.items()
    ]
    pairs = zip(wall["nvidia-smi"], wall["mlobs"], strict=True)
    ratio = Stats.of([s / m for s, m in pairs])
    return "\n\n".join(
        [
            f"{gpus} × {model}, the real NVML and driver (no stand-in). {calls} calls of each "
            f"per repeat, {sizes.repeats} repeats after a warm-up, interleaved. CPU is this "
            "process's plus its children's (nvidia-smi runs as a child). One mlobs sample makes "
            f"{queries} NVML calls ({queries / gpus:.0f} per GPU) for every series; the "
            f"nvidia-smi command, `{' '.join(SMI_COMMAND)}`, asks for 7 fields per GPU and is run "
            "once per call. Milliseconds per call: median (min–max).",
            table(["case", "ms per call", "CPU ms per call"], rows),
            f"nvidia-smi time over mlobs time, per repeat: {ratio.fmt('.1f')}.",
        ]
    )


# -- driver ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    samples: int
    """Samples of 1 GPU per repeat (divided by the GPU count for more)."""
    repeats: int
    window: float
    """Seconds of each CPU-share window."""
    windows: int
    smi_calls: int


FULL = Sizes(1_000, 9, 20.0, 3, 20)
QUICK = Sizes(200, 3, 5.0, 1, 5)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(
        __doc__, "gpu", argv, quick_help="fewer samples, a short window, a smoke test"
    )
    sizes = QUICK if args.quick else FULL
    smi = "`nvidia-smi` polling needs a GPU: no GPU here, that comparison was not run."
    real = real_nvml()
    if real is not None:
        with stage("gpu beside nvidia-smi"):
            try:
                smi = bench_smi(real, sizes)
            finally:
                real.nvmlShutdown()
    directory = Path(tempfile.mkdtemp(prefix="mlobs-bench-gpu-"))
    try:
        fake, lib = standin(directory)
        try:
            with stage("gpu cost per sample"):
                cost = bench_cost(lib, sizes)
            with stage("gpu CPU share"):
                windows = bench_share(lib, sizes, directory)
        finally:
            fake.unload_in_process()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    share, thread_ok, run_ok = report_share(windows, cost.readings[WINDOW_GPUS])
    return finish(
        args,
        "gpu",
        "## GPU sampler (issue #4)",
        PEERS,
        [
            (f"sampler thread, {WINDOW_GPUS} GPUs at {INTERVAL_S:g} s", thread_ok),
            (f"in a run, {WINDOW_GPUS} GPUs at {INTERVAL_S:g} s", run_ok),
        ],
        [STANDIN_NOTE, report_cost(cost), share, "### Beside `nvidia-smi`", smi],
        quick_note="too few samples and too short a window to quote",
    )


if __name__ == "__main__":
    sys.exit(main())
