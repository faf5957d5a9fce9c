/*
 * reconcile.h — does BigQuery hold what the source holds (see reconcile.c).
 */
#ifndef DFE_AIRBYTE_RECONCILE_H
#define DFE_AIRBYTE_RECONCILE_H

#include "postgres.h"
#include "lib/stringinfo.h"
#include "nodes/pg_list.h"

#include "target.h"

/* how a column's value is written as text on both sides */
typedef enum RcKind
{
	RK_INT,						/* smallint/integer/bigint, numeric(p,0) */
	RK_NUMERIC,					/* numeric: BigQuery NUMERIC, 9 decimals */
	RK_BOOL,
	RK_TEXT,					/* text, varchar, char, uuid, enum, json(b) */
	RK_DATE,
	RK_TIMESTAMP,				/* without time zone: BigQuery DATETIME */
	RK_TIMESTAMPTZ				/* BigQuery TIMESTAMP */
} RcKind;

typedef struct RcColumn
{
	char	   *name;
	RcKind		kind;
} RcColumn;

typedef struct RcTable
{
	char	   *name;			/* source table = final table name */
	char	   *pg_rel;			/* quoted schema.table */
	char	   *bq_rel;			/* `project.dataset.table` */
	List	   *keys;			/* RcColumn *, primary key order; NIL: none */
	List	   *cols;			/* compared non-key columns (checksum mode) */
	List	   *skipped;		/* char *: "column (why)" */
	bool		int_key;		/* one integer key: buckets are key ranges */
	char	   *updated_at;		/* a timestamp column updated_at, or NULL */
	bool		updated_at_tz;	/* it is timestamptz */
} RcTable;

/* one level of buckets: key ranges (int_key) or key-hash prefixes */
typedef struct RcLevel
{
	int64		min;			/* int_key: lowest key of the range */
	int64		width;			/* int_key: keys per bucket */
	int			hexdigits;		/* hash buckets: hex digits of the prefix */
	char	   *pg_filter;		/* restricts to earlier differing buckets */
	char	   *bq_filter;
} RcLevel;

typedef struct RcRun
{
	const char *target;			/* the service (dfe_airbyte.targets) */
	DfeTarget  *src;			/* where its source tables are read */
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

/* reconcile.c: the comparison of one table */
extern RcRun *dfe_rc_reconcile_table(DfeTarget *src, const char *name, bool checksum, bool dry_run,
								 MemoryContext cxt, bool own_xact);
extern int	dfe_rc_sql(RcRun *run, const char *what, const char *sql, int nargs, const char **args);
extern char *dfe_rc_val(RcRun *run, int i, int j);
extern void dfe_rc_note(RcRun *run, const char *fmt,...) pg_attribute_printf(2, 3);

/* reconcile_sql.c: the SQL text of both sides */
extern char *dfe_rc_pg_key_text(RcTable *t);
extern char *dfe_rc_pg_bucket_query(RcTable *t, bool checksum, RcLevel *lv, const char *hot_filter);
extern char *dfe_rc_bq_bucket_query(RcTable *t, bool checksum, RcLevel *lv, List *hot_keys);
extern char *dfe_rc_pg_keys_query(RcTable *t, bool checksum, RcLevel *lv, const char *hot_filter);
extern char *dfe_rc_bq_keys_query(RcTable *t, bool checksum, RcLevel *lv, List *hot_keys, bool generation);
extern char *dfe_rc_pg_count_query(RcTable *t);
extern char *dfe_rc_bq_count_query(RcTable *t);
extern char *dfe_rc_pg_bucket_expr(RcTable *t, RcLevel *lv);
extern char *dfe_rc_bq_bucket_expr(RcTable *t, RcLevel *lv);

#endif
