"""What only the database's catalog knows, handed to the pure classifier as data.

The classifier never queries anything: the engine reads these facts from a
live server (``zdmproxy.engine.catalog``) and passes them in. Without a
server, ``CatalogFacts()`` knows nothing and every answer that depends on the
catalog falls back to the conservative one (assume a rewrite, assume a scan,
leave the schema unqualified), and says so in the statement's notes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from zdmproxy.sql.locks import RelationName


@dataclass(frozen=True)
class ConstraintInfo:
    name: str
    kind: str  # pg_constraint.contype: c, f, p, u, x, n
    validated: bool
    referenced: RelationName | None = None  # for foreign keys
    not_null_column: str | None = None  # a CHECK (col IS NOT NULL), usable by SET NOT NULL on 12+
    no_inherit: bool = False  # pg_constraint.connoinherit: the children have no copy of it
    definition: str | None = None  # pg_get_constraintdef: CHECK ((n > 0)), UNIQUE (a, b) ...
    columns: tuple[str, ...] = ()  # pg_constraint.conkey by name: the columns it constrains
    index: str | None = None  # the index behind a UNIQUE, PRIMARY KEY or EXCLUDE constraint

    @property
    def inherited(self) -> bool:
        """Whether every inheritance child has a copy (CHECK, and NOT NULL on 18, unless NO INHERIT)."""
        return self.kind in ("c", "n") and not self.no_inherit


@dataclass(frozen=True)
class ForeignKey:
    """One foreign key as seen from either of its tables.

    Its triggers lock the other table when rows change: inserting or updating
    the key columns checks the referenced row (ROW SHARE on the referenced
    table); deleting or updating a referenced row runs the key's action on the
    referencing table (ROW SHARE for NO ACTION / RESTRICT, which only look;
    ROW EXCLUSIVE for CASCADE / SET NULL / SET DEFAULT, which write).
    """

    name: str
    table: RelationName  # the referencing table
    columns: tuple[str, ...]
    referenced: RelationName
    referenced_columns: tuple[str, ...]
    on_delete: str = "a"  # pg_constraint.confdeltype: a (no action), r, c, n, d
    on_update: str = "a"  # pg_constraint.confupdtype
    indexed: bool = False  # an index on the referencing table starts with the key's columns
    # Every partition below a partitioned referencing / referenced table (empty otherwise): the
    # key's queries name the table without ONLY then, which reaches them.
    table_partitions: tuple[ChildInfo, ...] = ()
    referenced_partitions: tuple[ChildInfo, ...] = ()
    # Whether its triggers on the referencing table (the checks) and on the referenced table (the
    # actions) are enabled: ALTER TABLE ... DISABLE TRIGGER ALL turns them off.
    checks_enabled: bool = True
    actions_enabled: bool = True

    @staticmethod
    def action_writes(action: str) -> bool:
        """CASCADE, SET NULL and SET DEFAULT change the referencing rows; the others only check."""
        return action in ("c", "n", "d")


@dataclass(frozen=True)
class RuleInfo:
    """A rule on INSERT, UPDATE or DELETE (pg_rewrite): the rewriter adds its actions to the
    statement (ALSO) or puts them in its place (INSTEAD, unless a WHERE makes it conditional)."""

    name: str
    event: str  # INSERT, UPDATE, DELETE
    instead: bool
    conditional: bool
    definition: str  # pg_get_ruledef: CREATE RULE ... DO ...


@dataclass(frozen=True)
class ColumnType:
    """A column's type as ``pg_type.typname`` plus its decoded type modifiers.

    ``not_null`` is ``pg_attribute.attnotnull``: SET NOT NULL on such a column
    is a no-op that scans nothing.
    """

    typname: str
    modifiers: tuple[int, ...] = ()
    not_null: bool = False
    default: str | None = None  # pg_get_expr of its default, as PostgreSQL prints it
    identity: str = ""  # pg_attribute.attidentity: a (ALWAYS), d (BY DEFAULT), "" (none)
    generated: str = ""  # pg_attribute.attgenerated: s (STORED), v (VIRTUAL, 18), "" (none)
    sql_type: str | None = None  # format_type(), and COLLATE when not the type's default
    owned_sequence: str | None = None  # a sequence OWNED BY it (serial), quoted and qualified


@dataclass(frozen=True)
class IndexInfo:
    """One index of a table, as ``pg_get_indexdef`` prints it (a rule rebuilds it elsewhere)."""

    name: str
    definition: str


@dataclass(frozen=True)
class ChildInfo:
    """A table below another in its partition or inheritance tree, at any depth.

    Statements that recurse (ALTER TABLE without ONLY, TRUNCATE, DROP of a
    partitioned table, ...) lock every child too, and only children with
    storage of their own (relkind ``r``) are scanned or rewritten.
    """

    name: RelationName
    relkind: str  # pg_class.relkind: r (a table), p (partitioned: no storage), f (foreign)
    depth: int = 1  # 1 for a direct child (pg_inherits names it), 2 for its children ...
    bound: str | None = None  # a partition's bound as PostgreSQL prints it: FOR VALUES IN (1), DEFAULT
    parents: tuple[RelationName, ...] = ()  # its direct parents (empty: unknown)
    columns: frozenset[str] = frozenset()
    own_columns: frozenset[str] = frozenset()  # defined locally or inherited from several parents
    total_bytes: int | None = None  # pg_total_relation_size: what a scan of it reads
    # Its valid indexes attached to no parent index: CREATE INDEX on the parent attaches an
    # equal one instead of building another.
    free_indexes: tuple[IndexInfo, ...] = ()
    partition_key: str | None = None  # a partitioned child's own key (pg_get_partkeydef)
    indexes: tuple[RelationName, ...] = ()  # its own indexes (REINDEX of the tree locks them)

    @property
    def has_storage(self) -> bool:
        return self.relkind == "r"


@dataclass(frozen=True)
class RelationInfo:
    name: RelationName  # schema-qualified
    relkind: str  # pg_class.relkind: r, p, i, I, v, m, S, f
    table: RelationName | None = None  # for an index: the table it belongs to
    indexes: tuple[RelationName, ...] = ()
    constraints: tuple[ConstraintInfo, ...] = ()
    fk_parents: tuple[RelationName, ...] = ()  # tables this one references
    fk_children: tuple[RelationName, ...] = ()  # tables that reference this one
    fk_descendants: tuple[RelationName, ...] = ()  # ... and the tables that reference those, at any depth
    default_partition: RelationName | None = None
    columns: dict[str, ColumnType] = field(default_factory=dict)
    rows_estimate: int | None = None
    total_bytes: int | None = None
    views: tuple[RelationName, ...] = ()  # views and materialized views that depend on it
    column_views: dict[str, tuple[RelationName, ...]] = field(default_factory=dict)  # by column
    # Every partition or inheritance child below this relation (pg_inherits, recursively), parents first.
    children: tuple[ChildInfo, ...] = ()
    partition_of: RelationName | None = None  # the partitioned table this one is a partition of
    # Every partitioned table above a partition, nearest first: checking a row written straight
    # into the partition reads their partition bounds (ACCESS SHARE on each).
    ancestors: tuple[RelationName, ...] = ()
    partition_key: str | None = None  # a partitioned table's key (pg_get_partkeydef): LIST (kind)
    view_definition: str | None = None  # a view's query (pg_get_viewdef): reading the view reads it
    instead: bool = False  # a view with INSTEAD OF triggers or INSTEAD rules: writes run them
    # The events its INSTEAD OF triggers fire on (None: not read, ``instead`` says whether any);
    # and its rules on INSERT, UPDATE and DELETE, in the order they apply.
    instead_of: frozenset[str] | None = None
    rules: tuple[RuleInfo, ...] = ()
    # Its row-security policies' expressions when row security applies to the role the facts were
    # read as: a statement on the table evaluates them (what their subqueries read is read).
    policy_expressions: tuple[str, ...] = ()
    # The user's triggers: (name, events it fires on: INSERT, UPDATE, DELETE, TRUNCATE). What their
    # functions lock is code, not catalog: a statement that fires one says so in its notes.
    triggers: tuple[tuple[str, frozenset[str]], ...] = ()
    foreign_keys: tuple[ForeignKey, ...] = ()  # keys this table has (it references others)
    referenced_by: tuple[ForeignKey, ...] = ()  # keys of other tables that reference this one
    # A partition's copies of its parents' keys (pg_constraint.conparentid set): their triggers
    # fire on the partition's rows when it is written to directly.
    foreign_key_copies: tuple[ForeignKey, ...] = ()
    referenced_by_copies: tuple[ForeignKey, ...] = ()
    # Keys that reference one of its partitions itself (not this table): their actions fire when a
    # statement on this table changes that partition's rows.
    referenced_below: tuple[ForeignKey, ...] = ()
    # The primary key's columns in index order (empty: none, or not read): a backfill walks it.
    primary_key: tuple[str, ...] = ()
    index_definitions: tuple[IndexInfo, ...] = ()  # a table's indexes with their definitions
    # A partitioned table's row-level triggers (FOR EACH ROW) by name, and whether each is internal
    # (a foreign key's): each has a copy on every partition, which CREATE / DROP TRIGGER and ALTER
    # TABLE ENABLE / DISABLE TRIGGER reach; statement-level triggers have none. None: not read.
    row_triggers: dict[str, bool] | None = None

    @property
    def is_partitioned(self) -> bool:
        return self.relkind == "p"

    def triggers_on(self, event: str) -> list[str]:
        """The names of the user's triggers that fire on ``event`` ("INSERT", "TRUNCATE" ...)."""
        return [name for name, events in self.triggers if event in events]

    def rules_on(self, event: str) -> list[RuleInfo]:
        return [rule for rule in self.rules if rule.event == event]

    def constraint(self, name: str) -> ConstraintInfo | None:
        return next((c for c in self.constraints if c.name == name), None)


