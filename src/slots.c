/*
 * slots.c — the slot guard.
 *
 * Every dfe_airbyte.check_interval the worker
 *
 *   1. samples every logical slot of this database into
 *      dfe_airbyte.slot_samples and updates dfe_airbyte.slot_state, in ONE
 *      short transaction (one prepared statement reading
 *      pg_replication_slots, which is shared memory, not a catalog; no user
 *      data is read), and decides what to do about the Airbyte slot
 *      (dfe_airbyte.slot_name — the only slot the worker ever touches):
 *
 *        ok          nothing (an event when it comes back from a bad state);
 *        over_limit  retained WAL > dfe_airbyte.max_slot_wal_size;
 *        lost        wal_status = 'lost' (invalidated by max_slot_wal_keep_size);
 *        missing     no slot of that name (after a drop, or on a promoted standby);
 *        elsewhere   the name belongs to a physical slot or another database.
 *
 *      Under warn and terminate a bad condition is reported once when it
 *      starts (WARNING + event), again every SLOT_RENOTIFY_MS while it lasts
 *      and again when slot_limit_action changes; terminate also ends the
 *      slot's walsender at those moments.
 *
 *   2. under recreate (over_limit, lost or missing): ends the walsender and
 *      waits for it to let go of the slot, records the recreation in
 *      dfe_airbyte.slot_recreations (before anything is dropped, so a crash
 *      can only cause an extra re-sync, never a missing one), drops the slot,
 *      then creates it in a transaction of its own — PostgreSQL refuses to
 *      create a logical slot in a transaction that has written — and only
 *      after the create marks the recreation done, in that same transaction.
 *      The create waits for older transactions to end, so each attempt's
 *      wait is bounded and a recreation that has to wait resumes at the next
 *      check, the guard sampling and reporting meanwhile (see CreationWait);
 *
 *   3. the full re-sync a recreation needs is NOT asked for here: the
 *      recreation row (resync_state 'pending') hands it over to resync.c,
 *      a task of the network side, so that no network call can delay the
 *      guard;
 *
 *   then every remote target is checked at once (slot_remote.c), judged
 *   here with the target's settings (dfe_slot_judge); and
 *
 *   4. at most once a minute prunes slot_samples, events, finished
 *      slot_recreations and finished deploys to dfe_airbyte.history_retention
 *      and dfe_airbyte.history_max_rows (slot_prune.c).
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "executor/instrument.h"
#include "executor/spi.h"
#include "replication/slot.h"
#include "compat.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "portability/instr_time.h"
#if PG_VERSION_NUM >= 170000
#include "replication/slotsync.h"
#endif
#include "storage/latch.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timeout.h"
#include "utils/timestamp.h"

#include <cjson/cJSON.h>

#include "events.h"
#include "restore.h"
#include "settings.h"
#include "shared.h"
#include "slots.h"
#include "slot_guard.h"
#include "spi_xact.h"
#include "target_scope.h"
#include "version.h"
#include "worker.h"

typedef enum SlotCondition
{
	COND_OK,
	COND_OVER_LIMIT,
	COND_LOST,
	COND_MISSING,
	COND_ELSEWHERE
} SlotCondition;

static const char *const condition_names[] = {
	"ok", "over_limit", "lost", "missing", "elsewhere"
};

static const char *const action_names[] = {
	[SLOT_LIMIT_WARN] = "warn",
	[SLOT_LIMIT_TERMINATE] = "terminate",
	[SLOT_LIMIT_RECREATE] = "recreate"
};

/* the Airbyte slot's row of dfe_airbyte.slot_state */
typedef struct GuardState
{
	bool		has_row;
	bool		seen;			/* first_seen_at IS NOT NULL */
	SlotCondition condition;
	bool		notified;
	TimestampTz notified_at;
	char	   *notified_action;
	int64		open_recreation;	/* recreation with recreated_at NULL, 0 if none */
	bool		resync_in_flight;	/* a re-sync we asked for is pending or running */
	int64		recreations_today;	/* recreations done in the last 24 hours */
	SlotCondition open_reason;	/* the open recreation's reason */
	char	   *open_plugin;	/* and the plugin it recorded */
} GuardState;

static SPIPlanPtr sample_plan = NULL;
static SPIPlanPtr state_plan = NULL;

/*
 * Sample every logical slot of this database; keep slot_state in step
 * (first sight, last activity, forget dropped slots but the Airbyte one).
 * $1 = the Airbyte slot's name, $2 = this database's OID.  The function
 * under pg_replication_slots is used directly: the view joins pg_database
 * once per slot, which would be the check's only catalog reads.
 */
/*
 * Failover slots (PostgreSQL 17): pg_replication_slots.failover, and the
 * fifth argument of pg_create_logical_replication_slot().  Before 17 there
 * are none.
 */
#if PG_VERSION_NUM >= 170000
#define SLOT_FAILOVER_COLUMN "r.failover"
#define CREATE_SLOT_SQL \
	"SELECT lsn::text FROM pg_catalog.pg_create_logical_replication_slot($1, $2, false, $3::boolean, $4::boolean)"
#else
#define SLOT_FAILOVER_COLUMN "false"
#define CREATE_SLOT_SQL \
	"SELECT lsn::text FROM pg_catalog.pg_create_logical_replication_slot($1, $2, false, $3::boolean)"
#endif

static const char *const sample_sql =
"WITH cur AS MATERIALIZED (SELECT pg_catalog.pg_current_wal_lsn() AS lsn),\n"
"s AS MATERIALIZED (\n"
"    SELECT r.slot_name::text AS slot_name, r.plugin::text AS plugin, r.active, r.active_pid,\n"
"           r.wal_status, r.safe_wal_size, r.two_phase, " SLOT_FAILOVER_COLUMN " AS failover,\n"
"           (c.lsn - r.restart_lsn)::bigint AS retained_bytes,\n"
"           (c.lsn - r.confirmed_flush_lsn)::bigint AS flush_lag_bytes,\n"
"           r.restart_lsn, r.confirmed_flush_lsn, c.lsn AS current_lsn\n"
"    FROM pg_catalog.pg_get_replication_slots() r, cur c\n"
"    WHERE r.slot_type = 'logical' AND r.datoid = $2),\n"
"ins AS (\n"
"    INSERT INTO dfe_airbyte.slot_samples (sampled_at, slot_name, active, active_pid, wal_status,\n"
"                                          safe_wal_size, retained_bytes, flush_lag_bytes,\n"
"                                          restart_lsn, confirmed_flush_lsn, current_lsn)\n"
"    SELECT pg_catalog.now(), slot_name, active, active_pid, wal_status, safe_wal_size,\n"
"           retained_bytes, flush_lag_bytes, restart_lsn, confirmed_flush_lsn, current_lsn\n"
"    FROM s),\n"
/*
 * A consumer was here when the slot is active now or its confirmed_flush_lsn
 * moved since the last check: a short sync (or a scaled-down test's
 * consumer) may start and end between two samples.
 */
"up AS (\n"
"    INSERT INTO dfe_airbyte.slot_state AS st (slot_name, first_seen_at, last_active_at, confirmed_flush_lsn)\n"
"    SELECT slot_name, pg_catalog.now(), CASE WHEN active THEN pg_catalog.now() END, confirmed_flush_lsn FROM s\n"
"    ON CONFLICT (target, slot_name) DO UPDATE\n"
"        SET first_seen_at = coalesce(st.first_seen_at, excluded.first_seen_at),\n"
"            last_active_at = CASE WHEN excluded.last_active_at IS NOT NULL\n"
"                                    OR excluded.confirmed_flush_lsn > st.confirmed_flush_lsn\n"
"                                  THEN pg_catalog.now() ELSE st.last_active_at END,\n"
"            confirmed_flush_lsn = excluded.confirmed_flush_lsn\n"
"        WHERE st.first_seen_at IS NULL OR excluded.last_active_at IS NOT NULL\n"
"           OR excluded.confirmed_flush_lsn IS DISTINCT FROM st.confirmed_flush_lsn),\n"
"del AS (\n"
"    DELETE FROM dfe_airbyte.slot_state st\n"
"    WHERE st.target = 'local' AND st.slot_name <> $1 AND NOT EXISTS (SELECT 1 FROM s WHERE s.slot_name = st.slot_name))\n"
"SELECT slot_name, plugin, active, active_pid, wal_status, retained_bytes, two_phase, failover FROM s";

