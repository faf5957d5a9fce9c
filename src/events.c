/*
 * events.c — dfe_airbyte.events, the record of what the worker noticed and did.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"

#include "dfe_assert.h"
#include "events.h"
#include "target_scope.h"

void
dfe_event(const char *severity, const char *kind, const char *object,
		  const char *detail, const char *data_json)
{
	Oid			argtypes[6] = {TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID};
	Datum		values[6];
	char		nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};
	const char *target = dfe_target_current();
	int			ret;

	/*
	 * The callers pass literals: a NULL would crash in CStringGetTextDatum,
	 * a severity outside the CHECK of dfe_airbyte.events (00_base.sql)
	 * would fail the INSERT and with it the caller's whole transaction.
	 */
	dfe_Assert(severity != NULL && kind != NULL && detail != NULL);
	dfe_Assert(strcmp(severity, "info") == 0 || strcmp(severity, "warning") == 0 ||
			   strcmp(severity, "critical") == 0);

	values[0] = CStringGetTextDatum(severity);
	values[1] = CStringGetTextDatum(kind);
	if (object)
		values[2] = CStringGetTextDatum(object);
	else
		nulls[2] = 'n';
	values[3] = CStringGetTextDatum(detail);
	if (data_json)
		values[4] = CStringGetTextDatum(data_json);
	else
		nulls[4] = 'n';
	values[5] = CStringGetTextDatum(target);

	SPI_connect();
	ret = SPI_execute_with_args("INSERT INTO dfe_airbyte.events (severity, kind, object, detail, data, target) "
								"VALUES ($1, $2, $3, $4, $5::jsonb, $6)",
								6, argtypes, values, nulls, false, 0);
	if (ret != SPI_OK_INSERT)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not record dfe_airbyte event \"%s\": %s", kind,
						SPI_result_code_string(ret)),
				 errhint("Check that the dfe_airbyte extension is installed correctly.")));
	SPI_finish();

	if (strcmp(severity, "info") != 0)
		ereport(WARNING,
				(errcode(ERRCODE_WARNING),
				 strcmp(target, DFE_LOCAL_TARGET) == 0
				 ? errmsg("dfe_airbyte: %s", detail)
				 : errmsg("dfe_airbyte target \"%s\": %s", target, detail),
				 errhint("This is also a row of dfe_airbyte.events (kind %s); the README's troubleshooting section says what to do about it.", kind),
				 object ? errcontext("%s %s", kind, object) : 0));
}
