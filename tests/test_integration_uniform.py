"""The point of the integrations: a fit's run, epochs, metrics and status come out the same way
whichever framework produced them. Each framework's own test module trains its tiny model
(``fit_tiny``); here every installed framework's records are reduced to one shape and compared."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any, NamedTuple

import pytest

from tests.test_integration_shape import BOOM, FitShape, no_run_left_current  # noqa: F401

# the frameworks' own warnings (see their test modules)
pytestmark = [
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:`isinstance\\(treespec, LeafSpec\\)` is deprecated"),
    pytest.mark.filterwarnings("ignore:The number of training batches"),
]


class Framework(NamedTuple):
    module: str
    """The test module with ``fit_tiny`` (skipped when the framework is not installed)."""
    loss: str
    """The framework's name for the loss it reports."""
    validation: str | None
    """The split of validation metrics (the name the framework or the tiny fit gives it)."""
    epochs: int
    failure: str
    """The exception type a failing fit raises, as the run records it."""


FRAMEWORKS = {
    "lightning": Framework("test_integration_lightning", "loss", "val", 3, BOOM),
    "keras": Framework("test_integration_keras", "loss", "val", 3, BOOM),
    "transformers": Framework("test_integration_transformers", "loss", "eval", 3, BOOM),
    "xgboost": Framework("test_integration_xgboost", "logloss", "val", 3, BOOM),
    "lightgbm": Framework("test_integration_lightgbm", "binary_logloss", "val", 3, BOOM),
    "sklearn": Framework("test_integration_sklearn", "", None, 0, "builtins.ValueError"),
}
_fits: dict[tuple[str, bool], FitShape] = {}


def _module(name: str) -> ModuleType:
    # the module itself skips (pytest.importorskip) when its framework is missing
    return importlib.import_module(f"tests.{FRAMEWORKS[name].module}")


def _fit(name: str, fail: bool, tmp_path_factory: pytest.TempPathFactory) -> FitShape:
    key = (name, fail)
    if key not in _fits:
        fit_tiny: Any = _module(name).fit_tiny
        _fits[key] = fit_tiny(
            tmp_path_factory.mktemp(f"{name}-{'fail' if fail else 'ok'}"), fail=fail
        )
    return _fits[key]


def _outline(shape: FitShape, fw: Framework) -> dict[str, Any]:
    """The shape with the framework's own names taken out."""
    roles = {"train": "train", fw.validation: "validation"}
    return {
        "runs": [status for _, status in shape.runs],
        "epochs": shape.epochs,
        "loss": sorted(
            (roles.get(split, str(split)), epoch)
            for name, split, epoch in shape.metrics
            if name == fw.loss
        ),
        "has_params": bool(shape.params),
        "framework_tag": shape.tags.get("framework"),
    }


@pytest.mark.parametrize("name", list(FRAMEWORKS))
def test_a_fit_has_the_common_shape(name: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    fw = FRAMEWORKS[name]
    outline = _outline(_fit(name, False, tmp_path_factory), fw)
    n = range(fw.epochs)
    assert outline == {
        "runs": ["finished"],
        "epochs": list(n),
        "loss": sorted([("train", e) for e in n] + [("validation", e) for e in n]),
        "has_params": True,
        "framework_tag": name,
    }


@pytest.mark.parametrize("name", list(FRAMEWORKS))
def test_a_failing_fit_has_the_common_shape(
    name: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    fw = FRAMEWORKS[name]
    shape = _fit(name, True, tmp_path_factory)
    assert [status for _, status in shape.runs] == ["failed"]
    assert shape.error_types == [fw.failure]
    assert shape.epochs == ([0, 1] if fw.epochs else [])


def test_every_installed_framework_gives_the_same_outline(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    outlines = {}
    for name, fw in FRAMEWORKS.items():
        if not fw.epochs:
            continue  # scikit-learn fits have no epochs
        try:
            outlines[name] = _outline(_fit(name, False, tmp_path_factory), fw)
        except pytest.skip.Exception:
            continue
    if len(outlines) < 2:
        pytest.skip("fewer than two training frameworks are installed")
    for outline in outlines.values():
        outline.pop("framework_tag")
    first, *rest = outlines.items()
    for name, outline in rest:
        assert outline == first[1], f"{name} differs from {first[0]}"
