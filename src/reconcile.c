/*
 * reconcile.c — does BigQuery hold what the source holds?
 *
 * For one allowlisted table: the source side and BigQuery's final table
 * each give, per bucket of keys, count(*) and a sum of row hashes
 * (reconcile_sql.c).  `count` hashes the key only (row count and key set:
 * dfe-analytics' entity table check, without its collision and cut-off
 * problems); `checksum` hashes every compared column too.  Equal buckets:
 * the table matches, in one BigQuery query.  Differing buckets are
 * narrowed, one grouped query per level on each side (integer keys by key
 * range, so that PostgreSQL reads its primary key index; other keys by a
 * longer key-hash prefix), until they hold few rows; then both sides list
 * key and row hash for those buckets and the keys that differ are named —
 * keys, never column values.  This is data-diff's checksum bisection
 * (datafold/data-diff hashdiff_tables.py), with one GROUP BY query per level
 * instead of one query per segment: on BigQuery every query reads the whole
 * columns of an unclustered append table, so the number of queries is what
 * costs.
 *
 * Cost: every BigQuery query is dry-run first (free) and refused when its
 * estimate exceeds dfe_airbyte.reconcile_max_bytes_billed or what is left
 * of dfe_airbyte.reconcile_daily_bytes in the last 24 hours; it then runs
 * with maximumBytesBilled, and a bytesBilledLimitExceeded answer is final.
 *
 * Cut-off: a successful Airbyte CDC sync reads up to the WAL position taken
 * when it started (airbytehq/airbyte PostgresCdcTargetPosition), so rows
 * committed before the start of the last successful sync are in BigQuery.
 * Rows whose updated_at is later are left out on both sides (their keys are
 * sent to BigQuery); what still differs (a delete, an update that bypassed
 * updated_at) is a candidate, and is reported as a mismatch only when it is
 * still there after a later successful sync (reconcile_mismatch event).
 *
 * Left out, and said in the result: blocklisted columns (they carry the
 * hidden policy tag, which the service account may not read), columns of
 * types the two sides do not write alike (arrays, floats, bytea, time, …).
 * Tables without a primary key are compared by count only.
 */
#include "postgres.h"

#include <math.h>

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "mb/pg_wchar.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "bq_query.h"
#include "events.h"
#include "reconcile.h"
#include "settings.h"
#include "spi_xact.h"
#include "worker.h"

#define NBUCKETS 4096			/* first level: buckets per table */
#define SUB_BUCKETS 64			/* deeper levels: buckets per differing bucket */
#define KEY_LIMIT 5000			/* list keys once differing buckets hold at most this many rows (a 10M-row table: 2442 per bucket) */
#define MAX_LEVELS 6
#define MAX_HOT_KEYS 10000		/* more rows changed since the last sync: busy */
#define MAX_REPORTED 100		/* keys and ranges kept per run */

typedef struct RcBucket
{
	int64		bucket;
	int64		n;
	char	   *s;				/* sum as text: compared as text, never parsed */
	int64		toast;
} RcBucket;

typedef struct RcRun
{
	char	   *table;
	bool		checksum;
	bool		dry_run;
	char	   *status;			/* match, mismatch_candidate, mismatch, over_budget, skipped, estimated */
	int64		source_rows;
	int64		bq_rows;
	bool		bq_rows_known;
	int64		mismatches;
	int64		bytes_billed;
	int64		bytes_estimated;
	int			queries;		/* BigQuery jobs run (dry runs not counted) */
	int64		sync_job_id;	/* the cut-off's sync, 0: none known */
	char	   *cutoff;			/* its start, or NULL */
	int64		hot_rows;
	int64		toast_rows;
	List	   *keys;			/* char *: keys that differ (key text) */
	List	   *ranges;			/* char *: key ranges / buckets that differ */
	StringInfoData detail;
	MemoryContext cxt;
	bool		own_xact;		/* worker: each query in its own transaction */
	bool		in_xact;		/* worker: inside one already */
	int			nrows;			/* the last rc_sql's rows, copied into cxt */
	char	 ***rows;
} RcRun;

/*
 * SPI query; its rows are copied into run->cxt (rc_val reads them).  In the
 * worker each query is its own short transaction, so that none is open
 * while BigQuery is asked.
 */
static int
rc_sql(RcRun *run, const char *what, const char *sql, int nargs, const char **args)
{
	bool		own = run->own_xact && !run->in_xact;
	int			ncols;

	if (own)
		dfe_xact_begin(what);
	dfe_set_result_context(run->cxt);
	dfe_sql(what, sql, nargs, args, SPI_OK_SELECT);
	MemoryContextSwitchTo(run->cxt);
	run->nrows = (int) SPI_processed;
	ncols = SPI_tuptable->tupdesc->natts;
	run->rows = palloc0(sizeof(char **) * Max(run->nrows, 1));
	for (int i = 0; i < run->nrows; i++)
	{
		run->rows[i] = palloc0(sizeof(char *) * ncols);
		for (int j = 0; j < ncols; j++)
			run->rows[i][j] = dfe_col_text(i, j + 1);
	}
	if (own)
	{
		dfe_xact_end();
		MemoryContextSwitchTo(run->cxt);
	}
	return run->nrows;
}

/* row i, column j (1-based, as SPI) of the last rc_sql; NULL for NULL */
static char *
rc_val(RcRun *run, int i, int j)
{
	return run->rows[i][j - 1];
}

static void
note(RcRun *run, const char *fmt,...) pg_attribute_printf(2, 3);

static void
note(RcRun *run, const char *fmt,...)
{
	va_list		ap;
	char		buf[1024];

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	appendStringInfo(&run->detail, "%s%s", run->detail.len ? "; " : "", buf);
}