@dataclass(frozen=True)
class CatalogFacts:
    """Facts for the relations a script names, keyed by the name as written."""

    server_version_num: int | None = None
    relations: dict[RelationName, RelationInfo] = field(default_factory=dict)
    volatile_functions: frozenset[str] = frozenset()
    known_functions: frozenset[str] = frozenset()
    # What DROP SCHEMA / TYPE / DOMAIN ... CASCADE drops with the object, by ("schema" or "type",
    # the name as written): the relations it locks ACCESS EXCLUSIVE.
    dropped_with: dict[tuple[str, str], tuple[RelationName, ...]] = field(default_factory=dict)
    statistics_tables: dict[RelationName, RelationName] = field(default_factory=dict)  # by name as written
    # The tables of each publication an ALTER PUBLICATION ... SET TABLE names (pg_publication_rel),
    # by its name: SET takes the ones it drops out under SHARE UPDATE EXCLUSIVE too.
    publication_tables: dict[str, tuple[RelationName, ...]] = field(default_factory=dict)
    # The tables (and materialized views) with a column of each domain an ALTER DOMAIN that checks
    # its columns names, or of a domain over it, by the domain's name as written (dotted).
    domain_tables: dict[str, tuple[RelationName, ...]] = field(default_factory=dict)
    # The typed tables (CREATE TABLE ... OF type) of each composite type an ALTER TYPE ... CASCADE
    # names, and their partitions and inheritance children at any depth, with their relkind.
    typed_tables: dict[str, tuple[tuple[RelationName, str], ...]] = field(default_factory=dict)
    # Tables the script's earlier statements created, by name as written (sql/learn.py): nobody's
    # traffic uses them yet, and they hold only the rows the script put there.
    created: frozenset[RelationName] = frozenset()
    # The planner's row estimate (EXPLAIN) of each UPDATE or DELETE with a WHERE, by its text.
    statement_rows: dict[str, int] = field(default_factory=dict)
    # Relation names already used in the schemas of the tables the script names (and their
    # partitions), near their names: what an index name PostgreSQL chooses could collide with.
    names_in_use: frozenset[RelationName] = frozenset()
    # Constraint names used in those schemas near the tables' names (schema, conname): what a name
    # PostgreSQL chooses for a constraint (ChooseConstraintName) or its index must avoid too.
    constraint_names_in_use: frozenset[RelationName] = frozenset()

    def resolve(self, name: RelationName) -> RelationInfo | None:
        return self.relations.get(name)

    def qualify(self, name: RelationName) -> RelationName:
        info = self.resolve(name)
        return info.name if info is not None else name
