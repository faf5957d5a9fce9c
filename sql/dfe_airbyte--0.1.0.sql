-- dfe_airbyte install script, part 00: schema, roles, shared objects.
-- The install script is assembled from sql/install/*.sql in name order.

\echo Use "CREATE EXTENSION dfe_airbyte" to load this file. \quit

CREATE SCHEMA dfe_airbyte;
COMMENT ON SCHEMA dfe_airbyte IS 'dfe_airbyte: allowlist, blocklist, deploys, health views and history';

-- The role that may call out to Airbyte/BigQuery, change the lists and run
-- deploys.  Roles are cluster-wide: DROP EXTENSION leaves it in place.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'dfe_airbyte_admin') THEN
        CREATE ROLE dfe_airbyte_admin NOLOGIN;
    END IF;
END
$$;
COMMENT ON ROLE dfe_airbyte_admin IS 'may run dfe_airbyte deploys, load its lists and call Airbyte/BigQuery';

REVOKE ALL ON SCHEMA dfe_airbyte FROM PUBLIC;
GRANT USAGE ON SCHEMA dfe_airbyte TO dfe_airbyte_admin, pg_monitor;

-- What the worker noticed and did, with its reason.  Every feature writes here.
CREATE TABLE dfe_airbyte.events (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    severity    text NOT NULL DEFAULT 'info'
                CHECK (severity IN ('info', 'warning', 'critical')),
    kind        text NOT NULL,
    object      text,
    detail      text NOT NULL,
    data        jsonb
);
CREATE INDEX events_at_idx ON dfe_airbyte.events (at);
COMMENT ON TABLE dfe_airbyte.events IS 'what the dfe_airbyte worker noticed and did (limit crossed, slot recreated, sync stale, tags re-applied)';
GRANT SELECT ON dfe_airbyte.events TO dfe_airbyte_admin, pg_monitor;

CREATE FUNCTION dfe_airbyte_worker_pid() RETURNS integer
    AS 'MODULE_PATHNAME', 'dfe_airbyte_worker_pid'
    LANGUAGE C VOLATILE;
COMMENT ON FUNCTION dfe_airbyte_worker_pid() IS 'pid of the dfe_airbyte background worker, NULL when it is not running';
-- part 10: the allowlist and the blocklist (analytics.yml, analytics_blocklist.yml)

CREATE TABLE dfe_airbyte.allowlist (
    table_name  text NOT NULL CHECK (table_name <> ''),
    column_name text NOT NULL CHECK (column_name <> ''),
    loaded_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (table_name, column_name)
);
COMMENT ON TABLE dfe_airbyte.allowlist IS 'one row per replicated column (analytics.yml)';

CREATE TABLE dfe_airbyte.blocklist (
    table_name  text NOT NULL CHECK (table_name <> ''),
    column_name text NOT NULL CHECK (column_name <> ''),
    loaded_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (table_name, column_name)
);
COMMENT ON TABLE dfe_airbyte.blocklist IS 'one row per sensitive column: it gets the hidden policy tag in BigQuery (analytics_blocklist.yml)';

-- the lists are configuration: pg_dump must keep them
SELECT pg_catalog.pg_extension_config_dump('dfe_airbyte.allowlist', '');
SELECT pg_catalog.pg_extension_config_dump('dfe_airbyte.blocklist', '');

REVOKE ALL ON dfe_airbyte.allowlist, dfe_airbyte.blocklist FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON dfe_airbyte.allowlist, dfe_airbyte.blocklist TO dfe_airbyte_admin;
GRANT SELECT ON dfe_airbyte.allowlist, dfe_airbyte.blocklist TO pg_monitor;
-- part 20: loading the lists and the Airbyte stream configuration

CREATE FUNCTION dfe_airbyte_load_config(allowlist text, blocklist text DEFAULT NULL)
    RETURNS TABLE (list text, tables integer, columns integer, added integer, removed integer)
    AS 'MODULE_PATHNAME', 'dfe_airbyte_load_config'
    LANGUAGE C VOLATILE;
COMMENT ON FUNCTION dfe_airbyte_load_config(text, text) IS
    'replace dfe_airbyte.allowlist (and the blocklist unless it is NULL) from the text of analytics.yml / analytics_blocklist.yml (YAML or JSON); bad input changes nothing';
REVOKE ALL ON FUNCTION dfe_airbyte_load_config(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION dfe_airbyte_load_config(text, text) TO dfe_airbyte_admin;

CREATE FUNCTION dfe_airbyte_stream_config() RETURNS jsonb
    AS 'MODULE_PATHNAME', 'dfe_airbyte_stream_config'
    LANGUAGE C STABLE;
COMMENT ON FUNCTION dfe_airbyte_stream_config() IS
    'the Airbyte stream configuration built from the allowlist (the body of the connection PATCH)';
REVOKE ALL ON FUNCTION dfe_airbyte_stream_config() FROM PUBLIC;
-- pg_monitor may read the lists anyway; config_problems calls this function
GRANT EXECUTE ON FUNCTION dfe_airbyte_stream_config() TO dfe_airbyte_admin, pg_monitor;

CREATE FUNCTION dfe_airbyte_stream_config_json() RETURNS json
    AS 'MODULE_PATHNAME', 'dfe_airbyte_stream_config_json'
    LANGUAGE C STABLE;
COMMENT ON FUNCTION dfe_airbyte_stream_config_json() IS
    'the Airbyte stream configuration as the exact PATCH body: compact, keys in the dfe-analytics gem''s order (jsonb would sort them)';
REVOKE ALL ON FUNCTION dfe_airbyte_stream_config_json() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION dfe_airbyte_stream_config_json() TO dfe_airbyte_admin, pg_monitor;
-- part 25: dfe_airbyte.config_problems — what is wrong with the configuration now

-- The checks SQL cannot make (settings with their environment fallbacks,
-- secrets, the worker).  It never shows a secret's value.
CREATE FUNCTION dfe_airbyte_setting_problems()
    RETURNS TABLE (severity text, object text, problem text, hint text)
    AS 'MODULE_PATHNAME', 'dfe_airbyte_setting_problems'
    LANGUAGE C VOLATILE;
COMMENT ON FUNCTION dfe_airbyte_setting_problems() IS
    'the settings part of dfe_airbyte.config_problems (missing or malformed settings, wal_level, WAL limits, the worker)';
REVOKE ALL ON FUNCTION dfe_airbyte_setting_problems() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION dfe_airbyte_setting_problems() TO dfe_airbyte_admin, pg_monitor;

CREATE VIEW dfe_airbyte.config_problems AS
WITH conf AS (
    SELECT coalesce(nullif(current_setting('dfe_airbyte.source_schema', true), ''), 'public') AS source_schema,
           coalesce(nullif(current_setting('dfe_airbyte.publication', true), ''), 'airbyte_publication') AS publication,
           coalesce(nullif(current_setting('dfe_airbyte.slot_name', true), ''), 'airbyte_slot') AS slot_name
),
-- allowlisted tables (but the heartbeat), resolved in the source schema
allowed AS (
    SELECT t.table_name, c.oid AS relid
      FROM (SELECT DISTINCT table_name FROM dfe_airbyte.allowlist) AS t
     CROSS JOIN conf
      LEFT JOIN (pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace)
             ON n.nspname = conf.source_schema AND c.relname = t.table_name AND c.relkind IN ('r', 'p')
     WHERE t.table_name <> 'airbyte_heartbeat'
),
-- the columns those tables have
cols AS (
    SELECT a.table_name, att.attname::text AS column_name
      FROM allowed a
      JOIN pg_catalog.pg_attribute att
        ON att.attrelid = a.relid AND att.attnum > 0 AND NOT att.attisdropped
),
-- their primary key columns
pk AS (
    SELECT a.table_name, att.attname::text AS column_name
      FROM allowed a
      JOIN pg_catalog.pg_index i ON i.indrelid = a.relid AND i.indisprimary
     CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
      JOIN pg_catalog.pg_attribute att ON att.attrelid = a.relid AND att.attnum = k.attnum
     WHERE k.ord <= i.indnkeyatts
),
-- the primary key each stream really uses ("a, b"), from the stream configuration
stream_keys AS (
    SELECT s->>'name' AS table_name,
           (SELECT string_agg(e.k->>0, ', ' ORDER BY e.o)
              FROM jsonb_array_elements(s->'primaryKey') WITH ORDINALITY AS e(k, o)) AS stream_pk
      FROM jsonb_array_elements(dfe_airbyte_stream_config()->'configurations'->'streams') AS s
),
pub AS (
    SELECT p.* FROM pg_catalog.pg_publication p, conf WHERE p.pubname = conf.publication
),
pubtables AS (
    SELECT pt.schemaname::text AS schemaname, pt.tablename::text AS tablename, pt.attnames::text[] AS attnames
      FROM pg_catalog.pg_publication_tables pt, conf
     WHERE pt.pubname = conf.publication
),
problems (severity, object, problem, hint) AS (
    SELECT 'error', 'dfe_airbyte.source_schema',
           format('schema "%s" (dfe_airbyte.source_schema) does not exist: no allowlisted table can be found',
                  conf.source_schema),
           'ALTER SYSTEM SET dfe_airbyte.source_schema = ''<the schema of the service''''s tables>''; SELECT pg_reload_conf();'
      FROM conf
     WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = conf.source_schema)
    UNION ALL
    SELECT 'error', a.table_name,
           format('allowlisted table "%s" does not exist in schema "%s"', a.table_name, conf.source_schema),
           'Remove it from analytics.yml and reload with dfe_airbyte_load_config(), or run the migration that creates it: Airbyte cannot discover a stream for a missing table.'
      FROM allowed a, conf
     WHERE a.relid IS NULL
    UNION ALL
    SELECT 'error', l.table_name || '.' || l.column_name,
           format('allowlisted column "%s" of table "%s" does not exist', l.column_name, l.table_name),
           'Remove it from analytics.yml and reload with dfe_airbyte_load_config(), or run the migration that adds it.'
      FROM dfe_airbyte.allowlist l
      JOIN allowed a ON a.table_name = l.table_name AND a.relid IS NOT NULL
     WHERE l.column_name NOT IN ('_ab_cdc_lsn', '_ab_cdc_deleted_at', '_ab_cdc_updated_at')
       AND NOT EXISTS (SELECT 1 FROM cols c WHERE c.table_name = l.table_name AND c.column_name = l.column_name)
    UNION ALL
    SELECT 'info', l.table_name || '.' || l.column_name,
           format('"%s" is an Airbyte metadata field: every stream selects it anyway', l.column_name),
           'Remove it from analytics.yml; listing it changes nothing.'
      FROM dfe_airbyte.allowlist l
     WHERE l.column_name IN ('_ab_cdc_lsn', '_ab_cdc_deleted_at', '_ab_cdc_updated_at')
    UNION ALL
    SELECT 'info', 'airbyte_heartbeat',
           'airbyte_heartbeat is in the allowlist: its entry is ignored, the heartbeat stream (id, last_heartbeat) is always included',
           'Remove it from analytics.yml.'
     WHERE EXISTS (SELECT 1 FROM dfe_airbyte.allowlist WHERE table_name = 'airbyte_heartbeat')
    UNION ALL
    SELECT 'warning', a.table_name,
           format('table "%s" has no primary key: the stream uses %s as its primary key instead',
                  a.table_name, coalesce(k.stream_pk, 'nothing')),
           'Add a primary key to the table. Without one the stream''s key is only a guess, and while the table is in the publication its UPDATEs and DELETEs need another replica identity.'
      FROM allowed a
      LEFT JOIN stream_keys k ON k.table_name = a.table_name
     WHERE a.relid IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM pk WHERE pk.table_name = a.table_name)
    UNION ALL
    SELECT 'warning', p.table_name || '.' || p.column_name,
           format('primary key column "%s" of table "%s" is not allowlisted: the stream uses %s as its primary key instead',
                  p.column_name, p.table_name, coalesce(k.stream_pk, 'nothing')),
           'Allowlist every primary key column in analytics.yml so that the rows in BigQuery can be told apart, then reload with dfe_airbyte_load_config().'
      FROM pk p
      LEFT JOIN stream_keys k ON k.table_name = p.table_name
     WHERE NOT EXISTS (SELECT 1 FROM dfe_airbyte.allowlist l
                        WHERE l.table_name = p.table_name AND l.column_name = p.column_name)
    UNION ALL
    SELECT 'warning', c.table_name || '.' || c.column_name,
           format('column "%s" of allowlisted table "%s" is in neither the allowlist nor the blocklist: it is not replicated',
                  c.column_name, c.table_name),
           'A migration added it? Add it to analytics.yml to replicate it (and to analytics_blocklist.yml too if it is sensitive), or to analytics_blocklist.yml only to keep it out on purpose; then reload with dfe_airbyte_load_config().'
      FROM cols c
     WHERE NOT EXISTS (SELECT 1 FROM dfe_airbyte.allowlist l
                        WHERE l.table_name = c.table_name AND l.column_name = c.column_name)
       AND NOT EXISTS (SELECT 1 FROM dfe_airbyte.blocklist b
                        WHERE b.table_name = c.table_name AND b.column_name = c.column_name)
    UNION ALL
    SELECT 'info', b.table_name || '.' || b.column_name,
           format('blocklisted column "%s" of table "%s" is not allowlisted: it is never replicated',
                  b.column_name, b.table_name),
           'Nothing to do if that is intended. To replicate it with the hidden policy tag, add it to analytics.yml too.'
      FROM dfe_airbyte.blocklist b
     WHERE NOT EXISTS (SELECT 1 FROM dfe_airbyte.allowlist l
                        WHERE l.table_name = b.table_name AND l.column_name = b.column_name)
    UNION ALL
    SELECT 'error', conf.publication,
           format('publication "%s" (dfe_airbyte.publication) does not exist: Airbyte''s CDC receives no changes',
                  conf.publication),
           format('CREATE PUBLICATION %I FOR TABLE <the allowlisted tables>, airbyte_heartbeat; or set dfe_airbyte.publication to the publication the Airbyte source uses.',
                  conf.publication)
      FROM conf
     WHERE NOT EXISTS (SELECT 1 FROM pub)
    UNION ALL
    SELECT 'warning', p.pubname::text,
           format('publication "%s" does not publish %s: Airbyte misses those changes', p.pubname,
                  concat_ws(', ', CASE WHEN NOT p.pubinsert THEN 'inserts' END,
                                  CASE WHEN NOT p.pubupdate THEN 'updates' END,
                                  CASE WHEN NOT p.pubdelete THEN 'deletes' END)),
           format('ALTER PUBLICATION %I SET (publish = ''insert, update, delete'');', p.pubname)
      FROM pub p
     WHERE NOT (p.pubinsert AND p.pubupdate AND p.pubdelete)
    UNION ALL
    SELECT 'error', a.table_name,
           format('allowlisted table "%s" is not in publication "%s": Airbyte receives no changes of it',
                  a.table_name, conf.publication),
           format('ALTER PUBLICATION %I ADD TABLE %I.%I;', conf.publication, conf.source_schema, a.table_name)
      FROM allowed a, conf
     WHERE a.relid IS NOT NULL
       AND EXISTS (SELECT 1 FROM pub)
       AND NOT EXISTS (SELECT 1 FROM pubtables pt
                        WHERE pt.schemaname = conf.source_schema AND pt.tablename = a.table_name)
    UNION ALL
    SELECT 'error', l.table_name || '.' || l.column_name,
           format('allowlisted column "%s" of table "%s" is left out by the column list of publication "%s"',
                  l.column_name, l.table_name, conf.publication),
           format('ALTER PUBLICATION %I SET TABLE %I.%I; (without a column list), or add the column to the list.',
                  conf.publication, conf.source_schema, l.table_name)
      FROM dfe_airbyte.allowlist l
      JOIN cols c ON c.table_name = l.table_name AND c.column_name = l.column_name
     CROSS JOIN conf
      JOIN pubtables pt ON pt.schemaname = conf.source_schema AND pt.tablename = l.table_name
     WHERE NOT (l.column_name = ANY (pt.attnames))
    UNION ALL
    SELECT 'error',
           CASE WHEN pt.schemaname = conf.source_schema THEN pt.tablename
                ELSE pt.schemaname || '.' || pt.tablename END,
           format('table "%s"."%s" is in publication "%s" without a replica identity: every UPDATE or DELETE on it fails',
                  pt.schemaname, pt.tablename, conf.publication),
           format('Add a primary key to it, or ALTER TABLE %I.%I REPLICA IDENTITY FULL;', pt.schemaname, pt.tablename)
      FROM pubtables pt
     CROSS JOIN conf
      JOIN pub p ON p.pubupdate OR p.pubdelete
      JOIN pg_catalog.pg_namespace n ON n.nspname = pt.schemaname
      JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename
     WHERE c.relreplident = 'n'
        OR (c.relreplident = 'd' AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_index i
                                                  WHERE i.indrelid = c.oid AND i.indisprimary))
        OR (c.relreplident = 'i' AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_index i
                                                  WHERE i.indrelid = c.oid AND i.indisreplident))
    UNION ALL
    SELECT 'warning', 'airbyte_heartbeat',
           format('table airbyte_heartbeat does not exist in schema "%s", but the stream configuration always includes the heartbeat stream',
                  conf.source_schema),
           'Create it as the Airbyte source''s heartbeat query expects (with columns id and last_heartbeat) and add it to the publication.'
      FROM conf
     WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class c
                         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                        WHERE n.nspname = conf.source_schema AND c.relname = 'airbyte_heartbeat')
    UNION ALL
    SELECT 'warning', conf.slot_name,
           format('replication slot "%s" (dfe_airbyte.slot_name) does not exist', conf.slot_name),
           format('Create it for the Airbyte source: SELECT pg_create_logical_replication_slot(%L, ''pgoutput''); or set dfe_airbyte.slot_name to the slot the source uses.',
                  conf.slot_name)
      FROM conf
     WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_replication_slots s WHERE s.slot_name = conf.slot_name)
    UNION ALL
    SELECT 'error', conf.slot_name,
           CASE WHEN s.database IS DISTINCT FROM current_database()
                THEN format('replication slot "%s" belongs to database "%s", not to this one', s.slot_name,
                            coalesce(s.database::text, '(none: physical slot)'))
                ELSE format('replication slot "%s" uses plugin "%s"; Airbyte''s Postgres source needs pgoutput',
                            s.slot_name, s.plugin) END,
           'Set dfe_airbyte.slot_name to the slot the Airbyte source uses, or recreate the slot in this database with pg_create_logical_replication_slot(name, ''pgoutput'').'
      FROM pg_catalog.pg_replication_slots s, conf
     WHERE s.slot_name = conf.slot_name
       AND (s.database IS DISTINCT FROM current_database() OR s.plugin IS DISTINCT FROM 'pgoutput')
    UNION ALL
    SELECT sp.severity, sp.object, sp.problem, sp.hint
      FROM dfe_airbyte_setting_problems() AS sp
)
SELECT severity, object, problem, hint
  FROM problems
 ORDER BY CASE severity WHEN 'error' THEN 1 WHEN 'warning' THEN 2 ELSE 3 END,
          object COLLATE "C", problem COLLATE "C";

COMMENT ON VIEW dfe_airbyte.config_problems IS
    'what is wrong with the dfe_airbyte configuration now (lists against the catalog, publication, slot, settings), each with a hint';
REVOKE ALL ON dfe_airbyte.config_problems FROM PUBLIC;
GRANT SELECT ON dfe_airbyte.config_problems TO pg_monitor, dfe_airbyte_admin;
-- part 30: the Airbyte API from SQL (SPEC §4)

CREATE FUNCTION dfe_airbyte_connection_refresh() RETURNS jsonb
    AS 'MODULE_PATHNAME', 'dfe_airbyte_connection_refresh'
    LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION dfe_airbyte_connection_refresh() IS
    'rediscovers the source schema, then PATCHes the Airbyte connection with dfe_airbyte_stream_config(); returns Airbyte''s answer';

CREATE FUNCTION dfe_airbyte_start_sync() RETURNS bigint
    AS 'MODULE_PATHNAME', 'dfe_airbyte_start_sync'
    LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION dfe_airbyte_start_sync() IS
    'starts an Airbyte sync unless one runs; returns the job id (the running one''s where one runs)';

CREATE FUNCTION dfe_airbyte_job_status(job_id bigint) RETURNS text
    AS 'MODULE_PATHNAME', 'dfe_airbyte_job_status'
    LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION dfe_airbyte_job_status(bigint) IS
    'the Airbyte job''s status: pending, queued, running, incomplete, succeeded, failed or cancelled';

CREATE FUNCTION dfe_airbyte_wait_for_job(job_id bigint, timeout interval DEFAULT '1 hour') RETURNS text
    AS 'MODULE_PATHNAME', 'dfe_airbyte_wait_for_job'
    LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION dfe_airbyte_wait_for_job(bigint, interval) IS
    'waits for an Airbyte job with a NOTICE every dfe_airbyte.job_poll_interval; errors when it fails, is cancelled or the timeout passes';

REVOKE ALL ON FUNCTION dfe_airbyte_connection_refresh(), dfe_airbyte_start_sync(),
    dfe_airbyte_job_status(bigint), dfe_airbyte_wait_for_job(bigint, interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION dfe_airbyte_connection_refresh(), dfe_airbyte_start_sync(),
    dfe_airbyte_job_status(bigint), dfe_airbyte_wait_for_job(bigint, interval) TO dfe_airbyte_admin;
-- part 40: deploys (SPEC §6)

CREATE TABLE dfe_airbyte.deploys (
    id              bigserial PRIMARY KEY,
    state           text NOT NULL DEFAULT 'queued'
                    CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'coalesced')),
    step            text
                    CHECK (step IN ('waiting_for_migrations', 'refreshing_connection', 'starting_sync',
                                    'waiting_for_sync', 'applying_policy_tags', 'done')),
    requested_at    timestamptz NOT NULL DEFAULT now(),
    requested_by    name NOT NULL DEFAULT current_user,
    started_at      timestamptz,
    finished_at     timestamptz,
    job_id          bigint,
    http_status     integer,
    error           text,
    coalesced_into  bigint,
    log             jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(log) = 'array'),
    -- when the current step began (its timeout counts from here)
    step_started_at timestamptz,
    -- since when the current step has been failing with passing errors
    retrying_since  timestamptz
);
CREATE INDEX deploys_active_idx ON dfe_airbyte.deploys (state, id)
    WHERE state IN ('queued', 'running');
COMMENT ON TABLE dfe_airbyte.deploys IS
    'every dfe_airbyte_deploy(): state, current step, times, Airbyte job, error and a log of {at, step, message}';
COMMENT ON COLUMN dfe_airbyte.deploys.step IS
    'waiting_for_migrations, refreshing_connection, starting_sync, waiting_for_sync, applying_policy_tags; done once succeeded; a failed deploy keeps the step that failed';
COMMENT ON COLUMN dfe_airbyte.deploys.coalesced_into IS
    'for a coalesced deploy: the newer deploy that ran in its place';

REVOKE ALL ON dfe_airbyte.deploys FROM PUBLIC;
GRANT SELECT ON dfe_airbyte.deploys TO pg_monitor, dfe_airbyte_admin;
-- dfe_airbyte_deploy() runs as its caller: it may add a queued row, nothing more
GRANT INSERT (requested_by) ON dfe_airbyte.deploys TO dfe_airbyte_admin;
GRANT USAGE ON SEQUENCE dfe_airbyte.deploys_id_seq TO dfe_airbyte_admin;

CREATE FUNCTION dfe_airbyte_deploy(wait boolean DEFAULT false) RETURNS bigint
    AS 'MODULE_PATHNAME', 'dfe_airbyte_deploy'
    LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION dfe_airbyte_deploy(boolean) IS
    'queues a deploy (wait for migrations, refresh the connection, sync, apply policy tags) that the worker runs after this transaction commits; returns its id. wait => true (outside a transaction block) waits for it with progress NOTICEs';

CREATE FUNCTION dfe_airbyte_migration_lock_key() RETURNS bigint
    AS 'MODULE_PATHNAME', 'dfe_airbyte_migration_lock_key'
    LANGUAGE C STABLE STRICT;
COMMENT ON FUNCTION dfe_airbyte_migration_lock_key() IS
    'the advisory lock key Rails holds while it migrates this database (2053462845 * CRC32(database name)); deploys wait while it is held';

REVOKE ALL ON FUNCTION dfe_airbyte_deploy(boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION dfe_airbyte_deploy(boolean) TO dfe_airbyte_admin;
-- part 50: BigQuery policy tags (SPEC §5) and the Google credential check (§8)

CREATE FUNCTION dfe_airbyte_apply_policy_tags()
    RETURNS TABLE (table_name text, column_name text, action text)
    AS 'MODULE_PATHNAME', 'dfe_airbyte_apply_policy_tags'
    LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION dfe_airbyte_apply_policy_tags() IS
    'puts the hidden policy tag on every blocklisted column of the allowlisted BigQuery tables and removes it where a column is no longer blocklisted; one row per (table, column) with action tagged, already_tagged, untagged, missing_column or missing_table';
REVOKE ALL ON FUNCTION dfe_airbyte_apply_policy_tags() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION dfe_airbyte_apply_policy_tags() TO dfe_airbyte_admin;

CREATE FUNCTION dfe_airbyte_google_auth_check(
    OUT credential_source text,
    OUT service_account text,
    OUT expires_at timestamptz,
    OUT renew_after timestamptz,
    OUT from_cache boolean)
    AS 'MODULE_PATHNAME', 'dfe_airbyte_google_auth_check'
    LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION dfe_airbyte_google_auth_check() IS
    'gets a Google access token through the configured credential chain (or reuses this session''s) and says how, never showing the token';
REVOKE ALL ON FUNCTION dfe_airbyte_google_auth_check() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION dfe_airbyte_google_auth_check() TO dfe_airbyte_admin;
-- part 60: the slot guard (SPEC §7) — slot samples, the guard's state, slot
-- recreations with their pending full re-sync, and replication_slot_health.

-- One row per logical slot of this database per worker check.  Bounded: the
-- worker deletes rows older than dfe_airbyte.history_retention and keeps at
-- most dfe_airbyte.history_max_rows (by id), at most once a minute.
CREATE TABLE dfe_airbyte.slot_samples (
    id              bigserial PRIMARY KEY,
    sampled_at      timestamptz NOT NULL,
    slot_name       text NOT NULL,
    active          boolean NOT NULL,
    active_pid      integer,
    wal_status      text,
    safe_wal_size   bigint,
    retained_bytes  bigint,     -- pg_current_wal_lsn() - restart_lsn
    flush_lag_bytes bigint      -- pg_current_wal_lsn() - confirmed_flush_lsn
);
CREATE INDEX slot_samples_sampled_at_idx ON dfe_airbyte.slot_samples (sampled_at);
COMMENT ON TABLE dfe_airbyte.slot_samples IS 'logical replication slots of this database as the dfe_airbyte worker sampled them every check_interval (bounded history)';

-- What the worker remembers about each slot between checks.  first_seen_at is
-- when this incarnation of the slot was first seen (reset when the worker
-- recreates it; NULL for the Airbyte slot when it was never seen here).
-- condition/notified_* are only used for the Airbyte slot (dfe_airbyte.slot_name).
CREATE TABLE dfe_airbyte.slot_state (
    slot_name        text PRIMARY KEY,
    first_seen_at    timestamptz,
    last_active_at   timestamptz,
    condition        text NOT NULL DEFAULT 'ok'
                     CHECK (condition IN ('ok', 'over_limit', 'lost', 'missing', 'elsewhere')),
    condition_since  timestamptz,
    notified_at      timestamptz,
    notified_action  text
);
COMMENT ON TABLE dfe_airbyte.slot_state IS 'dfe_airbyte slot guard bookkeeping: when each slot was first seen and last active, and the Airbyte slot''s condition';

-- Every recreation (or creation) of the Airbyte slot by the worker and the
-- full re-sync it requires.  A row is written BEFORE the slot is dropped
-- (recreated_at NULL while the recreation is under way); resync_state
-- 'pending' rows with recreated_at set are what the worker asks Airbyte for,
-- every check, until Airbyte accepts the refresh; then 'started' with its job.
CREATE TABLE dfe_airbyte.slot_recreations (
    id                      bigserial PRIMARY KEY,
    slot_name               text NOT NULL,
    reason                  text NOT NULL CHECK (reason IN ('over_limit', 'lost', 'missing')),
    decided_at              timestamptz NOT NULL DEFAULT now(),
    retained_bytes          bigint,
    limit_bytes             bigint,
    plugin                  text NOT NULL DEFAULT 'pgoutput',
    recreated_at            timestamptz,
    new_lsn                 pg_lsn,
    note                    text,
    resync_state            text NOT NULL DEFAULT 'pending'
                            CHECK (resync_state IN ('pending', 'started')),
    resync_attempts         integer NOT NULL DEFAULT 0,
    resync_last_attempt_at  timestamptz,
    resync_last_error       text,
    resync_notified_at      timestamptz,
    resync_job_id           bigint,
    resync_started_at       timestamptz
);
COMMENT ON TABLE dfe_airbyte.slot_recreations IS 'every recreation of the Airbyte slot by the dfe_airbyte worker and the full re-sync it requested';

REVOKE ALL ON dfe_airbyte.slot_samples, dfe_airbyte.slot_state, dfe_airbyte.slot_recreations FROM PUBLIC;
GRANT SELECT ON dfe_airbyte.slot_samples, dfe_airbyte.slot_state, dfe_airbyte.slot_recreations
    TO pg_monitor, dfe_airbyte_admin;

-- The guard's effective settings, as the C code reads them (GUC units and
-- defaults resolved).  Read-only and free of secrets: callable by anyone.
CREATE FUNCTION dfe_airbyte_slot_guard_settings(
    OUT slot_name text,
    OUT limit_bytes bigint,
    OUT warning_fraction double precision,
    OUT limit_action text,
    OUT inactive_after interval,
    OUT server_limit_bytes bigint)
    AS 'MODULE_PATHNAME', 'dfe_airbyte_slot_guard_settings'
    LANGUAGE C STABLE;
COMMENT ON FUNCTION dfe_airbyte_slot_guard_settings() IS 'the slot guard''s settings: Airbyte slot, dfe_airbyte.max_slot_wal_size in bytes (NULL: no limit), warning fraction, limit action, inactivity threshold, max_slot_wal_keep_size in bytes (NULL: none)';

-- One check's sampling work, done now in this transaction (no limit action):
-- for tests and benchmarks.
CREATE FUNCTION dfe_airbyte_check_slots_now(
    OUT slots integer,
    OUT elapsed_ms double precision,
    OUT buffers_hit bigint,
    OUT buffers_read bigint)
    AS 'MODULE_PATHNAME', 'dfe_airbyte_check_slots_now'
    LANGUAGE C VOLATILE;
COMMENT ON FUNCTION dfe_airbyte_check_slots_now() IS 'samples the logical slots of this database now, as one worker check does (without the limit action); returns its cost';
REVOKE ALL ON FUNCTION dfe_airbyte_check_slots_now() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION dfe_airbyte_check_slots_now() TO dfe_airbyte_admin;

CREATE VIEW dfe_airbyte.replication_slot_health AS
WITH cfg AS MATERIALIZED (
    SELECT * FROM dfe_airbyte_slot_guard_settings()
), pos AS MATERIALIZED (
    -- on a standby there are no logical slots (PostgreSQL 15), but the view
    -- must not fail there: pg_current_wal_lsn() would
    SELECT pg_is_in_recovery() AS in_recovery,
           CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()
                ELSE pg_current_wal_lsn() END AS lsn
), rs AS MATERIALIZED (
    -- the function under pg_replication_slots, without that view's join to
    -- pg_database for every slot
    SELECT * FROM pg_get_replication_slots()
), live AS (
    SELECT r.slot_name::text AS slot_name, r.plugin::text AS plugin, r.active, r.active_pid,
           r.wal_status, r.safe_wal_size,
           (pos.lsn - r.restart_lsn)::bigint AS retained_bytes,
           (pos.lsn - r.confirmed_flush_lsn)::bigint AS flush_lag_bytes,
           false AS missing
    FROM rs r CROSS JOIN pos
    WHERE r.slot_type = 'logical'
      AND r.datoid = (SELECT oid FROM pg_database WHERE datname = current_database())
    UNION ALL
    -- the Airbyte slot, seen here before, that no longer exists
    SELECT st.slot_name, NULL, false, NULL, NULL, NULL, NULL, NULL, true
    FROM dfe_airbyte.slot_state st CROSS JOIN cfg CROSS JOIN pos
    WHERE st.slot_name = cfg.slot_name AND st.first_seen_at IS NOT NULL AND NOT pos.in_recovery
      AND NOT EXISTS (SELECT 1 FROM rs r WHERE r.slot_name = st.slot_name)
), growth AS (
    -- least-squares slope of the retained bytes over the last hour of this
    -- incarnation's samples; a range scan of slot_samples_sampled_at_idx
    SELECT x.slot_name,
           regr_slope(x.retained_bytes, date_part('epoch', x.sampled_at)) * 3600 AS per_hour
    FROM dfe_airbyte.slot_samples x
    LEFT JOIN dfe_airbyte.slot_state st ON st.slot_name = x.slot_name
    WHERE x.sampled_at >= now() - interval '1 hour'
      AND (st.first_seen_at IS NULL OR x.sampled_at >= st.first_seen_at)
    GROUP BY x.slot_name
    HAVING count(x.retained_bytes) >= 3
       AND max(x.sampled_at) - min(x.sampled_at) >= interval '5 minutes'
), pending AS (
    SELECT slot_name, date_trunc('second', min(recreated_at)) AS since, max(resync_attempts) AS attempts,
           (array_agg(resync_last_error ORDER BY id DESC))[1] AS last_error
    FROM dfe_airbyte.slot_recreations
    WHERE resync_state = 'pending' AND recreated_at IS NOT NULL
    GROUP BY slot_name
), j AS (
    SELECT l.*,
           l.slot_name = cfg.slot_name AS guarded,
           CASE WHEN l.slot_name = cfg.slot_name THEN cfg.limit_bytes END AS limit_bytes,
           cfg.server_limit_bytes, cfg.warning_fraction, cfg.limit_action, cfg.inactive_after,
           round(g.per_hour)::bigint AS growth_bytes_per_hour,
           CASE WHEN l.active THEN now() ELSE st.last_active_at END AS last_active_at,
           st.first_seen_at,
           p.since AS resync_pending_since, p.attempts AS resync_attempts, p.last_error AS resync_error
    FROM live l
    CROSS JOIN cfg
    LEFT JOIN growth g ON g.slot_name = l.slot_name
    LEFT JOIN dfe_airbyte.slot_state st ON st.slot_name = l.slot_name
    LEFT JOIN pending p ON p.slot_name = l.slot_name
), k AS (
    SELECT j.*,
           CASE
               WHEN missing OR wal_status = 'lost' THEN 'lost'
               WHEN limit_bytes IS NOT NULL AND retained_bytes > limit_bytes THEN 'critical'
               WHEN wal_status = 'unreserved' THEN 'critical'
               WHEN limit_bytes IS NOT NULL AND retained_bytes > limit_bytes * warning_fraction THEN 'warning'
               WHEN server_limit_bytes IS NOT NULL AND safe_wal_size IS NOT NULL
                    AND safe_wal_size < server_limit_bytes * (1 - warning_fraction) THEN 'warning'
               WHEN NOT active AND coalesce(last_active_at, first_seen_at) < now() - inactive_after THEN 'inactive'
               ELSE 'ok'
           END AS status
    FROM j
)
SELECT slot_name,
       plugin,
       active,
       active_pid,
       wal_status,
       safe_wal_size,
       retained_bytes,
       pg_size_pretty(retained_bytes) AS retained_pretty,
       flush_lag_bytes,
       pg_size_pretty(flush_lag_bytes) AS flush_lag_pretty,
       limit_bytes,
       server_limit_bytes,
       CASE WHEN limit_bytes > 0 THEN round(retained_bytes::numeric / limit_bytes, 3) END AS fraction_used,
       growth_bytes_per_hour,
       CASE WHEN growth_bytes_per_hour > 0 AND (limit_bytes IS NOT NULL OR safe_wal_size IS NOT NULL) THEN
           date_trunc('second', make_interval(secs => greatest(0, least(
               CASE WHEN limit_bytes IS NOT NULL
                    THEN (limit_bytes - retained_bytes)::float8 / growth_bytes_per_hour * 3600 END,
               CASE WHEN safe_wal_size IS NOT NULL
                    THEN safe_wal_size::float8 / growth_bytes_per_hour * 3600 END))))
       END AS time_to_limit,
       last_active_at,
       status,
       CASE status
           WHEN 'lost' THEN
               CASE WHEN missing THEN
                   format('The Airbyte slot %s no longer exists (dropped, or this server was promoted from a standby: PostgreSQL 15 does not copy slots to standbys), so Airbyte cannot continue CDC. ', slot_name)
               ELSE
                   format('Slot %s was invalidated by max_slot_wal_keep_size: the WAL it needed is gone and its consumer cannot continue. ', slot_name)
               END ||
               CASE WHEN guarded AND limit_action = 'recreate' THEN
                   'dfe_airbyte.slot_limit_action = recreate: the worker recreates it and requests a full re-sync from Airbyte (see dfe_airbyte.slot_recreations).'
               WHEN guarded THEN
                   'Set dfe_airbyte.slot_limit_action = recreate to let the worker recreate it and request a full re-sync, or recreate it yourself (SELECT pg_create_logical_replication_slot(''' || slot_name || ''', ''pgoutput'')) and run a full re-sync (Refresh, merge) of the Airbyte connection.'
               ELSE
                   'Drop it (SELECT pg_drop_replication_slot(''' || slot_name || ''')) and set its consumer up again.'
               END
           WHEN 'critical' THEN
               CASE WHEN limit_bytes IS NOT NULL AND retained_bytes > limit_bytes THEN
                   format('The Airbyte slot retains %s of WAL, more than dfe_airbyte.max_slot_wal_size (%s). ',
                          pg_size_pretty(retained_bytes), pg_size_pretty(limit_bytes)) ||
                   CASE limit_action
                       WHEN 'recreate' THEN 'The worker recreates the slot (Airbyte loses its CDC position) and requests a full re-sync.'
                       WHEN 'terminate' THEN 'The worker ended its walsender; check that Airbyte syncs succeed (dfe_airbyte.sync_health) so the slot is consumed, or set dfe_airbyte.slot_limit_action = recreate to release the WAL at the price of a full re-sync.'
                       ELSE 'Check that Airbyte syncs run and succeed (dfe_airbyte.sync_health); if it cannot catch up, set dfe_airbyte.slot_limit_action = recreate (full re-sync) or raise dfe_airbyte.max_slot_wal_size if the disk allows.'
                   END
               ELSE
                   format('Slot %s needs WAL beyond max_slot_wal_keep_size: it will be invalidated at the next checkpoint unless its consumer catches up now.', slot_name)
               END
           WHEN 'warning' THEN
               CASE WHEN limit_bytes IS NOT NULL AND retained_bytes > limit_bytes * warning_fraction THEN
                   format('The Airbyte slot retains %s%% of dfe_airbyte.max_slot_wal_size (%s). Check that Airbyte syncs run and succeed (dfe_airbyte.sync_health); at 100%% the worker acts per dfe_airbyte.slot_limit_action (%s).',
                          round(100.0 * retained_bytes / limit_bytes), pg_size_pretty(limit_bytes), limit_action)
               ELSE
                   format('Slot %s can retain only %s more WAL before max_slot_wal_keep_size invalidates it; check that its consumer is running.',
                          slot_name, pg_size_pretty(safe_wal_size))
               END
           WHEN 'inactive' THEN
               format('No consumer has used slot %s for more than %s. ', slot_name, inactive_after) ||
               CASE WHEN guarded THEN 'Check that the Airbyte connection is enabled and its syncs run (dfe_airbyte.sync_health).'
                    ELSE 'If it is no longer needed, drop it (SELECT pg_drop_replication_slot(''' || slot_name || ''')): it retains WAL for as long as it exists.'
               END
           ELSE
               CASE WHEN resync_pending_since IS NOT NULL THEN
                   format('The slot was recreated at %s and Airbyte has not yet accepted the full re-sync it needs (%s attempts%s); the worker retries every dfe_airbyte.check_interval.',
                          resync_pending_since, resync_attempts,
                          CASE WHEN resync_error IS NOT NULL THEN ', last error: ' || resync_error ELSE '' END)
               END
       END AS hint
FROM k
ORDER BY slot_name;

COMMENT ON VIEW dfe_airbyte.replication_slot_health IS 'one row per logical replication slot of this database: retained WAL, limit, growth, time to limit and a status (ok, warning, critical, inactive, lost) with a hint';
REVOKE ALL ON dfe_airbyte.replication_slot_health FROM PUBLIC;
GRANT SELECT ON dfe_airbyte.replication_slot_health TO pg_monitor, dfe_airbyte_admin;
-- part 70: sync health (the last Airbyte sync jobs, staleness)

-- Every sync job the worker has seen, newest status; bounded by
-- dfe_airbyte.history_retention and dfe_airbyte.history_max_rows (the newest
-- successful job is always kept: staleness is measured from it).
CREATE TABLE dfe_airbyte.sync_jobs (
    job_id          bigint PRIMARY KEY,
    status          text NOT NULL,
    job_type        text,
    started_at      timestamptz,
    last_updated_at timestamptz,
    first_seen      timestamptz NOT NULL DEFAULT now(),
    last_seen       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sync_jobs_last_seen_idx ON dfe_airbyte.sync_jobs (last_seen);
COMMENT ON TABLE dfe_airbyte.sync_jobs IS
    'Airbyte sync jobs of the connection as the dfe_airbyte worker saw them (every dfe_airbyte.sync_poll_interval)';

-- The worker's own bookkeeping: one row.
CREATE TABLE dfe_airbyte.sync_watch (
    id              boolean PRIMARY KEY DEFAULT true CHECK (id),
    watching_since  timestamptz,        -- first check with Airbyte configured
    checked_at      timestamptz,        -- last check, successful or not
    check_error     text,               -- why the last check failed, NULL when it worked
    stale           boolean NOT NULL DEFAULT false  -- staleness as last reported in an event
);
INSERT INTO dfe_airbyte.sync_watch DEFAULT VALUES;
COMMENT ON TABLE dfe_airbyte.sync_watch IS 'dfe_airbyte worker state behind dfe_airbyte.sync_health';

CREATE VIEW dfe_airbyte.sync_health AS
WITH last_job AS (
    SELECT * FROM dfe_airbyte.sync_jobs ORDER BY job_id DESC LIMIT 1
), last_success AS (
    SELECT * FROM dfe_airbyte.sync_jobs WHERE status = 'succeeded' ORDER BY job_id DESC LIMIT 1
), setting AS (
    SELECT coalesce(nullif(current_setting('dfe_airbyte.sync_stale_after', true), ''), '45min')::interval
           AS stale_after
), h AS (
    SELECT l.job_id AS last_job_id,
           l.status AS last_job_status,
           l.started_at AS last_job_started_at,
           l.last_updated_at AS last_job_updated_at,
           s.job_id AS last_success_job_id,
           coalesce(s.last_updated_at, s.started_at) AS last_success_at,
           CASE
               WHEN w.watching_since IS NULL THEN NULL
               WHEN s.job_id IS NOT NULL
                   THEN coalesce(s.last_updated_at, s.started_at) < now() - setting.stale_after
               ELSE w.watching_since < now() - setting.stale_after
           END AS stale,
           setting.stale_after,
           w.watching_since,
           w.checked_at,
           w.check_error
    FROM dfe_airbyte.sync_watch w
    CROSS JOIN setting
    LEFT JOIN last_job l ON true
    LEFT JOIN last_success s ON true
)
SELECT last_job_id, last_job_status, last_job_started_at, last_job_updated_at,
       last_success_job_id, last_success_at, stale, stale_after, watching_since,
       checked_at, check_error,
       CASE
           WHEN checked_at IS NULL THEN
               'the worker has not read Airbyte''s jobs yet: check that dfe_airbyte is in shared_preload_libraries and that the Airbyte settings are set (dfe_airbyte.config_problems)'
           WHEN check_error IS NOT NULL THEN
               'the last check of Airbyte failed (see check_error); check that Airbyte is up and the dfe_airbyte Airbyte settings'
           WHEN stale AND last_success_at IS NULL THEN
               'no successful sync seen since ' || watching_since || ': check the connection''s job history in the Airbyte UI and dfe_airbyte.replication_slot_health'
           WHEN stale THEN
               'no successful sync since ' || last_success_at || ': check the connection''s job history in the Airbyte UI and dfe_airbyte.replication_slot_health'
           WHEN last_job_status IN ('failed', 'cancelled') THEN
               'the last sync job ' || last_job_status || ': see its logs in the Airbyte UI; Airbyte tries again at the next scheduled sync'
       END AS hint
FROM h;
COMMENT ON VIEW dfe_airbyte.sync_health IS
    'the last Airbyte sync job seen, the last success and whether syncs are stale (older than dfe_airbyte.sync_stale_after)';

REVOKE ALL ON dfe_airbyte.sync_jobs, dfe_airbyte.sync_watch, dfe_airbyte.sync_health FROM PUBLIC;
GRANT SELECT ON dfe_airbyte.sync_jobs, dfe_airbyte.sync_watch, dfe_airbyte.sync_health
    TO pg_monitor, dfe_airbyte_admin;
-- part 99: checks at CREATE EXTENSION time.

DO $$
BEGIN
    IF dfe_airbyte_worker_pid() IS NULL THEN
        RAISE NOTICE 'the dfe_airbyte background worker is not running'
            USING DETAIL = 'Deploys are queued but not run, and the replication slot is not watched.',
                  HINT = 'Add dfe_airbyte to shared_preload_libraries, set dfe_airbyte.database to this database and restart the server.';
    END IF;
END
$$;