static RcKind
column_kind(const char *typname, int typmod, char typtype, bool *ok)
{
	*ok = true;
	if (strcmp(typname, "int2") == 0 || strcmp(typname, "int4") == 0 || strcmp(typname, "int8") == 0)
		return RK_INT;
	/* numeric(p,0) is an Airbyte integer (legacy source: decimal digits 0 -> BIGINT) */
	if (strcmp(typname, "numeric") == 0)
		return (typmod >= 4 && ((typmod - 4) & 0xffff) == 0) ? RK_INT : RK_NUMERIC;
	if (strcmp(typname, "bool") == 0)
		return RK_BOOL;
	if (strcmp(typname, "date") == 0)
		return RK_DATE;
	if (strcmp(typname, "timestamp") == 0)
		return RK_TIMESTAMP;
	if (strcmp(typname, "timestamptz") == 0)
		return RK_TIMESTAMPTZ;
	if (typtype == 'e' || strcmp(typname, "text") == 0 || strcmp(typname, "varchar") == 0 ||
		strcmp(typname, "bpchar") == 0 || strcmp(typname, "uuid") == 0 ||
		strcmp(typname, "json") == 0 || strcmp(typname, "jsonb") == 0 || strcmp(typname, "citext") == 0)
		return RK_TEXT;
	*ok = false;
	return RK_TEXT;
}

static const char *const columns_sql =
"SELECT a.attname::text, t.typname::text, a.atttypmod, t.typtype::text,\n"
"       EXISTS (SELECT 1 FROM dfe_airbyte.allowlist l WHERE l.table_name = $2 AND l.column_name = a.attname::text),\n"
"       EXISTS (SELECT 1 FROM dfe_airbyte.blocklist b WHERE b.table_name = $2 AND b.column_name = a.attname::text),\n"
"       CASE WHEN a.attnum = ANY (i.indkey)  -- int2vector subscripts start at 0\n"
"            THEN array_position(i.indkey::int2[], a.attnum) - array_lower(i.indkey::int2[], 1) + 1 ELSE 0 END\n"
"  FROM pg_catalog.pg_attribute a\n"
"  JOIN pg_catalog.pg_type t ON t.oid = a.atttypid\n"
"  LEFT JOIN pg_catalog.pg_index i ON i.indrelid = a.attrelid AND i.indisprimary\n"
" WHERE a.attrelid = pg_catalog.to_regclass(pg_catalog.quote_ident($1) || '.' || pg_catalog.quote_ident($2))\n"
"   AND a.attnum > 0 AND NOT a.attisdropped\n"
" ORDER BY 7, a.attnum";

/* one column row of columns_sql into t */
static void
add_column(RcRun *run, RcTable *t, int row, bool *key_unusable)
{
	char	   *name = rc_val(run, row, 1);
	char	   *typname = rc_val(run, row, 2);
	int			typmod = atoi(rc_val(run, row, 3));
	char	   *typtype = rc_val(run, row, 4);
	bool		allowed = strcmp(rc_val(run, row, 5), "t") == 0;
	bool		hidden = strcmp(rc_val(run, row, 6), "t") == 0;
	bool		key = atoi(rc_val(run, row, 7)) > 0;
	bool		ok;
	RcColumn   *c = palloc0(sizeof(RcColumn));

	c->name = name;
	c->kind = column_kind(typname, typmod, typtype[0], &ok);
	if (strcmp(name, "updated_at") == 0 && (c->kind == RK_TIMESTAMP || c->kind == RK_TIMESTAMPTZ))
	{
		t->updated_at = name;
		t->updated_at_tz = c->kind == RK_TIMESTAMPTZ;
	}
	if (key && (!allowed || hidden || !ok))
		*key_unusable = true;
	if (!allowed)
		return;
	if (hidden)
		t->skipped = lappend(t->skipped, psprintf("%s (hidden policy tag)", name));
	else if (!ok)
		t->skipped = lappend(t->skipped, psprintf("%s (type %s not compared)", name, typname));
	else if (key)
		t->keys = lappend(t->keys, c);
	else
		t->cols = lappend(t->cols, c);
}

static RcTable *
load_table(RcRun *run, const char *name)
{
	RcTable    *t = palloc0(sizeof(RcTable));
	const char *args[2] = {dfe_setting_source_schema(), name};
	bool		key_unusable = false;
	int			n;

	t->name = pstrdup(name);
	t->pg_rel = psprintf("%s.%s", quote_identifier(dfe_setting_source_schema()), quote_identifier(name));
	t->bq_rel = psprintf("`%s.%s.%s`", dfe_setting_bigquery_project(), dfe_setting_bigquery_dataset(), name);
	n = rc_sql(run, "read the table's columns", columns_sql, 2, args);
	if (n == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("table \"%s.%s\" does not exist", args[0], name),
				 errhint("Name an allowlisted table of dfe_airbyte.source_schema.")));
	for (int i = 0; i < n; i++)
		add_column(run, t, i, &key_unusable);
	if (key_unusable)
	{
		note(run, "primary key not replicated or not comparable: compared by count only");
		t->cols = list_concat(t->keys, t->cols);
		t->keys = NIL;
	}
	t->int_key = list_length(t->keys) == 1 && ((RcColumn *) linitial(t->keys))->kind == RK_INT;
	return t;
}

/* the last successful sync: its job id and start (the cut-off) */
static void
load_cutoff(RcRun *run)
{
	if (rc_sql(run, "read the last successful sync",
			   "SELECT job_id::text, started_at::text FROM dfe_airbyte.sync_jobs"
			   " WHERE status = 'succeeded' AND started_at IS NOT NULL"
			   " ORDER BY job_id DESC LIMIT 1", 0, NULL) == 0)
	{
		note(run, "no successful sync recorded: no cut-off, every row compared");
		return;
	}
	run->sync_job_id = strtoll(rc_val(run, 0, 1), NULL, 10);
	run->cutoff = rc_val(run, 0, 2);
}

