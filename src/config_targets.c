/*
 * config_targets.c — dfe_airbyte_config_problems(target): the part of
 * dfe_airbyte.config_problems about one service database, its lists
 * against its catalog (tables, columns, primary keys, publication, slot)
 * and, for a remote one, its disk.
 *
 * The lists are this database's rows for the target; the catalog is the
 * target's, read through the one seam (target.h) with the same SQL text
 * on the local database (SPI) and on a remote one (libpq, PostgreSQL 15 to
 * 18): the lists and the stream configuration go in as parameters.  The
 * wording of every row is what 0.2.0's view said for the local database.
 *
 * A remote target that cannot be checked (unreachable, a missing grant)
 * gives one row saying so instead of failing the whole view.
 */
#include "postgres.h"

#include "access/xact.h"
#include "compat.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/resowner.h"

#include "settings.h"
#include "spi_xact.h"
#include "stream_config.h"
#include "target.h"
#include "target_scope.h"
#include "version.h"

/* Azure Flexible Server turns read-only at 95 % used or under 5 GiB free */
#define AZURE_READONLY_USED_FRACTION 0.95
#define AZURE_READONLY_FREE_BYTES (INT64CONST(5) * 1024 * 1024 * 1024)

typedef struct Problem
{
	const char *severity;
	const char *object;
	const char *problem;
	const char *hint;
} Problem;

static List *
add_problem(List *rows, const char *severity, const char *object,
			const char *problem, const char *hint)
{
	Problem    *p = palloc(sizeof(Problem));

	p->severity = severity;
	p->object = object;
	p->problem = problem;
	p->hint = hint;
	return lappend(rows, p);
}

/*
 * The target's three lists from this database, as six text[] literals
 * (tables and columns of the allowlist, the blocklist, the excluded list;
 * NULL for an empty list).
 */
static const char *lists_sql =
"SELECT (SELECT pg_catalog.array_agg(l.table_name ORDER BY l.table_name, l.column_name)::pg_catalog.text\n"
"          FROM dfe_airbyte.allowlist l WHERE l.target OPERATOR(pg_catalog.=) $1),\n"
"       (SELECT pg_catalog.array_agg(l.column_name ORDER BY l.table_name, l.column_name)::pg_catalog.text\n"
"          FROM dfe_airbyte.allowlist l WHERE l.target OPERATOR(pg_catalog.=) $1),\n"
"       (SELECT pg_catalog.array_agg(l.table_name ORDER BY l.table_name, l.column_name)::pg_catalog.text\n"
"          FROM dfe_airbyte.blocklist l WHERE l.target OPERATOR(pg_catalog.=) $1),\n"
"       (SELECT pg_catalog.array_agg(l.column_name ORDER BY l.table_name, l.column_name)::pg_catalog.text\n"
"          FROM dfe_airbyte.blocklist l WHERE l.target OPERATOR(pg_catalog.=) $1),\n"
"       (SELECT pg_catalog.array_agg(l.table_name ORDER BY l.table_name, l.column_name)::pg_catalog.text\n"
"          FROM dfe_airbyte.excluded l WHERE l.target OPERATOR(pg_catalog.=) $1),\n"
"       (SELECT pg_catalog.array_agg(l.column_name ORDER BY l.table_name, l.column_name)::pg_catalog.text\n"
"          FROM dfe_airbyte.excluded l WHERE l.target OPERATOR(pg_catalog.=) $1)";

/*
 * The checks of the lists against the target's catalog: $1 source schema,
 * $2 publication, $3 slot name, $4..$9 the lists (lists_sql), $10 the
 * target's stream configuration (the primary key each stream really uses).
 * Names resolve with search_path = pg_catalog, pg_temp on both sides
 * (target.c pins it), and pg_temp is never searched for functions or
 * operators; every operator is qualified all the same, as every query
 * sent through target.h is, since a remote session's search_path is only a
 * startup option (IN and IS DISTINCT FROM, which look "=" up on the path,
 * are written with OPERATOR(pg_catalog.=) ANY and IS NULL OR <>).
 */
