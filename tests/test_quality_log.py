"""Quality reports and feature importance recorded as labeled metric points."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import mlobs
from mlobs import safety
from mlobs.quality import (
    classification_quality,
    log_feature_importance,
    log_quality,
    regression_quality,
)
from mlobs.quality.log import MAX_CONFUSION_CLASSES
from mlobs.testing import InMemoryExporter


@pytest.fixture
def mem(tmp_path: Path) -> Iterator[InMemoryExporter]:
    sink = InMemoryExporter()
    mlobs.configure(dir=str(tmp_path / "spool"), exporters=[sink], strict=True)
    yield sink


def _by_class(mem: InMemoryExporter, name: str) -> dict[str, float | None]:
    return {r.attrs["class"]: r.value for r in mem.metrics(name)}


def test_classification_report_is_logged_with_class_labels(mem: InMemoryExporter) -> None:
    report = classification_quality(
        ["cat", "cat", "dog", "dog", "dog"],
        ["cat", "dog", "dog", "dog", "cat"],
        y_score=[0.3, 0.6, 0.9, 0.8, 0.4],
    )
    with mlobs.run("eval"):
        log_quality(report, epoch=3, labels={"split": "val"})
    mlobs.flush()

    assert mem.values("quality_accuracy") == [pytest.approx(0.6)]
    assert mem.values("quality_samples") == [5.0]
    assert _by_class(mem, "quality_f1") == {"cat": 0.5, "dog": pytest.approx(2 / 3)}
    assert _by_class(mem, "quality_precision") == {"cat": 0.5, "dog": pytest.approx(2 / 3)}
    assert _by_class(mem, "quality_recall") == {"cat": 0.5, "dog": pytest.approx(2 / 3)}
    assert _by_class(mem, "quality_support") == {"cat": 2.0, "dog": 3.0}
    for name in ("quality_precision_macro", "quality_recall_macro", "quality_f1_macro"):
        assert mem.values(name) == [pytest.approx(7 / 12)]
    assert mem.values("quality_f1_weighted") == [pytest.approx(0.6)]
    assert mem.values("quality_roc_auc") == [pytest.approx(report.roc_auc)]
    assert mem.values("quality_ece") == [pytest.approx(report.ece)]
    confusion = {
        (r.attrs["actual"], r.attrs["predicted"]): r.value for r in mem.metrics("quality_confusion")
    }
    assert confusion == {("cat", "cat"): 1, ("cat", "dog"): 1, ("dog", "cat"): 1, ("dog", "dog"): 2}
    f1 = mem.metrics("quality_f1")[0]
    assert f1.attrs["split"] == "val"
    assert f1.epoch == 3
    assert f1.run_id == next(iter(mem.runs))


def test_values_that_are_none_are_not_logged(mem: InMemoryExporter) -> None:
    with mlobs.run("eval"):
        log_quality(classification_quality([0, 1], [0, 1]))
        log_quality(classification_quality([], []), prefix="empty")
    mlobs.flush()
    assert mem.values("quality_accuracy") == [1.0]
    assert mem.metrics("quality_roc_auc") == [] and mem.metrics("quality_ece") == []
    assert mem.values("empty_samples") == [0.0]
    assert mem.metrics("empty_accuracy") == [] and mem.metrics("empty_f1") == []


def test_regression_report_is_logged(mem: InMemoryExporter) -> None:
    with mlobs.run("eval"):
        log_quality(
            regression_quality([1, 2, 3, 4], [1.5, 2, 2, 5]), step=7, labels={"model_version": 3}
        )
        log_quality(regression_quality([2, 2], [1, 3]), prefix="const")
    mlobs.flush()
    assert mem.values("quality_mae") == [pytest.approx(0.625)]
    assert mem.values("quality_rmse") == [pytest.approx(0.75)]
    assert mem.values("quality_mape") == [pytest.approx((0.5 + 1 / 3 + 1 / 4) / 4)]
    assert mem.values("quality_r2") == [pytest.approx(0.55)]
    assert mem.values("quality_samples") == [4.0]
    mae = mem.metrics("quality_mae")[0]
    assert mae.step == 7 and mae.attrs == {"model_version": "3"}
    assert mem.metrics("const_r2") == []
    assert mem.values("const_mae") == [1.0]


def test_confusion_matrix_is_skipped_past_the_class_limit(
    mem: InMemoryExporter, caplog: pytest.LogCaptureFixture
) -> None:
    k = MAX_CONFUSION_CLASSES + 1
    labels = np.arange(k)
    report = classification_quality(labels, labels)
    with mlobs.run("eval"):
        log_quality(report)
    mlobs.flush()
    assert mem.metrics("quality_confusion") == []
    assert len(mem.metrics("quality_f1")) == k
    assert any("confusion matrix is not recorded" in m for m in caplog.messages)


def test_feature_importance_from_a_mapping_or_names_and_values(mem: InMemoryExporter) -> None:
    with mlobs.run("train"):
        log_feature_importance({"age": 0.7, "income": 0.3})
        log_feature_importance(
            (np.array(["a", "b"]), np.array([0.25, 0.75])), prefix="gbm", labels={"fold": 1}
        )
    mlobs.flush()
    values = {r.attrs["feature"]: r.value for r in mem.metrics("quality_feature_importance")}
    assert values == {"age": 0.7, "income": 0.3}
    gbm = mem.metrics("gbm_feature_importance")
    assert {r.attrs["feature"]: r.value for r in gbm} == {"a": 0.25, "b": 0.75}
    assert all(r.attrs["fold"] == "1" for r in gbm)


def test_logging_never_raises_outside_strict_mode(tmp_path: Path) -> None:
    mlobs.configure(dir=str(tmp_path / "spool"), exporters=[InMemoryExporter()])
    log_quality("not a report")  # type: ignore[arg-type]
    log_feature_importance((["a", "b"], [1.0]))
    assert safety.self_metrics.get(safety.INTERNAL_ERRORS, "log_quality") == 1
    assert safety.self_metrics.get(safety.INTERNAL_ERRORS, "log_feature_importance") == 1


def test_strict_mode_raises(mem: InMemoryExporter) -> None:
    with pytest.raises(safety.MlobsError):
        log_quality(object())  # type: ignore[arg-type]
