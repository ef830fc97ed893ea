-- Every catalog query zdmproxy sends, in one place. Blocks start with "-- name: <name>".

-- name: resolve_relations
-- Resolve names as written ($1 schemas, NULL = search_path; $2 names) to relations.
SELECT w.ord, c.oid, n.nspname, c.relname, c.relkind::text AS relkind,
       c.reltuples::bigint AS rows_estimate,
       CASE WHEN c.relkind IN ('r', 'p', 'm', 'i') THEN pg_total_relation_size(c.oid) END AS total_bytes,
       ti.nspname AS index_table_schema, tc.relname AS index_table_name,
       dn.nspname AS default_partition_schema, dc.relname AS default_partition_name,
       pn.nspname AS partition_of_schema, pc.relname AS partition_of_name,
       CASE WHEN c.relkind IN ('v', 'm') THEN pg_get_viewdef(c.oid) END AS view_definition,
       CASE WHEN c.relkind = 'p' THEN pg_get_partkeydef(c.oid) END AS partition_key,
       -- The partitioned tables above a partition, nearest first, as (schema, name) pairs.
       ARRAY(SELECT ARRAY[an.nspname::text, a.relname::text]
               FROM pg_partition_ancestors(c.oid) WITH ORDINALITY AS x(relid, ord)
               JOIN pg_class a ON a.oid = x.relid JOIN pg_namespace an ON an.oid = a.relnamespace
              WHERE x.relid <> c.oid ORDER BY x.ord) AS ancestors,
       -- INSTEAD OF triggers (tgtype bit 6) or non-SELECT INSTEAD rules: a write runs them.
       EXISTS (SELECT FROM pg_trigger t WHERE t.tgrelid = c.oid AND t.tgtype & 64 <> 0)
       OR EXISTS (SELECT FROM pg_rewrite r WHERE r.ev_class = c.oid AND r.is_instead AND r.ev_type <> '1')
         AS instead
  FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS w(schema, name, ord)
  JOIN pg_class c
    ON c.oid = to_regclass(CASE WHEN w.schema IS NULL THEN quote_ident(w.name)
                                ELSE quote_ident(w.schema) || '.' || quote_ident(w.name) END)
  JOIN pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN pg_index ix ON ix.indexrelid = c.oid
  LEFT JOIN pg_class tc ON tc.oid = ix.indrelid
  LEFT JOIN pg_namespace ti ON ti.oid = tc.relnamespace
  LEFT JOIN pg_partitioned_table pt ON pt.partrelid = c.oid
  LEFT JOIN pg_class dc ON dc.oid = pt.partdefid
  LEFT JOIN pg_namespace dn ON dn.oid = dc.relnamespace
  LEFT JOIN pg_inherits pi ON c.relispartition AND pi.inhrelid = c.oid
  LEFT JOIN pg_class pc ON pc.oid = pi.inhparent
  LEFT JOIN pg_namespace pn ON pn.oid = pc.relnamespace;

-- name: relation_indexes
SELECT n.nspname, c.relname, pg_get_indexdef(ix.indexrelid) AS definition
  FROM pg_index ix
  JOIN pg_class c ON c.oid = ix.indexrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE ix.indrelid = $1
 ORDER BY c.relname;

-- name: relation_constraints
-- For CHECK constraints the expression is returned so the caller can recognise col IS NOT NULL.
SELECT con.conname, con.contype::text AS contype, con.convalidated, con.connoinherit,
       fn.nspname AS ref_schema, fc.relname AS ref_name,
       CASE WHEN con.contype = 'c' THEN pg_get_expr(con.conbin, con.conrelid) END AS check_expr,
       pg_get_constraintdef(con.oid) AS definition,
       (SELECT ic.relname FROM pg_class ic WHERE ic.oid = con.conindid) AS index_name,
       coalesce((SELECT array_agg(a.attname ORDER BY k.ord)
                   FROM unnest(con.conkey) WITH ORDINALITY AS k(attnum, ord)
                   JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum),
                '{}') AS columns
  FROM pg_constraint con
  LEFT JOIN pg_class fc ON fc.oid = con.confrelid
  LEFT JOIN pg_namespace fn ON fn.oid = fc.relnamespace
 WHERE con.conrelid = $1
 ORDER BY con.conname;

-- name: relation_fk_children
SELECT DISTINCT n.nspname, c.relname
  FROM pg_constraint con
  JOIN pg_class c ON c.oid = con.conrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE con.contype = 'f' AND con.confrelid = $1 AND con.conrelid <> $1;

-- name: relation_fk_descendants
-- Every table that references $1 by foreign key, directly or through others that do: what
-- TRUNCATE ... CASCADE empties with it.
WITH RECURSIVE referencing(oid) AS (
    SELECT con.conrelid FROM pg_constraint con WHERE con.contype = 'f' AND con.confrelid = $1
    UNION
    SELECT con.conrelid FROM pg_constraint con JOIN referencing r ON con.confrelid = r.oid
     WHERE con.contype = 'f'
)
SELECT n.nspname, c.relname
  FROM referencing r JOIN pg_class c ON c.oid = r.oid JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE r.oid <> $1
 ORDER BY 1, 2;

