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
#include "target_scope.h"
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

/*
 * The other server's slot samples and slot state of the target are
 * forgotten (their LSNs mean nothing on this server), its re-sync jobs are
 * no longer followed.
 */
static void
forget_other_server(const char *target)
{
	const char *args[1] = {target};

	dfe_sql("forget the other server's slot samples",
			"DELETE FROM dfe_airbyte.slot_samples WHERE target = $1", 1, args, SPI_OK_DELETE);
	dfe_sql("forget the other server's slot state",
			"DELETE FROM dfe_airbyte.slot_state WHERE target = $1", 1, args, SPI_OK_DELETE);
	dfe_sql("stop following the other server's re-sync jobs",
			"UPDATE dfe_airbyte.slot_recreations SET resync_job_status = 'abandoned',\n"
			"    note = coalesce(note || '; ', '') || 'restored on another server: its re-sync job is no longer followed'\n"
			"WHERE target = $1 AND resync_state <> 'pending'\n"
			"  AND coalesce(resync_job_status, '') NOT IN ('succeeded', 'failed', 'cancelled', 'abandoned')",
			1, args, SPI_OK_UPDATE);
}

/* this database's confirmation; false when there is nothing to confirm */
static bool
confirm_local(char **now, char **was, const char *by)
{
	const char *args[3];

	if (RecoveryInProgress())
		ereport(ERROR,
				(errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
				 errmsg("cannot confirm a restore during recovery"),
				 errhint("Run dfe_airbyte_confirm_restore() on the primary.")));
	*now = dfe_system_identifier_text();
	if (dfe_identity_check(true, was) != IDENTITY_OTHER)
		return false;
	args[0] = *now;
	args[1] = *was;
	args[2] = by;
	dfe_sql("record the confirmed server identity",
			"UPDATE dfe_airbyte.server_identity SET system_identifier = $1::bigint,\n"
			"    previous_system_identifier = $2::bigint, recorded_at = now(),\n"
			"    confirmed_at = now(), confirmed_by = $3::name",
			3, args, SPI_OK_UPDATE);
	return true;
}

/*
 * A remote target's confirmation: the identifier that answers becomes the
 * recorded one (the guard records its timeline at its next check); false
 * when there is nothing to confirm.
 */
static bool
confirm_remote(const char *target, char **now, char **was)
{
	const char *args[1] = {target};

	dfe_sql("record the target's confirmed server identity",
			"WITH old AS (SELECT system_identifier FROM dfe_airbyte.guard_targets\n"
			"             WHERE target = $1 AND unconfirmed_system_identifier IS NOT NULL FOR UPDATE)\n"
			"UPDATE dfe_airbyte.guard_targets g SET system_identifier = g.unconfirmed_system_identifier,\n"
			"    unconfirmed_system_identifier = NULL, timeline = NULL\n"
			"FROM old WHERE g.target = $1\n"
			"RETURNING g.system_identifier::text, old.system_identifier::text",
			1, args, SPI_OK_UPDATE_RETURNING);
	if (SPI_processed == 0)
	{
		dfe_sql("read the target's server identity",
				"SELECT system_identifier::text FROM dfe_airbyte.guard_targets WHERE target = $1",
				1, args, SPI_OK_SELECT);
		*now = SPI_processed > 0 ? dfe_col_text(0, 1) : NULL;
		return false;
	}
	*now = dfe_col_text(0, 1);
	*was = dfe_col_text(0, 2);
	return true;
}

PG_FUNCTION_INFO_V1(dfe_airbyte_confirm_restore);

/*
 * dfe_airbyte_confirm_restore(target DEFAULT 'local') → text: the DBA says
 * the target's database now belongs to the server that answers for it.
 * The other server's slot history is forgotten (forget_other_server) and
 * the answering server's identifier recorded; the guard and the network
 * worker act normally from their next check on (a missing Airbyte slot is
 * created under slot_limit_action = recreate, with a full re-sync).
 */
Datum
dfe_airbyte_confirm_restore(PG_FUNCTION_ARGS)
{
	const char *target = PG_NARGS() > 0 && !PG_ARGISNULL(0)
		? text_to_cstring(PG_GETARG_TEXT_PP(0)) : DFE_LOCAL_TARGET;
	bool		local = strcmp(target, DFE_LOCAL_TARGET) == 0;
	const char *by = GetUserNameFromId(GetOuterUserId(), false);
	DfeTargetScope *scope;
	char	   *now = NULL;
	char	   *was = NULL;
	char	   *detail;

	DFE_REQUIRE_MATCHING_SQL();
	dfe_set_result_context(CurrentMemoryContext);
	scope = dfe_target_scope_enter(target);
	if (SPI_connect() != SPI_OK_CONNECT)
		dfe_internal_error("dfe_airbyte_confirm_restore() could not connect to SPI");
	if (!(local ? confirm_local(&now, &was, by) : confirm_remote(target, &now, &was)))
	{
		SPI_finish();
		dfe_target_scope_leave(scope);
		if (local)
			ereport(NOTICE,
					(errcode(ERRCODE_SUCCESSFUL_COMPLETION),
					 errmsg("nothing to confirm: this database was not restored from another server"),
					 errdetail("The system identifier recorded by the slot guard is this server's (%s).", now)));
		else
			ereport(NOTICE,
					(errcode(ERRCODE_SUCCESSFUL_COMPLETION),
					 errmsg("nothing to confirm: target \"%s\" was not restored from another server", target),
					 errdetail("The system identifier recorded by the slot guard is that of the server that answers (%s).",
							   now ? now : "none recorded yet")));
		PG_RETURN_TEXT_P(cstring_to_text("nothing to confirm"));
	}
	forget_other_server(target);
	detail = psprintf("restore confirmed by %s: %s now belongs to server %s (it was %s); the slot guard's history of the other server was cleared and the guard acts normally again",
					  by, local ? "this database" : psprintf("the database of target \"%s\"", target), now, was);
	dfe_event("info", "restore_confirmed", NULL, detail,
			  psprintf("{\"system_identifier\": \"%s\", \"previous_system_identifier\": \"%s\"}", now, was));
	SPI_finish();
	dfe_target_scope_leave(scope);
	dfe_wake_at_commit(DFE_GUARD_WORKER);
	/* a remote target's deploys and re-syncs waited for this (target_scope.c) */
	if (!local)
		dfe_wake_at_commit(DFE_NET_WORKER);
	PG_RETURN_TEXT_P(cstring_to_text(detail));
}
