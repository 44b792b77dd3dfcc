"""Data drift: statistical tests as pure functions, reference profiles, dataset verdicts.

Profile the training data once (inside a run the profile is stored with it), then compare any
later data with the profile; the training data is not needed again::

    import mlobs.drift

    reference = mlobs.drift.profile(X_train)                # a few KB per column
    reference.save("reference.npz")
    report = mlobs.drift.compare(mlobs.drift.Profile.load("reference.npz"), X_today)
    report.drifted, report.share_drifted, report["age"].result.effect_size

Needs numpy and scipy (``pip install 'mlobs[drift]'``), loaded on first use of a name here;
pandas DataFrames are accepted when pandas is installed. ``import mlobs`` does not load this
package.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlobs.drift.comparison import compare
    from mlobs.drift.decide import DatasetDrift, FeatureDrift, benjamini_hochberg
    from mlobs.drift.monitor import DriftMonitor
    from mlobs.drift.profiles import Profile, ProfileError, merge_profiles, profile
    from mlobs.drift.stats import (
        TestResult,
        anderson,
        chi_square,
        jensen_shannon,
        jensen_shannon_categorical,
        ks,
        psi,
        psi_categorical,
        total_variation,
        wasserstein,
    )
    from mlobs.drift.summary import CategoricalSummary, NumericSummary

__all__ = [
    "CategoricalSummary",
    "DatasetDrift",
    "DriftMonitor",
    "FeatureDrift",
    "NumericSummary",
    "Profile",
    "ProfileError",
    "TestResult",
    "anderson",
    "benjamini_hochberg",
    "chi_square",
    "compare",
    "jensen_shannon",
    "jensen_shannon_categorical",
    "ks",
    "merge_profiles",
    "profile",
    "psi",
    "psi_categorical",
    "total_variation",
    "wasserstein",
]

_HOMES = {
    "compare": "comparison",
    "DatasetDrift": "decide",
    "FeatureDrift": "decide",
    "benjamini_hochberg": "decide",
    "DriftMonitor": "monitor",
    "Profile": "profiles",
    "ProfileError": "profiles",
    "merge_profiles": "profiles",
    "profile": "profiles",
    "CategoricalSummary": "summary",
    "NumericSummary": "summary",
}


def __getattr__(name: str) -> Any:
    """Load the public names on first use, so that ``mlobs.drift.names`` (read by the alert
    rules and dashboards) needs neither numpy nor scipy."""
    if name not in __all__:
        raise AttributeError(f"module 'mlobs.drift' has no attribute {name!r}")
    try:
        module = importlib.import_module(f"mlobs.drift.{_HOMES.get(name, 'stats')}")
    except ModuleNotFoundError as exc:
        if exc.name in ("numpy", "scipy") or (exc.name or "").startswith("scipy."):
            raise ImportError(
                "mlobs.drift needs numpy and scipy: pip install 'mlobs[drift]'"
            ) from exc
        raise
    value = getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