static const char *catalog_checks_sql =
"WITH conf AS (\n"
"    SELECT $1::pg_catalog.text AS source_schema, $2::pg_catalog.text AS publication, $3::pg_catalog.text AS slot_name\n"
"),\n"
"allowlist AS (\n"
"    SELECT l.t AS table_name, l.c AS column_name\n"
"      FROM ROWS FROM (pg_catalog.unnest($4::pg_catalog.text[]), pg_catalog.unnest($5::pg_catalog.text[])) AS l(t, c)\n"
"),\n"
"blocklist AS (\n"
"    SELECT l.t AS table_name, l.c AS column_name\n"
"      FROM ROWS FROM (pg_catalog.unnest($6::pg_catalog.text[]), pg_catalog.unnest($7::pg_catalog.text[])) AS l(t, c)\n"
"),\n"
"excluded AS (\n"
"    SELECT l.t AS table_name, l.c AS column_name\n"
"      FROM ROWS FROM (pg_catalog.unnest($8::pg_catalog.text[]), pg_catalog.unnest($9::pg_catalog.text[])) AS l(t, c)\n"
"),\n"
"allowed AS (\n"
"    SELECT t.table_name, c.oid AS relid\n"
"      FROM (SELECT DISTINCT table_name FROM allowlist) AS t\n"
"     CROSS JOIN conf\n"
"      LEFT JOIN (pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace)\n"
"             ON n.nspname OPERATOR(pg_catalog.=) conf.source_schema AND c.relname OPERATOR(pg_catalog.=) t.table_name AND c.relkind OPERATOR(pg_catalog.=) ANY ('{r,p}'::pg_catalog.\"char\"[])\n"
"     WHERE t.table_name OPERATOR(pg_catalog.<>) 'airbyte_heartbeat'\n"
"),\n"
"cols AS (\n"
"    SELECT a.table_name, att.attname::text AS column_name\n"
"      FROM allowed a\n"
"      JOIN pg_catalog.pg_attribute att\n"
"        ON att.attrelid OPERATOR(pg_catalog.=) a.relid AND att.attnum OPERATOR(pg_catalog.>) 0 AND NOT att.attisdropped\n"
"),\n"
"pk AS (\n"
"    SELECT a.table_name, att.attname::text AS column_name\n"
"      FROM allowed a\n"
"      JOIN pg_catalog.pg_index i ON i.indrelid OPERATOR(pg_catalog.=) a.relid AND i.indisprimary\n"
"     CROSS JOIN LATERAL pg_catalog.unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)\n"
"      JOIN pg_catalog.pg_attribute att ON att.attrelid OPERATOR(pg_catalog.=) a.relid AND att.attnum OPERATOR(pg_catalog.=) k.attnum\n"
"     WHERE k.ord OPERATOR(pg_catalog.<=) i.indnkeyatts\n"
"),\n"
"stream_keys AS (\n"
"    SELECT s OPERATOR(pg_catalog.->>) 'name' AS table_name,\n"
"           (SELECT pg_catalog.string_agg(e.k OPERATOR(pg_catalog.->>) 0, ', ' ORDER BY e.o)\n"
"              FROM pg_catalog.jsonb_array_elements(s OPERATOR(pg_catalog.->) 'primaryKey') WITH ORDINALITY AS e(k, o)) AS stream_pk\n"
"      FROM pg_catalog.jsonb_array_elements($10::pg_catalog.jsonb OPERATOR(pg_catalog.->) 'configurations' OPERATOR(pg_catalog.->) 'streams') AS s\n"
"),\n"
"pub AS (\n"
"    SELECT p.* FROM pg_catalog.pg_publication p, conf WHERE p.pubname OPERATOR(pg_catalog.=) conf.publication\n"
"),\n"
"pubtables AS (\n"
"    SELECT pt.schemaname::text AS schemaname, pt.tablename::text AS tablename, pt.attnames::text[] AS attnames\n"
"      FROM pg_catalog.pg_publication_tables pt, conf\n"
"     WHERE pt.pubname OPERATOR(pg_catalog.=) conf.publication\n"
"),\n"
"problems (severity, object, problem, hint) AS (\n"
"    SELECT 'error', 'dfe_airbyte.source_schema',\n"
"           pg_catalog.format('schema \"%s\" (dfe_airbyte.source_schema) does not exist: no allowlisted table can be found',\n"
"                  conf.source_schema),\n"
"           'ALTER SYSTEM SET dfe_airbyte.source_schema = ''<the schema of the service''''s tables>''; SELECT pg_reload_conf();'\n"
"      FROM conf\n"
"     WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname OPERATOR(pg_catalog.=) conf.source_schema)\n"
"    UNION ALL\n"
"    SELECT 'error', a.table_name,\n"
"           pg_catalog.format('allowlisted table \"%s\" does not exist in schema \"%s\"', a.table_name, conf.source_schema),\n"
"           'Remove it from analytics.yml and reload with dfe_airbyte_load_config(), or run the migration that creates it: Airbyte cannot discover a stream for a missing table.'\n"
"      FROM allowed a, conf\n"
"     WHERE a.relid IS NULL\n"
"    UNION ALL\n"
"    SELECT 'error', l.table_name OPERATOR(pg_catalog.||) '.' OPERATOR(pg_catalog.||) l.column_name,\n"
"           pg_catalog.format('allowlisted column \"%s\" of table \"%s\" does not exist', l.column_name, l.table_name),\n"
"           'Remove it from analytics.yml and reload with dfe_airbyte_load_config(), or run the migration that adds it.'\n"
"      FROM allowlist l\n"
"      JOIN allowed a ON a.table_name OPERATOR(pg_catalog.=) l.table_name AND a.relid IS NOT NULL\n"
"     WHERE l.column_name OPERATOR(pg_catalog.<>) ALL ('{_ab_cdc_lsn,_ab_cdc_deleted_at,_ab_cdc_updated_at}'::pg_catalog.text[])\n"
"       AND NOT EXISTS (SELECT 1 FROM cols c WHERE c.table_name OPERATOR(pg_catalog.=) l.table_name AND c.column_name OPERATOR(pg_catalog.=) l.column_name)\n"
"    UNION ALL\n"
"    SELECT 'info', l.table_name OPERATOR(pg_catalog.||) '.' OPERATOR(pg_catalog.||) l.column_name,\n"
"           pg_catalog.format('\"%s\" is an Airbyte metadata field: every stream selects it anyway', l.column_name),\n"
"           'Remove it from analytics.yml; listing it changes nothing.'\n"
"      FROM allowlist l\n"
"     WHERE l.column_name OPERATOR(pg_catalog.=) ANY ('{_ab_cdc_lsn,_ab_cdc_deleted_at,_ab_cdc_updated_at}'::pg_catalog.text[])\n"
"    UNION ALL\n"
"    SELECT 'info', 'airbyte_heartbeat',\n"
"           'airbyte_heartbeat is in the allowlist: its entry is ignored, the heartbeat stream (id, last_heartbeat) is always included',\n"
"           'Remove it from analytics.yml.'\n"
"     WHERE EXISTS (SELECT 1 FROM allowlist WHERE table_name OPERATOR(pg_catalog.=) 'airbyte_heartbeat')\n"
"    UNION ALL\n"
"    SELECT 'warning', a.table_name,\n"
"           pg_catalog.format('table \"%s\" has no primary key: Airbyte copies it whole at each sync (full_refresh_overwrite) instead of streaming its changes; BigQuery keeps no history of its rows and does not see deletes as such (the copy is replaced), until it gets a primary key',\n"
"                  a.table_name),\n"
"           pg_catalog.format('Add a primary key (ALTER TABLE %I.%I ADD PRIMARY KEY (...)), then deploy: the stream becomes incremental with CDC. While the table is in the publication without one, its UPDATEs and DELETEs also need a replica identity.',\n"
"                  conf.source_schema, a.table_name)\n"
"      FROM allowed a, conf\n"
"     WHERE a.relid IS NOT NULL\n"
"       AND NOT EXISTS (SELECT 1 FROM pk WHERE pk.table_name OPERATOR(pg_catalog.=) a.table_name)\n"
"    UNION ALL\n"
"    SELECT 'warning', p.table_name OPERATOR(pg_catalog.||) '.' OPERATOR(pg_catalog.||) p.column_name,\n"
"           pg_catalog.format('primary key column \"%s\" of table \"%s\" is not allowlisted: the stream uses %s as its primary key instead',\n"
"                  p.column_name, p.table_name, coalesce(k.stream_pk, 'nothing')),\n"
"           'Allowlist every primary key column in analytics.yml so that the rows in BigQuery can be told apart, then reload with dfe_airbyte_load_config().'\n"
"      FROM pk p\n"
"      LEFT JOIN stream_keys k ON k.table_name OPERATOR(pg_catalog.=) p.table_name\n"
"     WHERE NOT EXISTS (SELECT 1 FROM allowlist l\n"
"                        WHERE l.table_name OPERATOR(pg_catalog.=) p.table_name AND l.column_name OPERATOR(pg_catalog.=) p.column_name)\n"
"    UNION ALL\n"
"    SELECT 'warning', c.table_name OPERATOR(pg_catalog.||) '.' OPERATOR(pg_catalog.||) c.column_name,\n"
"           pg_catalog.format('column \"%s\" of allowlisted table \"%s\" is in no list (allowlist, blocklist, excluded): it is not replicated',\n"
"                  c.column_name, c.table_name),\n"
"           'A migration added it? Add it to analytics.yml to replicate it (and to analytics_hidden_pii.yml too if it is sensitive: the blocklist), or to analytics_blocklist.yml (the excluded list, third argument of dfe_airbyte_load_config) to keep it out on purpose; then reload with dfe_airbyte_load_config().'\n"
"      FROM cols c\n"
"     WHERE NOT EXISTS (SELECT 1 FROM allowlist l\n"
"                        WHERE l.table_name OPERATOR(pg_catalog.=) c.table_name AND l.column_name OPERATOR(pg_catalog.=) c.column_name)\n"
"       AND NOT EXISTS (SELECT 1 FROM blocklist b\n"
"                        WHERE b.table_name OPERATOR(pg_catalog.=) c.table_name AND b.column_name OPERATOR(pg_catalog.=) c.column_name)\n"
"       AND NOT EXISTS (SELECT 1 FROM excluded x\n"
"                        WHERE x.table_name OPERATOR(pg_catalog.=) c.table_name AND x.column_name OPERATOR(pg_catalog.=) c.column_name)\n"
"    UNION ALL\n"
"    SELECT 'error', x.table_name OPERATOR(pg_catalog.||) '.' OPERATOR(pg_catalog.||) x.column_name,\n"
"           pg_catalog.format('column \"%s\" of table \"%s\" is both allowlisted and excluded: it is replicated although it was decided not to be',\n"
"                  x.column_name, x.table_name),\n"
"           'Remove it from analytics.yml (to keep it out) or from analytics_blocklist.yml (to replicate it; add it to analytics_hidden_pii.yml too if it is sensitive), then reload with dfe_airbyte_load_config().'\n"
"      FROM excluded x\n"
"     WHERE EXISTS (SELECT 1 FROM allowlist l\n"
"                    WHERE l.table_name OPERATOR(pg_catalog.=) x.table_name AND l.column_name OPERATOR(pg_catalog.=) x.column_name)\n"
"    UNION ALL\n"
"    SELECT 'warning', b.table_name OPERATOR(pg_catalog.||) '.' OPERATOR(pg_catalog.||) b.column_name,\n"
"           pg_catalog.format('blocklisted (hidden) column \"%s\" of table \"%s\" is not allowlisted: it is never replicated, so it is never hidden either',\n"
"                  b.column_name, b.table_name),\n"
"           'Harmless, but a sign of a mistake: to replicate it with the hidden policy tag, add it to analytics.yml too; to keep it out on purpose, move it from analytics_hidden_pii.yml to analytics_blocklist.yml (the excluded list).'\n"
"      FROM blocklist b\n"
"     WHERE NOT EXISTS (SELECT 1 FROM allowlist l\n"
"                        WHERE l.table_name OPERATOR(pg_catalog.=) b.table_name AND l.column_name OPERATOR(pg_catalog.=) b.column_name)\n"
"    UNION ALL\n"
"    SELECT 'error', conf.publication,\n"
"           pg_catalog.format('publication \"%s\" (dfe_airbyte.publication) does not exist: Airbyte''s CDC receives no changes',\n"
"                  conf.publication),\n"
"           pg_catalog.format('CREATE PUBLICATION %I FOR TABLE <the allowlisted tables>, airbyte_heartbeat; or set dfe_airbyte.publication to the publication the Airbyte source uses.',\n"
"                  conf.publication)\n"
"      FROM conf\n"
"     WHERE NOT EXISTS (SELECT 1 FROM pub)\n"
"    UNION ALL\n"
"    SELECT 'warning', p.pubname::text,\n"
"           pg_catalog.format('publication \"%s\" does not publish %s: Airbyte misses those changes', p.pubname,\n"
"                  pg_catalog.concat_ws(', ', CASE WHEN NOT p.pubinsert THEN 'inserts' END,\n"
"                                  CASE WHEN NOT p.pubupdate THEN 'updates' END,\n"
"                                  CASE WHEN NOT p.pubdelete THEN 'deletes' END)),\n"
"           pg_catalog.format('ALTER PUBLICATION %I SET (publish = ''insert, update, delete'');', p.pubname)\n"
"      FROM pub p\n"
"     WHERE NOT (p.pubinsert AND p.pubupdate AND p.pubdelete)\n"
"    UNION ALL\n"
"    SELECT 'error', a.table_name,\n"
"           pg_catalog.format('allowlisted table \"%s\" is not in publication \"%s\": Airbyte receives no changes of it',\n"
"                  a.table_name, conf.publication),\n"
"           pg_catalog.format('ALTER PUBLICATION %I ADD TABLE %I.%I;', conf.publication, conf.source_schema, a.table_name)\n"
"      FROM allowed a, conf\n"
"     WHERE a.relid IS NOT NULL\n"
"       AND EXISTS (SELECT 1 FROM pub)\n"
"       AND NOT EXISTS (SELECT 1 FROM pubtables pt\n"
"                        WHERE pt.schemaname OPERATOR(pg_catalog.=) conf.source_schema AND pt.tablename OPERATOR(pg_catalog.=) a.table_name)\n"
"    UNION ALL\n"
"    SELECT 'error', l.table_name OPERATOR(pg_catalog.||) '.' OPERATOR(pg_catalog.||) l.column_name,\n"
"           pg_catalog.format('allowlisted column \"%s\" of table \"%s\" is left out by the column list of publication \"%s\"',\n"
"                  l.column_name, l.table_name, conf.publication),\n"
"           pg_catalog.format('ALTER PUBLICATION %I SET TABLE %I.%I; (without a column list), or add the column to the list.',\n"
"                  conf.publication, conf.source_schema, l.table_name)\n"
"      FROM allowlist l\n"
"      JOIN cols c ON c.table_name OPERATOR(pg_catalog.=) l.table_name AND c.column_name OPERATOR(pg_catalog.=) l.column_name\n"
"     CROSS JOIN conf\n"
"      JOIN pubtables pt ON pt.schemaname OPERATOR(pg_catalog.=) conf.source_schema AND pt.tablename OPERATOR(pg_catalog.=) l.table_name\n"
"     WHERE NOT (l.column_name OPERATOR(pg_catalog.=) ANY (pt.attnames))\n"
"    UNION ALL\n"
"    SELECT 'error',\n"
"           CASE WHEN pt.schemaname OPERATOR(pg_catalog.=) conf.source_schema THEN pt.tablename\n"
"                ELSE pt.schemaname OPERATOR(pg_catalog.||) '.' OPERATOR(pg_catalog.||) pt.tablename END,\n"
"           pg_catalog.format('table \"%s\".\"%s\" is in publication \"%s\" without a replica identity: every UPDATE or DELETE on it fails',\n"
"                  pt.schemaname, pt.tablename, conf.publication),\n"
"           pg_catalog.format('Add a primary key to it, or ALTER TABLE %I.%I REPLICA IDENTITY FULL;', pt.schemaname, pt.tablename)\n"
"      FROM pubtables pt\n"
"     CROSS JOIN conf\n"
"      JOIN pub p ON p.pubupdate OR p.pubdelete\n"
"      JOIN pg_catalog.pg_namespace n ON n.nspname OPERATOR(pg_catalog.=) pt.schemaname\n"
"      JOIN pg_catalog.pg_class c ON c.relnamespace OPERATOR(pg_catalog.=) n.oid AND c.relname OPERATOR(pg_catalog.=) pt.tablename\n"
"     WHERE c.relreplident OPERATOR(pg_catalog.=) 'n'\n"
"        OR (c.relreplident OPERATOR(pg_catalog.=) 'd' AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_index i\n"
"                                                  WHERE i.indrelid OPERATOR(pg_catalog.=) c.oid AND i.indisprimary))\n"
"        OR (c.relreplident OPERATOR(pg_catalog.=) 'i' AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_index i\n"
"                                                  WHERE i.indrelid OPERATOR(pg_catalog.=) c.oid AND i.indisreplident))\n"
"    UNION ALL\n"
"    SELECT 'warning', 'airbyte_heartbeat',\n"
"           pg_catalog.format('table airbyte_heartbeat does not exist in schema \"%s\", but the stream configuration always includes the heartbeat stream',\n"
"                  conf.source_schema),\n"
"           'Create it as the Airbyte source''s heartbeat query expects (with columns id and last_heartbeat) and add it to the publication.'\n"
"      FROM conf\n"
"     WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class c\n"
"                         JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace\n"
"                        WHERE n.nspname OPERATOR(pg_catalog.=) conf.source_schema AND c.relname OPERATOR(pg_catalog.=) 'airbyte_heartbeat')\n"
"    UNION ALL\n"
"    SELECT 'warning', conf.slot_name,\n"
"           pg_catalog.format('replication slot \"%s\" (dfe_airbyte.slot_name) does not exist', conf.slot_name),\n"
"           pg_catalog.format('Create it for the Airbyte source: SELECT pg_create_logical_replication_slot(%L, ''pgoutput''); or set dfe_airbyte.slot_name to the slot the source uses.',\n"
"                  conf.slot_name)\n"
"      FROM conf\n"
"     WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_replication_slots s WHERE s.slot_name OPERATOR(pg_catalog.=) conf.slot_name)\n"
"    UNION ALL\n"
"    SELECT 'error', conf.slot_name,\n"
"           CASE WHEN (s.database IS NULL OR s.database OPERATOR(pg_catalog.<>) pg_catalog.current_database())\n"
"                THEN pg_catalog.format('replication slot \"%s\" belongs to database \"%s\", not to this one', s.slot_name,\n"
"                            coalesce(s.database::text, '(none: physical slot)'))\n"
"                ELSE pg_catalog.format('replication slot \"%s\" uses plugin \"%s\"; Airbyte''s Postgres source needs pgoutput',\n"
"                            s.slot_name, s.plugin) END,\n"
"           'Set dfe_airbyte.slot_name to the slot the Airbyte source uses, or recreate the slot in this database with pg_create_logical_replication_slot(name, ''pgoutput'').'\n"
"      FROM pg_catalog.pg_replication_slots s, conf\n"
"     WHERE s.slot_name OPERATOR(pg_catalog.=) conf.slot_name\n"
"       AND ((s.database IS NULL OR s.database OPERATOR(pg_catalog.<>) pg_catalog.current_database()) OR s.plugin IS NULL OR s.plugin OPERATOR(pg_catalog.<>) 'pgoutput')\n"
")\n"
"SELECT severity, object, problem, hint FROM problems\n";

