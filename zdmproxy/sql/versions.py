"""Server-version thresholds the lock catalogue depends on (server_version_num)."""

from __future__ import annotations

# The version a plan is made for when no server tells us: the newest we test on.
DEFAULT_VERSION_NUM = 180000

INSTANT_NON_VOLATILE_DEFAULT = 110000  # ADD COLUMN ... DEFAULT const is a catalog-only change
SET_NOT_NULL_USES_CHECK = 120000  # a valid CHECK (col IS NOT NULL) lets SET NOT NULL skip its scan
REINDEX_CONCURRENTLY = 120000
ATTACH_PARTITION_SUE = 120000  # before 12, ATTACH took ACCESS EXCLUSIVE on the parent
ENUM_ADD_VALUE_IN_TRANSACTION = 120000
DETACH_PARTITION_CONCURRENTLY = 140000
REINDEX_PARTITIONED = 140000  # REINDEX of a partitioned table or index (CONCURRENTLY too)
# apply's watchdog reads pg_locks.waitstart; step sessions set client_connection_check_interval
APPLY = 140000
NOT_NULL_NOT_VALID = 180000  # ADD CONSTRAINT n NOT NULL col NOT VALID, then VALIDATE
# NOT NULL is a constraint children inherit (pg_constraint contype n): ALTER TABLE ONLY parent
# ALTER col DROP NOT NULL locks the direct children too (measured on 18; on 15 the table only).
NOT_NULL_CONSTRAINTS = 180000
# Not thresholds, for the record: ALTER TRIGGER ... RENAME on a partitioned table renames (and
# locks) every partition's copy from 15 on; ALTER TABLE ONLY partitioned DROP CONSTRAINT is
# refused on 15 and locks every partition on 18 (the catalogue claims that on both). Both
# measured on 15 and 18 (tests/test_lock_catalogue.py).
# A foreign key NOT VALID on a partitioned table: refused before 18 (42809, measured on 15)
FOREIGN_KEY_NOT_VALID_ON_PARTITIONED = 180000
VIRTUAL_GENERATED_COLUMNS = 180000
# Measured on 15, 16 and 18: from 18 on, ADD CONSTRAINT UNIQUE / EXCLUDE / FOREIGN KEY on an
# inheritance parent locks its children too (AEL / AEL / SRE), and UNIQUE on a partitioned
# table locks the partitions with AEL instead of SHARE; ANALYZE of an inheritance parent takes
# SHARE UPDATE EXCLUSIVE on the children instead of ACCESS SHARE. 17 was not measured: it is
# assumed to behave like 18, the stronger locks, so a plan never under-states them.
CONSTRAINTS_LOCK_WHOLE_TREE = 170000
ANALYZE_LOCKS_CHILDREN_SUE = 170000
# GRANT / REVOKE on a table takes ACCESS SHARE on it on 18 (measured), none on 15 (measured); 16
# and 17 were not measured: 17 is assumed to lock, like 18, so a plan never under-states it.
GRANT_LOCKS_RELATION = 170000

# MERGE into an automatically updatable view (or one with INSTEAD OF triggers): 17+; before, it
# is refused. Measured on 15 and 18 (tests/test_lock_catalogue_dml.py).
MERGE_INTO_VIEWS = 170000


def major(version_num: int) -> int:
    return version_num // 10000
