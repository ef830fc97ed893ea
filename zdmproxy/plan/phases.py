"""Which of a plan's steps each phase runs (``apply --phase expand|contract``).

The expand phase is the plan's steps up to its first contract step: everything that adds and
fills without taking anything away, so the application version still running keeps working.
The contract phase is the rest, in plan order (a later statement may rely on an earlier one's
contract, so nothing after the first contract step is pulled forward). Without a phase every
step runs, and the end state is the script's as written.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

from zdmproxy.plan.model import Phase, Step


class RunPhase(StrEnum):
    EXPAND = "expand"
    CONTRACT = "contract"


def expand_end(steps: Sequence[Step]) -> int:
    """The index of the first contract step (``len(steps)`` when there is none)."""
    return next((i for i, step in enumerate(steps) if step.phase is Phase.CONTRACT), len(steps))


def has_contract(steps: Sequence[Step]) -> bool:
    return expand_end(steps) < len(steps)
