/*
 * reconcile_sql.c — the SQL text both sides of a reconciliation run.
 *
 * Both sides compute, per bucket of keys, count(*) and the sum of a row
 * hash, so that equal tables give equal (count, sum) per bucket whatever
 * the order of rows (data-diff's checksum, datafold/data-diff
 * data_diff/databases/base.py render_checksum, with 15 hex digits as in
 * erezsh/sqeleton base.py: "Must be 15 or lower, otherwise SUM() overflows"):
 *
 *   PostgreSQL  ('x' || substr(md5(row_text), 18))::bit(60)::int8, summed
 *               (sum(int8) is numeric)
 *   BigQuery    CAST(CONCAT('0x', SUBSTR(TO_HEX(MD5(row_text)), 18)) AS INT64),
 *               summed as NUMERIC
 *
 * row_text joins one part per column, `length:value` or `N` for NULL: a part
 * says where it ends, so no two rows share a text ({1,23} and {12,3} do not
 * collide as they do when ids are joined without a separator) and NULL is
 * not the empty string.  md5 hashes the same UTF-8 bytes on both sides only
 * in a UTF8 database (PostgreSQL md5() hashes the text in the database
 * encoding; BigQuery MD5(STRING) its UTF-8).
 *
 * Values are written as Airbyte's destination stores them
 * (airbytehq/airbyte BigqueryDirectLoadSqlGenerator.toDialectType and
 * BigQueryRecordFormatter): integers as INT64; numeric as NUMERIC rounded to
 * 9 decimals, printed without trailing zeros (BigQuery's CAST(NUMERIC AS
 * STRING)); booleans 'true'/'false'; timestamp without time zone as
 * DATETIME and with time zone as TIMESTAMP, both to the microsecond in UTC;
 * json/jsonb, uuid and text as STRING.
 *
 * BigQuery side: the latest version of each key in the append-mode final
 * table (latest by _ab_cdc_lsn, then _airbyte_extracted_at), and only then
 * the deleted ones dropped (_ab_cdc_deleted_at set): dropping deletes first
 * would resurrect the version before the delete.  QUALIFY needs a WHERE in
 * the same SELECT in GoogleSQL, hence "WHERE TRUE".
 *
 * The PostgreSQL queries run with search_path pinned to pg_catalog, pg_temp
 * (the SQL function and the worker both pin it); table and column names are
 * quoted.
 */
#include "postgres.h"

#include "lib/stringinfo.h"
#include "utils/builtins.h"

#include "reconcile.h"

#define TOAST_PLACEHOLDER "__debezium_unavailable_value"

/*
 * Airbyte's refreshes (docs.airbyte.com/operator-guides/refreshes, in
 * airbytehq/airbyte docs/platform/operator-guides/refreshes.md): every
 * refresh increases _airbyte_generation_id, and a key whose latest entry is
 * not of the current generation, max(_airbyte_generation_id), was deleted at
 * the source.  Rows written before generations existed hold NULL: older
 * than any generation (-1).  The window sees every row the WHERE keeps,
 * before QUALIFY picks each key's latest.
 */
#define GENERATION_COLUMNS \
	"IFNULL(`_airbyte_generation_id`, -1) AS `_gen`, " \
	"MAX(IFNULL(`_airbyte_generation_id`, -1)) OVER () AS `_gen_max`, "

/* a GoogleSQL string literal */
static char *
dfe_rc_bq_string(const char *s)
{
	StringInfoData b;

	initStringInfo(&b);
	appendStringInfoChar(&b, '\'');
	for (; *s; s++)
	{
		if (*s == '\'' || *s == '\\')
			appendStringInfoChar(&b, '\\');
		appendStringInfoChar(&b, *s);
	}
	appendStringInfoChar(&b, '\'');
	return b.data;
}

static char *
bq_ident(const char *name)
{
	return psprintf("`%s`", name);
}

static char *
pg_value(RcColumn *c)
{
	const char *v = quote_identifier(c->name);

	switch (c->kind)
	{
		case RK_INT:
		case RK_TEXT:
			return psprintf("%s::text", v);
		case RK_NUMERIC:
			return psprintf("trim_scale(round(%s, 9))::text", v);
		case RK_BOOL:
			return psprintf("CASE WHEN %s THEN 'true' WHEN NOT %s THEN 'false' END", v, v);
		case RK_DATE:
			return psprintf("to_char(%s, 'YYYY-MM-DD')", v);
		case RK_TIMESTAMP:
			return psprintf("to_char(%s, 'YYYY-MM-DD\"T\"HH24:MI:SS.US')", v);
		case RK_TIMESTAMPTZ:
			return psprintf("to_char(%s AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US')", v);
	}
	return NULL;
}

