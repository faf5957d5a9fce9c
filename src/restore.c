/*
 * restore.c — restores of another server's backup (restore.h) and their
 * confirmation by a DBA, dfe_airbyte_confirm_restore().
 */
#include "postgres.h"

#include "access/xlog.h"
#include "compat.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"

#include "events.h"
#include "restore.h"
#include "shared.h"
#include "spi_xact.h"
#include "version.h"

char *
dfe_system_identifier_text(void)
{
	return psprintf(INT64_FORMAT, (int64) GetSystemIdentifier());
}

DfeIdentity
dfe_identity_check(bool record, char **recorded)
{
	const char *args[1] = {dfe_system_identifier_text()};
	char	   *known;

	if (recorded)
		*recorded = NULL;
	/* SQL objects older than the library (before ALTER EXTENSION UPDATE) */
	dfe_sql("look for the server identity table",
			"SELECT 1 WHERE pg_catalog.to_regclass('dfe_airbyte.server_identity') IS NOT NULL",
			0, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
		return IDENTITY_NONE;
	dfe_sql("read the recorded server identity",
			"SELECT system_identifier::text FROM dfe_airbyte.server_identity",
			0, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
	{
		if (!record)
			return IDENTITY_NONE;
		dfe_sql("record the server identity",
				"INSERT INTO dfe_airbyte.server_identity (system_identifier) VALUES ($1::bigint)\n"
				"ON CONFLICT DO NOTHING",
				1, args, SPI_OK_INSERT);
		return IDENTITY_RECORDED_NOW;
	}
	known = dfe_col_text(0, 1);
	if (recorded)
		*recorded = known;
	return strcmp(known, args[0]) == 0 ? IDENTITY_SAME : IDENTITY_OTHER;
}

bool
dfe_restore_unconfirmed(void)
{
	bool		other;

	if (RecoveryInProgress())
		return false;
	dfe_xact_begin("dfe_airbyte identity check");
	other = dfe_identity_check(false, NULL) == IDENTITY_OTHER;
	dfe_xact_end();
	return other;
}

PG_FUNCTION_INFO_V1(dfe_airbyte_system_identifier);

/* dfe_airbyte_system_identifier() → bigint, as pg_control_system() shows it */
Datum
dfe_airbyte_system_identifier(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT64((int64) GetSystemIdentifier());
}

PG_FUNCTION_INFO_V1(dfe_airbyte_confirm_restore);

/*
 * dfe_airbyte_confirm_restore() → text: the DBA says this database now
 * belongs to this server.  The other server's slot samples and slot state
 * are forgotten (their LSNs mean nothing here), its re-sync jobs are no
 * longer followed, and this server's identifier is recorded; the guard acts
 * normally from its next check on (a missing Airbyte slot is created under
 * slot_limit_action = recreate, with a full re-sync).
 */
Datum
dfe_airbyte_confirm_restore(PG_FUNCTION_ARGS)
{
	char	   *recorded;
	DfeIdentity id;
	const char *args[2];
	char	   *detail;

	DFE_REQUIRE_MATCHING_SQL();
	if (RecoveryInProgress())
		ereport(ERROR,
				(errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
				 errmsg("cannot confirm a restore during recovery"),
				 errhint("Run dfe_airbyte_confirm_restore() on the primary.")));

	dfe_set_result_context(CurrentMemoryContext);
	if (SPI_connect() != SPI_OK_CONNECT)
		dfe_internal_error("dfe_airbyte_confirm_restore() could not connect to SPI");
	id = dfe_identity_check(true, &recorded);
	if (id != IDENTITY_OTHER)
	{
		SPI_finish();
		ereport(NOTICE,
				(errmsg("nothing to confirm: this database was not restored from another server"),
				 errdetail("The system identifier recorded by the slot guard is this server's (%s).",
						   dfe_system_identifier_text())));
		PG_RETURN_TEXT_P(cstring_to_text("nothing to confirm"));
	}

	args[0] = dfe_system_identifier_text();
	args[1] = recorded;
	dfe_sql("record the confirmed server identity",
			"UPDATE dfe_airbyte.server_identity SET system_identifier = $1::bigint,\n"
			"    previous_system_identifier = $2::bigint, recorded_at = now(),\n"
			"    confirmed_at = now(), confirmed_by = current_user",
			2, args, SPI_OK_UPDATE);
	dfe_sql("forget the other server's slot samples",
			"DELETE FROM dfe_airbyte.slot_samples WHERE target = 'local'", 0, NULL, SPI_OK_DELETE);
	dfe_sql("forget the other server's slot state",
			"DELETE FROM dfe_airbyte.slot_state WHERE target = 'local'", 0, NULL, SPI_OK_DELETE);
	dfe_sql("stop following the other server's re-sync jobs",
			"UPDATE dfe_airbyte.slot_recreations SET resync_job_status = 'abandoned',\n"
			"    note = coalesce(note || '; ', '') || 'restored on another server: its re-sync job is no longer followed'\n"
			"WHERE target = 'local' AND resync_state <> 'pending'\n"
			"  AND coalesce(resync_job_status, '') NOT IN ('succeeded', 'failed', 'cancelled', 'abandoned')",
			0, NULL, SPI_OK_UPDATE);
	detail = psprintf("restore confirmed by %s: this database now belongs to server %s (it was %s); the slot guard's history of the other server was cleared and the guard acts normally again",
					  GetUserNameFromId(GetUserId(), false), args[0], recorded);
	dfe_event("info", "restore_confirmed", NULL, detail,
			  psprintf("{\"system_identifier\": \"%s\", \"previous_system_identifier\": \"%s\"}",
					   args[0], recorded));
	SPI_finish();
	dfe_wake_at_commit(DFE_GUARD_WORKER);
	PG_RETURN_TEXT_P(cstring_to_text(detail));
}