/*
 * The source-side condition on updated_at against the cut-off: hot rows
 * (changed since the last successful sync started) or settled ones.
 * Rails writes UTC into timestamp without time zone.
 */
static char *
hot_filter(RcTable *t, RcRun *run, bool hot)
{
	const char *u;
	char	   *at;

	if (run->cutoff == NULL || t->updated_at == NULL)
		return "";
	u = quote_identifier(t->updated_at);
	/* a minute's margin: Airbyte's clock and the application's may differ */
	at = t->updated_at_tz ? psprintf("(%s::timestamptz - interval '1 minute')", quote_literal_cstr(run->cutoff))
		: psprintf("((%s::timestamptz - interval '1 minute') AT TIME ZONE 'UTC')", quote_literal_cstr(run->cutoff));
	if (hot)
		return psprintf(" AND %s >= %s", u, at);
	return psprintf(" AND (%s IS NULL OR %s < %s)", u, u, at);
}

/* keys of the rows changed since the cut-off; false when there are too many */
static bool
load_hot_keys(RcTable *t, RcRun *run, List **hot)
{
	char	   *cond = hot_filter(t, run, true);
	int			n;

	*hot = NIL;
	if (cond[0] == '\0' || t->keys == NIL)
		return true;
	n = rc_sql(run, "read the rows changed since the last sync",
			   psprintf("SELECT %s FROM %s WHERE TRUE%s LIMIT %d", rc_pg_key_text(t), t->pg_rel, cond,
						MAX_HOT_KEYS + 1), 0, NULL);
	run->hot_rows = n;
	if (n > MAX_HOT_KEYS)
		return false;
	for (int i = 0; i < n; i++)
		*hot = lappend(*hot, rc_val(run, i, 1));
	if (n > 0)
		note(run, "%d row(s) changed since the last successful sync left out", n);
	return true;
}

/* bucket rows (bucket, n, s[, toast]) of the source side */
static List *
pg_buckets(RcTable *t, RcRun *run, RcLevel *lv)
{
	List	   *out = NIL;
	int			n = rc_sql(run, "compute the source checksums",
						   rc_pg_bucket_query(t, run->checksum, lv, hot_filter(t, run, false)), 0, NULL);

	for (int i = 0; i < n; i++)
	{
		RcBucket   *b = palloc0(sizeof(RcBucket));

		b->bucket = strtoll(rc_val(run, i, 1), NULL, 10);
		b->n = strtoll(rc_val(run, i, 2), NULL, 10);
		b->s = rc_val(run, i, 3);
		out = lappend(out, b);
	}
	return out;
}

/* 24-hour budget left, in bytes */
static int64
budget_left(RcRun *run)
{
	int64		used = 0;

	if (rc_sql(run, "read the bytes billed today",
			   "SELECT coalesce(sum(bytes_billed), 0)::text FROM dfe_airbyte.reconcile_runs"
			   " WHERE started_at > now() - interval '24 hours'", 0, NULL) > 0)
		used = strtoll(rc_val(run, 0, 1), NULL, 10);
	return (int64) dfe_reconcile_daily_mb * 1024 * 1024 - used;
}

/*
 * Dry run, then the query with maximumBytesBilled.  NULL when the query was
 * not run (over the cap or the budget, or the caller asked for a dry run):
 * run->status says which.
 */
static BqResult *
bq_run(RcRun *run, const char *sql)
{
	int64		cap = (int64) dfe_reconcile_max_bytes_billed_kb * 1024;
	BqResult   *dry = bq_query_dry_run(sql);
	BqResult   *res;
	int64		left;

	bq_check(dry, "the BigQuery dry run of a reconciliation query");
	run->bytes_estimated += bq_billed_upper_bound(dry->bytes_processed, 1);
	if (run->dry_run)
	{
		run->status = "estimated";
		return NULL;
	}
	left = budget_left(run) - run->bytes_billed;
	if (dry->bytes_processed > cap || bq_billed_upper_bound(dry->bytes_processed, 1) > left)
	{
		run->status = "over_budget";
		note(run, "a query would process " INT64_FORMAT " bytes: over dfe_airbyte.reconcile_max_bytes_billed ("
			 INT64_FORMAT ") or the daily budget left (" INT64_FORMAT ")", dry->bytes_processed, cap, Max(left, 0));
		return NULL;
	}
	res = bq_query_run(sql, cap);
	run->queries++;
	if (!res->ok && res->reason && strcmp(res->reason, "bytesBilledLimitExceeded") == 0)
	{
		run->status = "over_budget";
		note(run, "BigQuery refused a query over maximumBytesBilled: %s", res->message);
		return NULL;
	}
	bq_check(res, "a reconciliation query");
	run->bytes_billed += res->bytes_billed;
	return res;
}

static List *
bq_buckets(BqResult *res, RcRun *run)
{
	List	   *out = NIL;

	for (int i = 0; i < res->nrows; i++)
	{
		RcBucket   *b = palloc0(sizeof(RcBucket));
		char	  **r = res->rows[i];

		b->bucket = r[0] ? strtoll(r[0], NULL, 10) : -2;
		b->n = r[1] ? strtoll(r[1], NULL, 10) : 0;
		b->s = r[2] ? r[2] : "0";
		b->toast = res->nfields > 3 && r[3] ? strtoll(r[3], NULL, 10) : 0;
		run->toast_rows += b->toast;
		out = lappend(out, b);
	}
	return out;
}

static int
bucket_cmp(const ListCell *a, const ListCell *b)
{
	int64		x = ((RcBucket *) lfirst(a))->bucket;
	int64		y = ((RcBucket *) lfirst(b))->bucket;

	return x < y ? -1 : x > y ? 1 : 0;
}

