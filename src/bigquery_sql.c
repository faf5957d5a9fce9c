/*
 * bigquery_sql.c — SQL: dfe_airbyte_apply_policy_tags(target).
 *
 * Enters the target's scope (target_scope.h), so that the plan reads its
 * lists, its BigQuery dataset and its hidden policy tag, converges
 * BigQuery with it and returns one row per (table, column).
 */
#include "postgres.h"

#include "compat.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/tuplestore.h"

#include "bigquery.h"
#include "target_scope.h"
#include "version.h"

/* what the rows said, for the summary when some tables failed */
typedef struct ApplyCounts
{
	int			tagged;
	int			untagged;
	int			already;
	int			nfailed;
	StringInfoData names;		/* the first failed tables */
	StringInfoData details;		/* why each failed */
} ApplyCounts;

/* one result: a row of the function, or a failed table counted */
static void
put_result(ReturnSetInfo *rsinfo, PolicyTagResult *r, ApplyCounts *c)
{
	Datum		values[3];
	bool		nulls[3] = {false, false, false};

	if (strcmp(r->action, "failed") == 0)
	{
		if (c->nfailed < 10)
			appendStringInfo(&c->names, "%s%s", c->nfailed ? ", " : "", r->table_name);
		appendStringInfo(&c->details, "%s%s: %s", c->nfailed ? "\n" : "", r->table_name,
						 r->detail ? r->detail : "failed");
		c->nfailed++;
		return;
	}
	if (strcmp(r->action, "tagged") == 0)
		c->tagged++;
	else if (strcmp(r->action, "untagged") == 0)
		c->untagged++;
	else if (strcmp(r->action, "already_tagged") == 0)
		c->already++;
	if (r->detail)
		ereport(NOTICE,
				(errmsg("%s", r->detail)));

	values[0] = CStringGetTextDatum(r->table_name);
	if (r->column_name)
		values[1] = CStringGetTextDatum(r->column_name);
	else
		nulls[1] = true;
	values[2] = CStringGetTextDatum(r->action);
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
}

static void
report_failed(ApplyCounts *c, const char *target)
{
	if (c->nfailed > 10)
		appendStringInfo(&c->names, " and %d more", c->nfailed - 10);
	ereport(NOTICE,
			(errmsg("the other tables were converged: %d column(s) tagged, %d untagged, %d already tagged",
					c->tagged, c->untagged, c->already)));
	ereport(ERROR,
			(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
			 errmsg("could not apply BigQuery policy tags to %d table(s): %s", c->nfailed, c->names.data),
			 errdetail("%s", c->details.data),
			 errhint("Changes made to the other tables stay applied (BigQuery is not transactional). "
					 "Check the service account's permissions (BigQuery Data Owner on the dataset, "
					 "Data Catalog access to the policy tag taxonomy) and the server's message above, "
					 "then run %s again.",
					 strcmp(target, DFE_LOCAL_TARGET) == 0 ? "dfe_airbyte_apply_policy_tags()"
					 : psprintf("dfe_airbyte_apply_policy_tags('%s')", target))));
}

PG_FUNCTION_INFO_V1(dfe_airbyte_apply_policy_tags);

/*
 * dfe_airbyte_apply_policy_tags(target text DEFAULT 'local'): in the
 * target's scope, so that its settings (dataset, hidden tag, ...) apply and
 * its lists are read; the scope is left at the end, or by the abort.
 */
Datum
dfe_airbyte_apply_policy_tags(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	const char *target = PG_NARGS() > 0 ? text_to_cstring(PG_GETARG_TEXT_PP(0)) : DFE_LOCAL_TARGET;
	DfeTargetScope *scope;
	MemoryContext cxt;
	MemoryContext old;
	List	   *results;
	List	   *failed;
	ListCell   *lc;
	ApplyCounts c;

	DFE_REQUIRE_MATCHING_SQL();
	InitMaterializedSRF(fcinfo, 0);
	scope = dfe_target_scope_enter(target);

	cxt = AllocSetContextCreate(CurrentMemoryContext, "dfe_airbyte policy tags",
								ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(cxt);
	results = dfe_policy_tag_plan_apply(dfe_policy_tag_plan_load(), &failed);

	memset(&c, 0, sizeof(c));
	initStringInfo(&c.names);
	initStringInfo(&c.details);
	foreach(lc, results)
		put_result(rsinfo, lfirst(lc), &c);

	/* what was seen is true whatever failed elsewhere, but an ERROR rolls it back */
	if (c.nfailed > 0)
		report_failed(&c, target);
	dfe_policy_tag_state_record(results);

	MemoryContextSwitchTo(old);
	MemoryContextDelete(cxt);
	dfe_target_scope_leave(scope);
	return (Datum) 0;
}
