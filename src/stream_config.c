/*
 * stream_config.c — dfe_airbyte_stream_config().
 *
 * One stream per allowlisted table, ordered by table name (byte order, so
 * the result does not depend on the database's collation), then the
 * heartbeat stream.  The rules:
 *
 *  - selectedFields: _ab_cdc_lsn, _ab_cdc_deleted_at, _ab_cdc_updated_at,
 *    then the allowlisted columns in the table's column order (attnum);
 *    allowlisted columns the table does not have (or all columns of a
 *    table that does not exist) follow in name order.  The allowlist has
 *    no order of its own, and the table's order is what Airbyte shows.
 *    An allowlisted _ab_cdc_* field is not repeated.
 *  - primaryKey: the table's primary key (every key column, in index
 *    order) when all its columns are allowlisted; otherwise the gem's
 *    rule on the column order above: "id" when allowlisted, else the first
 *    allowlisted column (leaving out the _ab_cdc_* fields).
 *  - a table that exists WITHOUT a primary key cannot be read by CDC:
 *    Airbyte's Postgres source offers it only in full refresh and adds no
 *    _ab_cdc_* fields (source-postgres PostgresCdcCatalogHelper.
 *    removeIncrementalWithoutPk; bulk-CDK PostgresSourceStreamFactory:
 *    isCdc && hasPK), and the gem's incremental stream for it makes the
 *    public PATCH validator (AirbyteCatalogHelper.validateStreamConfig /
 *    validateFieldSelection) reject the WHOLE PATCH with a 400.  Such a
 *    table gets full_refresh_overwrite, no cursorField, no primaryKey, no
 *    _ab_cdc_* fields, only its allowlisted columns.
 *  - an allowlisted table called airbyte_heartbeat is left out: the
 *    heartbeat stream has a fixed shape and always comes last.
 *
 * Tables are looked up in dfe_airbyte.source_schema (default public) of
 * the current target's catalog (target_scope.h): the lists are this
 * database's rows for that target, the catalog is the service database's,
 * read through the one seam (target.h) with the same SQL text whether the
 * target is local or remote.
 */
#include "postgres.h"

#include <string.h>

#include <cjson/cJSON.h>

#include "catalog/pg_type.h"
#include "compat.h"
#include "fmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/fmgroids.h"
#include "utils/memutils.h"

#include "dfe_assert.h"
#include "settings.h"
#include "shared.h"
#include "stream_config.h"
#include "target_scope.h"
#include "version.h"

static const char *const airbyte_fields[] = {
	"_ab_cdc_lsn", "_ab_cdc_deleted_at", "_ab_cdc_updated_at", NULL
};

static bool
is_airbyte_field(const char *name)
{
	for (int i = 0; airbyte_fields[i]; i++)
		if (strcmp(name, airbyte_fields[i]) == 0)
			return true;
	return false;
}

/*
 * The target's allowlist, read from this database: two text[] literals of
 * the same length (table names, column names), NULL when it is empty.
 */
static const char *lists_query =
"SELECT pg_catalog.array_agg(l.table_name ORDER BY l.table_name, l.column_name)::pg_catalog.text,"
"       pg_catalog.array_agg(l.column_name ORDER BY l.table_name, l.column_name)::pg_catalog.text"
"  FROM dfe_airbyte.allowlist l"
" WHERE l.target OPERATOR(pg_catalog.=) $1";

/*
 * Per allowlisted table (but the heartbeat), read from the target's
 * catalog: its primary key columns (NULL when the table or its primary key
 * does not exist) and its allowlisted columns in stream order.  The
 * allowlist comes in as parameters ($2 tables, $3 columns): the same text
 * runs on the local database (SPI) and on a remote one (libpq), PostgreSQL
 * 15 to 18, so every name and operator is qualified.
 */