/*
 * The buckets whose (count, sum) differ; *rows is how many rows they hold
 * on the larger side.  Totals go into run.
 */
static List *
differing(RcRun *run, List *pg, List *bq, int64 *rows)
{
	List	   *diff = NIL;
	ListCell   *a;
	ListCell   *b;

	list_sort(pg, bucket_cmp);
	list_sort(bq, bucket_cmp);
	a = list_head(pg);
	b = list_head(bq);
	*rows = 0;
	while (a != NULL || b != NULL)
	{
		RcBucket   *x = a ? lfirst(a) : NULL;
		RcBucket   *y = b ? lfirst(b) : NULL;
		int64		key = x && (!y || x->bucket <= y->bucket) ? x->bucket : y->bucket;
		bool		in_x = x && x->bucket == key;
		bool		in_y = y && y->bucket == key;

		if (!(in_x && in_y && x->n == y->n && strcmp(x->s, y->s) == 0))
		{
			diff = lappend(diff, in_x ? x : y);
			*rows += Max(in_x ? x->n : 0, in_y ? y->n : 0);
		}
		if (in_x)
			a = lnext(pg, a);
		if (in_y)
			b = lnext(bq, b);
	}
	return diff;
}

/* "3:abc" -> "abc"; several parts -> "(a, b)"; "N" -> "NULL" */
static char *
show_key(const char *text)
{
	StringInfoData b;
	int			parts = 0;
	const char *p = text;

	initStringInfo(&b);
	while (*p)
	{
		appendStringInfoString(&b, parts++ ? ", " : "");
		if (*p == 'N')
		{
			appendStringInfoString(&b, "NULL");
			p++;
			continue;
		}
		{
			long		len = strtol(p, (char **) &p, 10);
			const char *start = p + 1;
			const char *end = start;

			/* the length counts characters; walk them in the server encoding */
			for (long i = 0; i < len && *end; i++)
				end += pg_mblen(end);
			appendBinaryStringInfo(&b, start, end - start);
			p = end;
		}
	}
	return parts > 1 ? psprintf("(%s)", b.data) : b.data;
}

static void
range_filters(RcTable *t, RcLevel *lv, List *diff, RcLevel *next, RcRun *run)
{
	StringInfoData pg;
	StringInfoData bq;
	ListCell   *lc;
	const char *k = quote_identifier(((RcColumn *) linitial(t->keys))->name);
	const char *bk = psprintf("`%s`", ((RcColumn *) linitial(t->keys))->name);

	initStringInfo(&pg);
	initStringInfo(&bq);
	list_free(run->ranges);
	run->ranges = NIL;
	foreach(lc, diff)
	{
		RcBucket   *b = lfirst(lc);
		const char *sep = pg.len ? " OR " : "";

		if (b->bucket < 0)
		{
			appendStringInfo(&pg, "%s%s < " INT64_FORMAT, sep, k, lv->min);
			appendStringInfo(&bq, "%s%s < " INT64_FORMAT, sep, bk, lv->min);
			run->ranges = lappend(run->ranges, psprintf("(, " INT64_FORMAT ")", lv->min));
			continue;
		}
		{
			int64		lo = lv->min + b->bucket * lv->width;
			int64		hi = lo + lv->width;

			appendStringInfo(&pg, "%s(%s >= " INT64_FORMAT " AND %s < " INT64_FORMAT ")", sep, k, lo, k, hi);
			appendStringInfo(&bq, "%s(%s >= " INT64_FORMAT " AND %s < " INT64_FORMAT ")", sep, bk, lo, bk, hi);
			if (list_length(run->ranges) < MAX_REPORTED)
				run->ranges = lappend(run->ranges, psprintf("[" INT64_FORMAT ", " INT64_FORMAT ")", lo, hi));
		}
	}
	next->min = lv->min;
	next->width = Max(1, (lv->width + SUB_BUCKETS - 1) / SUB_BUCKETS);
	next->pg_filter = psprintf(" AND (%s)", pg.data);
	next->bq_filter = psprintf(" AND (%s)", bq.data);
}

static void
hash_filters(RcTable *t, RcLevel *lv, List *diff, RcLevel *next, RcRun *run)
{
	StringInfoData in;
	ListCell   *lc;

	initStringInfo(&in);
	list_free(run->ranges);
	run->ranges = NIL;
	foreach(lc, diff)
	{
		RcBucket   *b = lfirst(lc);

		appendStringInfo(&in, "%s" INT64_FORMAT, in.len ? ", " : "", b->bucket);
		if (list_length(run->ranges) < MAX_REPORTED)
			run->ranges = lappend(run->ranges, psprintf("md5(key) prefix %0*llx", lv->hexdigits,
														(unsigned long long) b->bucket));
	}
	next->hexdigits = lv->hexdigits + 2;
	next->pg_filter = psprintf(" AND %s IN (%s)", rc_pg_bucket_expr(t, lv), in.data);
	next->bq_filter = psprintf(" AND %s IN (%s)", rc_bq_bucket_expr(t, lv), in.data);
}

static int
key_cmp(const ListCell *a, const ListCell *b)
{
	return strcmp(((char **) lfirst(a))[0], ((char **) lfirst(b))[0]);
}

