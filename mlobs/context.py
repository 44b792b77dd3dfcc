"""Where the current run, epoch and span live: contextvars, so threads and asyncio tasks that
copy their context see the run that started them."""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from mlobs.instrument.active import ActiveRun


class SpanRef(NamedTuple):
    """The ids of the innermost run, epoch or step span, stamped on records made inside it."""

    trace_id: int
    span_id: int
    name: str

    @property
    def trace_hex(self) -> str:
        return format(self.trace_id, "032x")

    @property
    def span_hex(self) -> str:
        return format(self.span_id, "016x")


current_run: ContextVar[ActiveRun | None] = ContextVar("mlobs_current_run", default=None)
current_span: ContextVar[SpanRef | None] = ContextVar("mlobs_current_span", default=None)