static List *
catalog_problems(List *rows)
{
	const char *target = dfe_target_current();
	DfeRows    *lists;
	DfeRows    *r;
	const char *args[10];

	lists = dfe_target_query(dfe_target_open(DFE_LOCAL_TARGET), "read the lists",
							 lists_sql, 1, &target);
	args[0] = dfe_setting_source_schema();
	args[1] = dfe_setting_publication();
	args[2] = dfe_setting_slot_name();
	for (int i = 0; i < 6; i++)
		args[3 + i] = dfe_rows_value(lists, 0, i);
	args[9] = dfe_stream_config_build();
	r = dfe_target_query(dfe_target_current_target(), "check the lists against the catalog",
						 catalog_checks_sql, 10, args);
	for (int i = 0; i < r->nrows; i++)
		rows = add_problem(rows, dfe_rows_value(r, i, 0), dfe_rows_value(r, i, 1),
						   dfe_rows_value(r, i, 2), dfe_rows_value(r, i, 3));
	return rows;
}

/*
 * What a remote server has used of its disk: every database it lets us
 * size (pg_monitor may) and its WAL; and its own slot bound in MB (-1:
 * none; Azure keeps it at -1).
 */
static const char *disk_used_sql =
"SELECT (SELECT pg_catalog.sum(pg_catalog.pg_database_size(d.oid)) FROM pg_catalog.pg_database d\n"
"         WHERE d.datallowconn AND pg_catalog.has_database_privilege(d.oid, 'CONNECT'))::pg_catalog.int8\n"
"       OPERATOR(pg_catalog.+) (SELECT coalesce(pg_catalog.sum(w.size), 0) FROM pg_catalog.pg_ls_waldir() w)::pg_catalog.int8,\n"
"       (SELECT s.setting FROM pg_catalog.pg_settings s WHERE s.name OPERATOR(pg_catalog.=) 'max_slot_wal_keep_size')";

