"""The metric and event names a drift monitor records (dashboards and alert rules read them).

Each is recorded through :func:`mlobs.log_labeled`, so on ``/metrics`` it is served as
``mlobs_`` + the name (``mlobs_drift_score``), and on the other sinks as it is.
"""

from __future__ import annotations

SCORE = "drift_score"
"""Effect size of the column's test, ``{monitor, feature, test}``: normalised Wasserstein, PSI,
Jensen-Shannon distance, ..."""
P_VALUE = "drift_p_value"
"""The p-value reported beside it, ``{monitor, feature, test}`` (where the test has one)."""
DETECTED = "drift_detected"
"""1 when the column drifted in the window, else 0, ``{monitor, feature}``."""
MISSING_SHARE = "drift_missing_share"
"""Share of missing values of the column in the window, ``{monitor, feature}``."""
SHARE_DRIFTED = "drift_share_drifted"
"""Share of the columns that drifted, ``{monitor}``."""
DATASET_DETECTED = "drift_dataset_detected"
"""1 when the share drifted is over the dataset threshold, ``{monitor}``."""
PREDICTION_SCORE = "drift_prediction_score"
"""Effect size of the prediction (model output) distribution's drift, ``{monitor, test}``."""
PREDICTION_DETECTED = "drift_prediction_detected"
"""1 when the predictions drifted, ``{monitor}``."""
WINDOW_ROWS = "drift_window_rows"
"""Rows in the window just evaluated, ``{monitor}``."""
WINDOW_EVENT = "drift.window"
"""The structured event recorded once per window, with every column's result."""
