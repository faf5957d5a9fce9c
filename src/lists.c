/*
 * lists.c — dfe_airbyte_load_config(allowlist text, blocklist text,
 * excluded text, target text): replace a target's rows of
 * dfe_airbyte.allowlist, dfe_airbyte.blocklist and dfe_airbyte.excluded
 * from the text of the dfe-analytics YAML files (or the same shape as
 * JSON).
 *
 * Every text is parsed and validated completely (dfe_lists_parse.c) before any
 * table is touched, so bad input changes nothing; the rows are then
 * replaced by difference (lists_store.c).  Only the target's rows change:
 * each service database has its own lists.
 */
#include "postgres.h"

#include "executor/spi.h"
#include "compat.h"
#include "fmgr.h"
#include "funcapi.h"
#include "utils/builtins.h"

#include "lists.h"
#include "shared.h"
#include "target_scope.h"
#include "version.h"

static void
put_summary(ReturnSetInfo *rsinfo, ParsedList *list, int added, int removed)
{
	Datum		values[5];
	bool		nulls[5] = {false, false, false, false, false};

	values[0] = CStringGetTextDatum(list->which);
	values[1] = Int32GetDatum(list->ntables);
	values[2] = Int32GetDatum(list->ncolumns);
	values[3] = Int32GetDatum(added);
	values[4] = Int32GetDatum(removed);
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
}

PG_FUNCTION_INFO_V1(dfe_airbyte_load_config);

/*
 * dfe_airbyte_load_config(allowlist text, blocklist text DEFAULT NULL,
 *                         excluded text DEFAULT NULL, target text DEFAULT 'local')
 *   → TABLE(list, tables, columns, added, removed)
 *
 * allowlist = analytics.yml, blocklist = analytics_hidden_pii.yml (tagged
 * hidden), excluded = analytics_blocklist.yml (not replicated).  A NULL
 * text leaves that list unchanged (and gives no row); blocklist or
 * excluded '' empties the list; allowlist '' is an error.  Only the
 * target's rows change: each service database has its own lists.
 */
Datum
dfe_airbyte_load_config(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	static const char *const names[3] = {"allowlist", "blocklist", "excluded"};
	ParsedList *lists[3] = {NULL, NULL, NULL};
	int			added[3] = {0, 0, 0};
	int			removed[3] = {0, 0, 0};
	bool		any = false;
	const char *target = DFE_LOCAL_TARGET;
	DfeTargetScope *scope;

	DFE_REQUIRE_MATCHING_SQL();
	if (PG_NARGS() > 3 && !PG_ARGISNULL(3))
		target = text_to_cstring(PG_GETARG_TEXT_PP(3));
	InitMaterializedSRF(fcinfo, 0);

	/* parse all completely before touching anything */
	for (int i = 0; i < 3 && i < PG_NARGS(); i++)
	{
		char	   *body;

		if (PG_ARGISNULL(i))
			continue;
		body = text_to_cstring(PG_GETARG_TEXT_PP(i));
		/* Rails' config_for renders ERB first; we cannot, so say so */
		if (strstr(body, "<%") != NULL)
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("the %s contains ERB (\"<%%\"), which dfe_airbyte_load_config does not evaluate", names[i]),
					 errdetail("Rails renders ERB in config files before reading the YAML."),
					 errhint("Pass the rendered text, e.g. Rails.application.config_for(:analytics).to_json, or remove the ERB from the file.")));
		lists[i] = dfe_lists_parse(names[i], body, i > 0);
		any = true;
	}

	if (!any)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("no list to load: the allowlist, the blocklist and the excluded list are all null"),
				 errhint("Pass the text of config/analytics.yml, and optionally of config/analytics_hidden_pii.yml (blocklist) and config/analytics_blocklist.yml (excluded).")));

	/* a registered, enabled target (ERROR with a hint otherwise) */
	scope = dfe_target_scope_enter(target);
	if (SPI_connect() != SPI_OK_CONNECT)
		dfe_internal_error("dfe_airbyte: SPI_connect failed");

	/* always in the same order, so two loaders cannot deadlock */
	for (int i = 0; i < 3; i++)
		if (lists[i])
			dfe_lists_lock(names[i]);
	for (int i = 0; i < 3; i++)
		if (lists[i])
			dfe_lists_replace(names[i], dfe_target_current(), lists[i], &added[i], &removed[i]);

	SPI_finish();
	dfe_target_scope_leave(scope);

	for (int i = 0; i < 3; i++)
		if (lists[i])
			put_summary(rsinfo, lists[i], added[i], removed[i]);
	return (Datum) 0;
}