/* both sides' (key, hash) for the differing buckets: the keys that differ */
static bool
diff_keys(RcTable *t, RcRun *run, RcLevel *lv, List *hot)
{
	List	   *pg = NIL;
	List	   *bq = NIL;
	BqResult   *res;
	ListCell   *a;
	ListCell   *b;
	int			n = rc_sql(run, "list the source keys", rc_pg_keys_query(t, run->checksum, lv, hot_filter(t, run, false)), 0, NULL);
	int64		missing = 0,
				extra = 0,
				changed = 0;

	for (int i = 0; i < n; i++)
	{
		char	  **r = palloc(2 * sizeof(char *));

		r[0] = rc_val(run, i, 1);
		r[1] = rc_val(run, i, 2);
		pg = lappend(pg, r);
	}
	res = bq_run(run, rc_bq_keys_query(t, run->checksum, lv, hot));
	if (res == NULL)
		return false;
	for (int i = 0; i < res->nrows; i++)
		bq = lappend(bq, res->rows[i]);
	list_sort(pg, key_cmp);
	list_sort(bq, key_cmp);
	a = list_head(pg);
	b = list_head(bq);
	while (a != NULL || b != NULL)
	{
		char	  **x = a ? lfirst(a) : NULL;
		char	  **y = b ? lfirst(b) : NULL;
		int			c = x == NULL ? 1 : y == NULL ? -1 : strcmp(x[0], y[0]);
		const char *kind = NULL;

		if (c < 0)
			kind = "missing", missing++;
		else if (c > 0)
			kind = "extra", extra++;
		else if (strcmp(x[1] ? x[1] : "", y[1] ? y[1] : "") != 0)
			kind = "changed", changed++;
		if (kind && list_length(run->keys) < MAX_REPORTED)
			run->keys = lappend(run->keys, psprintf("%s %s", kind, show_key(c > 0 ? y[0] : x[0])));
		if (c <= 0)
			a = lnext(pg, a);
		if (c >= 0)
			b = lnext(bq, b);
	}
	run->mismatches = missing + extra + changed;
	note(run, INT64_FORMAT " key(s) missing in BigQuery, " INT64_FORMAT " extra in BigQuery (deleted at the source), "
		 INT64_FORMAT " with other values", missing, extra, changed);
	return true;
}

static void
first_level(RcTable *t, RcRun *run, RcLevel *lv)
{
	memset(lv, 0, sizeof(*lv));
	lv->hexdigits = 3;			/* 4096 hash buckets */
	if (!t->int_key)
		return;
	rc_sql(run, "read the key range",
		   psprintf("SELECT min(%s)::text, max(%s)::text FROM %s",
					quote_identifier(((RcColumn *) linitial(t->keys))->name),
					quote_identifier(((RcColumn *) linitial(t->keys))->name), t->pg_rel), 0, NULL);
	lv->width = 1;
	if (rc_val(run, 0, 1) != NULL)
	{
		int64		lo = strtoll(rc_val(run, 0, 1), NULL, 10);
		int64		hi = strtoll(rc_val(run, 0, 2), NULL, 10);
		/* in numeric: hi - lo may not fit in int64 */
		double		span = (double) hi - (double) lo + 1.0;

		lv->min = lo;
		lv->width = (int64) Max(1.0, ceil(span / NBUCKETS));
	}
}

static void
sum_rows(List *buckets, int64 *total)
{
	ListCell   *lc;

	*total = 0;
	foreach(lc, buckets)
		*total += ((RcBucket *) lfirst(lc))->n;
}

/* the bucket levels, then the keys */
static void
compare_keyed(RcTable *t, RcRun *run)
{
	List	   *hot;
	RcLevel		lv;

	if (!load_hot_keys(t, run, &hot))
	{
		run->status = "skipped";
		note(run, "busy: more than %d rows changed since the last successful sync; tried again later", MAX_HOT_KEYS);
		return;
	}
	first_level(t, run, &lv);
	for (int level = 1;; level++)
	{
		List	   *pg = pg_buckets(t, run, &lv);
		BqResult   *res = bq_run(run, rc_bq_bucket_query(t, run->checksum, &lv, hot));
		List	   *diff;
		int64		rows;
		RcLevel		next;

		if (res == NULL)
			return;
		if (level == 1)
		{
			List	   *bq = bq_buckets(res, run);

			sum_rows(pg, &run->source_rows);
			sum_rows(bq, &run->bq_rows);
			run->bq_rows_known = true;
			diff = differing(run, pg, bq, &rows);
		}
		else
			diff = differing(run, pg, bq_buckets(res, run), &rows);
		if (diff == NIL)
		{
			run->status = level == 1 ? "match" : "mismatch_candidate";
			if (level > 1)
				note(run, "the differing buckets match on a second look: rows changed while comparing");
			return;
		}
		run->status = "mismatch_candidate";
		run->mismatches = list_length(diff);
		memset(&next, 0, sizeof(next));
		if (t->int_key)
			range_filters(t, &lv, diff, &next, run);
		else
			hash_filters(t, &lv, diff, &next, run);
		if (rows <= KEY_LIMIT || level == MAX_LEVELS || (t->int_key && lv.width == 1))
		{
			if (rows <= KEY_LIMIT)
				(void) diff_keys(t, run, &next, hot);
			else
				note(run, "%d bucket(s) differ, holding " INT64_FORMAT " rows: key ranges only", list_length(diff), rows);
			return;
		}
		lv = next;
	}
}

static void
compare_count(RcTable *t, RcRun *run)
{
	BqResult   *res;

	rc_sql(run, "count the source rows", rc_pg_count_query(t), 0, NULL);
	run->source_rows = strtoll(rc_val(run, 0, 1), NULL, 10);
	res = bq_run(run, rc_bq_count_query(t));
	if (res == NULL)
		return;
	run->bq_rows = res->nrows > 0 && res->rows[0][0] ? strtoll(res->rows[0][0], NULL, 10) : 0;
	run->bq_rows_known = true;
	run->status = run->bq_rows == run->source_rows ? "match" : "mismatch_candidate";
	run->mismatches = run->bq_rows == run->source_rows ? 0 : Abs(run->bq_rows - run->source_rows);
	note(run, "no primary key: compared by count only (Airbyte replicates such tables by full refresh)");
}

