"""Statements planned after an ADD CONSTRAINT in the same script know that constraint."""

from __future__ import annotations

from zdmproxy.plan.planner import make_plan
from zdmproxy.sql.facts import CatalogFacts, RelationInfo
from zdmproxy.sql.locks import LockMode, RelationName

ORDERS = RelationName("public", "orders")
ACCOUNTS = RelationName("public", "accounts")
FACTS = CatalogFacts(
    server_version_num=150000,
    relations={
        RelationName(None, "orders"): RelationInfo(name=ORDERS, relkind="r"),
        RelationName(None, "accounts"): RelationInfo(name=ACCOUNTS, relkind="r"),
    },
)
SCRIPT = """
ALTER TABLE orders ADD CONSTRAINT orders_account_fk FOREIGN KEY (account_id) REFERENCES accounts NOT VALID;
ALTER TABLE orders VALIDATE CONSTRAINT orders_account_fk;
ALTER TABLE orders DROP CONSTRAINT orders_account_fk;
"""


def modes(plan_index: int) -> dict[RelationName, LockMode]:
    planned = make_plan(SCRIPT, FACTS).statements[plan_index]
    return {lock.relation: lock.mode for lock in planned.effects.locks}


def test_validate_knows_the_foreign_key_added_before_it() -> None:
    assert modes(1) == {ORDERS: LockMode.SHARE_UPDATE_EXCLUSIVE, ACCOUNTS: LockMode.ROW_SHARE}


def test_drop_knows_the_foreign_key_added_before_it() -> None:
    assert modes(2) == {ORDERS: LockMode.ACCESS_EXCLUSIVE, ACCOUNTS: LockMode.ACCESS_EXCLUSIVE}


def test_without_the_catalog_nothing_is_learned_and_the_gap_is_noted() -> None:
    validate = make_plan(SCRIPT).statements[1]
    assert [lock.relation for lock in validate.effects.locks] == [RelationName(None, "orders")]
    assert any("foreign key" in note for note in validate.effects.notes)
