"""Statements declared free of relation locks take none: checked against pg_locks on 15 and 18.

Each runs inside BEGIN ... ROLLBACK on a database holding the catalogue's
fixture; afterwards the backend must hold no lock on any table, view, index or
sequence of the database (locks on the system catalogs are PostgreSQL's own
business), and the catalogue must claim none.
"""

from __future__ import annotations

import asyncpg
import pytest
from test_lock_catalogue import FIXTURE

from zdmproxy.sql.catalogue import classify
from zdmproxy.sql.parse import parse_script

EXTRA = """
CREATE COLLATION coll1 FROM "C";
CREATE FUNCTION evt() RETURNS event_trigger LANGUAGE plpgsql AS $$ BEGIN END $$;
CREATE EVENT TRIGGER evt0 ON ddl_command_start EXECUTE FUNCTION evt();
ALTER EVENT TRIGGER evt0 DISABLE;
CREATE FOREIGN DATA WRAPPER fdw0;
CREATE SERVER srv0 FOREIGN DATA WRAPPER fdw0;
CREATE USER MAPPING FOR postgres SERVER srv0;
CREATE OPERATOR FAMILY of0 USING btree;
CREATE OPERATOR === (LEFTARG = int4, RIGHTARG = int4, FUNCTION = int4eq);
CREATE TEXT SEARCH CONFIGURATION tsc0 (COPY = english);
CREATE TEXT SEARCH DICTIONARY tsd0 (TEMPLATE = simple);
CREATE FUNCTION f0() RETURNS int LANGUAGE sql AS 'SELECT 1';
CREATE STATISTICS orders_stats ON status, code FROM orders;
"""

LOCK_FREE_CASES = [
    "ALTER COLLATION coll1 REFRESH VERSION",
    "ALTER DATABASE {db} REFRESH COLLATION VERSION",
    "ALTER DATABASE {db} SET work_mem = '8MB'",
    "ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO public",
    "ALTER EVENT TRIGGER evt0 ENABLE",
    "ALTER EXTENSION plpgsql ADD FUNCTION f0()",
    "ALTER EXTENSION plpgsql UPDATE",
    "ALTER FOREIGN DATA WRAPPER fdw0 OPTIONS (ADD a '1')",
    "ALTER SERVER srv0 OPTIONS (ADD a '1')",
    "ALTER FUNCTION touch() COST 5",
    "ALTER OPERATOR FAMILY of0 USING btree ADD FUNCTION 1 (int4, int4) btint4cmp(int4, int4)",
    "ALTER OPERATOR === (int4, int4) SET (RESTRICT = NONE)",
    "ALTER FUNCTION touch() OWNER TO postgres",
    "ALTER ROLE postgres SET work_mem = '8MB'",
    "ALTER ROLE postgres CONNECTION LIMIT -1",
    "ALTER STATISTICS orders_stats SET STATISTICS 10",
    "ALTER TEXT SEARCH CONFIGURATION tsc0 DROP MAPPING FOR word",
    "ALTER TEXT SEARCH DICTIONARY tsd0 (Accept = false)",
    "ALTER TABLESPACE pg_default SET (random_page_cost = 2)",
    "ALTER TYPE pg_catalog.int4 SET (STORAGE = plain)",
    "ALTER USER MAPPING FOR postgres SERVER srv0 OPTIONS (ADD a '1')",
    "CHECKPOINT",
    "CREATE TYPE c0 AS (a int)",
    "SET CONSTRAINTS ALL DEFERRED",
    "CREATE ACCESS METHOD am0 TYPE TABLE HANDLER heap_tableam_handler",
    "CREATE CAST (mood AS int4) WITH INOUT",
    "CREATE CONVERSION cv0 FOR 'LATIN1' TO 'UTF8' FROM iso8859_1_to_utf8",
    "CREATE DOMAIN d0 AS int",
    "CREATE TYPE e0 AS ENUM ('a')",
    "CREATE EVENT TRIGGER evt1 ON ddl_command_start EXECUTE FUNCTION evt()",
    "CREATE EXTENSION IF NOT EXISTS plpgsql",
    "CREATE FOREIGN DATA WRAPPER fdw1",
    "CREATE SERVER srv1 FOREIGN DATA WRAPPER fdw0",
    "CREATE OPERATOR CLASS oc0 FOR TYPE int4 USING hash AS OPERATOR 1 =, FUNCTION 1 hashint4(int4)",
    "CREATE OPERATOR FAMILY of1 USING btree",
    "CREATE OR REPLACE TRUSTED LANGUAGE plpgsql HANDLER plpgsql_call_handler",
    "CREATE TYPE r0 AS RANGE (subtype = int4)",
    "CREATE ROLE zdm_lock_free_role",
    "CREATE USER MAPPING FOR public SERVER srv0",
    "CREATE AGGREGATE agg0 (int4) (SFUNC = int4pl, STYPE = int4)",
    "DROP ROLE IF EXISTS zdm_nobody",
    "DROP USER MAPPING FOR postgres SERVER srv0",
    "GRANT pg_monitor TO postgres",
    "LISTEN ch0",
    "NOTIFY ch0",
    "UNLISTEN ch0",
    "SHOW work_mem",
]

# Locks on relations that existed before the statement ($1): one it creates is nobody's business.
HELD = """
SELECT l.relation::regclass::text AS relation, l.mode
  FROM pg_locks l
 WHERE l.pid = pg_backend_pid() AND l.locktype = 'relation' AND l.relation = ANY($1::oid[])
"""
EXISTING = """
SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname NOT IN ('pg_catalog', 'pg_toast', 'information_schema')
"""


@pytest.fixture
async def fixture_db(dsn: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(FIXTURE + EXTRA)
    finally:
        await conn.close()
    return dsn


async def test_lock_free_statements_take_no_relation_lock(fixture_db: str) -> None:
    conn = await asyncpg.connect(fixture_db)
    try:
        db = await conn.fetchval("SELECT quote_ident(current_database())")
        existing = [r["oid"] for r in await conn.fetch(EXISTING)]
        for template in LOCK_FREE_CASES:
            sql = template.format(db=db)
            (statement,) = parse_script(sql)
            assert classify(statement).locks == (), sql
            tx = conn.transaction()
            await tx.start()
            try:
                await conn.execute(sql)
                assert [tuple(r) for r in await conn.fetch(HELD, existing)] == [], sql
            finally:
                await tx.rollback()
    finally:
        await conn.close()
