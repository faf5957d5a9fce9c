/*
 * events.c — dfe_airbyte.events, the record of what the worker noticed and did.
 */
#include "postgres.h"

#include "executor/spi.h"

#include "dfe_assert.h"
#include "events.h"
#include "spi_xact.h"
#include "target_scope.h"

void
dfe_event(const char *severity, const char *kind, const char *object,
		  const char *detail, const char *data_json)
{
	const char *target = dfe_target_current();
	const char *args[6] = {severity, kind, object, detail, data_json, target};

	/*
	 * The callers pass literals: a NULL would store a NULL the table refuses,
	 * a severity outside the CHECK of dfe_airbyte.events (its CREATE TABLE in sql/)
	 * would fail the INSERT and with it the caller's whole transaction.
	 */
	dfe_Assert(severity != NULL && kind != NULL && detail != NULL);
	dfe_Assert(strcmp(severity, "info") == 0 || strcmp(severity, "warning") == 0 ||
			   strcmp(severity, "critical") == 0);

	/* a nested SPI connection: callers may be inside SPI themselves */
	SPI_connect();
	dfe_sql(psprintf("record dfe_airbyte event \"%s\"", kind),
			"INSERT INTO dfe_airbyte.events (severity, kind, object, detail, data, target) "
			"VALUES ($1, $2, $3, $4, $5::jsonb, $6)",
			6, args, SPI_OK_INSERT);
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