/* $1 = the Airbyte slot's name, $2 = its target; always one row */
static const char *const state_sql =
"SELECT st.slot_name IS NOT NULL, st.first_seen_at IS NOT NULL, st.condition,\n"
"       st.notified_at, st.notified_action,\n"
"       (SELECT r.id FROM dfe_airbyte.slot_recreations r\n"
"        WHERE r.target = $2 AND r.slot_name = $1 AND r.recreated_at IS NULL ORDER BY r.id LIMIT 1),\n"
"       EXISTS (SELECT 1 FROM dfe_airbyte.slot_recreations r\n"
"               WHERE r.target = $2 AND r.slot_name = $1 AND r.recreated_at IS NOT NULL\n"
"                 AND (r.resync_state = 'pending'\n"
"                      OR (r.resync_finished_at IS NULL\n"
"                          AND coalesce(r.resync_job_status, '') NOT IN ('succeeded', 'failed', 'cancelled', 'abandoned')))),\n"
"       (SELECT pg_catalog.count(*) FROM dfe_airbyte.slot_recreations r\n"
"        WHERE r.target = $2 AND r.slot_name = $1 AND r.recreated_at IS NOT NULL\n"
"          AND r.recreated_at > pg_catalog.now() - interval '1 day'\n"
/* dfe_airbyte_repair()'s re-sync for a stale saved position recreated nothing */
"          AND r.reason <> 'airbyte_state_behind'),\n"
"       o.reason, o.plugin\n"
"FROM (SELECT 1) one\n"
"LEFT JOIN LATERAL (SELECT r.reason, r.plugin FROM dfe_airbyte.slot_recreations r\n"
"                   WHERE r.target = $2 AND r.slot_name = $1 AND r.recreated_at IS NULL ORDER BY r.id LIMIT 1) o ON true\n"
" LEFT JOIN dfe_airbyte.slot_state st ON st.target = $2 AND st.slot_name = $1";

/* dfe_airbyte.max_slot_wal_size in bytes, -1 when there is no limit */
static int64
dfe_slot_limit_bytes(void)
{
	if (dfe_max_slot_wal_size_mb < 0)
		return -1;
	return (int64) dfe_max_slot_wal_size_mb * 1024 * 1024;
}

/* max_slot_wal_keep_size in bytes, -1 when the server sets none */
static int64
dfe_server_slot_limit_bytes(void)
{
	if (max_slot_wal_keep_size_mb < 0)
		return -1;
	return (int64) max_slot_wal_keep_size_mb * 1024 * 1024;
}

/* ---------- small helpers ---------- */

static char *
pretty_bytes(int64 bytes)
{
	return text_to_cstring(DatumGetTextPP(DirectFunctionCall1(pg_size_pretty,
															  Int64GetDatum(bytes))));
}

static SlotCondition
condition_from_name(const char *name)
{
	int			i;

	for (i = 0; i < lengthof(condition_names); i++)
		if (name && strcmp(name, condition_names[i]) == 0)
			return (SlotCondition) i;
	return COND_OK;
}

static SPIPlanPtr
keep_plan(SPIPlanPtr *cache, const char *sql, int nargs, Oid *types)
{
	if (*cache == NULL)
	{
		SPIPlanPtr	plan = SPI_prepare(sql, nargs, types);

		if (plan == NULL)
			dfe_spi_failed("prepare its statements", SPI_result);
		if (SPI_keepplan(plan) != 0)
			dfe_spi_failed("keep its statements", SPI_result);
		*cache = plan;
	}
	return *cache;
}

/* ---------- 1. sampling ---------- */

/*
 * Sample all logical slots of this database (inside the caller's
 * transaction, SPI connected); fill *g for the Airbyte slot.  Returns the
 * number of slots sampled.
 */
static int
sample_slots(const char *slot_name, GuardedSlot *g)
{
	Oid			types[2] = {TEXTOID, OIDOID};
	Datum		args[2];
	int			ret;
	uint64		i;

	memset(g, 0, sizeof(*g));
	args[0] = CStringGetTextDatum(slot_name);
	args[1] = ObjectIdGetDatum(MyDatabaseId);
	ret = SPI_execute_plan(keep_plan(&sample_plan, sample_sql, 2, types), args, NULL, false, 0);
	if (ret != SPI_OK_SELECT)
		dfe_spi_failed("sample the replication slots", ret);

	for (i = 0; i < SPI_processed; i++)
	{
		char	   *name = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
		bool		isnull;
		Datum		d;

		if (name == NULL || strcmp(name, slot_name) != 0)
			continue;
		g->found = true;
		g->plugin = dfe_col_text(i, 2);
		g->active = DatumGetBool(dfe_col_datum(i, 3, &isnull));
		d = dfe_col_datum(i, 4, &isnull);
		g->active_pid = isnull ? 0 : DatumGetInt32(d);
		g->wal_status = dfe_col_text(i, 5);
		d = dfe_col_datum(i, 6, &isnull);
		g->has_retained = !isnull;
		g->retained = isnull ? 0 : DatumGetInt64(d);
		d = dfe_col_datum(i, 7, &isnull);
		g->two_phase = !isnull && DatumGetBool(d);
		d = dfe_col_datum(i, 8, &isnull);
		g->failover = !isnull && DatumGetBool(d);
	}
	return (int) SPI_processed;
}

static void
read_state(const char *slot_name, GuardState *st)
{
	Oid			types[2] = {TEXTOID, TEXTOID};
	Datum		arg[2];
	bool		isnull;
	Datum		d;
	int			ret;

	memset(st, 0, sizeof(*st));
	arg[0] = CStringGetTextDatum(slot_name);
	arg[1] = CStringGetTextDatum(dfe_target_current());
	ret = SPI_execute_plan(keep_plan(&state_plan, state_sql, 2, types), arg, NULL, true, 0);
	if (ret != SPI_OK_SELECT || SPI_processed != 1)
		dfe_spi_failed("read the slot guard state", ret);

	st->has_row = DatumGetBool(dfe_col_datum(0, 1, &isnull));
	st->seen = DatumGetBool(dfe_col_datum(0, 2, &isnull));
	st->condition = condition_from_name(SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3));
	d = dfe_col_datum(0, 4, &isnull);
	st->notified = !isnull;
	st->notified_at = isnull ? 0 : DatumGetTimestampTz(d);
	st->notified_action = dfe_col_text(0, 5);
	d = dfe_col_datum(0, 6, &isnull);
	st->open_recreation = isnull ? 0 : DatumGetInt64(d);
	st->resync_in_flight = DatumGetBool(dfe_col_datum(0, 7, &isnull));
	st->recreations_today = DatumGetInt64(dfe_col_datum(0, 8, &isnull));
	st->open_reason = condition_from_name(SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 9));
	st->open_plugin = dfe_col_text(0, 10);
}

/* ---------- events ---------- */

