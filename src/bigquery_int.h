/*
 * bigquery_int.h — the policy tag plan's structure, shared by the files of
 * bigquery.h's implementation (bigquery_plan.c builds it, bigquery.c
 * applies it).  Not for other modules.
 */
#ifndef DFE_AIRBYTE_BIGQUERY_INT_H
#define DFE_AIRBYTE_BIGQUERY_INT_H

#include "postgres.h"

#include "nodes/pg_list.h"
#include "utils/timestamp.h"

#include "bigquery.h"

/* a blocklisted column and the tag it gets */
typedef struct BlockedColumn
{
	char	   *name;
	char	   *tag;			/* its own policy tag, or the hidden tag */
} BlockedColumn;

/* what policy_tag_state remembers of one column */
typedef struct SeenColumn
{
	char	   *name;
	char	   *tag;			/* the tag the extension set there */
	TimestampTz last_seen;		/* when it was last seen carrying it */
} SeenColumn;

typedef struct PlanTable
{
	char	   *table;			/* allowlisted table = BigQuery final table */
	List	   *blocked;		/* BlockedColumn * */
	List	   *allowed;		/* allowlisted column names (char *) */
	List	   *excluded;		/* dfe_airbyte.excluded column names */
	List	   *source;			/* columns of the source table */
	List	   *seen;			/* SeenColumn * of the final table */
	List	   *seen_raw;		/* SeenColumn * of the raw table */
} PlanTable;

struct PolicyTagPlan
{
	char	   *base_url;
	char	   *project;
	char	   *dataset;
	char	   *internal_dataset;
	char	   *hidden_tag;
	int			concurrency;
	bool		hide_unlisted;
	int			ntables;
	PlanTable **tables;			/* sorted by name (strcmp) */
};

#endif