static const char *stream_query =
"WITH a AS ("
"    SELECT l.t AS table_name, l.c AS column_name"
"      FROM ROWS FROM (pg_catalog.unnest($2::pg_catalog.text[]),"
"                      pg_catalog.unnest($3::pg_catalog.text[])) AS l(t, c)"
"), t AS ("
"    SELECT DISTINCT a.table_name FROM a"
"     WHERE a.table_name OPERATOR(pg_catalog.<>) '" STREAM_HEARTBEAT_NAME "'"
"), r AS ("
"    SELECT t.table_name,"
"           (SELECT c.oid FROM pg_catalog.pg_class c"
"              JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace"
"             WHERE n.nspname OPERATOR(pg_catalog.=) $1::pg_catalog.text"
"               AND c.relname OPERATOR(pg_catalog.=) t.table_name"
"               AND c.relkind OPERATOR(pg_catalog.=) ANY ('{r,p}'::pg_catalog.\"char\"[])) AS relid"
"      FROM t"
") "
"SELECT r.table_name,"
"       (SELECT pg_catalog.array_agg(att.attname::pg_catalog.text ORDER BY k.ord)"
"          FROM pg_catalog.pg_index i"
"         CROSS JOIN LATERAL pg_catalog.unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)"
"          JOIN pg_catalog.pg_attribute att"
"            ON att.attrelid OPERATOR(pg_catalog.=) i.indrelid AND att.attnum OPERATOR(pg_catalog.=) k.attnum"
"         WHERE i.indrelid OPERATOR(pg_catalog.=) r.relid AND i.indisprimary"
"           AND k.ord OPERATOR(pg_catalog.<=) i.indnkeyatts)::pg_catalog.text AS pk,"
"       (SELECT pg_catalog.array_agg(a.column_name"
"                         ORDER BY att.attnum NULLS LAST, a.column_name COLLATE pg_catalog.\"C\")"
"          FROM a"
"          LEFT JOIN pg_catalog.pg_attribute att"
"            ON att.attrelid OPERATOR(pg_catalog.=) r.relid AND att.attname OPERATOR(pg_catalog.=) a.column_name"
"           AND att.attnum OPERATOR(pg_catalog.>) 0 AND NOT att.attisdropped"
"         WHERE a.table_name OPERATOR(pg_catalog.=) r.table_name)::pg_catalog.text AS columns,"
"       r.relid IS NOT NULL AS table_exists"
"  FROM r"
" ORDER BY r.table_name COLLATE pg_catalog.\"C\"";

/* a text[] literal (as the server prints it) → C strings */
static char **
text_array_elems(const char *literal, int *n)
{
	Datum		d;
	Datum	   *elems;
	bool	   *nulls;
	char	  **out;

	d = OidInputFunctionCall(F_ARRAY_IN, (char *) literal, TEXTOID, -1);
	deconstruct_array(DatumGetArrayTypeP(d), TEXTOID, -1, false, TYPALIGN_INT,
					  &elems, &nulls, n);
	out = palloc(sizeof(char *) * Max(*n, 1));
	for (int i = 0; i < *n; i++)
		out[i] = nulls[i] ? pstrdup("") : TextDatumGetCString(elems[i]);
	return out;
}

static bool
contains(char **names, int n, const char *name)
{
	for (int i = 0; i < n; i++)
		if (strcmp(names[i], name) == 0)
			return true;
	return false;
}

static cJSON *
string_list(const char *const *names, int n)
{
	cJSON	   *arr = cJSON_CreateArray();

	for (int i = 0; i < n; i++)
		cJSON_AddItemToArray(arr, cJSON_CreateString(names[i]));
	return arr;
}

static cJSON *
field_path(const char *name)
{
	cJSON	   *field = cJSON_CreateObject();

	cJSON_AddItemToObject(field, "fieldPath", string_list(&name, 1));
	return field;
}

static cJSON *
table_stream(const char *table, char **pk, int npk, char **cols, int ncols)
{
	cJSON	   *stream = cJSON_CreateObject();
	cJSON	   *primary = cJSON_CreateArray();
	cJSON	   *fields = cJSON_CreateArray();
	bool		pk_allowlisted = npk > 0;
	const char *cursor = "_ab_cdc_lsn";

	for (int i = 0; i < npk; i++)
		if (!contains(cols, ncols, pk[i]))
			pk_allowlisted = false;

	if (pk_allowlisted)
	{
		for (int i = 0; i < npk; i++)
			cJSON_AddItemToArray(primary, string_list((const char *const *) &pk[i], 1));
	}
	else
	{
		const char *key = NULL;

		if (contains(cols, ncols, "id"))
			key = "id";
		for (int i = 0; key == NULL && i < ncols; i++)
			if (!is_airbyte_field(cols[i]))
				key = cols[i];
		if (key == NULL && ncols > 0)
			key = cols[0];
		if (key != NULL)
			cJSON_AddItemToArray(primary, string_list(&key, 1));
	}

	for (int i = 0; airbyte_fields[i]; i++)
		cJSON_AddItemToArray(fields, field_path(airbyte_fields[i]));
	for (int i = 0; i < ncols; i++)
		if (!is_airbyte_field(cols[i]))
			cJSON_AddItemToArray(fields, field_path(cols[i]));

	cJSON_AddItemToObject(stream, "name", cJSON_CreateString(table));
	cJSON_AddItemToObject(stream, "syncMode", cJSON_CreateString("incremental_append"));
	cJSON_AddItemToObject(stream, "cursorField", string_list(&cursor, 1));
	cJSON_AddItemToObject(stream, "primaryKey", primary);
	cJSON_AddItemToObject(stream, "selectedFields", fields);
	return stream;
}