-- name: relation_triggers
-- The user's triggers on $1 (not the foreign keys' internal ones) and the events they fire on,
-- from tgtype's bits: 4 INSERT, 8 DELETE, 16 UPDATE, 32 TRUNCATE; 64: INSTEAD OF (on a view).
SELECT t.tgname, ARRAY(SELECT e.event FROM (VALUES (4, 'INSERT'), (8, 'DELETE'), (16, 'UPDATE'),
                                                  (32, 'TRUNCATE')) AS e(bit, event)
                        WHERE t.tgtype::int & e.bit <> 0) AS events,
       t.tgtype::int & 64 <> 0 AS instead_of
  FROM pg_trigger t
 WHERE t.tgrelid = $1 AND NOT t.tgisinternal
 ORDER BY t.tgname;

-- name: relation_row_triggers
-- The row-level triggers on $1 (tgtype bit 1), the foreign keys' internal ones included.
SELECT t.tgname, t.tgisinternal FROM pg_trigger t WHERE t.tgrelid = $1 AND t.tgtype::int & 1 <> 0;

-- name: relation_policies
-- The expressions of $1's row-security policies, when row security applies to this role on it
-- (row_security_active: enabled, and the role neither owns the table without FORCE nor bypasses
-- it): a statement reading or writing the table evaluates them, and what their subqueries read.
SELECT pg_get_expr(p.polqual, p.polrelid) AS qual, pg_get_expr(p.polwithcheck, p.polrelid) AS with_check
  FROM pg_policy p
 WHERE p.polrelid = $1 AND row_security_active($1)
 ORDER BY p.polname;

-- name: relation_rules
-- The rules on $1 other than a view's ON SELECT, in the order the rewriter applies them (by
-- name): the event (ev_type 2 UPDATE, 3 INSERT, 4 DELETE), INSTEAD or ALSO, whether a WHERE
-- makes it conditional, and the rule as pg_get_ruledef prints it.
-- A disabled rule (ev_enabled D) does nothing, nor does one enabled for replicas only (R) while
-- session_replication_role is origin, its default.
SELECT r.rulename, CASE r.ev_type WHEN '2' THEN 'UPDATE' WHEN '3' THEN 'INSERT' ELSE 'DELETE' END AS event,
       r.is_instead, r.ev_qual::text <> '<>' AS conditional,
       pg_get_ruledef(r.oid) AS definition
  FROM pg_rewrite r
 WHERE r.ev_class = $1 AND r.ev_type IN ('2', '3', '4') AND r.ev_enabled IN ('O', 'A')
 ORDER BY r.rulename;

-- name: relation_columns
SELECT a.attname, t.typname, a.atttypmod, a.attnotnull, a.attidentity::text AS identity,
       a.attgenerated::text AS generated, pg_get_expr(d.adbin, d.adrelid) AS default_expr,
       format_type(a.atttypid, a.atttypmod)
       || coalesce((SELECT ' COLLATE ' || quote_ident(cn.nspname) || '.' || quote_ident(co.collname)
                      FROM pg_collation co JOIN pg_namespace cn ON cn.oid = co.collnamespace
                     WHERE co.oid = a.attcollation AND a.attcollation <> t.typcollation), '') AS sql_type,
       (SELECT quote_ident(sn.nspname) || '.' || quote_ident(s.relname)
          FROM pg_depend dep
          JOIN pg_class s ON s.oid = dep.objid AND s.relkind = 'S'
          JOIN pg_namespace sn ON sn.oid = s.relnamespace
         WHERE dep.classid = 'pg_class'::regclass AND dep.refclassid = 'pg_class'::regclass
           AND dep.refobjid = a.attrelid AND dep.refobjsubid = a.attnum AND dep.deptype = 'a') AS owned_sequence
  FROM pg_attribute a
  JOIN pg_type t ON t.oid = a.atttypid
  LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
 WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped
 ORDER BY a.attnum;