static RcRun *
reconcile_table(const char *name, bool checksum, bool dry_run, MemoryContext cxt, bool own_xact)
{
	RcRun	   *run = palloc0(sizeof(RcRun));
	RcTable    *t;

	run->cxt = cxt;
	run->own_xact = own_xact;
	run->table = pstrdup(name);
	run->checksum = checksum;
	run->dry_run = dry_run;
	initStringInfo(&run->detail);
	t = load_table(run, name);
	load_cutoff(run);
	if (t->keys == NIL)
		compare_count(t, run);
	else
		compare_keyed(t, run);
	if (run->toast_rows > 0)
		note(run, INT64_FORMAT " row(s) hold __debezium_unavailable_value, Debezium's placeholder for an unchanged TOAST value: "
			 "ALTER TABLE %s REPLICA IDENTITY FULL", run->toast_rows, t->pg_rel);
	if (checksum && t->skipped != NIL)
	{
		StringInfoData s;
		ListCell   *lc;

		initStringInfo(&s);
		foreach(lc, t->skipped)
			appendStringInfo(&s, "%s%s", s.len ? ", " : "", (char *) lfirst(lc));
		note(run, "not compared: %s", s.data);
	}
	return run;
}

/* a list of strings as one text, split again in SQL with string_to_array */
#define LIST_SEP "\x1f"

static char *
join_list(List *l)
{
	StringInfoData b;
	ListCell   *lc;

	initStringInfo(&b);
	foreach(lc, l)
		appendStringInfo(&b, "%s%s", b.len ? LIST_SEP : "", (char *) lfirst(lc));
	return b.data;
}

/*
 * A candidate becomes a mismatch when the previous run found the same keys
 * (or key ranges) differ and a successful sync has finished in between:
 * rows in flight at the first run have arrived by then.
 */
static void
decide_status(RcRun *run)
{
	const char *args[4] = {run->table, join_list(run->keys), join_list(run->ranges),
	dfe_int64_str(run->sync_job_id)};
	char	   *prev;
	bool		same;
	bool		newer_sync;

	if (strcmp(run->status, "mismatch_candidate") != 0)
		return;
	if (rc_sql(run, "read the previous reconciliation",
			   "SELECT status, (keys && string_to_array($2, E'\\x1f') OR key_ranges && string_to_array($3, E'\\x1f')\n"
			   "                OR (cardinality(keys) = 0 AND cardinality(key_ranges) = 0 AND $2 = '' AND $3 = ''))::text,\n"
			   "       (coalesce(sync_job_id, 0) < $4::bigint)::text\n"
			   "  FROM dfe_airbyte.reconciliation WHERE target = 'local' AND table_name = $1", 4, args) == 0)
		return;
	prev = rc_val(run, 0, 1);
	same = strcmp(rc_val(run, 0, 2), "true") == 0;
	newer_sync = strcmp(rc_val(run, 0, 3), "true") == 0;
	if (!same || (strcmp(prev, "mismatch") != 0 && strcmp(prev, "mismatch_candidate") != 0))
		return;
	if (strcmp(prev, "mismatch") == 0 || newer_sync)
		run->status = "mismatch";
	if (strcmp(prev, "mismatch") != 0 && strcmp(run->status, "mismatch") == 0)
	{
		char	   *what = run->keys != NIL ? join_list(run->keys) : join_list(run->ranges);

		for (char *p = what; *p; p++)
			if (*p == LIST_SEP[0])
				*p = ',';
		dfe_event("warning", "reconcile_mismatch", run->table,
				  psprintf("BigQuery's final table %s differs from the source after a further successful sync (%s mode): %s",
						   run->table, run->checksum ? "checksum" : "count", what[0] ? what : run->detail.data),
				  NULL);
	}
}

static const char *const record_sql =
"WITH r AS (\n"
"  INSERT INTO dfe_airbyte.reconcile_runs (table_name, mode, status, sync_job_id, cutoff_at, source_rows,\n"
"         bigquery_rows, matched, mismatches, bytes_billed, bigquery_queries, keys, key_ranges, detail, started_at)\n"
"  VALUES ($1, $2, $3, nullif($4, '0')::bigint, $5::timestamptz, $6::bigint, $7::bigint,\n"
"          CASE $3 WHEN 'match' THEN true WHEN 'mismatch' THEN false WHEN 'mismatch_candidate' THEN false END,\n"
"          $8::bigint, $9::bigint, $10::int, string_to_array($11, E'\\x1f'), string_to_array($12, E'\\x1f'), $13, $14::timestamptz)\n"
"  RETURNING *)\n"
"INSERT INTO dfe_airbyte.reconciliation AS c (target, table_name, run_id, mode, status, sync_job_id, cutoff_at,\n"
"       source_rows, bigquery_rows, matched, mismatches, bytes_billed, bigquery_queries, keys, key_ranges, detail,\n"
"       started_at, finished_at)\n"
"SELECT target, table_name, id, mode, status, sync_job_id, cutoff_at, source_rows, bigquery_rows, matched,\n"
"       mismatches, bytes_billed, bigquery_queries, keys, key_ranges, detail, started_at, finished_at FROM r\n"
"ON CONFLICT (target, table_name) DO UPDATE SET run_id = EXCLUDED.run_id, mode = EXCLUDED.mode,\n"
"   status = EXCLUDED.status, sync_job_id = EXCLUDED.sync_job_id, cutoff_at = EXCLUDED.cutoff_at,\n"
"   source_rows = EXCLUDED.source_rows, bigquery_rows = EXCLUDED.bigquery_rows, matched = EXCLUDED.matched,\n"
"   mismatches = EXCLUDED.mismatches, bytes_billed = EXCLUDED.bytes_billed,\n"
"   bigquery_queries = EXCLUDED.bigquery_queries, keys = EXCLUDED.keys,\n"
"   key_ranges = EXCLUDED.key_ranges, detail = EXCLUDED.detail, started_at = EXCLUDED.started_at,\n"
"   finished_at = EXCLUDED.finished_at\n"
"RETURNING 1";

