"""Batch drift with mlobs: profile the training data once, compare a later batch with it.

MLOBS_DIR=/tmp/mlobs-demo python examples/drift_batch.py
"""

from __future__ import annotations

import numpy as np
from _show import show_runs

import mlobs
import mlobs.drift


def main() -> None:
    rng = np.random.default_rng(0)
    train = {
        "age": rng.normal(40, 10, 5000),
        "income": rng.lognormal(10, 0.5, 5000),
        "plan": rng.choice(["basic", "pro", "team"], 5000, p=[0.6, 0.3, 0.1]),
    }
    today = {
        "age": rng.normal(47, 10, 2000),  # older customers
        "income": rng.lognormal(10, 0.5, 2000),
        "plan": rng.choice(["basic", "pro", "team"], 2000, p=[0.3, 0.3, 0.4]),  # more teams
    }
    with mlobs.run("drift-check"):
        reference = mlobs.drift.profile(train)  # stored with the run under the spool
        report = mlobs.drift.compare(reference, today)
        rows = report.table_rows()
        print("  ".join(f"{key:>12}" for key in rows[0]))
        for row in rows:
            print("  ".join(f"{value:>12}" for value in row.values()))
        mlobs.log(share_drifted=report.share_drifted, dataset_drifted=report.drifted)
    print("drifted:", report.drifted, report.drifted_columns)
    show_runs()


if __name__ == "__main__":
    main()