static char *
event_data(const char *slot_name, const GuardedSlot *g, const char *extra_key,
		   const char *extra_value, int64 job_id)
{
	cJSON	   *o = cJSON_CreateObject();
	int64		limit = dfe_slot_limit_bytes();
	char	   *out;

	cJSON_AddStringToObject(o, "slot_name", slot_name);
	cJSON_AddStringToObject(o, "action", action_names[dfe_slot_limit_action]);
	if (limit >= 0)
		cJSON_AddNumberToObject(o, "limit_bytes", (double) limit);
	if (g && g->found)
	{
		if (g->has_retained)
			cJSON_AddNumberToObject(o, "retained_bytes", (double) g->retained);
		if (g->wal_status)
			cJSON_AddStringToObject(o, "wal_status", g->wal_status);
		cJSON_AddBoolToObject(o, "active", g->active);
		if (g->active_pid)
			cJSON_AddNumberToObject(o, "active_pid", g->active_pid);
	}
	if (extra_key)
		cJSON_AddStringToObject(o, extra_key, extra_value);
	if (job_id)
		cJSON_AddNumberToObject(o, "job_id", (double) job_id);
	out = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	return out;
}

static char *
over_limit_text(const char *slot_name, const GuardedSlot *g)
{
	return psprintf("replication slot \"%s\" retains %s of WAL, more than dfe_airbyte.max_slot_wal_size (%s)",
					slot_name, pretty_bytes(g->retained), pretty_bytes(dfe_slot_limit_bytes()));
}

/*
 * What a notice was given under: the action, or "recreate (held: why)" when
 * a recreation was held back, so that a change either way notifies again.
 */
static char *
notice_tag(const char *held)
{
	if (held)
		return psprintf("%s (held: %s)", action_names[dfe_slot_limit_action], held);
	return pstrdup(action_names[dfe_slot_limit_action]);
}

static void
set_condition(const char *slot_name, SlotCondition cond, const char *tag)
{
	const char *args[4] = {slot_name, condition_names[cond], tag, dfe_target_current()};

	dfe_sql("record the slot condition",
			"INSERT INTO dfe_airbyte.slot_state AS st (target, slot_name, condition, condition_since, notified_at, notified_action)\n"
			"VALUES ($4, $1, $2, now(), CASE WHEN $3 IS NOT NULL THEN now() END, $3)\n"
			"ON CONFLICT (target, slot_name) DO UPDATE SET\n"
			"    condition_since = CASE WHEN st.condition = excluded.condition THEN st.condition_since ELSE now() END,\n"
			"    condition = excluded.condition,\n"
			"    notified_at = excluded.notified_at,\n"
			"    notified_action = excluded.notified_action",
			4, args, SPI_OK_INSERT);
}

/*
 * End the slot's walsender (or the backend decoding it) on the current
 * target, through the one seam that runs a query there (target.h): SPI here,
 * libpq on a remote target, where the role may do it with
 * pg_signal_backend or as a member of Airbyte's role.  True when signalled.
 */
static bool
terminate_holder(int32 pid)
{
	DfeTarget  *t = dfe_target_open(dfe_target_current());
	const char *args[1] = {psprintf("%d", pid)};
	DfeRows    *r;
	const char *v;

	r = dfe_target_query(t, "terminate the slot's walsender",
						 "SELECT pg_catalog.pg_terminate_backend($1::pg_catalog.int4)", 1, args);
	v = r->nrows == 1 ? dfe_rows_value(r, 0, 0) : NULL;
	dfe_target_close(t);
	return v != NULL && strcmp(v, "t") == 0;
}

static void
terminated_event(const char *slot_name, const GuardedSlot *g, int32 pid, bool ok, const char *why)
{
	char	   *detail;

	if (ok)
		detail = psprintf("terminated process %d, which was using replication slot \"%s\" (%s)",
						  pid, slot_name, why);
	else
		detail = psprintf("could not terminate process %d, which was using replication slot \"%s\" (%s)",
						  pid, slot_name, why);
	dfe_event("warning", "slot_walsender_terminated", slot_name, detail,
			  event_data(slot_name, g, "reason", why, 0));
}

/* why a recreation is held back, for the event's detail */
static const char *
held_text(const char *held)
{
	if (held == NULL)
		return "";
	if (strcmp(held, "resync_running") == 0)
		return "; slot_limit_action = recreate, but the full re-sync requested by the last recreation is still pending or running (it retains WAL for the whole re-read), so the slot is not recreated again until it ends (dfe_airbyte.slot_recreations)";
	return psprintf("; slot_limit_action = recreate, but the slot was already recreated %d time(s) in the last 24 hours (dfe_airbyte.max_slot_recreations_per_day): the guard only warns until a day has passed since the oldest of them; find out why Airbyte cannot keep up (dfe_airbyte.sync_health) or raise the cap",
					dfe_max_slot_recreations_per_day);
}

/*
 * Under warn and terminate, or recreate held back (held: "resync_running"
 * or "daily_cap"): report a bad condition when it starts, every
 * SLOT_RENOTIFY_MS while it lasts, and when slot_limit_action (or the
 * reason it is held back) changes; the way back to ok is an info event.
 */
static void
report_condition(const char *slot_name, SlotCondition cond, const GuardedSlot *g,
				 const GuardState *st, const char *elsewhere, const char *held)
{
	TimestampTz now = GetCurrentTimestamp();
	char	   *tag = notice_tag(held);
	bool		due;

	if (cond == COND_OK)
	{
		if (st->has_row && st->condition != COND_OK)
		{
			if (st->condition == COND_OVER_LIMIT)
				dfe_event("info", "slot_limit_cleared", slot_name,
						  psprintf("replication slot \"%s\" is back under dfe_airbyte.max_slot_wal_size (retains %s)",
								   slot_name, pretty_bytes(g->retained)),
						  event_data(slot_name, g, NULL, NULL, 0));
			else
				dfe_event("info", "slot_restored", slot_name,
						  psprintf("replication slot \"%s\" is usable again (it was %s)",
								   slot_name, condition_names[st->condition]),
						  event_data(slot_name, g, "previous_condition",
									 condition_names[st->condition], 0));
			set_condition(slot_name, COND_OK, NULL);
		}
		return;
	}

	/* a slot that never existed here is config_problems' business, not ours */
	if (cond == COND_MISSING && !st->seen)
		return;

	due = !st->has_row || st->condition != cond || !st->notified ||
		TimestampDifferenceExceeds(st->notified_at, now, (int) SLOT_RENOTIFY_MS) ||
		st->notified_action == NULL ||
		strcmp(st->notified_action, tag) != 0;
	if (!due)
		return;

	if (held && strcmp(held, "daily_cap") == 0)
		dfe_event("critical", "slot_recreation_cap_reached", slot_name,
				  psprintf("replication slot \"%s\" is %s but is not recreated: it was recreated %d time(s) in the last 24 hours, the most dfe_airbyte.max_slot_recreations_per_day allows",
						   slot_name, condition_names[cond], dfe_max_slot_recreations_per_day),
				  event_data(slot_name, g, "recreate_held", held, 0));

	switch (cond)
	{
		case COND_OVER_LIMIT:
			dfe_event("warning", "slot_limit_exceeded", slot_name,
					  psprintf("%s%s", over_limit_text(slot_name, g), held_text(held)),
					  event_data(slot_name, g, held ? "recreate_held" : NULL, held, 0));
			if (dfe_slot_limit_action == SLOT_LIMIT_TERMINATE && g->active && g->active_pid != 0)
				terminated_event(slot_name, g, g->active_pid, terminate_holder(g->active_pid),
								 "over dfe_airbyte.max_slot_wal_size, slot_limit_action = terminate");
			break;
		case COND_LOST:
			dfe_event("critical", "slot_lost", slot_name,
					  psprintf("replication slot \"%s\" was invalidated (wal_status lost): the WAL Airbyte needs is gone, so its next sync fails; recreate the slot and run a full re-sync, or set dfe_airbyte.slot_limit_action = recreate%s",
							   slot_name, held_text(held)),
					  event_data(slot_name, g, held ? "recreate_held" : NULL, held, 0));
			break;
		case COND_MISSING:
			dfe_event("warning", "slot_missing", slot_name,
					  psprintf("replication slot \"%s\" no longer exists: Airbyte cannot continue CDC until it is recreated and a full re-sync runs (dfe_airbyte.slot_limit_action = recreate does both)%s",
							   slot_name, held_text(held)),
					  event_data(slot_name, g, held ? "recreate_held" : NULL, held, 0));
			break;
		case COND_ELSEWHERE:
			dfe_event("warning", "slot_name_conflict", slot_name,
					  psprintf("dfe_airbyte.slot_name \"%s\" is %s, not a logical slot of database \"%s\": the slot guard cannot watch it; set dfe_airbyte.slot_name and dfe_airbyte.database to the Airbyte slot and its database",
							   slot_name, elsewhere, get_database_name(MyDatabaseId)),
					  event_data(slot_name, g, "found", elsewhere, 0));
			break;
		case COND_OK:
			break;
	}
	set_condition(slot_name, cond, tag);
}

