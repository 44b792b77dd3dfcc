"""Late ground truth: joining by prediction id, windows by count and time, ttl and size bounds."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import mlobs
from mlobs import safety
from mlobs.quality import ClassificationQuality, LateLabels, RegressionQuality
from mlobs.testing import InMemoryExporter
from tests.clock import FakeClock


@pytest.fixture
def mem(tmp_path: Path) -> Iterator[InMemoryExporter]:
    sink = InMemoryExporter()
    mlobs.configure(dir=str(tmp_path / "spool"), exporters=[sink], strict=True)
    yield sink


def _unjoined_drops() -> int:
    return safety.self_metrics.get(safety.RECORDS_DROPPED, "quality_unjoined")


def test_labels_after_predictions_close_a_window(mem: InMemoryExporter) -> None:
    late = LateLabels(window=4, labels={"model_version": "3"})
    with mlobs.run("serve"):
        for i, (pred, score) in enumerate([(1, 0.9), (0, 0.2), (1, 0.7), (0, 0.4)]):
            assert late.predicted(f"req-{i}", pred, score) is None
        assert late.pending_predictions == 4
        assert late.observed("req-0", 1) is None
        assert late.observed("req-1", 0) is None
        assert late.observed("req-2", 0) is None
        report = late.observed("req-3", 0)
    mlobs.flush()

    assert isinstance(report, ClassificationQuality)
    assert report.n == 4
    assert report.accuracy == pytest.approx(3 / 4)
    assert report.roc_auc == pytest.approx(1.0)
    assert late.pending_predictions == 0 and late.joined == 0 and late.windows == 1
    accuracy = mem.metrics("quality_accuracy")
    assert [r.value for r in accuracy] == [pytest.approx(0.75)]
    assert accuracy[0].attrs == {"model_version": "3"} and accuracy[0].step == 0
    assert {r.attrs["class"] for r in mem.metrics("quality_f1")} == {"0", "1"}


def test_labels_before_predictions_are_kept_pending() -> None:
    late = LateLabels(window=2)
    assert late.observed("a", "spam") is None
    assert late.observed("b", "ham") is None
    assert late.pending_labels == 2 and late.pending_predictions == 0
    assert late.predicted("b", "ham") is None
    report = late.predicted("a", "ham")
    assert isinstance(report, ClassificationQuality)
    assert report.labels == ("ham", "spam")
    assert report.accuracy == 0.5
    assert late.pending_labels == 0


def test_unmatched_ids_do_not_join() -> None:
    late = LateLabels(window=1)
    late.predicted(1, "x")
    assert late.observed(2, "x") is None
    assert late.pending_predictions == 1 and late.pending_labels == 1
    report = late.observed(1, "x")
    assert report is not None and report.n == 1


def test_repeated_id_keeps_the_latest_value() -> None:
    late = LateLabels(window=1)
    late.predicted("r", 0)
    late.predicted("r", 1)
    assert late.pending_predictions == 1
    report = late.observed("r", 1)
    assert isinstance(report, ClassificationQuality) and report.accuracy == 1.0


def test_windows_follow_each_other(mem: InMemoryExporter) -> None:
    late = LateLabels("regression", window=2)
    reports = []
    with mlobs.run("serve"):
        for i, (pred, true) in enumerate([(1.0, 1.0), (2.0, 3.0), (5.0, 4.0), (0.0, 2.0)]):
            late.predicted(i, pred)
            reports.append(late.observed(i, true))
    mlobs.flush()
    closed = [r for r in reports if r is not None]
    assert all(isinstance(r, RegressionQuality) for r in closed)
    assert [r.mae for r in closed if isinstance(r, RegressionQuality)] == [0.5, 1.5]
    assert [(r.step, r.value) for r in mem.metrics("quality_mae")] == [(0, 0.5), (1, 1.5)]


def test_window_seconds_closes_a_window_by_time(clock: FakeClock) -> None:
    late = LateLabels(window=None, window_seconds=60, clock=clock)
    late.predicted(1, 1)
    assert late.observed(1, 1) is None  # the window starts at its first join
    clock.now += 30
    late.predicted(2, 0)
    assert late.observed(2, 1) is None
    clock.now += 30
    report = late.predicted(3, 1)  # any call notices the time is up
    assert isinstance(report, ClassificationQuality)
    assert report.n == 2 and report.accuracy == 0.5
    assert late.joined == 0
    assert late.pending_predictions == 1


def test_count_or_time_whichever_comes_first(clock: FakeClock) -> None:
    late = LateLabels(window=3, window_seconds=60, clock=clock)
    for i in range(3):
        late.predicted(i, 0)
        report = late.observed(i, 0)
    assert report is not None and report.n == 3
    late.predicted(9, 0)
    late.observed(9, 0)
    clock.now += 61
    report = late.flush()
    assert report is not None and report.n == 1


def test_ttl_drops_old_entries_and_counts_them(clock: FakeClock) -> None:
    late = LateLabels(window=10, ttl_seconds=100, clock=clock)
    late.predicted("old", 1)
    late.observed("early-label", 0)
    clock.now += 50
    late.predicted("newer", 1)
    clock.now += 51  # "old" and "early-label" are 101 s old now
    assert late.observed("old", 1) is None
    assert late.dropped == 2
    assert _unjoined_drops() == 2
    assert late.pending_predictions == 1  # "newer"
    assert late.pending_labels == 1  # the label of "old", waiting in vain
    assert late.joined == 0


def test_max_pending_drops_the_oldest_first() -> None:
    late = LateLabels(window=10, max_pending=3)
    late.predicted("p1", 1)
    late.observed("t1", 1)
    late.predicted("p2", 1)
    late.observed("t2", 1)  # four pending: "p1", the oldest, goes
    assert late.dropped == 1 and _unjoined_drops() == 1
    assert late.pending_predictions == 1 and late.pending_labels == 2
    late.predicted("p3", 1)  # now "t1" is the oldest
    assert late.dropped == 2
    assert late.pending_predictions == 2 and late.pending_labels == 1  # p2, p3; t2
    late.observed("p3", 1)
    late.predicted("t2", 1)
    assert late.joined == 2
    report = late.flush()
    assert report is not None and report.n == 2


def test_flush_evaluates_what_is_joined(mem: InMemoryExporter) -> None:
    late = LateLabels(window=100)
    assert late.flush() is None
    with mlobs.run("serve"):
        late.predicted(1, "a")
        late.predicted(2, "b")
        late.observed(1, "a")
        report = late.flush()
        assert late.flush() is None
    mlobs.flush()
    assert report is not None and report.n == 1
    assert late.pending_predictions == 1  # 2 still waits for its label
    assert mem.values("quality_samples") == [1.0]


def test_missing_scores_give_no_roc_auc() -> None:
    late = LateLabels(window=3)
    late.predicted(1, 1, 0.9)
    late.predicted(2, 0)
    late.predicted(3, 0, 0.1)
    late.observed(1, 1)
    late.observed(2, 0)
    report = late.observed(3, 1)
    assert isinstance(report, ClassificationQuality)
    assert report.roc_auc is None and report.ece is None
    assert any("1 of 3 predictions had no score" in s for s in report.reasons)


def test_classes_fix_the_label_order() -> None:
    late = LateLabels(window=2, classes=["pos", "neg"])
    late.predicted(1, "pos", 0.8)
    late.predicted(2, "neg", 0.1)
    late.observed(1, "pos")
    report = late.observed(2, "neg")
    assert isinstance(report, ClassificationQuality)
    assert report.labels == ("pos", "neg")
    assert report.roc_auc == 0.0  # the 1-D score is read as the score of labels[1], "neg"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"task": "ranking"},
        {"window": None},
        {"window": 0},
        {"window_seconds": -1},
        {"max_pending": 0},
    ],
)
def test_bad_settings_fail_at_construction(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        LateLabels(**kwargs)  # type: ignore[arg-type]


def test_unhashable_id_is_reported_not_raised() -> None:
    late = LateLabels(window=1)
    assert late.predicted(["not", "hashable"], 1) is None  # type: ignore[arg-type]
    assert safety.self_metrics.get(safety.INTERNAL_ERRORS, "late_labels") == 1


def test_concurrent_callers_join_every_pair_once() -> None:
    late = LateLabels(window=50)
    reports: list[ClassificationQuality | RegressionQuality] = []
    reports_lock = threading.Lock()
    per_thread = 500

    def worker(t: int, side: str) -> None:
        for i in range(per_thread):
            key = (t, i)
            out = late.predicted(key, i % 2) if side == "p" else late.observed(key, i % 3 % 2)
            if out is not None:
                with reports_lock:
                    reports.append(out)

    threads = [threading.Thread(target=worker, args=(t, side)) for t in range(2) for side in "pl"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    last = late.flush()
    if last is not None:
        reports.append(last)
    assert sum(r.n for r in reports) == 2 * per_thread
    assert late.windows == len(reports)
    assert late.pending_predictions == late.pending_labels == late.dropped == 0