-- name: relation_foreign_keys
-- Foreign keys on both sides of relation $1: "outgoing" ones it has, "incoming" ones that
-- reference it; columns by name, in key order, and the actions on delete and update.
-- A partition also holds the copies of its parents' keys whose triggers fire on its rows
-- ("outgoing_copy": the check of a partitioned referencing table's key; "incoming_copy": the
-- actions of a key referencing a partitioned table), and the other table of a key, when
-- partitioned, is queried with its partitions (table_partitions, referenced_partitions).
-- "incoming_below": a key referencing one of $1's partitions itself, whose actions fire when a
-- statement on $1 changes that partition's rows.
SELECT CASE WHEN con.conrelid = $1 THEN 'outgoing' WHEN con.confrelid = $1 THEN 'incoming'
            ELSE 'incoming_below' END
       || CASE WHEN con.conparentid = 0 THEN '' ELSE '_copy' END AS direction,
       con.conname, tn.nspname AS table_schema, t.relname AS table_name,
       rn.nspname AS ref_schema, r.relname AS ref_name,
       ARRAY(SELECT a.attname::text FROM unnest(con.conkey) WITH ORDINALITY k(attnum, ord)
               JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum
              ORDER BY k.ord) AS columns,
       ARRAY(SELECT a.attname::text FROM unnest(con.confkey) WITH ORDINALITY k(attnum, ord)
               JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.attnum
              ORDER BY k.ord) AS referenced_columns,
       con.confdeltype::text AS on_delete, con.confupdtype::text AS on_update,
       -- An index on the referencing table that starts with the key's columns (in any order):
       -- without one, every action on a referenced row reads the referencing table in full.
       EXISTS (SELECT FROM pg_index i
                WHERE i.indrelid = con.conrelid
                  AND (i.indkey::int2[])[0:cardinality(con.conkey) - 1] @> con.conkey
                  AND (i.indkey::int2[])[0:cardinality(con.conkey) - 1] <@ con.conkey) AS indexed,
       ARRAY(WITH RECURSIVE below(oid) AS (
                 SELECT h.inhrelid FROM pg_inherits h WHERE h.inhparent = t.oid AND t.relkind = 'p'
                 UNION ALL SELECT h.inhrelid FROM pg_inherits h JOIN below b ON h.inhparent = b.oid)
             SELECT ARRAY[bn.nspname::text, bc.relname::text, bc.relkind::text] FROM below b
               JOIN pg_class bc ON bc.oid = b.oid JOIN pg_namespace bn ON bn.oid = bc.relnamespace
              ORDER BY 1) AS table_partitions,
       ARRAY(WITH RECURSIVE below(oid) AS (
                 SELECT h.inhrelid FROM pg_inherits h WHERE h.inhparent = r.oid AND r.relkind = 'p'
                 UNION ALL SELECT h.inhrelid FROM pg_inherits h JOIN below b ON h.inhparent = b.oid)
             SELECT ARRAY[bn.nspname::text, bc.relname::text, bc.relkind::text] FROM below b
               JOIN pg_class bc ON bc.oid = b.oid JOIN pg_namespace bn ON bn.oid = bc.relnamespace
              ORDER BY 1) AS referenced_partitions,
       -- The key's triggers on either table: DISABLE TRIGGER ALL turns its checks or actions off
       -- (enabled: O, or A; R fires for replicas only, while session_replication_role is origin).
       EXISTS (SELECT FROM pg_trigger g WHERE g.tgconstraint = con.oid AND g.tgrelid = con.conrelid
                  AND g.tgenabled IN ('O', 'A')) AS checks_enabled,
       EXISTS (SELECT FROM pg_trigger g WHERE g.tgconstraint = con.oid AND g.tgrelid = con.confrelid
                  AND g.tgenabled IN ('O', 'A')) AS actions_enabled
  FROM pg_constraint con
  JOIN pg_class t ON t.oid = con.conrelid
  JOIN pg_namespace tn ON tn.oid = t.relnamespace
  JOIN pg_class r ON r.oid = con.confrelid
  JOIN pg_namespace rn ON rn.oid = r.relnamespace
  LEFT JOIN pg_constraint parent ON parent.oid = con.conparentid
 WHERE con.contype = 'f'
   AND (con.conrelid = $1 OR con.confrelid = $1
        OR (con.conparentid = 0 AND con.confrelid IN (
              WITH RECURSIVE below(oid) AS (
                  SELECT h.inhrelid FROM pg_inherits h WHERE h.inhparent = $1
                  UNION ALL SELECT h.inhrelid FROM pg_inherits h JOIN below b ON h.inhparent = b.oid)
              SELECT oid FROM below)))
   -- A copy made for a partition of the referencing table checks that partition's rows; one made
   -- for a partition of the referenced table runs the actions for that partition's rows. The
   -- other copies fire nothing on $1.
   AND (con.conparentid = 0
        OR (con.conrelid = $1 AND parent.confrelid = con.confrelid)
        OR (con.confrelid = $1 AND parent.conrelid = con.conrelid))
 ORDER BY 1, con.conname;