static char *
bq_value(RcColumn *c)
{
	char	   *v = bq_ident(c->name);

	switch (c->kind)
	{
		case RK_INT:
		case RK_NUMERIC:
		case RK_BOOL:
			return psprintf("CAST(%s AS STRING)", v);
		case RK_TEXT:
			return v;
		case RK_DATE:
			return psprintf("FORMAT_DATE('%%Y-%%m-%%d', %s)", v);
		case RK_TIMESTAMP:
			return psprintf("FORMAT_DATETIME('%%Y-%%m-%%dT%%H:%%M:%%E6S', %s)", v);
		case RK_TIMESTAMPTZ:
			return psprintf("FORMAT_TIMESTAMP('%%Y-%%m-%%dT%%H:%%M:%%E6S', %s, 'UTC')", v);
	}
	return NULL;
}

/* the row text of the given columns (keys first, then cols if checksum) */
static char *
row_text(RcTable *t, bool checksum, bool bq)
{
	StringInfoData b;
	List	   *cols = checksum ? list_concat_copy(t->keys, t->cols) : t->keys;
	ListCell   *lc;
	bool		first = true;

	initStringInfo(&b);
	appendStringInfoString(&b, bq ? "CONCAT(" : "(");
	foreach(lc, cols)
	{
		RcColumn   *c = lfirst(lc);

		if (!first)
			appendStringInfoString(&b, bq ? ", " : " || ");
		first = false;
		if (bq)
		{
			char	   *v = bq_value(c);

			appendStringInfo(&b, "IFNULL(CONCAT(CAST(LENGTH(%s) AS STRING), ':', %s), 'N')", v, v);
		}
		else
		{
			char	   *v = pg_value(c);

			appendStringInfo(&b, "coalesce(length(%s)::text || ':' || %s, 'N')", v, v);
		}
	}
	appendStringInfoChar(&b, ')');
	return b.data;
}

char *
dfe_rc_pg_key_text(RcTable *t)
{
	return row_text(t, false, false);
}

static char *
dfe_rc_bq_key_text(RcTable *t)
{
	return row_text(t, false, true);
}

static char *
pg_hash(const char *text)
{
	return psprintf("('x' || substr(md5(%s), 18))::bit(60)::int8", text);
}

static char *
bq_hash(const char *text)
{
	return psprintf("CAST(CONCAT('0x', SUBSTR(TO_HEX(MD5(%s)), 18)) AS INT64)", text);
}

static RcColumn *
first_key(RcTable *t)
{
	return (RcColumn *) linitial(t->keys);
}

char *
dfe_rc_pg_bucket_expr(RcTable *t, RcLevel *lv)
{
	if (t->int_key)
	{
		const char *k = quote_identifier(first_key(t)->name);

		return psprintf("CASE WHEN %s < " INT64_FORMAT " THEN -1 ELSE div(%s::numeric - " INT64_FORMAT ", " INT64_FORMAT ")::int8 END",
						k, lv->min, k, lv->min, lv->width);
	}
	return psprintf("('x' || substr(md5(%s), 1, %d))::bit(%d)::int8",
					dfe_rc_pg_key_text(t), lv->hexdigits, lv->hexdigits * 4);
}

char *
dfe_rc_bq_bucket_expr(RcTable *t, RcLevel *lv)
{
	if (t->int_key)
	{
		char	   *k = bq_ident(first_key(t)->name);

		return psprintf("CASE WHEN %s < " INT64_FORMAT " THEN -1 ELSE DIV(%s - " INT64_FORMAT ", " INT64_FORMAT ") END",
						k, lv->min, k, lv->min, lv->width);
	}
	return psprintf("CAST(CONCAT('0x', SUBSTR(TO_HEX(MD5(%s)), 1, %d)) AS INT64)",
					dfe_rc_bq_key_text(t), lv->hexdigits);
}