static char *
pretty_bytes(int64 bytes)
{
	return text_to_cstring(DatumGetTextPP(DirectFunctionCall1(pg_size_pretty, Int64GetDatum(bytes))));
}

/* the WAL the slot may retain before something acts, in bytes; -1: nothing bounds it */
static int64
slot_bound_bytes(int64 server_limit_mb)
{
	int64		bound = -1;

	if (dfe_max_slot_wal_size_mb >= 0 && dfe_slot_limit_action != SLOT_LIMIT_WARN)
		bound = (int64) dfe_max_slot_wal_size_mb * 1024 * 1024;
	if (server_limit_mb >= 0 && (bound < 0 || server_limit_mb * 1024 * 1024 < bound))
		bound = server_limit_mb * 1024 * 1024;
	return bound;
}

/*
 * A remote server's free space cannot be read (statvfs sees this server's
 * disk): the target's disk_size stands in, with Azure Flexible Server's
 * read-only rule as the hard edge ("The primary server is automatically
 * switched to read-only mode when the storage usage reaches 95 percent, or
 * when the available capacity is less than 5 GiB", Azure's
 * concepts-logical.md).
 */
static List *
disk_problems(List *rows, DfeTarget *t)
{
	const char *target = dfe_target_name(t);
	int64		disk_mb;
	int64		disk;
	int64		readonly_at;
	int64		used;
	int64		bound;
	DfeRows    *r;

	disk_mb = dfe_target_disk_size_mb(target);
	if (disk_mb < 0)
		return add_problem(rows, "warning", "disk_size",
						   psprintf("target \"%s\" has no disk_size: its server's free space cannot be read from here, so nothing checks the slot's bound against Azure's read-only point (95 %% used or less than 5 GiB free)", target),
						   psprintf("UPDATE dfe_airbyte.targets SET settings = settings || '{\"disk_size\": \"<the server's storage size, e.g. 128GB>\"}' WHERE name = '%s';", target));
	disk = disk_mb * 1024 * 1024;
	readonly_at = Min((int64) (disk * AZURE_READONLY_USED_FRACTION), disk - AZURE_READONLY_FREE_BYTES);
	r = dfe_target_query(t, "read the disk use", disk_used_sql, 0, NULL);
	used = r->nrows > 0 && dfe_rows_value(r, 0, 0) ? strtoi64(dfe_rows_value(r, 0, 0), NULL, 10) : 0;
	bound = slot_bound_bytes(r->nrows > 0 && dfe_rows_value(r, 0, 1)
							 ? strtoi64(dfe_rows_value(r, 0, 1), NULL, 10) : -1);

	if (used >= readonly_at)
		return add_problem(rows, "error", "disk headroom",
						   psprintf("the databases and WAL use %s of disk_size %s: past Azure's read-only point (%s), the server refuses writes",
									pretty_bytes(used), pretty_bytes(disk), pretty_bytes(readonly_at)),
						   "Grow the server's storage (and disk_size), or free space: a slot retaining WAL is the usual cause (SELECT * FROM pg_replication_slots on the target).");
	if (bound < 0)
		rows = add_problem(rows, "warning", "max_slot_wal_size",
						   psprintf("nothing bounds the WAL the Airbyte slot of target \"%s\" may retain: no dfe_airbyte.max_slot_wal_size with slot_limit_action terminate or recreate, and no max_slot_wal_keep_size; a stalled Airbyte takes the server to Azure's read-only point (%s used)",
									target, pretty_bytes(readonly_at)),
						   psprintf("Set the target's max_slot_wal_size below %s with slot_limit_action terminate or recreate: UPDATE dfe_airbyte.targets SET settings = settings || '{\"max_slot_wal_size\": \"...\", \"slot_limit_action\": \"recreate\"}' WHERE name = '%s';",
									pretty_bytes(readonly_at - used), target));
	else if (bound > readonly_at - used)
		rows = add_problem(rows, "warning", "disk headroom",
						   psprintf("the slot may retain %s before anything acts, more than the disk's headroom before Azure's read-only point (%s of disk_size %s free until 95 %% used or 5 GiB free): the server turns read-only before the limit is reached",
									pretty_bytes(bound), pretty_bytes(readonly_at - used), pretty_bytes(disk)),
						   psprintf("Lower the target's max_slot_wal_size below %s (UPDATE dfe_airbyte.targets SET settings = settings || '{\"max_slot_wal_size\": \"...\"}' WHERE name = '%s';), or grow the server's storage and its disk_size.",
									pretty_bytes(readonly_at - used), target));
	return rows;
}