-- name: dropped_with
-- The relations DROP ... CASCADE of a schema ($1 = 'schema'), a type or domain ($1 = 'type') or a
-- table or view ($1 = 'relation'), named $2, locks ACCESS EXCLUSIVE: every object that depends on it, recursively (pg_depend,
-- normal and automatic dependencies; an object internal to another takes its owner along, as a
-- view's rule takes the view), resolved to the relation it is or lives on, plus the other table
-- of every foreign key dropped. The same walk PostgreSQL's findDependentObjects makes.
WITH RECURSIVE root(classid, objid) AS (
    SELECT CASE $1 WHEN 'schema' THEN 'pg_namespace'::regclass
                   WHEN 'relation' THEN 'pg_class'::regclass ELSE 'pg_type'::regclass END::oid,
           CASE $1 WHEN 'schema' THEN (SELECT oid FROM pg_namespace WHERE nspname = $2)
                   WHEN 'relation' THEN to_regclass($2)::oid ELSE to_regtype($2)::oid END
), dropped(classid, objid, objsubid) AS (
    SELECT classid, objid, 0 FROM root WHERE objid IS NOT NULL
    UNION
    SELECT step.classid, step.objid, step.objsubid
      FROM dropped x
      CROSS JOIN LATERAL (
            SELECT d.classid, d.objid, d.objsubid
              FROM pg_depend d
             WHERE d.refclassid = x.classid AND d.refobjid = x.objid
               AND (x.objsubid = 0 OR d.refobjsubid = x.objsubid)
               AND d.deptype IN ('n', 'a', 'i')
            UNION
            SELECT d.refclassid, d.refobjid, 0
              FROM pg_depend d
             WHERE d.classid = x.classid AND d.objid = x.objid AND d.deptype = 'i'
      ) step
), locked(oid) AS (
    SELECT objid FROM dropped WHERE classid = 'pg_class'::regclass
    UNION SELECT c.conrelid FROM dropped x JOIN pg_constraint c ON x.classid = 'pg_constraint'::regclass AND c.oid = x.objid
    UNION SELECT c.confrelid FROM dropped x JOIN pg_constraint c ON x.classid = 'pg_constraint'::regclass AND c.oid = x.objid
    UNION SELECT t.tgrelid FROM dropped x JOIN pg_trigger t ON x.classid = 'pg_trigger'::regclass AND t.oid = x.objid
    UNION SELECT r.ev_class FROM dropped x JOIN pg_rewrite r ON x.classid = 'pg_rewrite'::regclass AND r.oid = x.objid
    UNION SELECT p.polrelid FROM dropped x JOIN pg_policy p ON x.classid = 'pg_policy'::regclass AND p.oid = x.objid
    UNION SELECT a.adrelid FROM dropped x JOIN pg_attrdef a ON x.classid = 'pg_attrdef'::regclass AND a.oid = x.objid
    -- a dropped partition's parent (its partition descriptor changes) and that parent's default
    -- partition (its constraint widens), wherever they live
    UNION SELECT i.inhparent FROM dropped x JOIN pg_class c ON x.classid = 'pg_class'::regclass
           AND x.objsubid = 0 AND c.oid = x.objid AND c.relispartition JOIN pg_inherits i ON i.inhrelid = c.oid
    UNION SELECT p.partdefid FROM dropped x JOIN pg_class c ON x.classid = 'pg_class'::regclass
           AND x.objsubid = 0 AND c.oid = x.objid AND c.relispartition JOIN pg_inherits i ON i.inhrelid = c.oid
           JOIN pg_partitioned_table p ON p.partrelid = i.inhparent
)
SELECT n.nspname, c.relname, c.relkind::text AS relkind
  FROM locked l JOIN pg_class c ON c.oid = l.oid JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE l.oid <> 0
 ORDER BY 1, 2;

-- name: publication_tables
-- The tables publication $1 lists (pg_publication_rel), each by schema and name.
SELECT n.nspname, c.relname
  FROM pg_publication p JOIN pg_publication_rel r ON r.prpubid = p.oid
  JOIN pg_class c ON c.oid = r.prrelid JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE p.pubname = $1
 ORDER BY 1, 2;

-- name: domain_tables
-- The tables and materialized views with a column of domain $1 (a name as written) or of a domain
-- over it, at any depth: what ALTER DOMAIN locks SHARE and reads when it checks the columns
-- (get_rels_with_domain; other relations with such a column are locked and released at once).
WITH RECURSIVE domains(oid) AS (
    SELECT to_regtype($1)::oid
    UNION
    SELECT t.oid FROM pg_type t JOIN domains d ON t.typbasetype = d.oid WHERE t.typtype = 'd'
)
SELECT DISTINCT n.nspname, c.relname
  FROM pg_attribute a JOIN domains d ON a.atttypid = d.oid
  JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'm')
 ORDER BY 1, 2;

-- name: typed_tables
-- The typed tables of composite type $1 (a name as written) and every partition or inheritance
-- child below them: what ALTER TYPE ... CASCADE alters (ACCESS EXCLUSIVE on each).
WITH RECURSIVE typed(oid) AS (
    SELECT c.oid FROM pg_class c WHERE c.reloftype = to_regtype($1)::oid AND c.relkind IN ('r', 'p')
    UNION
    SELECT i.inhrelid FROM pg_inherits i JOIN typed t ON i.inhparent = t.oid
)
SELECT n.nspname, c.relname, c.relkind::text AS relkind
  FROM typed t JOIN pg_class c ON c.oid = t.oid JOIN pg_namespace n ON n.oid = c.relnamespace
 ORDER BY 1, 2;

-- name: statistics_table
-- The table a statistics object ($1 schema or NULL for the search path, $2 name) is on.
SELECT n.nspname, c.relname
  FROM pg_statistic_ext s
  JOIN pg_class c ON c.oid = s.stxrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE s.stxname = $2
   AND (s.stxnamespace = to_regnamespace($1) OR ($1::text IS NULL AND pg_statistics_obj_is_visible(s.oid)));