/*
 * Whether every primary key column of a stream is among its selected
 * fields: Airbyte's PATCH validator rejects the whole configuration
 * otherwise (AirbyteCatalogHelper.validateStreamConfig; the fake's
 * "Primary key field ... is not selected", test/fake/airbyte.py).
 */
static pg_attribute_unused() bool
stream_selects_its_key(const cJSON *stream)
{
	const cJSON *fields = cJSON_GetObjectItemCaseSensitive(stream, "selectedFields");
	const cJSON *key;

	cJSON_ArrayForEach(key, cJSON_GetObjectItemCaseSensitive(stream, "primaryKey"))
	{
		const char *name = cJSON_GetStringValue(cJSON_GetArrayItem(key, 0));
		const cJSON *field;
		bool		found = false;

		cJSON_ArrayForEach(field, fields)
		{
			const cJSON *path = cJSON_GetObjectItemCaseSensitive(field, "fieldPath");
			const char *selected = cJSON_GetStringValue(cJSON_GetArrayItem(path, 0));

			found = found || (name && selected && strcmp(name, selected) == 0);
		}
		if (!found)
			return false;
	}
	return true;
}

/* a table without a primary key: copied whole at each sync */
static cJSON *
full_refresh_stream(const char *table, char **cols, int ncols)
{
	cJSON	   *stream = cJSON_CreateObject();
	cJSON	   *fields = cJSON_CreateArray();

	for (int i = 0; i < ncols; i++)
		if (!is_airbyte_field(cols[i]))
			cJSON_AddItemToArray(fields, field_path(cols[i]));

	cJSON_AddItemToObject(stream, "name", cJSON_CreateString(table));
	cJSON_AddItemToObject(stream, "syncMode", cJSON_CreateString("full_refresh_overwrite"));
	cJSON_AddItemToObject(stream, "selectedFields", fields);
	return stream;
}

static cJSON *
heartbeat_stream(void)
{
	cJSON	   *stream = cJSON_CreateObject();
	cJSON	   *primary = cJSON_CreateArray();
	cJSON	   *fields = cJSON_CreateArray();
	const char *id = "id";

	cJSON_AddItemToArray(primary, string_list(&id, 1));
	cJSON_AddItemToArray(fields, field_path("id"));
	cJSON_AddItemToArray(fields, field_path("last_heartbeat"));

	cJSON_AddItemToObject(stream, "name", cJSON_CreateString(STREAM_HEARTBEAT_NAME));
	cJSON_AddItemToObject(stream, "syncMode", cJSON_CreateString("full_refresh_overwrite"));
	cJSON_AddItemToObject(stream, "primaryKey", primary);
	cJSON_AddItemToObject(stream, "selectedFields", fields);
	return stream;
}

/*
 * The current target's allowlisted tables (but the heartbeat), one row
 * each in byte order of the name: table_name, pk (text[] literal of the
 * primary key's columns, NULL without one), columns (text[] literal of the
 * allowlisted columns in stream order), table_exists ("t"/"f").  Read from
 * the target's catalog through target.h.
 */
static DfeRows *
stream_config_catalog(void)
{
	const char *target = dfe_target_current();
	const char *args[3];
	DfeRows    *lists;

	lists = dfe_target_query(dfe_target_open(DFE_LOCAL_TARGET), "read the allowlist",
							 lists_query, 1, &target);
	args[0] = dfe_setting_source_schema();
	args[1] = dfe_rows_value(lists, 0, 0);
	args[2] = dfe_rows_value(lists, 0, 1);
	return dfe_target_query(dfe_target_current_target(), "read the allowlisted tables' columns and keys",
							stream_query, 3, args);
}