/*
 * The heartbeat table of a remote target, as dfe_airbyte_flow_problems()
 * checks the local one (same wording): in the publication, with the
 * columns the heartbeat stream and the source's heartbeat query use, and
 * with its row.  $1 source schema, $2 publication.
 */
static const char *heartbeat_sql =
"SELECT h.oid IS NOT NULL,\n"
"       EXISTS (SELECT 1 FROM pg_catalog.pg_publication p WHERE p.pubname OPERATOR(pg_catalog.=) $2::pg_catalog.text)\n"
"       AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_publication_tables pt\n"
"                        WHERE pt.pubname OPERATOR(pg_catalog.=) $2::pg_catalog.text\n"
"                          AND pt.schemaname OPERATOR(pg_catalog.=) $1::pg_catalog.text\n"
"                          AND pt.tablename OPERATOR(pg_catalog.=) 'airbyte_heartbeat'),\n"
"       (SELECT pg_catalog.count(*) FROM pg_catalog.pg_attribute a\n"
"         WHERE a.attrelid OPERATOR(pg_catalog.=) h.oid AND NOT a.attisdropped\n"
"           AND a.attname OPERATOR(pg_catalog.=) ANY ('{id,last_heartbeat}'::pg_catalog.name[])) OPERATOR(pg_catalog.=) 2\n"
"  FROM (SELECT (SELECT c.oid FROM pg_catalog.pg_class c\n"
"                  JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace\n"
"                 WHERE n.nspname OPERATOR(pg_catalog.=) $1::pg_catalog.text\n"
"                   AND c.relname OPERATOR(pg_catalog.=) 'airbyte_heartbeat'\n"
"                   AND c.relkind OPERATOR(pg_catalog.=) ANY ('{r,p}'::pg_catalog.\"char\"[])) AS oid) h";

