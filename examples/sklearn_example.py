"""scikit-learn with mlobs: a fit and a prediction timed as steps, with the model's quality.

MLOBS_DIR=/tmp/mlobs-demo python examples/sklearn_example.py
"""

from __future__ import annotations

from _show import show_runs
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import train_test_split

import mlobs
from mlobs.instrument.integrations.sklearn import observe_fit, observe_predict


def main() -> None:
    x, y = make_classification(n_samples=2000, n_features=10, random_state=0)
    x_train, x_test, y_train, y_test = train_test_split(x, y, random_state=0)
    model = RandomForestClassifier(n_estimators=50, max_depth=6, random_state=0)
    with mlobs.run("forest", params=model.get_params()):
        observe_fit(model, x_train, y_train)  # fit_seconds, fit_rows_per_second
        observe_predict(model, x_test, y_test)  # predict_seconds, quality_* in split "test"
    show_runs()


if __name__ == "__main__":
    main()