/* the columns the BigQuery side reads: keys, compared columns, CDC columns */
static char *
bq_latest(RcTable *t, bool checksum, List *hot_keys, bool generation)
{
	StringInfoData b;
	StringInfoData keys;
	List	   *cols = checksum ? list_concat_copy(t->keys, t->cols) : t->keys;
	ListCell   *lc;

	initStringInfo(&keys);
	foreach(lc, t->keys)
		appendStringInfo(&keys, "%s%s", keys.len ? ", " : "", bq_ident(((RcColumn *) lfirst(lc))->name));
	initStringInfo(&b);
	appendStringInfoString(&b, "WITH latest AS (SELECT ");
	foreach(lc, cols)
		appendStringInfo(&b, "%s, ", bq_ident(((RcColumn *) lfirst(lc))->name));
	if (generation)
		appendStringInfoString(&b, GENERATION_COLUMNS);
	appendStringInfo(&b, "`_ab_cdc_deleted_at` FROM %s WHERE TRUE", t->bq_rel);
	if (hot_keys != NIL)
	{
		bool		first = true;

		appendStringInfo(&b, " AND %s NOT IN UNNEST([", dfe_rc_bq_key_text(t));
		foreach(lc, hot_keys)
		{
			appendStringInfo(&b, "%s%s", first ? "" : ", ", dfe_rc_bq_string(lfirst(lc)));
			first = false;
		}
		appendStringInfoString(&b, "])");
	}
	appendStringInfo(&b, " QUALIFY ROW_NUMBER() OVER (PARTITION BY %s"
					 " ORDER BY `_ab_cdc_lsn` DESC, `_airbyte_extracted_at` DESC) = 1) ",
					 keys.data);
	return b.data;
}

/* COUNTIF over the text columns holding Debezium's TOAST placeholder */
static char *
bq_toast(RcTable *t)
{
	StringInfoData b;
	ListCell   *lc;

	initStringInfo(&b);
	foreach(lc, t->cols)
	{
		RcColumn   *c = lfirst(lc);

		if (c->kind == RK_TEXT)
			appendStringInfo(&b, "%s%s = '%s'", b.len ? " OR " : "", bq_ident(c->name), TOAST_PLACEHOLDER);
	}
	return b.len ? psprintf(", COUNTIF(%s) AS toast", b.data) : ", 0 AS toast";
}

char *
dfe_rc_pg_bucket_query(RcTable *t, bool checksum, RcLevel *lv, const char *hot_filter)
{
	return psprintf("SELECT %s AS bucket, count(*) AS n, sum(%s) AS s FROM %s WHERE TRUE%s%s GROUP BY 1",
					dfe_rc_pg_bucket_expr(t, lv), pg_hash(row_text(t, checksum, false)), t->pg_rel,
					hot_filter ? hot_filter : "", lv->pg_filter ? lv->pg_filter : "");
}

char *
dfe_rc_bq_bucket_query(RcTable *t, bool checksum, RcLevel *lv, List *hot_keys)
{
	return psprintf("%sSELECT %s AS bucket, COUNT(*) AS n, SUM(CAST(%s AS NUMERIC)) AS s%s"
					" FROM latest WHERE `_ab_cdc_deleted_at` IS NULL%s GROUP BY bucket",
					bq_latest(t, checksum, hot_keys, false), dfe_rc_bq_bucket_expr(t, lv),
					bq_hash(row_text(t, checksum, true)), checksum ? bq_toast(t) : ", 0 AS toast",
					lv->bq_filter ? lv->bq_filter : "");
}

char *
dfe_rc_pg_keys_query(RcTable *t, bool checksum, RcLevel *lv, const char *hot_filter)
{
	return psprintf("SELECT %s AS k, %s::text AS h FROM %s WHERE TRUE%s%s",
					dfe_rc_pg_key_text(t), pg_hash(row_text(t, checksum, false)), t->pg_rel,
					hot_filter ? hot_filter : "", lv->pg_filter ? lv->pg_filter : "");
}

/*
 * With generation, two more columns: the generation of the key's latest
 * version and the table's newest generation (reconcile.c reports extra keys
 * of an older generation as left by a refresh).
 */
char *
dfe_rc_bq_keys_query(RcTable *t, bool checksum, RcLevel *lv, List *hot_keys, bool generation)
{
	return psprintf("%sSELECT %s AS k, %s AS h%s FROM latest WHERE `_ab_cdc_deleted_at` IS NULL%s",
					bq_latest(t, checksum, hot_keys, generation), dfe_rc_bq_key_text(t),
					bq_hash(row_text(t, checksum, true)), generation ? ", `_gen` AS g, `_gen_max` AS gmax" : "",
					lv->bq_filter ? lv->bq_filter : "");
}

/*
 * Tables without a primary key are replicated by full refresh only
 * (airbytehq/airbyte PostgresCatalogHelper: "By limiting to Full Refresh
 * when we don't have a primary key"), in overwrite mode the final table
 * holds the last snapshot: compare counts.
 */
char *
dfe_rc_pg_count_query(RcTable *t)
{
	return psprintf("SELECT count(*) FROM %s", t->pg_rel);
}

char *
dfe_rc_bq_count_query(RcTable *t)
{
	return psprintf("SELECT COUNT(*) AS n FROM %s WHERE TRUE", t->bq_rel);
}
