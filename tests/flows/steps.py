"""Step ids read from a built dataflow, not from the constants that name them."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from bytewax.dataflow import Dataflow


def _walk(ops: Iterable[Any]) -> Iterable[Any]:
    for op in ops:
        yield op
        yield from _walk(getattr(op, "substeps", ()))


def top_level_steps(flow: Dataflow) -> set[str]:
    """The ids (without the flow's) of the steps the flow's code adds."""
    return {op.step_id.removeprefix(f"{flow.flow_id}.") for op in flow.substeps}


def stateful_steps(flow: Dataflow) -> set[str]:
    """The top-level steps that keep recovery state: those built on Bytewax's stateful core."""
    return {
        op.step_id.removeprefix(f"{flow.flow_id}.")
        for op in flow.substeps
        if any(type(sub).__name__ == "stateful_batch" for sub in _walk([op]))
    }