-- name: relation_children
-- Every partition or inheritance child below $1, at any depth, parents before their children.
WITH RECURSIVE tree(oid, depth) AS (
    SELECT i.inhrelid, 1 FROM pg_inherits i WHERE i.inhparent = $1
    UNION ALL
    SELECT i.inhrelid, t.depth + 1 FROM pg_inherits i JOIN tree t ON i.inhparent = t.oid
)
-- A child of two parents (multiple inheritance) is listed once, at its shallowest depth.
-- With its direct parents, its columns, and the columns it holds on its own (defined locally, or
-- inherited from more than one parent): recursion into a column stops there.
SELECT n.nspname, c.relname, c.relkind::text AS relkind, min(t.depth) AS depth,
       pg_get_expr(c.relpartbound, c.oid) AS bound,
       ARRAY(SELECT ARRAY[pn.nspname::text, pc.relname::text]
               FROM pg_inherits pi JOIN pg_class pc ON pc.oid = pi.inhparent
               JOIN pg_namespace pn ON pn.oid = pc.relnamespace
              WHERE pi.inhrelid = c.oid) AS parents,
       ARRAY(SELECT a.attname::text FROM pg_attribute a
              WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped) AS columns,
       ARRAY(SELECT a.attname::text FROM pg_attribute a
              WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                AND (a.attislocal OR a.attinhcount > 1)) AS own_columns,
       CASE WHEN c.relkind IN ('r', 'm') THEN pg_total_relation_size(c.oid) END AS total_bytes,
       ARRAY(SELECT ARRAY[ic.relname::text, pg_get_indexdef(i.indexrelid)]
               FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
              WHERE i.indrelid = c.oid AND i.indisvalid
                AND NOT EXISTS (SELECT FROM pg_inherits h WHERE h.inhrelid = i.indexrelid)
              ORDER BY ic.relname) AS free_indexes,
       CASE WHEN c.relkind = 'p' THEN pg_get_partkeydef(c.oid) END AS partition_key,
       ARRAY(SELECT ic.relname::text FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
              WHERE i.indrelid = c.oid ORDER BY ic.relname) AS indexes
  FROM tree t
  JOIN pg_class c ON c.oid = t.oid
  JOIN pg_namespace n ON n.oid = c.relnamespace
 GROUP BY n.nspname, c.relname, c.relkind, c.oid
 ORDER BY min(t.depth), n.nspname, c.relname;

-- name: names_near
-- Relation names in schema $1[i] that start like $2[i]: every name PostgreSQL could choose for an
-- index of table $2[i] starts with its first characters (makeObjectName keeps at least ~28 bytes).
SELECT DISTINCT n.nspname, c.relname
  FROM unnest($1::text[], $2::text[]) AS w(schema, prefix)
  JOIN pg_namespace n ON n.nspname = w.schema
  JOIN pg_class c ON c.relnamespace = n.oid AND starts_with(c.relname, w.prefix);

-- name: constraint_names_near
-- Constraint names in schema $1[i] that start like $2[i]: a name PostgreSQL chooses for a constraint
-- of table $2[i] (ChooseConstraintName) must differ from every constraint name of the schema.
SELECT DISTINCT n.nspname, con.conname AS relname
  FROM unnest($1::text[], $2::text[]) AS w(schema, prefix)
  JOIN pg_namespace n ON n.nspname = w.schema
  JOIN pg_constraint con ON con.connamespace = n.oid AND starts_with(con.conname, w.prefix);

-- name: relation_views
-- Views and materialized views built on the relation, with the columns they use
-- (attname is NULL for a dependency on the whole row).
SELECT DISTINCT n.nspname, v.relname, a.attname
  FROM pg_depend d
  JOIN pg_rewrite r ON r.oid = d.objid
  JOIN pg_class v ON v.oid = r.ev_class
  JOIN pg_namespace n ON n.oid = v.relnamespace
  LEFT JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid AND d.refobjsubid > 0
 WHERE d.classid = 'pg_rewrite'::regclass AND d.refobjid = $1 AND v.oid <> $1
 ORDER BY n.nspname, v.relname, a.attname;

-- name: function_volatility
-- A name counts as volatile if any overload of it is.
SELECT p.proname, bool_or(p.provolatile = 'v') AS volatile
  FROM pg_proc p
 WHERE p.proname = ANY($1::text[])
 GROUP BY p.proname;

-- name: conflicting_locks
-- Everyone else holding or waiting for a lock on the given relations, with what they are doing.
-- A prepared transaction (two-phase commit) holds its locks with no backend: their pid is NULL.
-- Its own transactionid lock carries the same virtualtransaction, and names it in
-- pg_prepared_xacts. (Measured on 15.18 and 18.6, also after the preparing session ended: that
-- virtualtransaction is the preparing backend's vxid, not '-1/<xid>'; matching the two locks
-- does not depend on its form.)
WITH locks AS MATERIALIZED (SELECT * FROM pg_locks),
prepared AS (
    SELECT x.virtualtransaction, p.gid, p.owner::text AS owner, p.database::text AS database, p.prepared
      FROM locks x
      JOIN pg_prepared_xacts p ON p.transaction = x.transactionid
     WHERE x.locktype = 'transactionid' AND x.pid IS NULL
)
SELECT l.pid, l.mode, l.granted, l.relation::int8 AS relation_oid, l.relation::regclass::text AS relation,
       a.application_name, a.state, a.backend_type, a.wait_event_type,
       EXTRACT(EPOCH FROM clock_timestamp() - coalesce(a.xact_start, p.prepared))::float8 AS xact_age_s,
       EXTRACT(EPOCH FROM clock_timestamp() - a.state_change)::float8 AS state_age_s,
       left(a.query, 200) AS query,
       p.gid, p.owner AS prepared_owner, p.database AS prepared_database
  FROM locks l
  LEFT JOIN pg_stat_activity a ON a.pid = l.pid
  LEFT JOIN prepared p ON l.pid IS NULL AND p.virtualtransaction = l.virtualtransaction
 WHERE l.locktype = 'relation'
   AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
   AND l.relation = ANY($1::int8[]::oid[])
   AND (a.pid IS NOT NULL OR p.gid IS NOT NULL)
   AND (l.pid IS NULL OR l.pid <> ALL($2::int[]))
 ORDER BY coalesce(a.xact_start, p.prepared) NULLS LAST, l.pid;

