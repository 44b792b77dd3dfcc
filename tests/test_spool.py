"""The durable spool: flush triggers, crash durability, concurrency, fork, several processes,
the disk budget, and sinks shipping from their own cursors."""

from __future__ import annotations

import marshal
import math
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import mlobs
from mlobs import runtime, safety
from mlobs.export.memory import InMemoryExporter
from mlobs.record.columns import Columns
from mlobs.record.types import Kind
from mlobs.spool import codec
from mlobs.spool.store import Spool, SpoolReader, decode_chunk, spool_files

from .spool_util import metric_values, read_all


def _run_python(code: str, env: dict[str, str], timeout: float = 60) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(predicate: object, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


def test_flush_on_interval_without_any_call(spool_dir: Path) -> None:
    mlobs.configure(dir=str(spool_dir), flush_interval=0.1)
    with mlobs.run("r"):
        mlobs.log(loss=1.0)
        assert _wait_for(lambda: metric_values(spool_dir, "loss") == [1.0], timeout=2)


def test_flush_on_size_before_the_interval(spool_dir: Path) -> None:
    mlobs.configure(dir=str(spool_dir), flush_interval=3600, flush_max_records=100)
    with mlobs.run("r"):
        for i in range(250):
            mlobs.log(x=float(i))
        assert _wait_for(lambda: len(metric_values(spool_dir, "x")) >= 100, timeout=5)


def test_flush_at_epoch_end(spool_dir: Path) -> None:
    mlobs.configure(dir=str(spool_dir), flush_interval=3600)
    with mlobs.run("r"):
        with mlobs.epoch(0):
            mlobs.log(loss=0.5)
        assert _wait_for(lambda: metric_values(spool_dir, "loss") == [0.5], timeout=5)


def test_flush_at_exit_of_a_process_that_never_flushes(spool_dir: Path) -> None:
    proc = _run_python(
        """
        import mlobs
        with mlobs.run("exit"):
            for i in range(1000):
                mlobs.log(v=float(i))
        mlobs.log(after=1.0)
        """,
        {"MLOBS_DIR": str(spool_dir), "MLOBS_FLUSH_INTERVAL": "3600"},
    )
    assert proc.wait(60) == 0, proc.stderr.read() if proc.stderr else ""
    assert metric_values(spool_dir, "v") == [float(i) for i in range(1000)]
    assert metric_values(spool_dir, "after") == [1.0]


def test_sigkill_loses_at_most_the_last_flush_interval(spool_dir: Path) -> None:
    interval = 0.2
    proc = _run_python(
        """
        import sys, time, mlobs
        with mlobs.run("killed"):
            i = 0
            while True:
                mlobs.log(i=float(i))
                if i % 50 == 0:
                    print(i, time.time_ns(), flush=True)
                i += 1
                time.sleep(0.0005)
        """,
        {"MLOBS_DIR": str(spool_dir), "MLOBS_FLUSH_INTERVAL": str(interval)},
    )
    assert proc.stdout is not None
    seen: list[tuple[int, int]] = []
    started = time.monotonic()
    for line in proc.stdout:
        index, ts = map(int, line.split())
        seen.append((index, ts))
        if time.monotonic() - started > 2.0:
            break
    killed_at = time.time_ns()
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert proc.returncode == -signal.SIGKILL

    values = metric_values(spool_dir, "i")
    assert values == [float(i) for i in range(len(values))], "the spool has a gap"
    # Everything logged more than one interval (plus scheduling slack) before the kill survived.
    slack_ns = int((interval + 0.3) * 1e9)
    must_have = max(i for i, ts in seen if ts < killed_at - slack_ns)
    assert len(values) > must_have
    print(f"SIGKILL: {len(values)} points survived, last reported before the kill: {seen[-1][0]}")


def test_threads_logging_at_once_lose_nothing(sink: InMemoryExporter) -> None:
    threads, per_thread = 8, 5_000
    barrier = threading.Barrier(threads)

    def work(k: int) -> None:
        barrier.wait()
        for i in range(per_thread):
            mlobs.log(value=float(i), split=f"t{k}")

    with mlobs.run("threads"):
        pool = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
    assert mlobs.flush()
    points = sink.metrics("value")
    assert len(points) == threads * per_thread
    # Threads do not inherit the context; they fall back to the run that is active.
    assert {p.run_id for p in points} == {next(iter(sink.runs))}
    for k in range(threads):
        mine = [p.value for p in points if p.attrs["split"] == f"t{k}"]
        assert mine == [float(i) for i in range(per_thread)]  # per-thread order preserved


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_gives_the_child_its_own_spool_and_no_duplicates(spool_dir: Path) -> None:
    mlobs.configure(dir=str(spool_dir), flush_interval=3600)
    with mlobs.run("parent"):
        mlobs.log(before_fork=1.0)  # buffered, not yet flushed, at fork time
        pid = os.fork()
        if pid == 0:  # child: record, flush, leave without running the parent's atexit
            code = 0
            try:
                for i in range(100):
                    mlobs.log(child=float(i))
                mlobs.flush()
            except BaseException:
                code = 1
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        mlobs.log(after_fork=1.0)
    mlobs.flush()
    assert len(spool_files(spool_dir)) == 2
    assert metric_values(spool_dir, "before_fork") == [1.0]
    assert metric_values(spool_dir, "after_fork") == [1.0]
    assert metric_values(spool_dir, "child") == [float(i) for i in range(100)]


def test_several_processes_record_into_one_directory(spool_dir: Path) -> None:
    code = """
        import os, mlobs
        with mlobs.run("rank", run_id="shared-run"):
            for i in range(2000):
                mlobs.log(v=float(i), step=i)
    """
    procs = [
        _run_python(
            code,
            {
                "MLOBS_DIR": str(spool_dir),
                "RANK": str(r),
                "WORLD_SIZE": "3",
                "MLOBS_LOG_ALL_RANKS": "1",
                "MLOBS_FLUSH_INTERVAL": "0.05",
            },
        )
        for r in range(3)
    ]
    for p in procs:
        assert p.wait(60) == 0, p.stderr.read() if p.stderr else ""
    files = spool_files(spool_dir)
    assert len(files) == 3
    points = [r for r in read_all(spool_dir, Kind.GAUGE) if r.name == "v"]
    assert len(points) == 3 * 2000
    assert {p.run_id for p in points} == {"shared-run"}


def test_disk_budget_drops_oldest_first_and_counts(spool_dir: Path) -> None:
    budget = 400_000
    mlobs.configure(dir=str(spool_dir), spool_max_bytes=budget, flush_interval=3600)
    rt = runtime.get()
    total = 30_000
    with mlobs.run("budget"):
        for i in range(total):
            mlobs.log(x=float(i))
            if i % 2000 == 1999:
                rt.flush_spool()
    mlobs.flush()
    values = metric_values(spool_dir, "x")
    dropped = safety.self_metrics.get(safety.RECORDS_DROPPED, "disk_budget")
    assert dropped > 0
    assert rt.spool.live_bytes() <= budget
    assert values[-1] == float(total - 1)  # the newest survive
    assert values == [float(i) for i in range(int(values[0]), total)]  # oldest went first
    (path,) = spool_files(spool_dir)
    reader = SpoolReader.open(path)
    assert int(reader.meta()["dropped"]) == dropped  # the file itself remembers what it lost
    reader.close()


def test_sink_cursor_advances_only_on_success_and_keeps_order(spool_dir: Path) -> None:
    flaky = InMemoryExporter("flaky")
    flaky.fail_next = 3
    mlobs.configure(dir=str(spool_dir), exporters=[flaky], flush_interval=0.05)
    with mlobs.run("r"):
        for i in range(500):
            mlobs.log(v=float(i))
    deadline = time.monotonic() + 30
    while not mlobs.flush(timeout=1) and time.monotonic() < deadline:
        pass
    assert flaky.values("v") == [float(i) for i in range(500)]  # exactly once, in order
    assert flaky.calls > 3
    (path,) = spool_files(spool_dir)
    reader = SpoolReader.open(path)
    assert reader.cursor("flaky") == reader.last_seq()
    reader.close()


def test_batches_that_end_inside_a_chunk_read_every_record_once(spool_dir: Path) -> None:
    mlobs.configure(dir=str(spool_dir), flush_max_records=1_000)
    with mlobs.run("chunks"):
        for i in range(5_000):
            mlobs.log(x=float(i))
            if i % 1_300 == 0:
                mlobs.flush()  # chunks of uneven sizes
    mlobs.shutdown()
    (path,) = spool_files(spool_dir)
    reader = SpoolReader.open(path)
    try:
        expected = list(reader.iter_records())
        batches, cursor = [], 0
        while batch := reader.records_after(cursor, 777):  # never a chunk boundary
            batches.extend(batch)
            cursor = batch[-1].seq
        assert batches == expected
        assert reader.records_after(10, 5) == expected[10:15]  # going back reads the file again
    finally:
        reader.close()


def test_a_chunk_holds_the_records_as_buffered_and_older_chunks_still_read() -> None:
    shared = {"split": "val"}
    gauges = [
        (int(Kind.GAUGE), 10, "r1", "loss", 0.5, 1, 0, shared),
        (int(Kind.GAUGE), 11, "r1", "loss", float("nan"), 2, 0, shared),
        (int(Kind.GAUGE), 12, "r1", "loss", -0.0, 3, 0, shared),
        (int(Kind.GAUGE), 13, "r1", "loss", 0.0, 4, 0, None),
    ]
    records = decode_chunk(7, codec.encode(Columns.of(gauges), -5))
    assert [r.seq for r in records] == [7, 8, 9, 10]
    assert records[0] == (7, Kind.GAUGE, 10, "r1", "loss", 0.5, 1, 0, shared)
    assert records[0].attrs is records[1].attrs  # shared when recorded, shared again
    assert records[3].attrs == {}
    nan, negative_zero = records[1].value, records[2].value
    assert nan is not None and math.isnan(nan)
    assert negative_zero is not None and math.copysign(1, negative_zero) == -1  # not 0.0
    assert decode_chunk(7, codec.encode(Columns.of(gauges), -5), after=8)[0].seq == 9
    mixed = [
        (int(Kind.GAUGE), 1.5, "r1", "loss", 0.5, 1, 0, None),  # a monotonic stamp, in seconds
        (int(Kind.LOG), 12, "", "app", 20.0, None, None, {"message": "hi", "obj": object()}),
        (int(Kind.SPAN), 14, "r2", "step", 0.1, None, None, {"span_id": 255, "status": "ok"}),
    ]
    log, span = decode_chunk(1, codec.encode(Columns.of(mixed), 1000))[1:]
    assert decode_chunk(1, codec.encode(Columns.of(mixed), 1000))[0].ts_ns == 1_500_001_000
    assert log.attrs["message"] == "hi" and log.attrs["obj"].startswith("<object")  # as a string
    assert span.attrs == {"span_id": "00000000000000ff", "status": "ok"} and span.ts_ns == 14
    # the layout of chunks written before records were buffered as columns: a list of tuples
    old = codec.MAGIC_TUPLES + marshal.dumps(gauges[:1] * 2, codec.MARSHAL_VERSION)
    assert [tuple(r) for r in decode_chunk(1, old)] == [(1, *gauges[0]), (2, *gauges[0])]
    with pytest.raises(ValueError, match="not an mlobs spool chunk"):
        decode_chunk(1, b"JUNK" + marshal.dumps([], 4))


def test_monotonic_stamps_of_mlobs_log_read_back_as_wall_clock_nanoseconds(
    spool_dir: Path,
) -> None:
    mlobs.configure(dir=str(spool_dir))
    with mlobs.run("clock") as run:
        before = time.time_ns()
        mlobs.log(loss=1.0)
        after = time.time_ns()
        mlobs.log_labeled("drift", 0.5, {"feature": "f0"})  # stamped with time_ns()
    mlobs.shutdown()
    (loss,) = [r for r in read_all(spool_dir) if r.name == "loss"]
    (drift,) = [r for r in read_all(spool_dir) if r.name == "drift"]
    assert type(loss.ts_ns) is int and type(drift.ts_ns) is int
    # the two clocks are read a few microseconds apart when the chunk is written
    assert before - 1_000_000 <= loss.ts_ns <= after + 1_000_000, (before, loss.ts_ns, after)
    assert loss.ts_ns <= drift.ts_ns + 1_000_000
    assert loss.run_id == run.run_id and loss.seq < drift.seq


def test_a_batch_of_uneven_columns_is_refused_not_written(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool-x.db")
    flat = [int(Kind.GAUGE), 10, "r1", "loss", 0.5, 1, None, None] * 2
    try:
        with pytest.raises(ValueError, match="unequal lengths"):
            spool.write(Columns.from_flat(flat[:-1], 0, len(flat) - 1))  # a 7-field record
        spool.write(Columns.from_flat(flat, 0, len(flat)))
    finally:
        spool.close()
    assert [r.seq for r in read_all(tmp_path)] == [1, 2]


def test_a_column_of_equal_values_is_stored_once() -> None:
    def gauges(run_id: Callable[[int], str]) -> Columns:
        g = int(Kind.GAUGE)
        records = [(g, 100.0 + i, run_id(i), "loss", i * 0.5, i, 3, None) for i in range(1000)]
        return Columns.of(records)

    same = codec.encode(gauges(lambda i: "r" * 32), 0)
    varying = codec.encode(gauges(lambda i: f"{i:032d}"), 0)
    # a float stamp and value take 9 bytes each, a step 5: 23 per record, the rest once per chunk
    assert len(same) < 1000 * 25
    assert len(varying) > len(same) + 1000 * 32
    last = decode_chunk(1, same)[999]
    assert last[2:] == (1099 * 10**9, "r" * 32, "loss", 499.5, 999, 3, {})
    assert decode_chunk(1, varying)[999].run_id == f"{999:032d}"
