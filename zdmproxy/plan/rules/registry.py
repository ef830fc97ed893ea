"""The rules, in the order the planner tries them: the first one that applies wins.

A rule that splits a statement (several ALTER TABLE subcommands) comes first
and hands each part back to the planner, so the others see one change at a time.
"""

from __future__ import annotations

from collections.abc import Callable

from zdmproxy.plan.model import Step
from zdmproxy.plan.rules.change_type import change_type_online
from zdmproxy.plan.rules.context import RuleContext
from zdmproxy.plan.rules.drop_column import drop_column_in_phases
from zdmproxy.plan.rules.rename_column import rename_column_in_phases

Rule = Callable[[RuleContext], tuple[Step, ...] | None]

RULES: tuple[Rule, ...] = (
    change_type_online,
    rename_column_in_phases,
    drop_column_in_phases,
)
