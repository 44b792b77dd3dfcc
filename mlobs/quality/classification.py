"""Classification quality: accuracy, precision / recall / F1 per class and averaged, the confusion
matrix, ROC-AUC from scores and expected calibration error.

A pure function over arrays. Data problems (empty input, a class never predicted, scores of the
wrong shape) never raise: the value that can't be computed is ``None`` or follows scikit-learn's
``zero_division=0``, and ``reasons`` says why.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

from mlobs import safety
from mlobs.quality._arrays import Unusable, column, rows, same_length

Label = Hashable
"""A class label: an int or a string usually; numpy scalars become Python values."""

ECE_BINS = 10
"""Equal-width confidence bins of the expected calibration error: (0, 0.1], ..., (0.9, 1]."""


class ClassScores(NamedTuple):
    """Precision, recall and F1 of one class, and its support (rows whose true label it is)."""

    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class ClassificationQuality:
    """The quality of one set of classification predictions.

    Attributes:
        n: rows evaluated (after rows without a label were left out).
        accuracy: share of rows predicted right; ``None`` when ``n`` is 0.
        labels: the classes, in the order of the confusion matrix and of score columns.
        per_class: ``{label: ClassScores(precision, recall, f1, support)}``.
        precision_macro, recall_macro, f1_macro: unweighted means over ``labels``.
        f1_weighted: mean of the per-class F1 weighted by support.
        confusion: ``confusion[i][j]`` counts rows of true class ``labels[i]`` predicted as
            ``labels[j]``.
        roc_auc: binary AUC of the positive class ``labels[1]``, or the one-vs-rest macro AUC of
            several classes; ``None`` without scores or when it is undefined.
        ece: expected calibration error over ``ECE_BINS`` equal-width bins of the predicted
            class's score; ``None`` without scores.
        reasons: why a value is ``None`` or 0.0 by convention, and which rows were left out.
    """

    n: int
    accuracy: float | None
    labels: tuple[Label, ...]
    per_class: Mapping[Label, ClassScores]
    precision_macro: float | None
    recall_macro: float | None
    f1_macro: float | None
    f1_weighted: float | None
    confusion: tuple[tuple[int, ...], ...]
    roc_auc: float | None = None
    ece: float | None = None
    reasons: list[str] = field(default_factory=list)


def classification_quality(
    y_true: Any,
    y_pred: Any,
    *,
    y_score: Any = None,
    labels: Iterable[Label] | None = None,
) -> ClassificationQuality:
    """Compute classification KPIs of predictions against ground truth.

    Args:
        y_true: the true class of each row (ints, strings, ...). ``None`` or NaN marks a row
            whose label is missing: it is left out and counted in ``reasons``.
        y_pred: the predicted class of each row.
        y_score: optional scores for ROC-AUC and calibration: with two classes, the positive
            class's score per row (1-D) or one column per class; with more, an ``(n, k)`` array
            with one column per class in ``labels`` order (``predict_proba`` of a model whose
            ``classes_`` are sorted, as scikit-learn's are).
        labels: the classes and their order; by default the sorted union of ``y_true`` and
            ``y_pred``. Rows whose true or predicted class is not among them are left out. The
            positive class of a binary problem is ``labels[1]``.

    Returns:
        A :class:`ClassificationQuality`. Nothing here raises for bad data: a report with
        ``n == 0`` and the reason comes back instead.
    """
    reasons: list[str] = []
    given: tuple[Label, ...] | None = None
    try:
        if labels is not None:
            given = _given_labels(labels)
        yt = column(y_true, "y_true")
        yp = column(y_pred, "y_pred")
        same_length(yt, yp)
        n_total = len(yt)
        keep = ~(_missing(yt) | _missing(yp))
        kept_rows = np.flatnonzero(keep)
        if len(kept_rows) < n_total:
            reasons.append(
                f"{rows(n_total - len(kept_rows))} without a label (None or NaN) left out"
            )
            yt, yp = yt[kept_rows], yp[kept_rows]
        t, p, order = _encode(yt, yp, given)
        inside = (t >= 0) & (p >= 0)
        if not inside.all():
            reasons.append(f"{rows(int((~inside).sum()))} with a class outside `labels` left out")
            t, p, kept_rows = t[inside], p[inside], kept_rows[inside]
    except Unusable as exc:
        safety.warn("quality-input", "mlobs: classification_quality: %s", exc)
        return _empty(given or (), [*reasons, str(exc)])
    if len(t) == 0:
        return _empty(order, [*reasons, "no rows to evaluate"])

    k = len(order)
    n = len(t)
    confusion = np.bincount(t * k + p, minlength=k * k).reshape(k, k)
    tp = np.diag(confusion).astype(float)
    predicted = confusion.sum(axis=0)
    support = confusion.sum(axis=1)
    precision = _ratio(tp, predicted)
    recall = _ratio(tp, support)
    f1 = _ratio(2.0 * tp, predicted + support)
    never_predicted = [order[i] for i in np.flatnonzero(predicted == 0)]
    if never_predicted:
        reasons.append(f"precision set to 0.0 for classes never predicted: {_few(never_predicted)}")
    absent = [order[i] for i in np.flatnonzero(support == 0)]
    if absent:
        reasons.append(f"recall set to 0.0 for classes absent from y_true: {_few(absent)}")

    roc_auc = ece = None
    if y_score is not None:
        scores = _scores(y_score, n_total, kept_rows, k, reasons)
        if scores is not None:
            roc_auc = _roc_auc(t, scores, order, reasons)
            ece = _ece(t, p, scores, reasons)

    return ClassificationQuality(
        n=n,
        accuracy=float(tp.sum() / n),
        labels=order,
        per_class={
            label: ClassScores(float(precision[i]), float(recall[i]), float(f1[i]), int(support[i]))
            for i, label in enumerate(order)
        },
        precision_macro=float(precision.mean()),
        recall_macro=float(recall.mean()),
        f1_macro=float(f1.mean()),
        f1_weighted=float((f1 * support).sum() / n),
        confusion=tuple(tuple(int(c) for c in row) for row in confusion),
        roc_auc=roc_auc,
        ece=ece,
        reasons=reasons,
    )


def _empty(labels: tuple[Label, ...], reasons: list[str]) -> ClassificationQuality:
    return ClassificationQuality(
        n=0,
        accuracy=None,
        labels=labels,
        per_class={},
        precision_macro=None,
        recall_macro=None,
        f1_macro=None,
        f1_weighted=None,
        confusion=(),
        reasons=reasons,
    )


def _few(values: list[Any], most: int = 10) -> str:
    """A list for a reason, cut short: ``[1, 2, 3, ... (40 more)]``."""
    if len(values) <= most:
        return str(values)
    return str(values[:most])[:-1] + f", ... ({len(values) - most} more)]"


def _py(value: Any) -> Any:
    """A numpy scalar as the Python value it holds (``np.int64(3)`` → ``3``)."""
    return value.item() if isinstance(value, np.generic) else value


def _given_labels(labels: Iterable[Label]) -> tuple[Label, ...]:
    try:
        given = tuple(_py(v) for v in labels)
        distinct = len(set(given))
    except TypeError as exc:
        raise Unusable(f"labels must be an iterable of hashable classes: {exc}") from exc
    if distinct != len(given):
        raise Unusable(f"labels has duplicates: {_few(list(given))}")
    return given


def _missing(arr: NDArray[Any]) -> NDArray[np.bool_]:
    if arr.dtype.kind == "f":
        missing: NDArray[np.bool_] = np.isnan(arr)
        return missing
    if arr.dtype.kind == "O":
        return np.fromiter(
            (v is None or (isinstance(v, (float, np.floating)) and v != v) for v in arr),
            dtype=bool,
            count=len(arr),
        )
    return np.zeros(len(arr), dtype=bool)


def _encode(
    y_true: NDArray[Any], y_pred: NDArray[Any], labels: tuple[Label, ...] | None
) -> tuple[NDArray[np.intp], NDArray[np.intp], tuple[Label, ...]]:
    """Class indices of both columns in the label order (-1: not among ``labels``)."""
    both = np.concatenate([y_true, y_pred])
    try:
        uniq, inverse = np.unique(both, return_inverse=True)
        found = [_py(u) for u in uniq]
    except TypeError:  # an object array mixing types that have no order between them
        first_seen: dict[Any, int] = {}
        try:
            inverse = np.fromiter(
                (first_seen.setdefault(v, len(first_seen)) for v in both.tolist()),
                dtype=np.intp,
                count=len(both),
            )
        except TypeError as exc:
            raise Unusable(f"class labels must be hashable: {exc}") from exc
        found = list(first_seen)
    if labels is None:
        if _whole_numbers(found):
            found = [int(v) for v in found]  # 0.0 and 1.0 from a float column are classes 0, 1
        order = tuple(_sorted(found))
    else:
        order = labels
    position = {label: i for i, label in enumerate(order)}
    lookup = np.array([position.get(v, -1) for v in found], dtype=np.intp)
    codes = lookup[np.ravel(inverse)]
    return codes[: len(y_true)], codes[len(y_true) :], order


def _whole_numbers(values: list[Any]) -> bool:
    return any(type(v) is float for v in values) and all(
        type(v) is int or (type(v) is float and v.is_integer()) for v in values
    )


def _sorted(values: list[Any]) -> list[Any]:
    try:
        return sorted(values)
    except TypeError:
        try:
            return sorted(values, key=lambda v: (type(v).__name__, v))
        except TypeError:
            return values


def _ratio(num: NDArray[Any], den: NDArray[Any]) -> NDArray[np.float64]:
    """``num / den`` with 0.0 where ``den`` is 0 (scikit-learn's ``zero_division=0``)."""
    out = np.zeros(len(num), dtype=float)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _scores(
    y_score: Any, n_total: int, kept_rows: NDArray[np.intp], k: int, reasons: list[str]
) -> NDArray[np.float64] | None:
    """The scores as an ``(n, k)`` array of the rows evaluated, or ``None`` with a reason."""
    try:
        scores = np.asarray(y_score, dtype=float)
    except (TypeError, ValueError) as exc:
        reasons.append(f"y_score can't be read as numbers ({exc}): no ROC-AUC or ECE")
        return None
    if scores.ndim == 2 and scores.shape[1] == 1:
        scores = scores[:, 0]
    if scores.ndim == 1 and k == 1:
        reasons.append(
            "one class only: pass labels=[negative, positive] to read 1-D scores; no ROC-AUC or ECE"
        )
        return None
    if scores.ndim == 1 and k == 2:
        scores = np.column_stack([1.0 - scores, scores])
    if scores.ndim != 2 or scores.shape != (n_total, k):
        reasons.append(
            f"y_score has shape {scores.shape}; expected ({n_total}, {k}) for {k} classes"
            + (f" or ({n_total},) for the positive class" if k == 2 else "")
            + ": no ROC-AUC or ECE"
        )
        return None
    scores = scores[kept_rows]
    if not np.isfinite(scores).all():
        reasons.append("y_score has NaN or infinite values: no ROC-AUC or ECE")
        return None
    return scores


def _roc_auc(
    t: NDArray[np.intp], scores: NDArray[np.float64], order: tuple[Label, ...], reasons: list[str]
) -> float | None:
    k = len(order)
    if k < 2:
        reasons.append("ROC-AUC needs two classes or more")
        return None
    classes = [1] if k == 2 else range(k)
    aucs: list[float] = []
    undefined = []
    for c in classes:
        auc = _auc(t == c, scores[:, c])
        if auc is None:
            undefined.append(order[c])
        else:
            aucs.append(auc)
    if undefined:
        reasons.append(
            "ROC-AUC undefined: y_true has no positive or no negative rows for "
            + ("the positive class " if k == 2 else "classes ")
            + _few(undefined)
        )
        return None
    return float(np.mean(aucs))


def _auc(positive: NDArray[np.bool_], score: NDArray[np.float64]) -> float | None:
    """Area under the ROC curve as the Mann-Whitney U statistic: the probability that a random
    positive row scores above a random negative one, ties counting one half."""
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    rank_sum = float(_average_ranks(score)[positive].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def _average_ranks(values: NDArray[np.float64]) -> NDArray[np.float64]:
    """1-based ranks, tied values sharing the mean of the ranks they span."""
    order = np.argsort(values)  # ties get their mean rank whatever order they sort in
    ordered = values[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], len(values)]
    ranks = np.empty(len(values), dtype=float)
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return ranks


def _ece(
    t: NDArray[np.intp], p: NDArray[np.intp], scores: NDArray[np.float64], reasons: list[str]
) -> float | None:
    """Mean over rows of |accuracy - confidence| within equal-width bins of the confidence, the
    confidence being the score of the predicted class."""
    confidence = scores[np.arange(len(p)), p]
    if confidence.min() < 0.0 or confidence.max() > 1.0:
        reasons.append("scores outside [0, 1] are not probabilities: no ECE")
        return None
    inner_edges = np.linspace(0.0, 1.0, ECE_BINS + 1)[1:-1]
    bins = np.searchsorted(inner_edges, confidence, side="left")  # right-closed bins
    right = np.bincount(bins, weights=(t == p).astype(float), minlength=ECE_BINS)
    confident = np.bincount(bins, weights=confidence, minlength=ECE_BINS)
    return float(np.abs(right - confident).sum() / len(p))