/*
 * A recreation left half-done by an earlier run (the worker stopped between
 * recording it and finishing it) while no recreation is wanted now: the slot
 * may or may not have been recreated, so ask for the re-sync to be safe.
 */
static void
close_interrupted_recreation(int64 id)
{
	const char *args[1] = {dfe_int64_str(id)};

	dfe_sql("close an interrupted slot recreation",
			"UPDATE dfe_airbyte.slot_recreations SET recreated_at = now(),\n"
			"    note = 'the worker stopped during this recreation; a full re-sync is requested to be safe'\n"
			"WHERE id = $1::bigint AND recreated_at IS NULL",
			1, args, SPI_OK_UPDATE);
}

/* is there a slot of that name that is not a logical slot of this database? */
static char *
slot_elsewhere(const char *slot_name)
{
	const char *args[1] = {slot_name};

	dfe_sql("look for the Airbyte slot",
			"SELECT CASE WHEN slot_type = 'physical' THEN 'a physical slot'\n"
			"            ELSE format('a logical slot of database %I', database) END\n"
			"FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
			1, args, SPI_OK_SELECT);
	if (SPI_processed == 0)
		return NULL;
	return dfe_col_text(0, 1);
}

/* ---------- 2. recreation ---------- */

/* the slot's holder, read live; 0 when the slot is free or gone */
static int32
slot_holder(const char *slot_name, bool *exists)
{
	const char *args[1] = {slot_name};
	int32		pid = 0;

	dfe_xact_begin("dfe_airbyte slot guard");
	dfe_sql("read the Airbyte slot",
			"SELECT active_pid FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
			1, args, SPI_OK_SELECT);
	*exists = SPI_processed > 0;
	if (SPI_processed > 0 && !dfe_col_isnull(0, 1))
	{
		bool		isnull;

		pid = DatumGetInt32(dfe_col_datum(0, 1, &isnull));
	}
	dfe_xact_end();
	return pid;
}

/*
 * End the process holding the slot and wait until it let go.  Waits on a
 * timeout only (never on the latch, which belongs to the worker loop: a
 * deploy wake-up must not be swallowed here).
 */
static bool
release_slot(const char *slot_name, const GuardedSlot *g, int32 pid, const char *why)
{
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), SLOT_RELEASE_WAIT_MS);
	bool		ok;
	bool		exists;
	int32		holder;

	dfe_xact_begin("dfe_airbyte slot guard");
	ok = terminate_holder(pid);
	terminated_event(slot_name, g, pid, ok, why);
	dfe_xact_end();

	for (;;)
	{
		holder = slot_holder(slot_name, &exists);
		if (holder == 0)
			return true;
		if (GetCurrentTimestamp() >= deadline)
			break;
		(void) WaitLatch(MyLatch, WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 100L, PG_WAIT_EXTENSION);
		CHECK_FOR_INTERRUPTS();
	}
	ereport(LOG,
			(errcode(ERRCODE_OBJECT_IN_USE),
			 errmsg("dfe_airbyte could not recreate replication slot \"%s\" yet: process %d still uses it",
					slot_name, holder),
			 errhint("The worker tries again at its next check; stop the Airbyte connection if this repeats.")));
	return false;
}

/*
 * The WAL Airbyte never read, as far as the samples tell: from the last
 * sample's confirmed_flush_lsn (at its time) to the new slot's LSN (now).
 * On a promoted standby the last sample is the old primary's, replicated.
 */
static char *
gap_detail(const char *slot_name, cJSON *gap)
{
	cJSON	   *from = cJSON_GetObjectItem(gap, "from_lsn");
	cJSON	   *from_time = cJSON_GetObjectItem(gap, "from_time");
	cJSON	   *to = cJSON_GetObjectItem(gap, "to_lsn");
	cJSON	   *bytes = cJSON_GetObjectItem(gap, "bytes");

	if (!cJSON_IsString(from) || !cJSON_IsString(to) || !cJSON_IsString(from_time))
		return pstrdup("");
	return psprintf("; the gap the re-sync must cover: Airbyte had confirmed up to %s (last sample at %s), the new slot starts at %s (%s of WAL later)",
					from->valuestring, from_time->valuestring, to->valuestring,
					cJSON_IsNumber(bytes) ? pretty_bytes((int64) bytes->valuedouble) : "?");
}

/* event data plus the gap (JSON text from the recreation's row) */
static char *
recreation_event_data(const char *slot_name, const GuardedSlot *g, SlotCondition reason,
					  cJSON *gap)
{
	cJSON	   *o = cJSON_Parse(event_data(slot_name, g, "reason", condition_names[reason], 0));
	char	   *out;

	if (o == NULL)
		dfe_internal_error("could not build the slot recreation event");
	if (gap)
		cJSON_AddItemToObject(o, "gap", gap);
	out = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	return out;
}

/*
 * A creation that has to wait.  Creating a logical slot waits until every
 * transaction that held a transaction id when it started has ended
 * (SnapBuildWaitSnapshot's XactLockTableWait in PostgreSQL's
 * src/backend/replication/logical/snapbuild.c), and one session idle in a
 * transaction can make that hours.  So the guard bounds each attempt
 * (lock_timeout, which that lock wait obeys, and a statement timeout as a
 * backstop for any other wait), goes back to sampling, and tries again at
 * its next check.
 *
 * The resumable part of a recreation is its slot_recreations row (open
 * while recreated_at is NULL: reason, plugin, pending since decided_at);
 * this is what one guard process knows of the waiting, kept per recreation
 * so that the same steps can later run against a remote database without
 * blocking either.
 */
static CreationWait creation_wait;

/* how long one attempt may wait for other transactions */
int
dfe_creation_wait_ms(void)
{
	int			ms = dfe_check_interval_s * 1000 / 2;

	return Max(Min(ms, CREATION_WAIT_MAX_MS), CREATION_WAIT_MIN_MS);
}

/*
 * Whether the recreated slot is a failover slot (PostgreSQL 17): when the
 * dropped one was, or when this server synchronizes slots
 * (sync_replication_slots; an HA pair is configured alike on both sides),
 * so that a standby's slot sync worker keeps a copy and Airbyte can go on
 * after a failover without another recreation and full re-sync
 * (PostgreSQL 17 docs, "Logical Replication Failover").
 */
static bool
recreate_as_failover(const GuardedSlot *g)
{
#if PG_VERSION_NUM >= 170000
	return (g->found && g->failover) || sync_replication_slots;
#else
	return false;
#endif
}

/*
 * Begin the recreation's last transaction with the creation of the slot.
 * True (transaction open, *new_lsn set) when the slot was created; false
 * (transaction rolled back) when the creation did not finish in time.  Any
 * other error is raised again once the half-made slot is cleaned up.
 */
