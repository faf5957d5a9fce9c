-- part 25: dfe_airbyte.config_problems — what is wrong with the configuration now

-- The checks SQL cannot make (settings with their environment fallbacks,
-- secrets, the worker).  It never shows a secret's value.
CREATE FUNCTION @extschema@.dfe_airbyte_setting_problems()
    RETURNS TABLE (severity text, object text, problem text, hint text)
    AS 'MODULE_PATHNAME', 'dfe_airbyte_setting_problems'
    LANGUAGE C VOLATILE
    SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION @extschema@.dfe_airbyte_setting_problems() IS
    'the settings part of dfe_airbyte.config_problems (missing or malformed settings, wal_level, WAL limits, the worker)';
REVOKE ALL ON FUNCTION @extschema@.dfe_airbyte_setting_problems() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.dfe_airbyte_setting_problems() TO dfe_airbyte_admin, pg_monitor;

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
      FROM jsonb_array_elements(@extschema@.dfe_airbyte_stream_config()->'configurations'->'streams') AS s
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
           format('column "%s" of allowlisted table "%s" is in no list (allowlist, blocklist, excluded): it is not replicated',
                  c.column_name, c.table_name),
           'A migration added it? Add it to analytics.yml to replicate it (and to analytics_hidden_pii.yml too if it is sensitive: the blocklist), or to analytics_blocklist.yml (the excluded list, third argument of dfe_airbyte_load_config) to keep it out on purpose; then reload with dfe_airbyte_load_config().'
      FROM cols c
     WHERE NOT EXISTS (SELECT 1 FROM dfe_airbyte.allowlist l
                        WHERE l.table_name = c.table_name AND l.column_name = c.column_name)
       AND NOT EXISTS (SELECT 1 FROM dfe_airbyte.blocklist b
                        WHERE b.table_name = c.table_name AND b.column_name = c.column_name)
       AND NOT EXISTS (SELECT 1 FROM dfe_airbyte.excluded x
                        WHERE x.table_name = c.table_name AND x.column_name = c.column_name)
    UNION ALL
    SELECT 'error', x.table_name || '.' || x.column_name,
           format('column "%s" of table "%s" is both allowlisted and excluded: it is replicated although it was decided not to be',
                  x.column_name, x.table_name),
           'Remove it from analytics.yml (to keep it out) or from analytics_blocklist.yml (to replicate it; add it to analytics_hidden_pii.yml too if it is sensitive), then reload with dfe_airbyte_load_config().'
      FROM dfe_airbyte.excluded x
     WHERE EXISTS (SELECT 1 FROM dfe_airbyte.allowlist l
                    WHERE l.table_name = x.table_name AND l.column_name = x.column_name)
    UNION ALL
    SELECT 'warning', b.table_name || '.' || b.column_name,
           format('blocklisted (hidden) column "%s" of table "%s" is not allowlisted: it is never replicated, so it is never hidden either',
                  b.column_name, b.table_name),
           'Harmless, but a sign of a mistake: to replicate it with the hidden policy tag, add it to analytics.yml too; to keep it out on purpose, move it from analytics_hidden_pii.yml to analytics_blocklist.yml (the excluded list).'
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
      FROM @extschema@.dfe_airbyte_setting_problems() AS sp
)
SELECT severity, object, problem, hint
  FROM problems
 ORDER BY CASE severity WHEN 'error' THEN 1 WHEN 'warning' THEN 2 ELSE 3 END,
          object COLLATE "C", problem COLLATE "C";

COMMENT ON VIEW dfe_airbyte.config_problems IS
    'what is wrong with the dfe_airbyte configuration now (lists against the catalog, publication, slot, settings), each with a hint';
REVOKE ALL ON dfe_airbyte.config_problems FROM PUBLIC;
GRANT SELECT ON dfe_airbyte.config_problems TO pg_monitor, dfe_airbyte_admin;