-- name: relation_oids
SELECT to_regclass(x)::int8 AS oid, (SELECT c.relkind::text FROM pg_class c WHERE c.oid = to_regclass(x)) AS relkind
  FROM unnest($1::text[]) WITH ORDINALITY AS u(x, ord)
 ORDER BY ord;

-- name: watch
-- One poll of the watchdog (cheap: see POSTGRES-FACTS.md 3.4). The lock the watched backend is
-- waiting for, if any (a backend waits for one lock at a time): its type, relation, mode and how
-- long it has waited; who blocks it (with what they are doing); how many sessions are blocked by
-- the watched backend, and how long the longest of them has waited (ms). Whether those sessions
-- are queued behind our *request* (we wait on a relation lock) or behind a lock we hold while
-- we wait for older transactions (a CONCURRENTLY build) is the caller's to tell from our wait.
WITH ours AS (
    SELECT l.locktype, l.relation::int8 AS relation_oid, l.relation::regclass::text AS relation, l.mode,
           (EXTRACT(EPOCH FROM clock_timestamp() - l.waitstart) * 1000)::float8 AS waited_ms,
           -- the lock's whole tag: cancel_if_waiting compares it (a row or transaction lock too)
           row(l.locktype, l.database, l.relation, l.page, l.tuple, l.virtualxid, l.transactionid,
               l.classid, l.objid, l.objsubid)::text AS tag
      FROM pg_locks l
     WHERE l.pid = $1 AND NOT l.granted
     LIMIT 1
), blocking AS (
    -- once per poll: each call takes every lock-manager partition lock (POSTGRES-FACTS.md 2.5)
    SELECT pg_blocking_pids($1) AS pids
), queued AS (
    SELECT l.pid, clock_timestamp() - coalesce(l.waitstart, clock_timestamp()) AS waited
      FROM pg_locks l
     WHERE NOT l.granted AND l.pid <> $1 AND $1 = ANY(pg_blocking_pids(l.pid))
), sessions AS (
    -- the sessions either list names, described once
    SELECT a.pid, json_build_object(
               'pid', a.pid, 'application_name', a.application_name, 'state', a.state,
               'backend_type', a.backend_type,
               'xact_age_s', EXTRACT(EPOCH FROM clock_timestamp() - a.xact_start)::float8,
               'state_age_s', EXTRACT(EPOCH FROM clock_timestamp() - a.state_change)::float8,
               'query', left(a.query, 200)) AS described
      FROM pg_stat_activity a, blocking b
     WHERE a.pid = ANY(b.pids) OR a.pid IN (SELECT pid FROM queued)
)
SELECT (SELECT row_to_json(ours)::text FROM ours) AS our_wait,
       (SELECT count(DISTINCT pid) FROM queued) AS queued,
       (SELECT coalesce(max(EXTRACT(EPOCH FROM waited) * 1000), 0)::float8 FROM queued) AS queued_ms,
       (SELECT coalesce(json_agg(s.described), '[]')::text
          FROM sessions s, blocking b
         WHERE EXISTS (SELECT 1 FROM ours) AND s.pid = ANY(b.pids)) AS blockers,
       -- pg_blocking_pids names a prepared transaction pid 0: name this database's candidates.
       (SELECT coalesce(json_agg(json_build_object(
                  'pid', 0, 'application_name', '', 'state', NULL, 'backend_type', NULL,
                  'xact_age_s', EXTRACT(EPOCH FROM clock_timestamp() - p.prepared)::float8,
                  'state_age_s', NULL, 'query', '', 'gid', p.gid, 'prepared_owner', p.owner::text,
                  'prepared_database', p.database::text)), '[]')::text
          FROM pg_prepared_xacts p, blocking b
         WHERE EXISTS (SELECT 1 FROM ours) AND 0 = ANY(b.pids)
           AND p.database = current_database()) AS prepared_blockers,
       (SELECT coalesce(json_agg(s.described), '[]')::text
          FROM sessions s
         WHERE s.pid IN (SELECT pid FROM queued)) AS queued_sessions;

-- name: cancel_if_waiting
-- Check and cancel in one statement: only while the watched backend ($1) is still waiting for
-- that same lock (its tag $2, as the watch query gives it, in mode $3), never a statement that
-- got its lock.
SELECT pg_cancel_backend(l.pid)
  FROM pg_locks l
 WHERE l.pid = $1 AND NOT l.granted AND l.mode = $3
   AND row(l.locktype, l.database, l.relation, l.page, l.tuple, l.virtualxid, l.transactionid,
           l.classid, l.objid, l.objsubid)::text = $2;

-- name: terminate
SELECT pg_terminate_backend($1);

-- name: cancel
SELECT pg_cancel_backend($1);

-- name: invalid_index
-- The index named $1 if it exists and is INVALID (a failed CREATE INDEX CONCURRENTLY).
SELECT c.oid::regclass::text AS name
  FROM pg_index ix
  JOIN pg_class c ON c.oid = ix.indexrelid
 WHERE c.oid = to_regclass($1) AND NOT ix.indisvalid;

