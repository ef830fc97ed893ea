"""What the lock catalogue decided about every statement type it has no classifier of its own for.

Each of pglast's statement node types (``pglast.ast.*Stmt``) is decided once,
here or by a classifier in ``catalogue.py``; tests/test_statement_decisions.py
fails when a new pglast adds a type nobody decided. The three decisions:

- ``LOCK_FREE``: takes no lock on any table, view or index (checked against
  pg_locks on 15 and 18 by tests/test_lock_free.py, one case per type);
- ``REFUSED``: zdmproxy will not run it, and says what to do instead;
- ``NOT_CATALOGUED``: it may run, but what it locks cannot be known from its
  text (it runs code, or touches objects nobody listed): ``plan`` says so and
  ``apply`` runs it only when unverified locks are allowed.
"""

from __future__ import annotations

from pglast import ast

LOCK_FREE: dict[type[ast.Node], str] = {
    ast.AlterCollationStmt: "ALTER COLLATION",
    ast.AlterDatabaseRefreshCollStmt: "ALTER DATABASE REFRESH COLLATION VERSION",
    ast.AlterDatabaseSetStmt: "ALTER DATABASE SET",
    ast.AlterDefaultPrivilegesStmt: "ALTER DEFAULT PRIVILEGES",
    ast.AlterEventTrigStmt: "ALTER EVENT TRIGGER",
    ast.AlterExtensionContentsStmt: "ALTER EXTENSION ADD/DROP",
    ast.AlterExtensionStmt: "ALTER EXTENSION",
    ast.AlterFdwStmt: "ALTER FOREIGN DATA WRAPPER",
    ast.AlterForeignServerStmt: "ALTER SERVER",
    ast.AlterFunctionStmt: "ALTER FUNCTION",
    ast.AlterOpFamilyStmt: "ALTER OPERATOR FAMILY",
    ast.AlterOperatorStmt: "ALTER OPERATOR",
    ast.AlterOwnerStmt: "ALTER OWNER",
    ast.AlterRoleSetStmt: "ALTER ROLE SET",
    ast.AlterRoleStmt: "ALTER ROLE",
    ast.AlterStatsStmt: "ALTER STATISTICS",
    ast.AlterTSConfigurationStmt: "ALTER TEXT SEARCH CONFIGURATION",
    ast.AlterTSDictionaryStmt: "ALTER TEXT SEARCH DICTIONARY",
    ast.AlterTableSpaceOptionsStmt: "ALTER TABLESPACE SET",
    ast.AlterTypeStmt: "ALTER TYPE SET",
    ast.AlterUserMappingStmt: "ALTER USER MAPPING",
    ast.CheckPointStmt: "CHECKPOINT",
    ast.CompositeTypeStmt: "CREATE TYPE AS",
    ast.ConstraintsSetStmt: "SET CONSTRAINTS",
    ast.CreateAmStmt: "CREATE ACCESS METHOD",
    ast.CreateCastStmt: "CREATE CAST",
    ast.CreateConversionStmt: "CREATE CONVERSION",
    ast.CreateDomainStmt: "CREATE DOMAIN",
    ast.CreateEnumStmt: "CREATE TYPE AS ENUM",
    ast.CreateEventTrigStmt: "CREATE EVENT TRIGGER",
    ast.CreateExtensionStmt: "CREATE EXTENSION",
    ast.CreateFdwStmt: "CREATE FOREIGN DATA WRAPPER",
    ast.CreateForeignServerStmt: "CREATE SERVER",
    ast.CreateOpClassStmt: "CREATE OPERATOR CLASS",
    ast.CreateOpFamilyStmt: "CREATE OPERATOR FAMILY",
    ast.CreatePLangStmt: "CREATE LANGUAGE",
    ast.CreateRangeStmt: "CREATE TYPE AS RANGE",
    ast.CreateRoleStmt: "CREATE ROLE",
    ast.CreateUserMappingStmt: "CREATE USER MAPPING",
    ast.DefineStmt: "CREATE AGGREGATE/OPERATOR/TYPE/COLLATION/TEXT SEARCH",
    ast.DropRoleStmt: "DROP ROLE",
    ast.DropUserMappingStmt: "DROP USER MAPPING",
    ast.GrantRoleStmt: "GRANT ROLE",
    ast.ListenStmt: "LISTEN",
    ast.NotifyStmt: "NOTIFY",
    ast.UnlistenStmt: "UNLISTEN",
    ast.VariableShowStmt: "SHOW",
}

