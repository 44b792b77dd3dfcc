"""Vectorised kernels behind the drift tests: exact two-sample statistics from sorted arrays, and
distances between histograms, many features at once.

Sorting is the one O(n log n) step (numpy's sort of a million floats takes ~20 ms); everything
after it is a few passes over the arrays. The histogram distances take (features x bins) count
matrices, padded with zeros where features have fewer bins: an empty bin in both rows adds nothing.
"""

from __future__ import annotations

import numpy as np
from scipy.special import rel_entr

PSI_EMPTY_SHARE = 1e-4
"""Share given to an empty bin in PSI (whose log ratio is otherwise infinite). As Evidently does:
0.0001, or a millionth of the smallest non-empty share when that is smaller than 0.0001."""


def ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    """Kolmogorov-Smirnov D = sup |F_a - F_b| of two sorted, non-empty samples.

    Evaluated only at the distinct values of the shorter sample (a binary search each in the
    longer one): between two of them its CDF is constant and the other's is monotone, so the
    supremum is at an end of the interval. Same integers divided the same way as
    ``scipy.stats.ks_2samp``, so the same float.
    """
    if a.size < b.size:
        a, b = b, a
    m, n = a.size, b.size
    last = np.empty(n, dtype=bool)
    last[-1] = True
    np.not_equal(b[1:], b[:-1], out=last[:-1])
    ends = np.flatnonzero(last)
    points = b[ends]
    cdf_b = (ends + 1) / n
    at = np.searchsorted(a, points, side="right") / m
    before = np.searchsorted(a, points, side="left") / m
    d = max(float(np.abs(cdf_b - at).max()), float(before[0]))
    if points.size > 1:  # just before the next distinct value of b
        d = max(d, float(np.abs(cdf_b[:-1] - before[1:]).max()))
    return d


def wasserstein_sorted(a: np.ndarray, b: np.ndarray) -> float:
    """First Wasserstein distance of two sorted, non-empty samples.

    Computed as the integral over q in (0, 1] of |Q_a(q) - Q_b(q)|, the quantile functions, with
    ``a`` the longer sample: each of its m steps (width 1/m) meets one step of ``b``, except where
    one of b's n - 1 breakpoints falls strictly inside it, which is corrected for with exact integer
    widths. Equal to ``scipy.stats.wasserstein_distance`` up to rounding, in O(m + n) after sorting.
    """
    if a.size < b.size:
        a, b = b, a
    m, n = a.size, b.size
    per_step = np.diff(-((-np.arange(n + 1, dtype=np.int64) * m) // n))  # ceil(k m / n) steps
    gaps = np.repeat(b, per_step)  # b's quantile on each of a's steps, then |a - b| in place
    np.subtract(a, gaps, out=gaps)
    base = float(np.abs(gaps, out=gaps).sum())
    i = np.arange(1, n, dtype=np.int64)
    inside = (i * m) % n != 0
    i = i[inside]
    j = (i * m) // n  # the step of a that breakpoint i / n cuts
    tail = ((j + 1) * n - i * m) / n  # width after the breakpoint, in units of 1/m
    aj = a[j]
    correction = float(((np.abs(aj - b[i]) - np.abs(aj - b[i - 1])) * tail).sum())
    return (base + correction) / m


def quantile_edges(sorted_sample: np.ndarray, bins: int) -> np.ndarray:
    """Inner edges of ``bins`` equal-frequency bins of a sorted sample (duplicates dropped)."""
    if sorted_sample.size == 0 or bins < 2:
        return np.empty(0, dtype=np.float64)
    return np.unique(np.quantile(sorted_sample, np.arange(1, bins) / bins))


def bin_counts(sorted_values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts in (-inf, e1], (e1, e2], ..., (e_last, inf): one binary search per edge."""
    below = np.searchsorted(sorted_values, edges, side="right")
    return np.diff(np.concatenate(([0], below, [sorted_values.size]))).astype(np.int64)


def value_counts_at(sorted_values: np.ndarray, values: np.ndarray) -> np.ndarray:
    """How often each of ``values`` occurs in a sorted array."""
    return (
        np.searchsorted(sorted_values, values, side="right")
        - np.searchsorted(sorted_values, values, side="left")
    ).astype(np.int64)


def shares(counts: np.ndarray) -> np.ndarray:
    """Rows of counts as rows of shares (a row of zeros stays zeros)."""
    counts = np.asarray(counts, dtype=np.float64)
    totals = counts.sum(axis=-1, keepdims=True)
    out: np.ndarray = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    return out


def _fill_empty(p: np.ndarray) -> np.ndarray:
    smallest = np.where(p > 0, p, np.inf).min(axis=-1, keepdims=True)
    fill = np.where(smallest <= PSI_EMPTY_SHARE, smallest / 1e6, PSI_EMPTY_SHARE)
    return np.where(p > 0, p, fill)


def psi_rows(reference: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Population Stability Index per row: sum of (q - p) ln(q / p) over bins."""
    p, q = shares(reference), shares(current)
    padding = (p == 0) & (q == 0)
    p, q = _fill_empty(p), _fill_empty(q)
    terms = (q - p) * np.log(q / p)
    out: np.ndarray = np.where(padding, 0.0, terms).sum(axis=-1)
    return out


def js_rows(reference: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Jensen-Shannon distance per row, natural log (in [0, sqrt(ln 2)] ~ [0, 0.83]), as
    ``scipy.spatial.distance.jensenshannon`` with its default base and as Evidently computes it,
    so that the shared threshold of 0.1 means the same thing."""
    p, q = shares(reference), shares(current)
    m = (p + q) / 2.0
    divergence = rel_entr(p, m).sum(axis=-1) + rel_entr(q, m).sum(axis=-1)
    out: np.ndarray = np.sqrt(np.maximum(divergence, 0.0) / 2.0)
    return out


def tv_rows(reference: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Total variation distance per row: half the L1 distance of the shares (in [0, 1])."""
    out: np.ndarray = 0.5 * np.abs(shares(reference) - shares(current)).sum(axis=-1)
    return out


def pad(rows: list[np.ndarray]) -> np.ndarray:
    """Stack 1-D count arrays of different lengths into one zero-padded matrix."""
    width = max((row.size for row in rows), default=0)
    out = np.zeros((len(rows), width), dtype=np.float64)
    for k, row in enumerate(rows):
        out[k, : row.size] = row
    return out