static bool
create_slot_bounded(const char *slot_name, const char *plugin, bool two_phase,
					bool failover, char **new_lsn, ErrorData **edata)
{
	MemoryContext cxt = CurrentMemoryContext;
	const char *args[4] = {slot_name, plugin, two_phase ? "true" : "false",
	failover ? "true" : "false"};
	ErrorData  *volatile err = NULL;

	PG_TRY();
	{
		int			wait_ms = dfe_creation_wait_ms();

		dfe_xact_begin("dfe_airbyte slot guard");
		/* local to this transaction: rolled back with it either way */
		(void) set_config_option("lock_timeout", psprintf("%d", wait_ms), PGC_SUSET,
								 PGC_S_SESSION, GUC_ACTION_LOCAL, true, 0, false);
		/* a background worker gets no statement_timeout of its own */
		enable_timeout_after(STATEMENT_TIMEOUT, 2 * wait_ms + CREATION_BACKSTOP_MS);
		dfe_sql("create the Airbyte slot", CREATE_SLOT_SQL, PG_VERSION_NUM >= 170000 ? 4 : 3,
				args, SPI_OK_SELECT);
		disable_timeout(STATEMENT_TIMEOUT, false);
		*new_lsn = dfe_col_text(0, 1);
	}
	PG_CATCH();
	{
		HOLD_INTERRUPTS();
		disable_timeout(STATEMENT_TIMEOUT, false);
		MemoryContextSwitchTo(cxt);
		err = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();

		/*
		 * What PostgresMain does after an error: the ephemeral slot of a
		 * creation cut short is dropped when released.
		 */
		if (MyReplicationSlot != NULL)
			ReplicationSlotRelease();
		dfe_ReplicationSlotCleanup();
		pgstat_report_activity(STATE_IDLE, NULL);
		MemoryContextSwitchTo(cxt);
		RESUME_INTERRUPTS();
	}
	PG_END_TRY();

	if (err == NULL)
		return true;
	if (err->sqlerrcode != ERRCODE_LOCK_NOT_AVAILABLE && err->sqlerrcode != ERRCODE_QUERY_CANCELED)
		ReThrowError(err);
	*edata = err;
	return false;
}

/*
 * The sessions a slot creation started at $1 waits for: those that held a
 * transaction id before it (short transactions that began since come and
 * go), and prepared transactions.  Never their query text, which may hold
 * secrets.  Columns: JSON of them, a summary for the event's detail, the
 * pid of the longest-running one ("" none).  Every name qualified: it runs
 * on remote targets too (slot_remote_recreate.c).
 */
const char *const dfe_creation_blockers_sql =
"WITH b AS (\n"
"    SELECT a.pid, a.state, a.backend_type, a.datname::text AS database,\n"
"           pg_catalog.age(a.backend_xid) AS xid_age, a.xact_start\n"
"    FROM pg_catalog.pg_stat_activity a\n"
"    WHERE a.backend_xid IS NOT NULL AND a.pid OPERATOR(pg_catalog.<>) pg_catalog.pg_backend_pid()\n"
"      AND a.xact_start OPERATOR(pg_catalog.<) $1::timestamptz\n"
"    ORDER BY a.xact_start LIMIT 10),\n"
"p AS (\n"
"    SELECT x.database::text AS database, pg_catalog.age(x.transaction) AS xid_age, x.prepared\n"
"    FROM pg_catalog.pg_prepared_xacts x WHERE x.prepared OPERATOR(pg_catalog.<) $1::timestamptz\n"
"    ORDER BY x.prepared LIMIT 10)\n"
"SELECT pg_catalog.jsonb_build_object(\n"
"           'blockers', coalesce((SELECT pg_catalog.jsonb_agg(pg_catalog.to_jsonb(b) ORDER BY b.xact_start) FROM b), '[]'),\n"
"           'prepared', coalesce((SELECT pg_catalog.jsonb_agg(pg_catalog.to_jsonb(p) ORDER BY p.prepared) FROM p), '[]'))::text,\n"
"       pg_catalog.concat_ws('; ',\n"
"           (SELECT pg_catalog.string_agg(pg_catalog.format('process %s (%s, transaction started %s, transaction id age %s)',\n"
"                                                b.pid, coalesce(b.state, b.backend_type), b.xact_start, b.xid_age), '; ' ORDER BY b.xact_start) FROM b),\n"
"           (SELECT pg_catalog.string_agg(pg_catalog.format('a prepared transaction of database %s (prepared %s)',\n"
"                                                p.database, p.prepared), '; ' ORDER BY p.prepared) FROM p)),\n"
"       coalesce((SELECT b.pid::text FROM b ORDER BY b.xact_start LIMIT 1), '')";

/*
 * The sessions a slot creation started at attempt_at waits for: those that
 * held a transaction id before it (short transactions that began since
 * come and go), and prepared transactions.  Never their query text, which
 * may hold secrets.  Sets *summary (for the event's detail) and *oldest
 * (the pid of the longest-running one, "" none); returns them as JSON.
 */
static char *
creation_blockers(TimestampTz attempt_at, char **summary, char **oldest)
{
	const char *args[1] = {timestamptz_to_str(attempt_at)};

	dfe_sql("find what the slot creation waits for",
			dfe_creation_blockers_sql,
			1, args, SPI_OK_SELECT);
	*summary = dfe_col_text(0, 2);
	*oldest = dfe_col_text(0, 3);
	return dfe_col_text(0, 1);
}

/*
 * In a transaction: an attempt did not finish in time (waited: its error
 * message; data, summary, oldest: from dfe_creation_blockers_sql).  Note it
 * on the recreation's row, and say in an event what it waits for when the
 * wait starts, when the oldest transaction it waits for changes (the one
 * holding it up; others come and go on a busy server), and every
 * SLOT_RENOTIFY_MS.
 */
void
dfe_slot_note_creation_wait(const char *slot_name, int64 rec_id, CreationWait *cw,
							TimestampTz attempt_at, const char *waited,
							const char *data, const char *summary, const char *oldest)
{
	TimestampTz now = GetCurrentTimestamp();
	cJSON	   *o;
	const char *args[2];

	if (cw->rec_id != rec_id)
	{
		memset(cw, 0, sizeof(*cw));
		cw->rec_id = rec_id;
		cw->since = attempt_at;
	}
	cw->attempts++;
	if (summary == NULL || summary[0] == '\0')
		summary = psprintf("no transaction older than the attempt is running any more (%s)", waited);
	if (oldest == NULL)
		oldest = "";
	args[0] = dfe_int64_str(rec_id);
	args[1] = psprintf("the slot was dropped; creating it again waits for other transactions to end: attempt %d, waiting since %s, each attempt waits %d ms (the last one: %s after %ld ms); last waited for: %s",
					   cw->attempts, timestamptz_to_str(cw->since), dfe_creation_wait_ms(), waited,
					   TimestampDifferenceMilliseconds(attempt_at, now), summary);
	dfe_sql("record the slot recreation's wait",
			"UPDATE dfe_airbyte.slot_recreations SET note = $2 WHERE id = $1::bigint",
			2, args, SPI_OK_UPDATE);

	if (cw->notified_at != 0 && strcmp(cw->oldest, oldest) == 0 &&
		!TimestampDifferenceExceeds(cw->notified_at, now, (int) SLOT_RENOTIFY_MS))
		return;
	o = cJSON_Parse(data ? data : "{}");
	if (o == NULL)
		dfe_internal_error("could not build the slot recreation event");
	cJSON_AddStringToObject(o, "slot_name", slot_name);
	cJSON_AddNumberToObject(o, "recreation_id", (double) rec_id);
	cJSON_AddNumberToObject(o, "attempts", cw->attempts);
	cJSON_AddStringToObject(o, "waiting_since", timestamptz_to_str(cw->since));
	cJSON_AddNumberToObject(o, "attempt_wait_ms", dfe_creation_wait_ms());
	data = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	dfe_event("warning", "slot_recreation_waiting", slot_name,
			  psprintf("replication slot \"%s\" was dropped to be recreated, and creating it waits until every transaction that held a transaction id when it started has ended; it waits for %s; the guard goes on sampling and tries again at each check (%d attempt(s) since %s); end that transaction (COMMIT or ROLLBACK, or pg_terminate_backend(pid)) to let the recreation finish",
					   slot_name, summary, cw->attempts, timestamptz_to_str(cw->since)),
			  data);
	cw->notified_at = now;
	strlcpy(cw->oldest, oldest, sizeof(cw->oldest));
}