-- name: reindex_debris
-- INVALID copies a failed REINDEX CONCURRENTLY leaves on the table of relation $1 (the table, or
-- one of its indexes): <index>_ccnew[N] and <index>_ccold[N], the base name possibly truncated
-- to fit 63 bytes. $2, when given, is the reindexed index's bare name.
SELECT c.oid::regclass::text AS name
  FROM pg_index ix
  JOIN pg_class c ON c.oid = ix.indexrelid
 WHERE NOT ix.indisvalid
   AND ix.indrelid = coalesce((SELECT i.indrelid FROM pg_index i WHERE i.indexrelid = to_regclass($1)),
                              to_regclass($1))
   AND (c.relname LIKE '%\_ccnew%' OR c.relname LIKE '%\_ccold%')
   AND ($2::text IS NULL OR starts_with(c.relname, left($2::text, 40)))
 ORDER BY 1;

-- name: detach_pending
-- Whether a DETACH PARTITION ... CONCURRENTLY of partition $1 was interrupted half-way.
SELECT coalesce(bool_or(i.inhdetachpending), false)
  FROM pg_inherits i
 WHERE i.inhrelid = to_regclass($1);

-- name: index_validity
-- Whether the index named $1 is valid; no row when it does not exist.
SELECT ix.indisvalid
  FROM pg_index ix
 WHERE ix.indexrelid = to_regclass($1);

-- name: partition_attached
-- Whether relation $1 is still a partition (or inheritance child) of $2.
SELECT EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = to_regclass($1) AND i.inhparent = to_regclass($2));

-- name: backend_pid
-- The step session's own backend, asked inside it (behind a pooler the handshake's pid is
-- another backend's), and when the server started (a restart changes it). Also names the
-- session for the step it runs.
SELECT pg_backend_pid() AS pid, pg_postmaster_start_time() AS server_started,
       set_config('application_name', $1, false) AS application_name;

-- name: current_timeouts
-- A caller's own timeouts, restored after a step ran inside its transaction.
SELECT current_setting('lock_timeout') AS lock_timeout, current_setting('statement_timeout') AS statement_timeout;

-- name: restore_timeouts
SELECT set_config('lock_timeout', $1, true), set_config('statement_timeout', $2, true);

-- name: holds_traffic_blocking_locks
-- Whether this session holds a relation lock that makes reads or writes wait, or anyone waits
-- for a lock it holds right now (a row its transaction changed, say).
SELECT EXISTS (
    SELECT 1 FROM pg_locks l
     WHERE l.pid = pg_backend_pid() AND l.granted AND l.locktype = 'relation'
       AND l.mode IN ('ShareLock', 'ShareRowExclusiveLock', 'ExclusiveLock', 'AccessExclusiveLock'))
    OR EXISTS (
    SELECT 1 FROM pg_locks w
     WHERE NOT w.granted AND w.pid <> pg_backend_pid() AND pg_backend_pid() = ANY(pg_blocking_pids(w.pid)));

-- name: autovacuum_wraparound
-- For the autovacuum workers $1: the table each one works on (from the progress views, else
-- from the ShareUpdateExclusiveLock it holds), whether it is vacuuming it (true), analyzing it
-- (false) or the progress views do not say (NULL: track_activities off, or between tables), and
-- what PostgreSQL's rule for an anti-wraparound vacuum reads: the table's xid and multixact ages
-- and its effective freeze max ages (the reloption, or a toast table's main table's when it has
-- none of its own, capped by the server setting). The rule: blockers.vacuum_for_wraparound.
WITH workers AS (
    SELECT w.pid,
           CASE WHEN v.pid IS NOT NULL THEN true WHEN an.pid IS NOT NULL THEN false END AS vacuuming,
           coalesce(v.relid, an.relid,
                    (SELECT l.relation FROM pg_locks l
                      WHERE l.pid = w.pid AND l.locktype = 'relation' AND l.granted
                        AND l.mode = 'ShareUpdateExclusiveLock'
                        AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                      LIMIT 1)) AS relid
      FROM unnest($1::int[]) AS w(pid)
      LEFT JOIN pg_stat_progress_vacuum v ON v.pid = w.pid
      LEFT JOIN pg_stat_progress_analyze an ON an.pid = w.pid
)
SELECT w.pid, w.vacuuming, c.oid::regclass::text AS relation,
       CASE WHEN c.relfrozenxid::text::int8 >= 3 THEN age(c.relfrozenxid) END AS xid_age,
       CASE WHEN c.relminmxid::text::int8 <> 0 THEN mxid_age(c.relminmxid) END AS mxid_age,
       least(current_setting('autovacuum_freeze_max_age')::int8, o.freeze_max_age) AS freeze_max_age,
       least(current_setting('autovacuum_multixact_freeze_max_age')::int8, o.multixact_freeze_max_age)
         AS multixact_freeze_max_age
  FROM workers w
  LEFT JOIN pg_class c ON c.oid = w.relid
  LEFT JOIN LATERAL (
      SELECT max(t.option_value::int8) FILTER (WHERE t.option_name = 'autovacuum_freeze_max_age') AS freeze_max_age,
             max(t.option_value::int8) FILTER (WHERE t.option_name = 'autovacuum_multixact_freeze_max_age')
               AS multixact_freeze_max_age
        FROM pg_options_to_table(coalesce(
                 c.reloptions,
                 (SELECT m.reloptions FROM pg_class m WHERE c.relkind = 't' AND m.reltoastrelid = c.oid))) AS t
  ) o ON true;