static void
record_run(RcRun *run, const char *started)
{
	const char *args[14] = {
		run->table, run->checksum ? "checksum" : "count", run->status, dfe_int64_str(run->sync_job_id),
		run->cutoff, dfe_int64_str(run->source_rows), run->bq_rows_known ? dfe_int64_str(run->bq_rows) : NULL,
		dfe_int64_str(run->mismatches), dfe_int64_str(run->bytes_billed), psprintf("%d", run->queries),
		join_list(run->keys), join_list(run->ranges), run->detail.data, started
	};
	Oid			types[14];
	Datum		values[14];
	char		nulls[14];
	int			ret;

	for (int i = 0; i < 14; i++)
	{
		types[i] = TEXTOID;
		values[i] = args[i] ? CStringGetTextDatum(args[i]) : (Datum) 0;
		nulls[i] = args[i] ? ' ' : 'n';
	}
	ret = SPI_execute_with_args(record_sql, 14, types, values, nulls, false, 0);
	MemoryContextSwitchTo(run->cxt);
	if (ret != SPI_OK_SELECT && ret != SPI_OK_INSERT_RETURNING)
		dfe_spi_failed("record the reconciliation", ret);
	ret = SPI_execute(psprintf("DELETE FROM dfe_airbyte.reconcile_runs WHERE id <= (SELECT max(id) FROM dfe_airbyte.reconcile_runs) - %d"
							   " OR started_at < now() - make_interval(mins => %d)",
							   dfe_history_max_rows, dfe_history_retention_min), false, 0);
	MemoryContextSwitchTo(run->cxt);
	if (ret != SPI_OK_DELETE)
		dfe_spi_failed("prune dfe_airbyte.reconcile_runs", ret);
}

/* the tables to reconcile: one allowlisted table, or all of them */
static List *
tables_to_check(RcRun *run, text *name)
{
	List	   *out = NIL;
	const char *args[1] = {name ? text_to_cstring(name) : NULL};
	int			n = rc_sql(run, "read the allowlisted tables",
						   "SELECT DISTINCT table_name FROM dfe_airbyte.allowlist"
						   " WHERE ($1 IS NULL OR table_name = $1) AND table_name <> 'airbyte_heartbeat'"
						   " ORDER BY 1", 1, args);

	if (n == 0 && name)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("table \"%s\" is not allowlisted", args[0]),
				 errhint("Only replicated tables can be reconciled: see dfe_airbyte.allowlist.")));
	for (int i = 0; i < n; i++)
		out = lappend(out, rc_val(run, i, 1));
	return out;
}

static void
check_arguments(const char *mode, const char *target)
{
	if (strcmp(mode, "count") != 0 && strcmp(mode, "checksum") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown reconciliation mode \"%s\"", mode),
				 errhint("Use mode => 'count' (row count and key set) or mode => 'checksum' (every replicated value).")));
	if (strcmp(target, "local") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("reconciliation target \"%s\" is not supported", target),
				 errhint("Only target => 'local' (this database) can be reconciled in this version.")));
	if (dfe_setting_bigquery_project() == NULL || dfe_setting_bigquery_dataset() == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("BigQuery is not configured"),
				 errhint("Set dfe_airbyte.bigquery_project and dfe_airbyte.bigquery_dataset (env BIGQUERY_PROJECT_ID, BIGQUERY_AIRBYTE_DATASET).")));
}

/* the result of a table whose reconciliation failed */
static RcRun *
error_run(const char *name, bool checksum, bool dry_run, MemoryContext cxt, ErrorData *err)
{
	RcRun	   *run = palloc0(sizeof(RcRun));

	run->cxt = cxt;
	run->table = pstrdup(name);
	run->checksum = checksum;
	run->dry_run = dry_run;
	run->status = "error";
	initStringInfo(&run->detail);
	note(run, "%s", err->message);
	if (err->detail)
		note(run, "%s", err->detail);
	return run;
}

/* one table in a subtransaction: an error becomes that table's result */
static RcRun *
reconcile_one(const char *name, bool checksum, bool dry_run, MemoryContext cxt)
{
	ResourceOwner owner = CurrentResourceOwner;
	RcRun	   *run = NULL;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		run = reconcile_table(name, checksum, dry_run, cxt, false);
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		ErrorData  *err;

		MemoryContextSwitchTo(cxt);
		err = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		/* a cancel or a shutdown ends the whole call */
		if (err->sqlerrcode == ERRCODE_QUERY_CANCELED || err->sqlerrcode == ERRCODE_ADMIN_SHUTDOWN)
			ReThrowError(err);
		run = error_run(name, checksum, dry_run, cxt, err);
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	CurrentResourceOwner = owner;
	return run;
}

static void
emit(ReturnSetInfo *rsinfo, RcRun *run)
{
	Datum		v[8];
	bool		n[8] = {0};

	v[0] = CStringGetTextDatum(run->table);
	v[1] = CStringGetTextDatum(run->checksum ? "checksum" : "count");
	v[2] = Int64GetDatum(run->source_rows);
	n[2] = run->dry_run || strcmp(run->status, "error") == 0;
	v[3] = Int64GetDatum(run->bq_rows);
	n[3] = !run->bq_rows_known;
	v[4] = BoolGetDatum(strcmp(run->status, "match") == 0);
	n[4] = strcmp(run->status, "match") != 0 && strcmp(run->status, "mismatch") != 0 &&
		strcmp(run->status, "mismatch_candidate") != 0;
	v[5] = Int64GetDatum(run->mismatches);
	v[6] = Int64GetDatum(run->dry_run ? run->bytes_estimated : run->bytes_billed);
	if (run->dry_run && strcmp(run->status, "error") != 0)
		note(run, "dry run: BigQuery would bill at most " INT64_FORMAT " bytes for the first query", run->bytes_estimated);
	v[7] = CStringGetTextDatum(psprintf("%s%s%s", run->status, run->detail.len ? ": " : "", run->detail.data));
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, v, n);
}