/* an attempt on this database did not finish in time */
static void
record_creation_wait(const char *slot_name, int64 rec_id, TimestampTz attempt_at,
					 const ErrorData *err)
{
	char	   *summary;
	char	   *oldest;
	char	   *data;

	dfe_xact_begin("dfe_airbyte slot guard");
	data = creation_blockers(attempt_at, &summary, &oldest);
	dfe_slot_note_creation_wait(slot_name, rec_id, &creation_wait, attempt_at, err->message,
								data, summary, oldest);
	dfe_xact_end();
}

/*
 * Whoever took the slot between the release and now keeps it until the next
 * check; otherwise drop it (unless it is the missing slot being created) in
 * a transaction of its own.  Returns false when taken; *exists says whether
 * the slot was there.
 */
static bool
drop_for_recreation(const char *slot_name, SlotCondition cond, bool *exists)
{
	const char *args[1] = {slot_name};
	int32		holder = 0;

	dfe_xact_begin("dfe_airbyte slot guard");
	dfe_sql("read the Airbyte slot",
			"SELECT active_pid FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
			1, args, SPI_OK_SELECT);
	*exists = SPI_processed > 0;
	if (*exists && !dfe_col_isnull(0, 1))
	{
		bool		isnull;

		holder = DatumGetInt32(dfe_col_datum(0, 1, &isnull));
	}
	if (holder != 0)
	{
		dfe_xact_end();
		ereport(LOG,
				(errcode(ERRCODE_OBJECT_IN_USE),
				 errmsg("dfe_airbyte could not recreate replication slot \"%s\" yet: process %d took it again",
						slot_name, holder),
				 errhint("The worker tries again at its next check.")));
		return false;
	}
	/* dropped slots are not rolled back: from here the recreation is open */
	if (*exists && cond != COND_MISSING)
		dfe_sql("drop the Airbyte slot",
				"SELECT pg_catalog.pg_drop_replication_slot($1)", 1, args, SPI_OK_SELECT);
	dfe_xact_end();
	return true;
}

/* in a transaction: record the recreation (of the current target) before anything is dropped */
static int64
insert_recreation(const char *slot_name, SlotCondition reason, const GuardedSlot *g,
				  const char *plugin)
{
	int64		limit = dfe_slot_limit_bytes();
	const char *args[6] = {
		slot_name, condition_names[reason],
		g->found && g->has_retained ? dfe_int64_str(g->retained) : NULL,
		limit >= 0 ? dfe_int64_str(limit) : NULL,
		plugin, dfe_target_current()
	};
	bool		isnull;

	/* with where the last sample saw Airbyte: the start of the gap */
	dfe_sql("record the slot recreation",
			"INSERT INTO dfe_airbyte.slot_recreations (target, slot_name, reason, retained_bytes, limit_bytes, plugin,\n"
			"                                          gap_from_lsn, gap_restart_lsn, gap_from_time)\n"
			"SELECT $6, $1, $2, $3::bigint, $4::bigint, $5, s.confirmed_flush_lsn, s.restart_lsn, s.sampled_at\n"
			"FROM (SELECT 1) one LEFT JOIN LATERAL (\n"
			"    SELECT x.confirmed_flush_lsn, x.restart_lsn, x.sampled_at FROM dfe_airbyte.slot_samples x\n"
			"    WHERE x.target = $6 AND x.slot_name = $1 AND x.restart_lsn IS NOT NULL ORDER BY x.id DESC LIMIT 1) s ON true\n"
			"RETURNING id",
			6, args, SPI_OK_INSERT_RETURNING);
	return DatumGetInt64(dfe_col_datum(0, 1, &isnull));
}

/* record the recreation before anything is dropped; returns its id */
static int64
open_recreation(const char *slot_name, SlotCondition reason, const GuardedSlot *g,
				const char *plugin)
{
	int64		id;

	dfe_xact_begin("dfe_airbyte slot guard");
	id = insert_recreation(slot_name, reason, g, plugin);
	dfe_xact_end();
	return id;
}

/*
 * In the transaction of the control database that follows the creation (the
 * same one for this database): mark the recreation of the current target
 * done, start the new incarnation's state, record the event.
 */
static void
finish_recreation(const char *slot_name, SlotCondition reason, const GuardedSlot *g,
				  bool seen, int64 rec_id, const char *new_lsn, bool created_new,
				  CreationWait *cw)
{
	char	   *detail;
	cJSON	   *gap = NULL;
	const char *note = NULL;
	const char *args[3];

	if (!created_new)
		note = "the slot was created by someone else meanwhile; a full re-sync is requested because it is new";
	else if (cw->rec_id == rec_id && cw->attempts > 0)
		note = psprintf("created after waiting since %s (%d attempt(s)) for other transactions to end",
						timestamptz_to_str(cw->since), cw->attempts + 1);
	args[0] = dfe_int64_str(rec_id);
	args[1] = new_lsn;
	args[2] = note;
	dfe_sql("record the slot recreation",
			"UPDATE dfe_airbyte.slot_recreations SET recreated_at = now(), new_lsn = $2::pg_lsn,\n"
			"    note = coalesce($3, note)\n"
			"WHERE id = $1::bigint\n"
			"RETURNING CASE WHEN gap_from_lsn IS NOT NULL AND new_lsn IS NOT NULL THEN\n"
			"    jsonb_build_object('from_lsn', gap_from_lsn::text, 'from_restart_lsn', gap_restart_lsn::text,\n"
			"                       'from_time', gap_from_time, 'to_lsn', new_lsn::text, 'to_time', recreated_at,\n"
			"                       'bytes', (new_lsn - gap_from_lsn)::bigint,\n"
			"                       'seconds', round(extract(epoch FROM recreated_at - gap_from_time)))::text END",
			3, args, SPI_OK_UPDATE_RETURNING);
	if (SPI_processed == 1 && !dfe_col_isnull(0, 1))
		gap = cJSON_Parse(dfe_col_text(0, 1));
	memset(cw, 0, sizeof(*cw));

	/* a new incarnation: its growth is measured from now on */
	args[0] = slot_name;
	args[1] = dfe_target_current();
	dfe_sql("reset the slot guard state",
			"INSERT INTO dfe_airbyte.slot_state AS st (target, slot_name, first_seen_at, condition, condition_since)\n"
			"VALUES ($2, $1, now(), 'ok', now())\n"
			"ON CONFLICT (target, slot_name) DO UPDATE SET first_seen_at = now(), last_active_at = NULL,\n"
			"    condition = 'ok', condition_since = now(), notified_at = NULL, notified_action = NULL",
			2, args, SPI_OK_INSERT);

	if (reason == COND_OVER_LIMIT)
		detail = psprintf("%s: it was dropped and created again, so Airbyte lost its CDC position and a full re-sync is requested",
						  g->found ? over_limit_text(slot_name, g)
						  : psprintf("replication slot \"%s\" retained more WAL than dfe_airbyte.max_slot_wal_size", slot_name));
	else if (reason == COND_LOST)
		detail = psprintf("replication slot \"%s\" was invalidated (wal_status lost); it was dropped and created again and a full re-sync is requested",
						  slot_name);
	else if (seen)
		detail = psprintf("replication slot \"%s\" no longer existed (dropped, or this server was promoted from a standby); it was created again and a full re-sync is requested%s",
						  slot_name, gap ? gap_detail(slot_name, gap) : "");
	else
		detail = psprintf("replication slot \"%s\" did not exist; it was created (dfe_airbyte.slot_limit_action = recreate) and a full re-sync is requested",
						  slot_name);
	dfe_event("warning", (reason == COND_MISSING && !seen) ? "slot_created" : "slot_recreated",
			  slot_name, detail, recreation_event_data(slot_name, g, reason, gap));
}