static List *
heartbeat_problems(List *rows, DfeTarget *t)
{
	const char *schema = dfe_setting_source_schema();
	const char *args[2] = {schema, dfe_setting_publication()};
	const char *qschema = quote_identifier(schema);
	DfeRows    *r = dfe_target_query(t, "read the heartbeat table", heartbeat_sql, 2, args);

	if (strcmp(dfe_rows_value(r, 0, 0), "t") != 0)
		return rows;			/* the catalog checks say it is missing */
	if (strcmp(dfe_rows_value(r, 0, 1), "t") == 0)
		rows = add_problem(rows, "error", "airbyte_heartbeat",
						   psprintf("table airbyte_heartbeat is not in publication \"%s\": the heartbeat writes no change Airbyte reads, so on a quiet database the slot never advances and retains WAL", args[1]),
						   psprintf("ALTER PUBLICATION %s ADD TABLE %s.airbyte_heartbeat;", quote_identifier(args[1]), qschema));
	if (strcmp(dfe_rows_value(r, 0, 2), "t") != 0)
		return add_problem(rows, "error", "airbyte_heartbeat",
						   "table airbyte_heartbeat lacks the column id or last_heartbeat that the heartbeat stream and the source's heartbeat query use",
						   psprintf("CREATE TABLE %s.airbyte_heartbeat (id integer, last_heartbeat timestamptz) as DfE's Terraform does, with REPLICA IDENTITY FULL and one row with id = 1.", qschema));
	/* the role has pg_read_all_data (README, "Targets") */
	r = dfe_target_query(t, "read the heartbeat row",
						 psprintf("SELECT EXISTS (SELECT 1 FROM %s.airbyte_heartbeat h WHERE h.id OPERATOR(pg_catalog.=) 1)", qschema),
						 0, NULL);
	if (strcmp(dfe_rows_value(r, 0, 0), "t") != 0)
		rows = add_problem(rows, "error", "airbyte_heartbeat",
						   "table airbyte_heartbeat has no row with id = 1: the source's heartbeat query (UPDATE airbyte_heartbeat SET last_heartbeat = now() WHERE id = 1) changes nothing, so a quiet database retains WAL",
						   psprintf("INSERT INTO %s.airbyte_heartbeat (id, last_heartbeat) VALUES (1, now());", qschema));
	return rows;
}

