/*
 * bigquery.h — hidden policy tags on sensitive columns, with the
 * Google access token from google_auth.
 *
 * Split in two so that no transaction is held across HTTP calls:
 * dfe_policy_tag_plan_load() reads the lists (inside a transaction, result
 * copied into CurrentMemoryContext), dfe_policy_tag_plan_apply() does the HTTP
 * work (outside a transaction in the worker).  Both act for the current
 * target (target_scope.h): its lists, its source tables (read on its
 * server), its BigQuery dataset and hidden tag.
 *
 * Files: bigquery_plan.c (the plan), bigquery.c (the table GET/PATCH,
 * concurrency, raw tables), bigquery_pace.c (the rate window), bigquery_state.c
 * (policy_tag_state), bigquery_repair.c (the drift repair after a sync),
 * bigquery_sql.c (dfe_airbyte_apply_policy_tags()).
 */
#ifndef DFE_AIRBYTE_BIGQUERY_H
#define DFE_AIRBYTE_BIGQUERY_H

#include "postgres.h"
#include "nodes/pg_list.h"

typedef struct PolicyTagPlan PolicyTagPlan;	/* opaque */

#include "utils/timestamp.h"

typedef struct PolicyTagResult
{
	char	   *table_name;		/* BigQuery table (final or raw) */
	char	   *column_name;	/* NULL only for failed rows */
	char	   *action;			/* tagged, already_tagged, untagged, missing_column, missing_table, failed */
	char	   *detail;			/* error text for failed; else what a NOTICE should say, or NULL */
	char	   *policy_tag;		/* tagged/already_tagged: the tag the extension manages there, else NULL */
	char	   *unlisted;		/* hidden because not allowlisted: where the column came from, else NULL */
	bool		exposed;		/* tagged: the extension had seen it tagged before (the tag was lost) */
	TimestampTz last_seen_tagged;	/* exposed: when it was last seen tagged */
	TimestampTz exposed_since;	/* exposed: earliest time it can have lost the tag */
	TimestampTz table_created;	/* from the GET, 0 unknown */
	TimestampTz table_modified; /* from the GET, 0 unknown */
	int64		sync_job_id;	/* the sync job a drift repair followed, 0 none */
} PolicyTagResult;

/* true when project, dataset, hidden tag and Google credentials are known */
extern bool dfe_bigquery_configured(void);

/* needs a transaction: read allowlist/blocklist into a plan */
extern PolicyTagPlan *dfe_policy_tag_plan_load(void);

/*
 * No transaction needed: converge BigQuery with the plan.  Returns a List of
 * PolicyTagResult*; *failed_tables gets the names (char*) of tables that
 * failed (the others are still processed).
 */
extern List *dfe_policy_tag_plan_apply(PolicyTagPlan *plan, List **failed_tables);

/*
 * Needs a transaction: remember in dfe_airbyte.policy_tag_state when each
 * column was seen carrying the tag the extension manages (and forget the
 * untagged ones), for exposure windows and for knowing which tags are ours;
 * and record an unlisted_column_hidden event for each column hidden because
 * it is not allowlisted.  Every caller that applied a plan calls it once.
 */
extern void dfe_policy_tag_state_record(List *results);

/*
 * Worker drift repair, called by sync_health.c after it sees a sync job
 * succeed that it had not seen before: loads the plan (own transaction),
 * applies it, and records an event when a tag had to be (re)applied.
 * Does nothing when BigQuery is not configured.  Runs outside a transaction.
 * Events: policy_tags_repaired (warning, one per table where a tag was put
 * back or removed), policy_tags_failed (warning: the tables that failed, or
 * the error that stopped the whole run).  It does not raise for remote or
 * configuration failures (they become the policy_tags_failed event); only
 * FATAL (shutdown) ends it early.
 */
extern void dfe_policy_tags_repair_after_sync(int64 job_id);

#endif