-- name: keepalives
-- Every connection (connector.py says why): the server probes a silent client.
SET tcp_keepalives_idle = 10; SET tcp_keepalives_interval = 5; SET tcp_keepalives_count = 3;

-- name: client_connection_check
-- The step session (PostgreSQL 14+): a backend whose client is gone stops within a second.
SET client_connection_check_interval = 1000;

-- name: own_bounds
-- The step session: its statements are bounded by the lock_timeout and statement_timeout the
-- engine sets, never ended by the role's or database's session limits, which would end the
-- session (FATAL) and with it the migration's run lock, and end it again on every retry of a
-- step that takes longer: transaction_timeout (17+, 25P04), idle_in_transaction_session_timeout
-- (25P03), idle_session_timeout (57P05, while pre-flight waits). Set only where they exist.
SELECT set_config(s.name, '0', false)
  FROM pg_settings s
 WHERE s.name IN ('transaction_timeout', 'idle_in_transaction_session_timeout', 'idle_session_timeout');

-- name: server_version_num
SELECT current_setting('server_version_num')::int;

-- name: contended_relations
-- Relations of this database someone is queued for, or a prepared transaction holds a lock on.
SELECT DISTINCT l.relation::int8 AS oid, l.relation::regclass::text AS name
  FROM pg_locks l
 WHERE l.locktype = 'relation' AND (NOT l.granted OR l.pid IS NULL)
   AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
 ORDER BY 2;

-- name: relations_by_name
SELECT to_regclass(x)::int8 AS oid, x AS name FROM unnest($1::text[]) AS u(x);

-- name: relation_primary_key
-- The primary key's columns of relation $1 and their types, in index order; no row: it has none.
SELECT array_agg(a.attname::text ORDER BY k.ord) AS columns,
       array_agg(format_type(a.atttypid, a.atttypmod) ORDER BY k.ord) AS types
  FROM pg_index i
  CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
  JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
 WHERE i.indrelid = $1 AND i.indisprimary
 GROUP BY i.indexrelid;

-- name: backfill_health
-- What may hold a backfill of table $1 back (engine/health.py): each replica's lag in bytes (what
-- it replayed, or flushed when it does not replay, e.g. pg_receivewal) and replay_lag in seconds;
-- the WAL waiting for archive_command (NULL when archiving is off): the segments marked .ready in
-- archive_status where the role may list it (superuser, pg_monitor), else what was written since
-- the last segment pg_stat_archiver says was archived (a segment's name is timeline, log and
-- segment number in hex; NULL while none was); an autovacuum worker on the table.
WITH replicas AS (
    SELECT r.pid, r.application_name,
           pg_wal_lsn_diff(pg_current_wal_lsn(), coalesce(r.replay_lsn, r.flush_lsn))::float8 AS lag_bytes,
           EXTRACT(EPOCH FROM r.replay_lag)::float8 AS lag_s
      FROM pg_stat_replication r
     WHERE NOT pg_is_in_recovery()
), archiving AS (
    SELECT current_setting('archive_mode') <> 'off' AND NOT pg_is_in_recovery() AS enabled,
           pg_size_bytes(current_setting('wal_segment_size')) AS segment,
           (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
             OR pg_has_role(current_user, 'pg_monitor', 'USAGE') AS may_list
)
SELECT (SELECT coalesce(json_agg(x), '[]') FROM replicas x)::text AS replicas,
       (SELECT CASE WHEN NOT g.enabled THEN NULL
                    WHEN g.may_list
                    THEN (SELECT count(*) FROM pg_ls_archive_statusdir() f
                           WHERE f.name ~ '^[0-9A-F]{24}\.ready$') * g.segment
                    WHEN a.last_archived_wal ~ '^[0-9A-F]{24}$'
                    THEN pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')
                         - (('x' || substr(a.last_archived_wal, 9, 8))::bit(32)::bigint * 4294967296::numeric
                            + (('x' || substr(a.last_archived_wal, 17, 8))::bit(32)::bigint + 1) * g.segment)
               END
          FROM pg_stat_archiver a, archiving g)::float8 AS archive_backlog_bytes,
       (SELECT min(v.pid) FROM pg_stat_progress_vacuum v JOIN pg_stat_activity s ON s.pid = v.pid
         WHERE v.relid = $1 AND s.backend_type = 'autovacuum worker') AS autovacuum_pid;

-- name: blocked_behind
-- Sessions waiting for a lock backend $1 (a backfill batch) holds, and the longest wait (ms).
SELECT count(*) AS sessions,
       coalesce(max(EXTRACT(EPOCH FROM clock_timestamp() - l.waitstart) * 1000), 0)::float8 AS waited_ms
  FROM pg_locks l
 WHERE NOT l.granted AND l.pid <> $1 AND $1 = ANY(pg_blocking_pids(l.pid));

-- name: backfill_table
-- The table a backfill walks ($1, its quoted name): its oid and estimated rows (-1: never analyzed).
SELECT c.oid::int8 AS oid, c.reltuples::float8 AS rows_estimate FROM pg_class c WHERE c.oid = to_regclass($1);

-- name: explain_lock_timeout
-- Reading the facts: EXPLAIN of a script's UPDATE or DELETE asks for ROW EXCLUSIVE on its table;
-- behind a stronger lock it gives up at once rather than wait (the estimate is then unknown).
SET LOCAL lock_timeout = '100ms';
