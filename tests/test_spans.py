"""Spans of runs, epochs and steps: kinds, one trace per run, parentage, errors, retries, the
OpenTelemetry context, and the per-epoch duration and throughput metrics."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider

import mlobs
from mlobs.export.memory import InMemoryExporter
from mlobs.record.types import Record
from mlobs.testing import recording


@pytest.fixture(autouse=True)
def _no_git(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOBS_GIT", "0")  # conftest's isolation does the rest


def _of_kind(sink: InMemoryExporter, kind: str) -> list[Record]:
    return sorted((s for s in sink.spans() if s.attrs["span_kind"] == kind), key=lambda s: s.ts_ns)


def _one(sink: InMemoryExporter, name: str) -> Record:
    (span,) = sink.spans(name)
    return span


def test_run_epoch_and_step_spans_share_one_trace_and_nest(tmp_path: Path) -> None:
    @mlobs.step
    def forward() -> int:
        return 1

    with recording(dir=tmp_path) as sink, mlobs.run("train") as run:
        with mlobs.epoch(), mlobs.step("outer"), mlobs.step("inner"):
            pass
        with mlobs.epoch():
            forward()
    (run_span,) = _of_kind(sink, "run")
    epochs = _of_kind(sink, "epoch")
    steps = _of_kind(sink, "step")
    assert [e.name for e in epochs] == ["epoch 0", "epoch 1"]
    assert sorted(s.name for s in steps) == ["forward", "inner", "outer"]
    spans = [run_span, *epochs, *steps]
    assert {s.attrs["trace_id"] for s in spans} == {run_span.attrs["trace_id"]}
    assert len({s.attrs["span_id"] for s in spans}) == len(spans)
    assert {s.run_id for s in spans} == {run.run_id}
    assert "parent_span_id" not in run_span.attrs
    assert all(s.attrs["status"] == "ok" for s in spans)

    def parent(span: Record) -> str:
        return str(span.attrs["parent_span_id"])

    assert [parent(e) for e in epochs] == [run_span.attrs["span_id"]] * 2
    assert parent(_one(sink, "outer")) == epochs[0].attrs["span_id"]
    assert parent(_one(sink, "inner")) == _one(sink, "outer").attrs["span_id"]
    assert parent(_one(sink, "forward")) == epochs[1].attrs["span_id"]
    assert _one(sink, "outer").epoch == 0 and _one(sink, "forward").epoch == 1


def test_each_run_has_its_own_trace(tmp_path: Path) -> None:
    with recording(dir=tmp_path) as sink:
        for name in ("a", "b"):
            with mlobs.run(name), mlobs.step("s"):
                pass
    traces = {s.run_id: s.attrs["trace_id"] for s in _of_kind(sink, "run")}
    assert len(traces) == 2 and len(set(traces.values())) == 2
    for step in sink.spans("s"):
        assert step.attrs["trace_id"] == traces[step.run_id]


def test_failing_step_records_error_and_reraises_the_same_exception(tmp_path: Path) -> None:
    error = ValueError("bad batch 17")

    @mlobs.step
    def forward() -> None:
        raise error

    with recording(dir=tmp_path) as sink:
        with pytest.raises(ValueError) as decorated, mlobs.run("r"):
            forward()
        with pytest.raises(ValueError) as managed, mlobs.run("r"), mlobs.step("manual"):
            raise error
    assert decorated.value is error and managed.value is error
    for name in ("forward", "manual"):
        span = _one(sink, name)
        assert span.attrs["status"] == "error"
        assert span.attrs["error_type"] == "ValueError"
        assert "bad batch 17" in span.attrs["error"]
    # The exception also ends the enclosing run span in error.
    assert [s.attrs["status"] for s in _of_kind(sink, "run")] == ["error", "error"]


def test_retried_step_records_each_attempt_and_returns_the_value(tmp_path: Path) -> None:
    calls: list[int] = []

    @mlobs.step(retries=2)
    def fetch() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("transient")
        return "payload"

    with recording(dir=tmp_path) as sink, mlobs.run("r"):
        assert fetch() == "payload"
    assert len(calls) == 2
    first, second = sorted(sink.spans("fetch"), key=lambda s: s.ts_ns)
    assert first.attrs["status"] == "error" and first.attrs["error_type"] == "ConnectionError"
    assert (first.attrs["attempt"], first.attrs["retried"]) == (1, True)
    assert second.attrs["status"] == "ok"
    assert (second.attrs["attempt"], second.attrs["retried"]) == (2, False)
    assert first.attrs["span_id"] != second.attrs["span_id"]
    assert first.attrs["parent_span_id"] == second.attrs["parent_span_id"]


def test_retries_exhausted_raise_the_last_exception(tmp_path: Path) -> None:
    errors = [OSError(f"attempt {i}") for i in range(1, 4)]
    pending = list(errors)

    @mlobs.step(retries=2)
    def always_fails() -> None:
        raise pending.pop(0)

    @mlobs.step(retries=3, retry_on=(OSError,))
    def wrong_kind() -> None:
        raise KeyError("not retried")

    with recording(dir=tmp_path) as sink, mlobs.run("r"):
        with pytest.raises(OSError) as last:
            always_fails()
        with pytest.raises(KeyError):
            wrong_kind()
    assert last.value is errors[-1] and not pending
    attempts = sorted(sink.spans("always_fails"), key=lambda s: s.ts_ns)
    assert [a.attrs["attempt"] for a in attempts] == [1, 2, 3]
    assert [a.attrs["retried"] for a in attempts] == [True, True, False]
    assert len(sink.spans("wrong_kind")) == 1


def test_users_own_otel_spans_join_the_run_trace(tmp_path: Path) -> None:
    tracer = TracerProvider().get_tracer("user-code")
    with recording(dir=tmp_path) as sink, mlobs.run("otel"):
        with tracer.start_as_current_span("download") as in_run:
            pass
        with mlobs.epoch(0), tracer.start_as_current_span("eval-call") as in_epoch:
            pass
    (run_span,) = _of_kind(sink, "run")
    (epoch_span,) = _of_kind(sink, "epoch")
    for user_span, parent in ((in_run, run_span), (in_epoch, epoch_span)):
        ctx = user_span.get_span_context()
        assert format(ctx.trace_id, "032x") == run_span.attrs["trace_id"]
        assert user_span.parent is not None
        assert format(user_span.parent.span_id, "016x") == parent.attrs["span_id"]
    # Outside the run the OpenTelemetry context is back to what it was.
    with tracer.start_as_current_span("after") as after:
        assert after.parent is None


def test_decorators_keep_function_metadata() -> None:
    def train_fn(x: int) -> int:
        """Train for one go."""
        return x

    for decorator in (
        mlobs.step,
        mlobs.step("named", retries=1),
        mlobs.run,
        mlobs.run("named-run"),
        mlobs.epoch(),
    ):
        wrapped = decorator(train_fn)
        assert wrapped.__name__ == "train_fn"
        assert wrapped.__doc__ == "Train for one go."
        assert wrapped.__wrapped__ is train_fn  # type: ignore[attr-defined]


def test_epochs_without_a_number_count_from_zero(tmp_path: Path) -> None:
    @mlobs.epoch()
    def one_epoch() -> None:
        mlobs.log(loss=1.0)

    with recording(dir=tmp_path) as sink, mlobs.run("numbering"):
        for _ in range(3):
            with mlobs.epoch():
                mlobs.log(loss=1.0)
        with mlobs.epoch(10):
            pass
        with mlobs.epoch() as after_ten:
            pass
        one_epoch()
        mlobs.log(loss=2.0)
    assert after_ten.n == 11
    assert [s.name for s in _of_kind(sink, "epoch")] == [
        f"epoch {n}" for n in (0, 1, 2, 10, 11, 12)
    ]
    assert [r.epoch for r in sink.metrics("loss")] == [0, 1, 2, 12, None]
    assert [r.epoch for r in sink.metrics("epoch_duration_seconds")] == [0, 1, 2, 10, 11, 12]


def test_epoch_duration_and_throughput(tmp_path: Path) -> None:
    pause = 0.05
    with recording(dir=tmp_path) as sink, mlobs.run("timing"):
        with mlobs.epoch(samples=1000) as first:
            time.sleep(pause)
        with mlobs.epoch() as second:
            for _ in range(4):
                second.add_samples(250)
            time.sleep(pause)
        with mlobs.epoch():
            pass
    durations = {r.epoch: r.value for r in sink.metrics("epoch_duration_seconds")}
    rates = {r.epoch: r.value for r in sink.metrics("epoch_samples_per_second")}
    assert set(durations) == {0, 1, 2}
    assert set(rates) == {0, 1}  # no samples counted in epoch 2: no throughput point
    assert durations[0] == first.duration_s and durations[1] == second.duration_s
    for n in (0, 1):
        duration, rate = durations[n], rates[n]
        assert duration is not None and rate is not None
        assert pause <= duration < pause + 5.0
        assert rate == pytest.approx(1000 / duration)
        assert rate <= 1000 / pause
    assert durations[2] is not None and 0 <= durations[2] < pause
