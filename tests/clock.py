"""A clock that only the test moves, for code that takes ``clock=`` instead of reading the time."""

from __future__ import annotations


class FakeClock:
    """Reads ``now``; a test moves it with ``clock.now += seconds``."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
