"""Every statement type pglast knows is decided: catalogued, lock-free, refused, or not catalogued.

A newer pglast that adds a ``*Stmt`` node fails here until someone decides it;
a catalogued type without a pg_locks case in tests/test_lock_catalogue.py, or a
lock-free type without a case in tests/test_lock_free.py, fails too.
"""

from __future__ import annotations

import pytest
from pglast import ast
from test_lock_catalogue import CASES
from test_lock_free import LOCK_FREE_CASES

from zdmproxy.errors import UnsupportedStatement
from zdmproxy.sql import catalogue, decisions
from zdmproxy.sql.catalogue import CATALOGUED, classify
from zdmproxy.sql.parse import parse_script

STATEMENT_TYPES = {
    cls for name in dir(ast) if name.endswith("Stmt") and isinstance(cls := getattr(ast, name), type)
}
DECIDED = {
    "catalogued": set(CATALOGUED),
    "lock-free": set(decisions.LOCK_FREE),
    "refused": set(decisions.REFUSED),
    "not catalogued": set(decisions.NOT_CATALOGUED),
}


def test_every_statement_type_is_decided_once() -> None:
    undecided = STATEMENT_TYPES - set().union(*DECIDED.values())
    assert not undecided, f"decide these statement types: {sorted(c.__name__ for c in undecided)}"
    for name, kinds in DECIDED.items():
        for other, more in DECIDED.items():
            if name < other:
                assert not kinds & more, f"decided twice ({name}, {other}): {kinds & more}"


def test_every_catalogued_type_has_a_pg_locks_case() -> None:
    covered = {type(parse_script(case.sql)[0].node) for case in CASES.values()}
    assert set(CATALOGUED) - covered == set()


def test_every_lock_free_type_has_a_case() -> None:
    covered = {type(parse_script(sql.format(db="d"))[0].node) for sql in LOCK_FREE_CASES}
    assert set(decisions.LOCK_FREE) - covered == set()


def test_refusals_and_unknowns_claim_no_lock() -> None:
    (do,) = parse_script("DO $$ BEGIN PERFORM count(*) FROM orders; END $$")
    effects = classify(do)
    assert effects.unverified and effects.locks == ()
    (copy,) = parse_script("COPY orders TO STDOUT")
    with pytest.raises(UnsupportedStatement, match="COPY"):
        classify(copy)


def test_an_undecided_type_gets_no_guessed_lock(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a new pglast statement type would get: not catalogued, no lock (no ACCESS EXCLUSIVE)."""
    monkeypatch.delitem(catalogue._CLASSIFIERS, ast.GrantStmt)
    (grant,) = parse_script("GRANT SELECT ON orders TO public")
    effects = classify(grant)
    assert effects.locks == ()
    assert effects.unverified == "GrantStmt is not in the lock catalogue"
    assert "orders" in " ".join(effects.notes)