/* one stream of the catalog's row */
static cJSON *
row_stream(DfeRows *r, int row)
{
	const char *table = dfe_rows_value(r, row, 0);
	const char *pk_text = dfe_rows_value(r, row, 1);
	const char *cols_text = dfe_rows_value(r, row, 2);
	char	  **pk = NULL;
	int			npk = 0;
	char	  **cols = NULL;
	int			ncols = 0;
	cJSON	   *stream;

	if (pk_text)
		pk = text_array_elems(pk_text, &npk);
	if (cols_text)
		cols = text_array_elems(cols_text, &ncols);
	/*
	 * One stream per table, in byte order (the query's ORDER BY ...
	 * COLLATE "C"): Airbyte rejects a configuration that names a stream
	 * twice ("Duplicate stream found"), and the order keeps the PATCH body
	 * stable.
	 */
	dfe_Assert(table != NULL);
	dfe_Assert(row == 0 || strcmp(dfe_rows_value(r, row - 1, 0), table) < 0);
	dfe_Assert(strcmp(table, STREAM_HEARTBEAT_NAME) != 0);
	if (strcmp(dfe_rows_value(r, row, 3), "t") == 0 && npk == 0)
		stream = full_refresh_stream(table, cols, ncols);
	else
		stream = table_stream(table, pk, npk, cols, ncols);
	dfe_Assert(stream_selects_its_key(stream));
	return stream;
}

char *
dfe_stream_config_build(void)
{
	MemoryContext caller = CurrentMemoryContext;
	MemoryContext work;
	DfeRows    *r;
	cJSON	   *root;
	cJSON	   *configurations;
	cJSON	   *streams;
	char	   *json;
	char	   *result;

	/* everything but the result in a context of its own, freed on return */
	work = AllocSetContextCreate(caller, "dfe_airbyte stream config", ALLOCSET_DEFAULT_SIZES);
	MemoryContextSwitchTo(work);
	r = stream_config_catalog();

	root = cJSON_CreateObject();
	configurations = cJSON_CreateObject();
	streams = cJSON_CreateArray();
	cJSON_AddItemToObject(root, "configurations", configurations);
	cJSON_AddItemToObject(configurations, "streams", streams);
	for (int row = 0; row < r->nrows; row++)
		cJSON_AddItemToArray(streams, row_stream(r, row));
	cJSON_AddItemToArray(streams, heartbeat_stream());
	dfe_Assert(stream_selects_its_key(cJSON_GetArrayItem(streams, cJSON_GetArraySize(streams) - 1)));

	json = cJSON_PrintUnformatted(root);
	if (json == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory while building the stream configuration"),
				 errhint("Retry when the server has more memory available.")));
	result = MemoryContextStrdup(caller, json);
	MemoryContextSwitchTo(caller);
	MemoryContextDelete(work);
	return result;
}

/* the function's optional last argument: the target, "local" by default */
static DfeTargetScope *
enter_target_arg(FunctionCallInfo fcinfo)
{
	const char *target = DFE_LOCAL_TARGET;

	if (PG_NARGS() > 0 && !PG_ARGISNULL(0))
		target = text_to_cstring(PG_GETARG_TEXT_PP(0));
	return dfe_target_scope_enter(target);
}

PG_FUNCTION_INFO_V1(dfe_airbyte_stream_config);

/* dfe_airbyte_stream_config(target text DEFAULT 'local') → jsonb */
Datum
dfe_airbyte_stream_config(PG_FUNCTION_ARGS)
{
	char	   *json;
	DfeTargetScope *scope;

	DFE_REQUIRE_MATCHING_SQL();
	scope = enter_target_arg(fcinfo);
	json = dfe_stream_config_build();
	dfe_target_scope_leave(scope);
	return DirectFunctionCall1(jsonb_in, CStringGetDatum(json));
}

PG_FUNCTION_INFO_V1(dfe_airbyte_stream_config_json);

/*
 * dfe_airbyte_stream_config_json() → json: the same, as the exact text of
 * the PATCH body (json keeps the keys in the gem's order; jsonb sorts them).
 */
Datum
dfe_airbyte_stream_config_json(PG_FUNCTION_ARGS)
{
	char	   *json;
	DfeTargetScope *scope;

	DFE_REQUIRE_MATCHING_SQL();
	scope = enter_target_arg(fcinfo);
	json = dfe_stream_config_build();
	dfe_target_scope_leave(scope);
	return DirectFunctionCall1(json_in, CStringGetDatum(json));
}