_SESSION = (
    "each step runs on a connection of its own, so session state (cursors, prepared statements) "
    "does not reach the next statement; write the statements it stands for"
)
_NOT_A_STATEMENT = "never a statement of its own (part of another statement's tree)"
_OUTSIDE = (
    "acts outside the database being migrated (or cannot run in a transaction block): run it "
    "by hand, not through zdmproxy"
)

REFUSED: dict[type[ast.Node], str] = {
    ast.TransactionStmt: (
        "BEGIN/COMMIT/ROLLBACK in a migration: zdmproxy runs each statement in its own short, "
        "lock-guarded transaction; remove the transaction control statements"
    ),
    ast.VariableSetStmt: (
        "SET in a migration: zdmproxy sets lock_timeout and statement_timeout itself for every "
        "attempt; configure them with --lock-timeout-ms / --statement-timeout-s (ZDM_LOCK_TIMEOUT_MS / "
        "ZDM_STATEMENT_TIMEOUT_S) instead"
    ),
    ast.DeclareCursorStmt: _SESSION,
    ast.FetchStmt: _SESSION,
    ast.ClosePortalStmt: _SESSION,
    ast.PrepareStmt: _SESSION,
    ast.ExecuteStmt: _SESSION,
    ast.DeallocateStmt: _SESSION,
    ast.DiscardStmt: _SESSION,
    ast.LoadStmt: "LOAD changes the session only; " + _SESSION,
    ast.ExplainStmt: "EXPLAIN prints a plan nobody reads in a migration (and EXPLAIN ANALYZE runs it)",
    ast.CopyStmt: "COPY moves data through the client or the server's files; load data outside zdmproxy",
    ast.CreatedbStmt: _OUTSIDE,
    ast.DropdbStmt: _OUTSIDE,
    ast.AlterDatabaseStmt: _OUTSIDE,
    ast.AlterSystemStmt: _OUTSIDE,
    ast.CreateTableSpaceStmt: _OUTSIDE,
    ast.DropTableSpaceStmt: _OUTSIDE,
    ast.CreateSubscriptionStmt: _OUTSIDE,
    ast.AlterSubscriptionStmt: _OUTSIDE,
    ast.DropSubscriptionStmt: _OUTSIDE,
    ast.AlterTableMoveAllStmt: (
        "ALTER TABLE ALL IN TABLESPACE rewrites every table it finds under ACCESS EXCLUSIVE; "
        "move the tables one statement each"
    ),
    ast.RawStmt: _NOT_A_STATEMENT,
    ast.SetOperationStmt: _NOT_A_STATEMENT,
    ast.ReturnStmt: _NOT_A_STATEMENT,
    ast.PLAssignStmt: _NOT_A_STATEMENT,
    ast.ReplicaIdentityStmt: _NOT_A_STATEMENT,
}

NOT_CATALOGUED: dict[type[ast.Node], str] = {
    ast.DoStmt: "DO runs procedural code: what it locks cannot be known from its text",
    ast.CallStmt: "CALL runs a procedure: what it locks cannot be known from its text",
    ast.DropOwnedStmt: "DROP OWNED drops every object a role owns, which the catalogue does not list",
    ast.ReassignOwnedStmt: "REASSIGN OWNED alters every object a role owns: not listed",
    ast.SecLabelStmt: "SECURITY LABEL needs a label provider the test servers lack: not verified",
    ast.ImportForeignSchemaStmt: "IMPORT FOREIGN SCHEMA needs a foreign-data wrapper handler: not verified",
    ast.CreateTransformStmt: "CREATE TRANSFORM needs C support functions the test servers lack: not verified",
    ast.AlterObjectDependsStmt: "ALTER ... DEPENDS ON EXTENSION: not verified",
}