/* the same for a remote target's recreation (slot_remote_recreate.c), in its scope */
void
dfe_slot_recreation_done(const SlotRecreation *rec, const char *new_lsn, bool created_new,
						 CreationWait *cw)
{
	finish_recreation(rec->slot_name, (SlotCondition) rec->reason, &rec->g, rec->seen,
					  rec->rec_id, new_lsn, created_new, cw);
}

/* why a recreation ends the slot's walsender, for slot_walsender_terminated */
static const char *
recreation_why(SlotCondition reason)
{
	return reason == COND_OVER_LIMIT ? "over dfe_airbyte.max_slot_wal_size, slot_limit_action = recreate"
		: reason == COND_LOST ? "slot lost, slot_limit_action = recreate"
		: "slot missing, slot_limit_action = recreate";
}

/*
 * A remote target's recreation ended (ok) or failed to end the slot's
 * walsender (slot_remote_recreate.c): the event the local recreation
 * emits, with the same detail and data, for the current target.
 */
void
dfe_slot_recreation_terminated(const SlotRecreation *rec, bool ok)
{
	terminated_event(rec->slot_name, &rec->g, rec->g.active_pid, ok,
					 recreation_why((SlotCondition) rec->reason));
}

/*
 * Recreate the slot for cond (or finish the open recreation, whatever its
 * reason).  Returns true when the slot was (re)created; false when it has
 * to wait (held by a process, or its creation waiting for other
 * transactions): the next check goes on from where this one stopped.
 */
static bool
recreate_slot(const char *slot_name, SlotCondition cond, const GuardedSlot *g,
			  const GuardState *st)
{
	int64		rec_id = st->open_recreation;
	SlotCondition reason = rec_id ? st->open_reason : cond;
	const char *plugin = (g->found && g->plugin) ? g->plugin
		: (rec_id && st->open_plugin) ? st->open_plugin : "pgoutput";
	const char *why;
	bool		exists;
	bool		created_new;
	char	   *new_lsn = NULL;
	ErrorData  *err = NULL;
	TimestampTz attempt_at;

	why = recreation_why(reason);

	/* 1. whoever uses the slot must let go first */
	if (g->found && g->active && g->active_pid != 0 &&
		!release_slot(slot_name, g, g->active_pid, why))
		return false;

	/* 2. record the recreation before anything is dropped */
	if (rec_id == 0)
		rec_id = open_recreation(slot_name, reason, g, plugin);

	/*
	 * 3. drop, then create: an HA server keeps few spare slots, so the new
	 * slot may need the old one's place.
	 */
	if (!drop_for_recreation(slot_name, cond, &exists))
		return false;
	created_new = !exists || cond != COND_MISSING;
	if (created_new)
	{
		attempt_at = GetCurrentTimestamp();
		if (!create_slot_bounded(slot_name, plugin, g->found && g->two_phase,
								 recreate_as_failover(g), &new_lsn, &err))
		{
			record_creation_wait(slot_name, rec_id, attempt_at, err);
			return false;
		}
	}
	else
		dfe_xact_begin("dfe_airbyte slot guard");

	/* 4. writes are allowed after the create, not before: mark it done */
	finish_recreation(slot_name, reason, g, st->seen, rec_id, new_lsn, created_new, &creation_wait);
	dfe_xact_end();
	return true;
}

/* ---------- restores of another server's backup ---------- */

static TimestampTz restored_notified_at = 0;

/*
 * Inside the check's transaction: is this database a restore of another
 * server's backup that no DBA has confirmed (restore.h)?  Then the guard
 * touches nothing and says so (event when first seen and every
 * SLOT_RENOTIFY_MS); the first check ever records this server's identity.
 */
static bool
restored_from_elsewhere(const char *slot_name)
{
	char	   *recorded;

	if (dfe_identity_check(true, &recorded) != IDENTITY_OTHER)
	{
		restored_notified_at = 0;
		return false;
	}
	if (restored_notified_at == 0 ||
		TimestampDifferenceExceeds(restored_notified_at, GetCurrentTimestamp(), (int) SLOT_RENOTIFY_MS))
	{
		char	   *here = dfe_system_identifier_text();

		dfe_event("critical", "database_restored", slot_name,
				  psprintf("this database was restored from a backup of another server (system identifier %s; the slot guard's history is from %s): the slot guard recreates nothing and asks Airbyte for nothing until a DBA runs SELECT dfe_airbyte_confirm_restore()",
						   here, recorded),
				  psprintf("{\"system_identifier\": \"%s\", \"recorded_system_identifier\": \"%s\"}",
						   here, recorded));
		restored_notified_at = GetCurrentTimestamp();
	}
	return true;
}

/*
 * No recreate loop: a re-sync retains WAL for its whole re-read, so while
 * ours is pending or running, passing the limit again (or losing the slot to
 * max_slot_wal_keep_size) only warns; a missing slot is created at once
 * (there is nothing to wait for).  And at most max_slot_recreations_per_day
 * in any 24 hours.  Returns why a due recreation is held back, or NULL.
 */
static const char *
recreation_held(SlotCondition cond, const GuardState *st)
{
	if (cond != COND_MISSING && st->resync_in_flight)
		return "resync_running";
	if (st->recreations_today >= dfe_max_slot_recreations_per_day)
		return "daily_cap";
	return NULL;
}

/* the Airbyte slot's condition from a sample (elsewhere: what the name is instead, or NULL) */
static SlotCondition
judge_condition(const GuardedSlot *g, const char *elsewhere)
{
	if (!g->found)
		return elsewhere ? COND_ELSEWHERE : COND_MISSING;
	if (g->wal_status && strcmp(g->wal_status, "lost") == 0)
		return COND_LOST;
	if (dfe_slot_limit_bytes() >= 0 && g->has_retained && g->retained > dfe_slot_limit_bytes())
		return COND_OVER_LIMIT;
	return COND_OK;
}

/*
 * A remote target's Airbyte slot, sampled by slot_remote.c: inside the
 * target's scope and the check's transaction, report its condition with the
 * target's settings (warn, terminate), under the same no-loop rules as here.
 * Returns true when the slot is to be recreated: *rec says how, and its
 * slot_recreations row is open (recorded before anything is dropped);
 * slot_remote_recreate.c drops and creates it over its own connection.
 */
bool
dfe_slot_judge(const char *slot_name, const GuardedSlot *g, SlotRecreation *rec)
{
	GuardState	st;
	SlotCondition cond = judge_condition(g, NULL);
	const char *held;
	bool		recreate;

	read_state(slot_name, &st);
	recreate = dfe_slot_limit_action == SLOT_LIMIT_RECREATE &&
		(cond == COND_OVER_LIMIT || cond == COND_LOST || cond == COND_MISSING);
	held = recreate ? recreation_held(cond, &st) : NULL;
	if (held)
		recreate = false;
	if (st.open_recreation != 0 && !recreate && g->found)
		close_interrupted_recreation(st.open_recreation);
	if (!recreate)
	{
		report_condition(slot_name, cond, g, &st, NULL, held);
		return false;
	}

	memset(rec, 0, sizeof(*rec));
	rec->slot_name = pstrdup(slot_name);
	rec->reason = st.open_recreation ? st.open_reason : cond;
	rec->plugin = pstrdup((g->found && g->plugin) ? g->plugin
						  : (st.open_recreation && st.open_plugin) ? st.open_plugin : "pgoutput");
	rec->g = *g;
	rec->seen = st.seen;
	rec->missing = cond == COND_MISSING;
	rec->rec_id = st.open_recreation ? st.open_recreation
		: insert_recreation(slot_name, (SlotCondition) rec->reason, g, rec->plugin);
	return true;
}

