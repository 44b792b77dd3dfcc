"""Pytest plugin: the ``fake_nvml`` fixture (function scope), a configured NVML stand-in.

Register it in ``tests/conftest.py`` with ``pytest_plugins = [..., "tests.nvml_standin.fixture"]``.

``fake_nvml -> FakeNvml`` (see :mod:`tests.nvml_standin`): ``write(config)``,
``update_device(i, **fields)``, ``env`` / ``subprocess_env()`` for a subprocess that loads the
stand-in through LD_LIBRARY_PATH, and ``load_in_process()`` to point this process's pynvml at it
(undone when the test ends). It starts with no devices. The library is built with gcc once per
session (cached by source hash); when gcc or the NVML headers (PyPI ``nvidia-nvml-dev``) are
missing the test is skipped, or fails when ``CI=true``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.nvml_standin import FakeNvml, StandinUnavailable, built_library


@pytest.fixture
def fake_nvml(tmp_path: Path) -> Iterator[FakeNvml]:
    try:
        library = built_library()
    except StandinUnavailable as exc:
        message = (
            f"NVML stand-in unavailable: {exc} (scripts/test.sh installs the dev extra, "
            "which includes nvidia-nvml-dev; gcc comes from the system)"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    directory = tmp_path / "fake-nvml"
    directory.mkdir()
    fake = FakeNvml(directory, library)
    try:
        yield fake
    finally:
        fake.unload_in_process()