PG_FUNCTION_INFO_V1(dfe_airbyte_reconcile);

Datum
dfe_airbyte_reconcile(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	text	   *name = PG_ARGISNULL(0) ? NULL : PG_GETARG_TEXT_PP(0);
	char	   *mode = PG_ARGISNULL(1) ? "count" : text_to_cstring(PG_GETARG_TEXT_PP(1));
	bool		dry_run = PG_ARGISNULL(2) ? false : PG_GETARG_BOOL(2);
	char	   *target = PG_ARGISNULL(3) ? "local" : text_to_cstring(PG_GETARG_TEXT_PP(3));
	MemoryContext cxt;
	MemoryContext old;
	RcRun		scratch;
	List	   *tables;
	ListCell   *lc;

	check_arguments(mode, target);
	InitMaterializedSRF(fcinfo, 0);
	old = CurrentMemoryContext;
	cxt = AllocSetContextCreate(old, "dfe_airbyte reconcile", ALLOCSET_DEFAULT_SIZES);
	if (SPI_connect() != SPI_OK_CONNECT)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("dfe_airbyte_reconcile could not connect to SPI"),
				 errhint("This is a bug in dfe_airbyte.")));
	MemoryContextSwitchTo(cxt);
	memset(&scratch, 0, sizeof(scratch));
	scratch.cxt = cxt;
	tables = tables_to_check(&scratch, name);
	foreach(lc, tables)
	{
		char	   *started = pstrdup(timestamptz_to_str(GetCurrentTimestamp()));
		RcRun	   *run = reconcile_one(lfirst(lc), strcmp(mode, "checksum") == 0, dry_run, cxt);

		if (!dry_run)
		{
			if (strcmp(run->status, "error") != 0)
				decide_status(run);
			record_run(run, started);
		}
		emit(rsinfo, run);
	}
	SPI_finish();
	MemoryContextSwitchTo(old);
	MemoryContextDelete(cxt);
	return (Datum) 0;
}

/*
 * The network worker's task: one table per call, in count mode, when a
 * successful sync has finished since the table's last run and
 * dfe_airbyte.reconcile_interval has passed (a candidate mismatch is checked
 * again after the next sync whatever the interval: that is what confirms
 * it); never while a full re-sync the extension asked for is pending or
 * running (a dfe_airbyte.slot_recreations row without resync_finished_at:
 * pending, or its job not finished): the final table is being rebuilt.
 */
static const char *const next_table_sql =
"WITH s AS (SELECT max(job_id) AS job FROM dfe_airbyte.sync_jobs WHERE status = 'succeeded' AND started_at IS NOT NULL)\n"
"SELECT a.table_name\n"
"  FROM (SELECT DISTINCT table_name FROM dfe_airbyte.allowlist WHERE table_name <> 'airbyte_heartbeat') a\n"
"  CROSS JOIN s\n"
"  LEFT JOIN dfe_airbyte.reconciliation r ON r.target = 'local' AND r.table_name = a.table_name\n"
" WHERE s.job IS NOT NULL\n"
"   AND NOT EXISTS (SELECT 1 FROM dfe_airbyte.slot_recreations WHERE resync_finished_at IS NULL)\n"
"   AND (r.table_name IS NULL\n"
"        OR (coalesce(r.sync_job_id, 0) < s.job\n"
"            AND (r.status = 'mismatch_candidate' OR r.finished_at < now() - make_interval(secs => $1::int))))\n"
" ORDER BY r.finished_at NULLS FIRST, a.table_name LIMIT 1";

static void
worker_record(RcRun *run, const char *started)
{
	dfe_xact_begin("dfe_airbyte reconcile");
	dfe_set_result_context(run->cxt);
	MemoryContextSwitchTo(run->cxt);
	run->in_xact = true;
	if (strcmp(run->status, "error") != 0)
		decide_status(run);
	record_run(run, started);
	run->in_xact = false;
	dfe_xact_end();
	MemoryContextSwitchTo(run->cxt);
}

long
reconcile_worker_task(void)
{
	long		wait = dfe_check_interval_s * 1000L;
	MemoryContext cxt = CurrentMemoryContext;
	RcRun		pick;
	const char *args[1] = {psprintf("%d", dfe_reconcile_interval_s)};
	char	   *started;
	RcRun	   *run = NULL;

	if (dfe_reconcile_interval_s == 0 || dfe_reconcile_daily_mb == 0 ||
		dfe_setting_bigquery_project() == NULL || dfe_setting_bigquery_dataset() == NULL)
		return wait;
	memset(&pick, 0, sizeof(pick));
	pick.cxt = cxt;
	pick.own_xact = true;
	if (rc_sql(&pick, "pick the next table to reconcile", next_table_sql, 1, args) == 0)
		return wait;
	started = pstrdup(timestamptz_to_str(GetCurrentTimestamp()));
	PG_TRY();
	{
		run = reconcile_table(rc_val(&pick, 0, 1), false, false, cxt, true);
	}
	PG_CATCH();
	{
		ErrorData  *err;

		MemoryContextSwitchTo(cxt);
		err = CopyErrorData();
		if (err->sqlerrcode == ERRCODE_QUERY_CANCELED || err->sqlerrcode == ERRCODE_ADMIN_SHUTDOWN)
			PG_RE_THROW();
		FlushErrorState();
		AbortOutOfAnyTransaction();
		run = error_run(rc_val(&pick, 0, 1), false, false, cxt, err);
		run->own_xact = true;
	}
	PG_END_TRY();
	worker_record(run, started);
	return 0;					/* the next table at once; none left: the wait above */
}