/* ---------- the task ---------- */

long
dfe_slots_worker_task(void)
{
	const char *slot_name;
	GuardedSlot g;
	GuardState	st;
	SlotCondition cond;
	char	   *elsewhere = NULL;
	const char *held = NULL;
	bool		recreate;

	TimestampTz started = GetCurrentTimestamp();

	/* a standby never gets here (the worker starts after recovery), but be sure */
	if (RecoveryInProgress())
		return dfe_check_interval_s * 1000L;

	slot_name = pstrdup(dfe_setting_slot_name());

	/* 1. sample and decide, in one short transaction */
	dfe_xact_begin("dfe_airbyte slot guard");
	if (restored_from_elsewhere(slot_name))
	{
		dfe_xact_end();
		return dfe_check_interval_s * 1000L;
	}
	(void) sample_slots(slot_name, &g);
	read_state(slot_name, &st);

	if (!g.found)
		elsewhere = slot_elsewhere(slot_name);
	cond = judge_condition(&g, elsewhere);

	recreate = dfe_slot_limit_action == SLOT_LIMIT_RECREATE &&
		(cond == COND_OVER_LIMIT || cond == COND_LOST || cond == COND_MISSING);

	held = recreate ? recreation_held(cond, &st) : NULL;
	if (held)
		recreate = false;

	/*
	 * A recreation left open while the slot exists again: close it.  While
	 * the slot is still missing (its creation waited, then recreate was
	 * turned off) it stays open, so that no re-sync is asked for a slot that
	 * does not exist; it resumes under recreate.
	 */
	if (st.open_recreation != 0 && !recreate && g.found)
		close_interrupted_recreation(st.open_recreation);
	if (!recreate)
		report_condition(slot_name, cond, &g, &st, elsewhere, held);
	dfe_xact_end();

	/* 2. recreate in transactions of its own; the network worker asks for the re-sync */
	if (recreate && recreate_slot(slot_name, cond, &g, &st))
		dfe_wake(DFE_NET_WORKER);

	/*
	 * 3. every remote target, multiplexed: none can delay another
	 * (slot_remote.c); a hanging one costs at most one check_interval
	 */
	dfe_slot_remote_round();

	/* 4. bounded history (slot_prune.c) */
	dfe_slot_prune_if_due();

	/* a check every check_interval, however long the remote answers took */
	return Max(100L, dfe_check_interval_s * 1000L -
			   (long) ((GetCurrentTimestamp() - started) / 1000));
}

/* ---------- SQL functions ---------- */

PG_FUNCTION_INFO_V1(dfe_airbyte_slot_guard_settings);

/* dfe_airbyte_slot_guard_settings(target): the guard's settings for that target (its scope) */
Datum
dfe_airbyte_slot_guard_settings(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		values[6];
	bool		nulls[6] = {false, false, false, false, false, false};
	Interval   *inactive = palloc0(sizeof(Interval));
	DfeTargetScope *scope;
	int64		server_limit;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("dfe_airbyte_slot_guard_settings() must return a record"),
				 errhint("Call it as SELECT * FROM dfe_airbyte_slot_guard_settings().")));
	tupdesc = BlessTupleDesc(tupdesc);
	scope = dfe_target_scope_enter_arg(fcinfo, 0);

	values[0] = CStringGetTextDatum(dfe_setting_slot_name());
	if (dfe_slot_limit_bytes() >= 0)
		values[1] = Int64GetDatum(dfe_slot_limit_bytes());
	else
		nulls[1] = true;
	values[2] = Float8GetDatum(dfe_slot_warning_fraction);
	values[3] = CStringGetTextDatum(action_names[dfe_slot_limit_action]);
	/* several whole sync intervals: Airbyte's slot is idle between syncs */
	inactive->time = (int64) dfe_slot_inactive_intervals * dfe_effective_sync_interval_s() * USECS_PER_SEC;
	values[4] = IntervalPGetDatum(inactive);
	/* a remote server's max_slot_wal_keep_size as the guard last sampled it */
	server_limit = strcmp(dfe_target_current(), DFE_LOCAL_TARGET) != 0
		? dfe_target_sampled_keep_bytes() : dfe_server_slot_limit_bytes();
	if (server_limit >= 0)
		values[5] = Int64GetDatum(server_limit);
	else
		nulls[5] = true;
	if (scope)
		dfe_target_scope_leave(scope);

	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

PG_FUNCTION_INFO_V1(dfe_airbyte_check_slots_now);

/* one check's sampling of the current target, SPI connected; returns the slots sampled */
static int
sample_now(DfeTargetScope *scope)
{
	GuardedSlot g;
	GuardState	st;
	const char *slot_name = dfe_setting_slot_name();
	int			n;

	if (scope != NULL)
		return dfe_slot_sample_remote_now(scope);
	if (RecoveryInProgress())
		ereport(ERROR,
				(errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
				 errmsg("cannot sample replication slots during recovery"),
				 errhint("Run dfe_airbyte_check_slots_now() on the primary.")));
	n = sample_slots(slot_name, &g);
	read_state(slot_name, &st);
	return n;
}

/*
 * dfe_airbyte_check_slots_now(target DEFAULT 'local') → (slots, elapsed_ms,
 * buffers_hit, buffers_read): the sampling part of one worker check of the
 * target, run in the caller's transaction, with what it cost (the buffers
 * are this database's: a remote target's reads happen on its server).
 */
Datum
dfe_airbyte_check_slots_now(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		values[4];
	bool		nulls[4] = {false, false, false, false};
	BufferUsage before = pgBufferUsage;
	instr_time	start;
	instr_time	elapsed;
	const char *target = PG_NARGS() > 0 && !PG_ARGISNULL(0)
		? text_to_cstring(PG_GETARG_TEXT_PP(0)) : DFE_LOCAL_TARGET;
	DfeTargetScope *scope = NULL;
	int			n;

	DFE_REQUIRE_MATCHING_SQL();
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("dfe_airbyte_check_slots_now() must return a record"),
				 errhint("Call it as SELECT * FROM dfe_airbyte_check_slots_now().")));
	tupdesc = BlessTupleDesc(tupdesc);

	dfe_set_result_context(CurrentMemoryContext);
	INSTR_TIME_SET_CURRENT(start);
	if (strcmp(target, DFE_LOCAL_TARGET) != 0)
		scope = dfe_target_scope_enter(target);
	if (SPI_connect() != SPI_OK_CONNECT)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("dfe_airbyte could not connect to SPI"),
				 errhint("This is a bug in dfe_airbyte.")));
	n = sample_now(scope);
	SPI_finish();
	if (scope)
		dfe_target_scope_leave(scope);
	INSTR_TIME_SET_CURRENT(elapsed);
	INSTR_TIME_SUBTRACT(elapsed, start);

	values[0] = Int32GetDatum(n);
	values[1] = Float8GetDatum(INSTR_TIME_GET_MILLISEC(elapsed));
	values[2] = Int64GetDatum(pgBufferUsage.shared_blks_hit - before.shared_blks_hit);
	values[3] = Int64GetDatum(pgBufferUsage.shared_blks_read - before.shared_blks_read);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}
