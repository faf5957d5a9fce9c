/*
 * bigquery.c — BigQuery policy tags (SPEC §5).  Placeholder: the BigQuery
 * issue replaces this file.
 */
#include "postgres.h"

#include "bigquery.h"

bool
bigquery_configured(void)
{
	return false;
}

PolicyTagPlan *
policy_tag_plan_load(void)
{
	ereport(ERROR,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("BigQuery policy tags are not available in this build"),
			 errhint("Install a dfe_airbyte version with BigQuery support.")));
	return NULL;
}

List *
policy_tag_plan_apply(PolicyTagPlan *plan, List **failed_tables)
{
	*failed_tables = NIL;
	return NIL;
}

void
policy_tags_repair_after_sync(int64 job_id)
{
}