/* every problem of the current scope's target */
static List *
target_problems(void)
{
	DfeTarget  *t = dfe_target_current_target();
	List	   *rows = catalog_problems(NIL);

	/*
	 * The local database's heartbeat and disk are checked by
	 * dfe_airbyte_flow_problems() (statvfs, slot_limit_advice); a remote
	 * one's here.
	 */
	if (dfe_target_is_local(t))
		return rows;
	rows = heartbeat_problems(rows, t);
	return disk_problems(rows, t);
}

/*
 * A remote target's checks in a subtransaction: whatever stops them (the
 * server down, a grant missing) is one row naming the target, and the
 * other targets' rows still come.
 */
static void
call_target_problems(void *arg)
{
	*(List **) arg = target_problems();
}

static List *
guarded_target_problems(const char *target)
{
	List	   *rows = NIL;
	ErrorData  *edata;

	if (!dfe_catch(call_target_problems, &rows, DFE_CATCH_SUBXACT, CurrentMemoryContext, &edata))
	{
		rows = add_problem(NIL, "error", psprintf("target %s", target),
						   psprintf("target \"%s\" could not be checked: %s", target, edata->message),
						   edata->hint ? edata->hint
						   : "Check the target's server and its role's grants (README, \"Targets\"), then look again.");
	}
	return rows;
}

