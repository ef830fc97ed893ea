"""The rules, in the order the planner tries them: the first one that applies wins.

A rule that splits a statement (several ALTER TABLE subcommands) comes first
and hands each part back to the planner, so the others see one change at a time.
"""

from __future__ import annotations

from collections.abc import Callable

from zdmproxy.plan.model import Step
from zdmproxy.plan.rules.add_column_default import add_column_then_backfill
from zdmproxy.plan.rules.attach_partition import attach_with_proven_bound
from zdmproxy.plan.rules.change_type import change_type_online
from zdmproxy.plan.rules.concurrent_index import (
    create_index_concurrently,
    drop_index_concurrently,
    reindex_concurrently,
)
from zdmproxy.plan.rules.context import RuleContext
from zdmproxy.plan.rules.detach_partition import detach_concurrently
from zdmproxy.plan.rules.drop_column import drop_column_in_phases
from zdmproxy.plan.rules.large_dml import large_dml_in_batches
from zdmproxy.plan.rules.long_lock import refuse_long_lock
from zdmproxy.plan.rules.not_valid import add_constraint_not_valid, inline_constraints_apart
from zdmproxy.plan.rules.partitioned_index import build_per_partition
from zdmproxy.plan.rules.rename_column import rename_column_in_phases
from zdmproxy.plan.rules.set_not_null import set_not_null_online
from zdmproxy.plan.rules.split_alter import split_subcommands
from zdmproxy.plan.rules.unique_using_index import unique_via_concurrent_index

Rule = Callable[[RuleContext], tuple[Step, ...] | None]

RULES: tuple[Rule, ...] = (
    split_subcommands,  # first: every other rule sees one subcommand at a time
    add_constraint_not_valid,
    inline_constraints_apart,  # before add_column_then_backfill: it hands the column back to it
    unique_via_concurrent_index,
    set_not_null_online,
    change_type_online,
    rename_column_in_phases,
    drop_column_in_phases,
    build_per_partition,
    create_index_concurrently,
    drop_index_concurrently,
    reindex_concurrently,
    attach_with_proven_bound,
    detach_concurrently,
    add_column_then_backfill,
    large_dml_in_batches,
    refuse_long_lock,  # last: it refuses only what no rule before it made online
)
