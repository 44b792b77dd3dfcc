"""Classification KPIs: hand-computed answers on tiny arrays, scikit-learn on random data, and
the edge cases that must give a report rather than an exception."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mlobs.quality import ClassificationQuality, ClassScores, classification_quality


def test_binary_known_answers() -> None:
    r = classification_quality([0, 0, 1, 1, 1], [0, 1, 1, 1, 0])
    assert r.n == 5
    assert r.labels == (0, 1)
    assert r.confusion == ((1, 1), (1, 2))
    assert r.accuracy == pytest.approx(3 / 5)
    assert r.per_class[0] == pytest.approx(ClassScores(0.5, 0.5, 0.5, 2))
    assert r.per_class[1] == pytest.approx(ClassScores(2 / 3, 2 / 3, 2 / 3, 3))
    assert r.per_class[1].support == 3
    assert r.precision_macro == pytest.approx((0.5 + 2 / 3) / 2)
    assert r.recall_macro == pytest.approx((0.5 + 2 / 3) / 2)
    assert r.f1_macro == pytest.approx(7 / 12)
    assert r.f1_weighted == pytest.approx((2 * 0.5 + 3 * 2 / 3) / 5)
    assert r.roc_auc is None and r.ece is None
    assert r.reasons == []


def test_roc_auc_counts_ties_as_half() -> None:
    # positives score 0.35, 0.8, 0.4; negatives 0.1, 0.4: 1 + 2 + 1.5 of 6 pairs won
    y_true = [0, 0, 1, 1, 1]
    scores = [0.1, 0.4, 0.35, 0.8, 0.4]
    r = classification_quality(y_true, [0, 0, 0, 1, 0], y_score=scores)
    assert r.roc_auc == pytest.approx(4.5 / 6)
    two_columns = [[1 - s, s] for s in scores]
    assert classification_quality(y_true, [0] * 5, y_score=two_columns).roc_auc == r.roc_auc


def test_multiclass_roc_auc_is_the_one_vs_rest_macro_mean() -> None:
    y_true = [0, 1, 2, 0, 1, 2]
    scores = np.array(
        [
            [0.7, 0.2, 0.1],
            [0.3, 0.4, 0.3],
            [0.2, 0.5, 0.3],
            [0.5, 0.1, 0.4],
            [0.1, 0.8, 0.1],
            [0.3, 0.3, 0.4],
        ]
    )
    r = classification_quality(y_true, scores.argmax(axis=1), y_score=scores)
    # class 0: positives 0.7, 0.5 beat all four negatives (0.3, 0.2, 0.1, 0.3): 1.0
    # class 1: positives 0.4, 0.8 against 0.2, 0.5, 0.1, 0.3: 3 + 4 of 8
    # class 2: positives 0.3, 0.4 against 0.1, 0.3, 0.4, 0.1: 2.5 + 3.5 of 8
    assert r.roc_auc == pytest.approx((1.0 + 7 / 8 + 6 / 8) / 3)


def test_ece_binary_from_positive_scores() -> None:
    # predicted-class confidence 0.9, 0.8, 0.7, 0.65 -> bins (0.8, 0.9], (0.7, 0.8], (0.6, 0.7] x2
    # right: yes, no, no, yes -> (|1 - 0.9| + |0 - 0.8| + 2 * |0.5 - 0.675|) / 4
    p = [0.9, 0.8, 0.3, 0.65]
    r = classification_quality([1, 0, 1, 1], [1, 1, 0, 1], y_score=p)
    assert r.ece == pytest.approx((0.1 + 0.8 + 0.35) / 4)


def test_ece_multiclass_against_a_hand_loop() -> None:
    rng = np.random.default_rng(3)
    scores = rng.dirichlet(np.ones(4), size=400)
    y_pred = scores.argmax(axis=1)
    y_true = np.where(rng.random(400) < 0.6, y_pred, rng.integers(0, 4, 400))
    r = classification_quality(y_true, y_pred, y_score=scores)
    total = 0.0
    for b in range(10):
        lo, hi = b / 10, (b + 1) / 10
        rows = [
            i
            for i in range(400)
            if (lo < scores[i].max() <= hi) or (b == 0 and scores[i].max() == 0)
        ]
        if rows:
            accuracy = sum(y_true[i] == y_pred[i] for i in rows) / len(rows)
            confidence = sum(scores[i].max() for i in rows) / len(rows)
            total += len(rows) / 400 * abs(accuracy - confidence)
    assert r.ece == pytest.approx(total)


def test_ece_bins_are_closed_on_the_right() -> None:
    # confidence exactly 0.3 falls in (0.2, 0.3] with 0.25, not in (0.3, 0.4] with 0.35
    r = classification_quality([1, 1], [1, 1], y_score=[0.3, 0.25], labels=[0, 1])
    assert r.ece == pytest.approx(abs(1 - 0.275))
    r = classification_quality([1, 1], [1, 1], y_score=[0.3, 0.35], labels=[0, 1])
    assert r.ece == pytest.approx((0.7 + 0.65) / 2)


def test_string_labels_and_a_class_never_predicted() -> None:
    r = classification_quality(["cat", "dog", "fox", "fox"], ["cat", "cat", "fox", "fox"])
    assert r.labels == ("cat", "dog", "fox")
    assert r.per_class["dog"] == ClassScores(0.0, 0.0, 0.0, 1)
    assert r.per_class["cat"] == pytest.approx(ClassScores(0.5, 1.0, 2 / 3, 1))
    assert r.precision_macro == pytest.approx((0.5 + 0 + 1) / 3)
    assert any("never predicted" in s and "dog" in s for s in r.reasons)


def test_a_class_predicted_but_absent_from_y_true() -> None:
    r = classification_quality([0, 0, 1], [0, 2, 1])
    assert r.labels == (0, 1, 2)
    assert r.per_class[2] == ClassScores(0.0, 0.0, 0.0, 0)
    assert any("absent from y_true" in s for s in r.reasons)
    assert r.recall_macro == pytest.approx((0.5 + 1 + 0) / 3)


def test_labels_give_order_and_leave_out_other_classes() -> None:
    r = classification_quality(["b", "a", "c", "a"], ["b", "b", "a", "a"], labels=["b", "a"])
    assert r.labels == ("b", "a")
    assert r.n == 3
    assert r.confusion == ((1, 0), (1, 1))
    assert any("outside `labels`" in s for s in r.reasons)


def test_binary_positive_class_is_the_second_label() -> None:
    y_true = ["spam", "ham", "spam", "ham"]
    p_spam = [0.9, 0.2, 0.6, 0.7]
    assert classification_quality(y_true, y_true, y_score=p_spam).roc_auc == pytest.approx(0.75)
    flipped = classification_quality(y_true, y_true, y_score=p_spam, labels=["spam", "ham"])
    assert flipped.roc_auc == pytest.approx(0.25)


def test_rows_without_a_label_are_left_out() -> None:
    r = classification_quality(
        [0, None, 1, 1], [0, 1, float("nan"), 1], y_score=[0.2, 0.5, 0.5, 0.9]
    )
    assert r.n == 2
    assert r.labels == (0, 1)
    assert r.accuracy == 1.0
    assert r.roc_auc == 1.0
    assert any("2 rows without a label" in s for s in r.reasons)


def test_whole_float_labels_become_ints() -> None:
    r = classification_quality(np.array([0, 1, 1]), np.array([0.0, 1.0, 0.0]))
    assert r.labels == (0, 1)
    assert all(type(label) is int for label in r.per_class)


def test_numpy_string_and_mixed_labels_are_plain_python() -> None:
    r = classification_quality(np.array(["x", "y"]), np.array(["x", "x"]))
    assert all(type(label) is str for label in r.labels)
    mixed = classification_quality(
        np.array([1, "a", 1], dtype=object), np.array([1, "a", "a"], dtype=object)
    )
    assert set(mixed.labels) == {1, "a"}
    assert mixed.accuracy == pytest.approx(2 / 3)


@pytest.mark.parametrize(
    ("y_true", "y_pred"),
    [([], []), (np.array([]), np.array([])), ([None, None], [1, 2])],
)
def test_empty_input_gives_an_empty_report(y_true: object, y_pred: object) -> None:
    r = classification_quality(y_true, y_pred, y_score=[])
    assert isinstance(r, ClassificationQuality)
    assert r.n == 0
    assert r.accuracy is None and r.f1_macro is None and r.roc_auc is None
    assert r.per_class == {} and r.confusion == ()
    assert any("no rows" in s for s in r.reasons)


def test_unusable_input_gives_a_report_not_an_exception() -> None:
    r = classification_quality([0, 1, 1], [0, 1])
    assert r.n == 0 and "3 rows" in r.reasons[-1]
    r = classification_quality([[0, 1], [1, 0]], [[0, 1], [1, 0]])
    assert r.n == 0 and "shape" in r.reasons[-1]
    r = classification_quality([0, 1], [0, 1], labels=[0, 0, 1])
    assert r.n == 0 and "duplicates" in r.reasons[-1]
    r = classification_quality([0, 1], [0, 1], labels=5)  # type: ignore[arg-type]
    assert r.n == 0 and "iterable" in r.reasons[-1]
    r = classification_quality([[0], [1]], [{"a"}, {"b"}])
    assert r.n == 0 and "hashable" in r.reasons[-1]


def test_reasons_list_at_most_ten_classes() -> None:
    r = classification_quality(list(range(30)), [0] * 30)
    (reason,) = [s for s in r.reasons if "never predicted" in s]
    assert reason.endswith("[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, ... (19 more)]")


def test_bad_scores_leave_the_rest_of_the_report() -> None:
    r = classification_quality([0, 1, 2], [0, 1, 2], y_score=[0.1, 0.5, 0.9])
    assert r.accuracy == 1.0
    assert r.roc_auc is None and r.ece is None
    assert any("y_score has shape" in s for s in r.reasons)
    r = classification_quality([0, 1], [0, 1], y_score=[0.1, math.nan])
    assert r.roc_auc is None and any("NaN" in s for s in r.reasons)
    r = classification_quality([0, 1], [0, 1], y_score=["low", "high"])
    assert r.roc_auc is None and any("numbers" in s for s in r.reasons)


def test_roc_auc_undefined_with_one_class_in_y_true() -> None:
    r = classification_quality([1, 1, 1], [1, 0, 1], y_score=[0.9, 0.4, 0.8])
    assert r.roc_auc is None
    assert any("ROC-AUC undefined" in s for s in r.reasons)
    assert r.ece is not None
    multi = classification_quality([0, 1, 1], [0, 1, 2], y_score=np.full((3, 3), 1 / 3))
    assert multi.roc_auc is None
    assert any("[2]" in s for s in multi.reasons)


def test_one_class_only_needs_labels_to_read_binary_scores() -> None:
    r = classification_quality([1, 1], [1, 1], y_score=[0.9, 0.8])
    assert r.ece is None and any("labels=[negative, positive]" in s for s in r.reasons)
    r = classification_quality([1, 1], [1, 1], y_score=[0.9, 0.8], labels=[0, 1])
    assert r.ece == pytest.approx(0.15) and r.roc_auc is None


def test_logits_give_roc_auc_but_no_ece() -> None:
    r = classification_quality([0, 1, 0, 1], [0, 1, 0, 1], y_score=[-2.0, 3.0, -1.0, 0.5])
    assert r.roc_auc == 1.0
    assert r.ece is None
    assert any("not probabilities" in s for s in r.reasons)


# --- agreement with scikit-learn on random data ------------------------------------------------


def _random_predictions(
    seed: int, n: int, k: int, names: list[str] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    scores = rng.dirichlet(np.ones(k), size=n).round(2)  # rounding makes ties
    scores[:, -1] = 1.0 - scores[:, :-1].sum(axis=1)  # rows still sum to 1 for scikit-learn
    y_true = np.where(rng.random(n) < 0.5, scores.argmax(axis=1), rng.integers(0, k, n))
    y_pred = scores.argmax(axis=1)
    if names is not None:
        lookup = np.array(names)
        return lookup[y_true], lookup[y_pred], scores
    return y_true, y_pred, scores


@pytest.mark.parametrize(("seed", "k"), [(0, 2), (1, 3), (2, 5)])
def test_agrees_with_sklearn(seed: int, k: int) -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    names = [f"c{i}" for i in range(k)]
    y_true, y_pred, scores = _random_predictions(seed, 500, k, names)
    r = classification_quality(y_true, y_pred, y_score=scores)

    assert r.labels == tuple(names)
    assert r.accuracy == pytest.approx(metrics.accuracy_score(y_true, y_pred))
    np.testing.assert_array_equal(r.confusion, metrics.confusion_matrix(y_true, y_pred))
    precision, recall, f1, support = metrics.precision_recall_fscore_support(
        y_true, y_pred, zero_division=0
    )
    for i, name in enumerate(names):
        assert r.per_class[name] == pytest.approx(
            ClassScores(precision[i], recall[i], f1[i], support[i])
        )
    for average, ours in [
        ("macro", (r.precision_macro, r.recall_macro, r.f1_macro)),
        ("weighted", (None, None, r.f1_weighted)),
    ]:
        theirs = metrics.precision_recall_fscore_support(
            y_true, y_pred, average=average, zero_division=0
        )
        for mine, reference in zip(ours, theirs[:3], strict=True):
            if mine is not None:
                assert mine == pytest.approx(reference)
    if k == 2:
        expected = metrics.roc_auc_score(y_true, scores[:, 1])
    else:
        expected = metrics.roc_auc_score(y_true, scores, multi_class="ovr", average="macro")
    assert r.roc_auc == pytest.approx(expected)


def test_agrees_with_sklearn_when_a_class_is_never_predicted() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(7)
    y_true = rng.integers(0, 4, 200)
    y_pred = rng.integers(0, 3, 200)  # class 3 never predicted
    r = classification_quality(y_true, y_pred)
    assert r.precision_macro == pytest.approx(
        metrics.precision_score(y_true, y_pred, average="macro", zero_division=0)
    )
    assert r.f1_weighted == pytest.approx(
        metrics.f1_score(y_true, y_pred, average="weighted", zero_division=0)
    )


def test_binary_roc_auc_agrees_with_sklearn_on_integer_scores() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(11)
    y_true = rng.integers(0, 2, 1000)
    scores = rng.integers(0, 5, 1000) + y_true  # heavy ties
    r = classification_quality(y_true, (scores > 2).astype(int), y_score=scores.astype(float))
    assert r.roc_auc == pytest.approx(metrics.roc_auc_score(y_true, scores))