PG_FUNCTION_INFO_V1(dfe_airbyte_config_problems);

/* dfe_airbyte_config_problems(target text) → TABLE(severity, object, problem, hint) */
Datum
dfe_airbyte_config_problems(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	const char *target = text_to_cstring(PG_GETARG_TEXT_PP(0));
	DfeTargetScope *scope;
	List	   *rows;
	ListCell   *lc;
	ErrorData  *edata;

	DFE_REQUIRE_MATCHING_SQL();
	InitMaterializedSRF(fcinfo, 0);
	scope = dfe_target_scope_try_enter(target, &edata);
	if (scope == NULL)
	{
		/* dfe_airbyte_setting_problems(target) names the setting */
		rows = add_problem(NIL, "error", psprintf("target %s", target),
						   psprintf("target \"%s\" could not be checked: its settings cannot be applied: %s",
									target, edata->message),
						   psprintf("Correct the target's settings: SELECT * FROM dfe_airbyte_setting_problems('%s') names the wrong one.",
									target));
	}
	else
	{
		if (strcmp(target, DFE_LOCAL_TARGET) == 0)
			rows = target_problems();
		else
			rows = guarded_target_problems(target);
		dfe_target_scope_leave(scope);
	}

	foreach(lc, rows)
	{
		Problem    *p = lfirst(lc);
		Datum		values[4];
		bool		nulls[4] = {false, false, false, false};

		values[0] = CStringGetTextDatum(p->severity);
		values[1] = CStringGetTextDatum(p->object);
		values[2] = CStringGetTextDatum(p->problem);
		nulls[3] = p->hint == NULL;
		values[3] = p->hint ? CStringGetTextDatum(p->hint) : (Datum) 0;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
