/*
 * repair.c — dfe_airbyte_repair(dry_run, cancel_stuck): one
 * function for the runbook workflows services run by hand today
 * (the fix-airbyte-replication-slot and fix-airbyte-lsn runbooks).
 *
 * Four steps, each one row or more of (step, action, detail):
 *
 *   slot        missing → created, lost → dropped and created; either way
 *               one full re-sync, handed over exactly as the slot guard does
 *               it: a dfe_airbyte.slot_recreations row with resync_state
 *               'pending', which the worker's re-sync task (resync.c) turns
 *               into ONE POST /api/v1/connections/refresh.
 *   airbyte_state
 *               the slot's confirmed_flush_lsn ahead of the position Airbyte
 *               saved (config API POST /api/v1/state/get): Airbyte's Postgres
 *               source fails every sync with "Saved offset is before
 *               replication slot's confirmed lsn".  Instead of deleting rows
 *               in Airbyte's own database (fix-airbyte-lsn): one full re-sync,
 *               handed over the same way (reason airbyte_state_behind).
 *   connection  disabled by Airbyte (status inactive) → PATCH
 *               {"status":"active"}, once the slot steps found nothing left
 *               broken.
 *   job         the newest sync job running without progress (rows, bytes)
 *               for dfe_airbyte.job_stuck_after, as the worker saw it →
 *               reported; cancelled (DELETE /api/public/v1/jobs/{id}) and a
 *               new sync started only with cancel_stuck => true.
 *
 * dry_run (the default) only reads: the connection, the jobs and the saved
 * state (POST /api/v1/state/get is a read; the config API is all POSTs),
 * nothing is written here or in Airbyte.  Every step taken is an event.
 *
 * The steps act on one target (its last argument, "local" by default) in
 * its scope (target_scope.h): its settings, its connection id, its rows.
 * The slot is read through target.h (SPI for the local database, libpq for
 * a remote one, the same query); only its (re)creation differs, in one
 * place (SlotSide below):
 *
 *   local   created before anything is written in this transaction:
 *           PostgreSQL refuses to create a logical slot in a transaction
 *           that has written, so dry_run => false refuses such a one;
 *   remote  the slot guard's remote recreation (slot_remote_recreate.c),
 *           driven to its end now on the target's server: its walsender
 *           ended, the old slot dropped before the new one is created, the
 *           creation bounded by lock_timeout, a failover slot on 17+ when
 *           the old one was or the server synchronises slots.  No rule on
 *           this transaction: the slot is made on another server.
 *
 * Network steps run in subtransactions, so a failing call becomes a
 * 'failed' row and cannot undo the recorded re-sync.
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_authid.h"
#include "compat.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"

#include <cjson/cJSON.h>

#include "airbyte.h"
#include "connection.h"
#include "events.h"
#include "http.h"
#include "settings.h"
#include "shared.h"
#include "slot_guard.h"
#include "spi_xact.h"
#include "target_scope.h"
#include "version.h"

/* how long a lost slot's holder gets to let go after being terminated */
#define REPAIR_RELEASE_WAIT_MS 10000L

typedef struct Repair Repair;

/* where the local database and a remote target differ: the slot's (re)creation */
typedef struct SlotSide
{
	void		(*check_xact) (void);	/* before anything, may this transaction create it? */
	char	   *(*renew) (Repair *r);	/* drop (lost) and create the slot: its LSN */
} SlotSide;

struct Repair
{
	ReturnSetInfo *rsinfo;
	bool		dry_run;
	bool		cancel_stuck;
	const char *slot_name;
	DfeTarget  *target;			/* the service database (target.h) */
	const SlotSide *side;
	/* the slot */
	bool		slot_found;
	bool		slot_elsewhere;
	bool		slot_lost;
	bool		slot_failover;	/* a failover slot (17 and later) */
	int32		slot_pid;
	char	   *confirmed_lsn;	/* text, NULL when unknown */
	bool		slot_broken;	/* still broken after the slot step */
	bool		slot_renewed;	/* created now: a re-sync is requested */
};

static void
row(Repair *r, const char *step, const char *action, const char *detail)
{
	Datum		values[3];
	bool		nulls[3] = {false, false, false};

	values[0] = CStringGetTextDatum(step);
	values[1] = CStringGetTextDatum(action);
	values[2] = CStringGetTextDatum(detail);
	tuplestore_putvalues(r->rsinfo->setResult, r->rsinfo->setDesc, values, nulls);
}

/*
 * The caller (dfe_airbyte_admin) may read the history tables but not write
 * them, and has no REPLICATION: the function's own fixed statements (all
 * qualified, search_path pinned by the function's SET clause) run as the
 * bootstrap superuser, like a SECURITY DEFINER function's would.  An ERROR
 * restores the user with the (sub)transaction.
 */
static Oid	caller_userid;
static int	caller_sec;

static void
spi_begin(void)
{
	MemoryContext outer = CurrentMemoryContext;

	dfe_set_result_context(outer);
	if (SPI_connect() != SPI_OK_CONNECT)
		dfe_internal_error("dfe_airbyte: SPI_connect failed");
	/* what is built between here and spi_end() outlives SPI_finish */
	MemoryContextSwitchTo(outer);
	GetUserIdAndSecContext(&caller_userid, &caller_sec);
	SetUserIdAndSecContext(BOOTSTRAP_SUPERUSERID, caller_sec | SECURITY_LOCAL_USERID_CHANGE);
}

static void
spi_end(void)
{
	SetUserIdAndSecContext(caller_userid, caller_sec);
	SPI_finish();
}

/*
 * fn(arg) in a subtransaction: an ERROR becomes its text (NULL when fn
 * succeeded).  A cancel or termination is raised again: the caller asked
 * for it to stop.
 */
static char *
try_step(void (*fn) (void *), void *arg)
{
	ErrorData  *edata;

	if (dfe_catch(fn, arg, DFE_CATCH_SUBXACT | DFE_CATCH_NOT_CANCEL, CurrentMemoryContext,
				  &edata))
		return NULL;
	return dfe_http_redact(dfe_error_text(edata));
}

/* ---------- the slot ---------- */

static bool
is_true(const char *v)
{
	return v != NULL && strcmp(v, "t") == 0;
}

/*
 * On the target's server (pg_replication_slots is readable by every role);
 * failover through to_jsonb, as the column exists from 17 on only.
 */
static void
read_slot(Repair *r)
{
	const char *args[1] = {r->slot_name};
	DfeRows    *slot = dfe_target_query(r->target, "read the Airbyte slot",
										"SELECT s.slot_type OPERATOR(pg_catalog.=) 'logical'\n"
										"       AND s.database OPERATOR(pg_catalog.=) pg_catalog.current_database(),\n"
										"       s.wal_status OPERATOR(pg_catalog.=) 'lost', s.active_pid,\n"
										"       s.confirmed_flush_lsn::pg_catalog.text,\n"
										"       pg_catalog.to_jsonb(s) OPERATOR(pg_catalog.->>) 'failover'\n"
										"FROM pg_catalog.pg_replication_slots s WHERE s.slot_name OPERATOR(pg_catalog.=) $1",
										1, args);

	r->slot_found = slot->nrows > 0;
	if (!r->slot_found)
		return;
	r->slot_elsewhere = !is_true(dfe_rows_value(slot, 0, 0));
	r->slot_lost = is_true(dfe_rows_value(slot, 0, 1));
	r->slot_pid = dfe_rows_value(slot, 0, 2) ? pg_strtoint32(dfe_rows_value(slot, 0, 2)) : 0;
	r->confirmed_lsn = dfe_rows_value(slot, 0, 3) ? pstrdup(dfe_rows_value(slot, 0, 3)) : NULL;
	r->slot_failover = dfe_rows_value(slot, 0, 4) && strcmp(dfe_rows_value(slot, 0, 4), "true") == 0;
}

/* as the bootstrap superuser: the caller (dfe_airbyte_admin) has no REPLICATION */
static char *
slot_sql_as_superuser(const char *what, const char *sql, int nargs, const char **args)
{
	Oid			save_userid;
	int			save_sec;
	char	   *result = NULL;

	GetUserIdAndSecContext(&save_userid, &save_sec);
	SetUserIdAndSecContext(BOOTSTRAP_SUPERUSERID, save_sec | SECURITY_LOCAL_USERID_CHANGE);
	dfe_sql(what, sql, nargs, args, SPI_OK_SELECT);
	if (SPI_processed > 0)
		result = dfe_col_text(0, 1);
	SetUserIdAndSecContext(save_userid, save_sec);
	return result;
}

/* end the lost slot's holder and wait (interruptibly) until it let go */
static void
release_lost_slot(Repair *r)
{
	const char *args[1] = {r->slot_name};
	const char *pid[1] = {psprintf("%d", r->slot_pid)};
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), REPAIR_RELEASE_WAIT_MS);

	(void) slot_sql_as_superuser("end the slot's holder",
								 "SELECT pg_catalog.pg_terminate_backend($1::int)::text", 1, pid);
	for (;;)
	{
		dfe_sql("read the Airbyte slot",
				"SELECT active_pid FROM pg_catalog.pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL",
				1, args, SPI_OK_SELECT);
		if (SPI_processed == 0)
			return;
		if (GetCurrentTimestamp() >= deadline)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_IN_USE),
					 errmsg("replication slot \"%s\" is still in use by process %d", r->slot_name, r->slot_pid),
					 errhint("Stop the Airbyte connection's running sync, then run dfe_airbyte_repair(dry_run => false) again.")));
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 100L, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}

/* hand the full re-sync over to the worker's re-sync task (resync.c), for the current target */
static char *
request_resync(const char *slot_name, const char *reason, const char *new_lsn,
			   const char *note)
{
	const char *args[5] = {slot_name, reason, new_lsn, note, dfe_target_current()};

	dfe_sql("record the full re-sync",
			"INSERT INTO dfe_airbyte.slot_recreations (target, slot_name, reason, recreated_at, new_lsn, note)\n"
			"VALUES ($5, $1, $2, now(), $3::pg_lsn, $4) RETURNING id::text",
			5, args, SPI_OK_INSERT_RETURNING);
	return dfe_col_text(0, 1);
}

static char *
event_data(const char *slot_name, const char *lsn, const char *rec_id)
{
	cJSON	   *o = cJSON_CreateObject();
	char	   *out;

	cJSON_AddStringToObject(o, "slot_name", slot_name);
	if (lsn)
		cJSON_AddStringToObject(o, "lsn", lsn);
	if (rec_id)
		cJSON_AddStringToObject(o, "slot_recreation_id", rec_id);
	cJSON_AddStringToObject(o, "by", GetUserNameFromId(caller_userid, false));
	out = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	return out;
}

/* the local database: in this transaction, as the bootstrap superuser */
static char *
renew_local(Repair *r)
{
	const char *args[1] = {r->slot_name};
	char	   *lsn;

	spi_begin();
	if (r->slot_lost)
	{
		if (r->slot_pid != 0)
			release_lost_slot(r);
		(void) slot_sql_as_superuser("drop the Airbyte slot",
									 "SELECT pg_catalog.pg_drop_replication_slot($1)::text", 1, args);
	}
	lsn = slot_sql_as_superuser("create the Airbyte slot",
								"SELECT lsn::text FROM pg_catalog.pg_create_logical_replication_slot($1, 'pgoutput')",
								1, args);
	spi_end();
	return lsn;
}

/* PostgreSQL cannot create a logical slot in a transaction that has written */
static void
refuse_written_xact(void)
{
	if (GetTopTransactionIdIfAny() != InvalidTransactionId)
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("dfe_airbyte_repair(dry_run => false) must run in a transaction that has not written anything"),
				 errdetail("PostgreSQL cannot create a logical replication slot in a transaction that has written."),
				 errhint("Run SELECT * FROM dfe_airbyte_repair(dry_run => false) on its own.")));
}

/* a remote target: the guard's remote recreation, now, on the target's connection */
static char *
renew_remote(Repair *r)
{
	SlotRecreation rec = {0};
	char	   *why;
	int			code;
	char	   *lsn;

	rec.slot_name = unconstify(char *, r->slot_name);
	rec.plugin = "pgoutput";
	rec.missing = !r->slot_found;
	rec.g.found = r->slot_found;
	rec.g.active = r->slot_pid != 0;
	rec.g.active_pid = r->slot_pid;
	rec.g.failover = r->slot_failover;
	lsn = dfe_rr_run_now(&rec, dfe_target_conn(r->target), dfe_target_name(r->target), &why, &code);
	if (lsn == NULL)
		ereport(ERROR,
				(errcode(code),
				 errmsg("could not %s replication slot \"%s\" on target \"%s\": %s",
						r->slot_lost ? "recreate" : "create", r->slot_name, dfe_target_name(r->target), why),
				 errdetail("Nothing was recorded; the slot is missing or lost on the target until a repair or the slot guard creates it."),
				 errhint("Fix the cause, then run SELECT * FROM dfe_airbyte_repair(dry_run => false, target => '%s') again.",
						 dfe_target_name(r->target))));
	return lsn;
}

static const SlotSide local_side = {refuse_written_xact, renew_local};
static const SlotSide remote_side = {NULL, renew_remote};

static void
repair_slot(Repair *r)
{
	const char *what = r->slot_lost ? "recreated" : "created";
	char	   *lsn;
	char	   *rec_id;

	read_slot(r);
	if (r->slot_found && r->slot_elsewhere)
	{
		r->slot_broken = true;
		row(r, "slot", "elsewhere",
			psprintf("the name \"%s\" belongs to a physical slot or a slot of another database: not touched; set dfe_airbyte.slot_name to the Airbyte slot of this database",
					 r->slot_name));
		return;
	}
	if (r->slot_found && !r->slot_lost)
	{
		row(r, "slot", "ok", psprintf("replication slot \"%s\" exists (confirmed_flush_lsn %s)", r->slot_name,
									  r->confirmed_lsn ? r->confirmed_lsn : "not yet set"));
		return;
	}
	what = r->slot_lost ? "recreated" : "created";
	if (r->dry_run)
	{
		r->slot_broken = true;
		row(r, "slot", r->slot_lost ? "would_recreate" : "would_create",
			psprintf("replication slot \"%s\" is %s: it would be %s (pgoutput) and one full re-sync requested from Airbyte",
					 r->slot_name, r->slot_lost ? "lost (wal_status lost)" : "missing", what));
		return;
	}

	/* before anything is written in this transaction */
	lsn = r->side->renew(r);
	spi_begin();
	rec_id = request_resync(r->slot_name, r->slot_lost ? "lost" : "missing", lsn,
							"dfe_airbyte_repair()");
	dfe_event("warning", r->slot_lost ? "repair_slot_recreated" : "repair_slot_created", r->slot_name,
			  psprintf("dfe_airbyte_repair(): replication slot \"%s\" was %s, so it was %s at %s; one full re-sync is requested from Airbyte (slot_recreations id %s)",
					   r->slot_name, r->slot_lost ? "lost" : "missing", what, lsn, rec_id),
			  event_data(r->slot_name, lsn, rec_id));
	spi_end();
	r->slot_renewed = true;
	r->confirmed_lsn = lsn;
	row(r, "slot", what,
		psprintf("replication slot \"%s\" %s at %s; the worker asks Airbyte for one full re-sync (dfe_airbyte.slot_recreations id %s, full_resync_started in dfe_airbyte.events)",
				 r->slot_name, what, lsn, rec_id));
}

/* ---------- Airbyte's saved position ---------- */

/*
 * The Debezium offset of Airbyte's Postgres source, wherever the state type
 * puts it: {"state": {"[\"db\",{\"server\":\"db\"}]": "{\"lsn\":N,...}"}}
 * under globalState.shared_state (stateType global) or state.cdc_state
 * (legacy).  The value is a JSON text or an object; "lsn" is the position
 * the source compares with the slot's confirmed_flush_lsn
 * (PostgresDebeziumStateUtil.isSavedOffsetAfterReplicationSlotLSN:
 * savedOffset >= confirmed_flush_lsn), lsn_commit the fallback.
 */
static bool
find_offset_lsn(cJSON *node, int depth, uint64 *lsn)
{
	cJSON	   *child;

	if (node == NULL || depth > 8)
		return false;
	if (cJSON_IsString(node) && strchr(node->valuestring, '{'))
	{
		cJSON	   *inner = cJSON_Parse(node->valuestring);
		bool		found = inner && find_offset_lsn(inner, depth + 1, lsn);

		if (inner)
			cJSON_Delete(inner);
		return found;
	}
	if (cJSON_IsObject(node))
	{
		const char *keys[2] = {"lsn", "lsn_commit"};

		for (int i = 0; i < 2; i++)
		{
			cJSON	   *v = cJSON_GetObjectItemCaseSensitive(node, keys[i]);

			if (cJSON_IsNumber(v) && v->valuedouble >= 0)
			{
				*lsn = (uint64) v->valuedouble;
				return true;
			}
		}
	}
	if (cJSON_IsObject(node) || cJSON_IsArray(node))
		cJSON_ArrayForEach(child, node)
			if (find_offset_lsn(child, depth + 1, lsn))
			return true;
	return false;
}

typedef struct SavedState
{
	bool		found;
	uint64		lsn;
	char	   *state_type;
} SavedState;

static void
read_state_fn(void *arg)
{
	SavedState *st = arg;
	cJSON	   *body = cJSON_CreateObject();
	cJSON	   *answer;
	cJSON	   *t;

	cJSON_AddStringToObject(body, "connectionId", dfe_setting_connection_id());
	answer = dfe_airbyte_request("the Airbyte saved state read", "POST", "/api/v1/state/get",
							 cJSON_PrintUnformatted(body));
	cJSON_Delete(body);
	t = cJSON_GetObjectItemCaseSensitive(answer, "stateType");
	st->state_type = cJSON_IsString(t) ? pstrdup(t->valuestring) : pstrdup("not_set");
	/* shared_state is the real wire name (airbyte-platform config.yaml GlobalState) */
	st->found = strcmp(st->state_type, "not_set") != 0 &&
		(find_offset_lsn(cJSON_GetObjectItemCaseSensitive(answer, "globalState"), 0, &st->lsn) ||
		 find_offset_lsn(cJSON_GetObjectItemCaseSensitive(answer, "state"), 0, &st->lsn));
	cJSON_Delete(answer);
}

static char *
lsn_text(uint64 lsn)
{
	return psprintf("%X/%X", (uint32) (lsn >> 32), (uint32) lsn);
}

typedef struct JobRead
{
	int64		id;
	AirbyteJob	job;
} JobRead;

static void
read_job_fn(void *arg)
{
	JobRead    *jr = arg;

	dfe_airbyte_get_job(jr->id, &jr->job);
}

/* a re-sync already handed over or running: never ask twice */
static bool
resync_under_way(Repair *r, const char *step)
{
	char	   *pending;
	char	   *job;

	const char *args[1] = {dfe_target_current()};

	spi_begin();
	dfe_sql("read pending re-syncs",
			"SELECT (SELECT count(*) FROM dfe_airbyte.slot_recreations WHERE target = $1 AND resync_state = 'pending')::text,\n"
			"       (SELECT resync_job_id::text FROM dfe_airbyte.slot_recreations\n"
			"         WHERE target = $1 AND resync_state = 'started' AND resync_job_id IS NOT NULL ORDER BY id DESC LIMIT 1)",
			1, args, SPI_OK_SELECT);
	pending = dfe_col_text(0, 1);
	job = dfe_col_text(0, 2);
	spi_end();
	if (strcmp(pending, "0") != 0)
	{
		row(r, step, "resync_pending",
			"a full re-sync is already handed over to the worker (dfe_airbyte.slot_recreations, resync_state pending): it is asked for once, not again");
		return true;
	}
	if (job)
	{
		JobRead		jr = {0};
		char	   *err;

		jr.id = strtoi64(job, NULL, 10);
		err = try_step(read_job_fn, &jr);
		if (err == NULL && dfe_airbyte_job_active(jr.job.status))
		{
			row(r, step, "resync_running",
				psprintf("the full re-sync (Airbyte job %s) is still %s: Airbyte's saved position moves when it ends",
						 job, jr.job.status));
			return true;
		}
	}
	return false;
}

static void
repair_state(Repair *r)
{
	SavedState	st = {0};
	char	   *err;
	uint64		confirmed;
	uint32		hi,
				lo;
	char	   *rec_id;
	char	   *detail;

	if (r->slot_renewed)
	{
		row(r, "airbyte_state", "skipped",
			"the full re-sync requested for the new slot resets Airbyte's saved position");
		return;
	}
	if (!r->slot_found || r->slot_elsewhere || r->slot_lost || r->confirmed_lsn == NULL)
	{
		row(r, "airbyte_state", "skipped", "no usable slot to compare Airbyte's saved position with");
		return;
	}
	if (resync_under_way(r, "airbyte_state"))
		return;
	err = try_step(read_state_fn, &st);
	if (err)
	{
		row(r, "airbyte_state", "failed", psprintf("could not read Airbyte's saved state: %s", err));
		return;
	}
	if (!st.found)
	{
		row(r, "airbyte_state", "no_state",
			psprintf("Airbyte has saved no CDC position for the connection (stateType %s): its next sync starts from the slot",
					 st.state_type));
		return;
	}
	if (sscanf(r->confirmed_lsn, "%X/%X", &hi, &lo) != 2)
		dfe_internal_error("dfe_airbyte: unreadable confirmed_flush_lsn \"%s\"", r->confirmed_lsn);
	confirmed = ((uint64) hi << 32) | lo;
	if (st.lsn >= confirmed)
	{
		row(r, "airbyte_state", "ok",
			psprintf("Airbyte's saved position %s is not behind the slot's confirmed_flush_lsn %s",
					 lsn_text(st.lsn), r->confirmed_lsn));
		return;
	}
	detail = psprintf("the slot's confirmed_flush_lsn %s is ahead of the position Airbyte saved (%s), so every sync fails with \"Saved offset is before replication slot's confirmed lsn\"",
					  r->confirmed_lsn, lsn_text(st.lsn));
	if (r->dry_run)
	{
		row(r, "airbyte_state", "would_resync",
			psprintf("%s: one full re-sync would be requested (instead of deleting Airbyte's state in its database)", detail));
		return;
	}
	spi_begin();
	rec_id = request_resync(r->slot_name, "airbyte_state_behind", NULL,
							psprintf("dfe_airbyte_repair(): Airbyte's saved position %s is behind confirmed_flush_lsn %s",
									 lsn_text(st.lsn), r->confirmed_lsn));
	dfe_event("warning", "repair_full_resync_requested", r->slot_name,
			  psprintf("dfe_airbyte_repair(): %s; one full re-sync is requested (slot_recreations id %s)", detail, rec_id),
			  event_data(r->slot_name, r->confirmed_lsn, rec_id));
	spi_end();
	row(r, "airbyte_state", "resync_requested",
		psprintf("%s: the worker asks Airbyte for one full re-sync (dfe_airbyte.slot_recreations id %s)", detail, rec_id));
}

/* ---------- the connection ---------- */

static void
read_connection_fn(void *arg)
{
	dfe_connection_read((LiveConnection *) arg);
}

static void
enable_fn(void *arg)
{
	dfe_connection_enable();
}

static void
repair_connection(Repair *r)
{
	LiveConnection live;
	char	   *err = try_step(read_connection_fn, &live);

	if (err)
	{
		row(r, "connection", "failed", psprintf("could not read the Airbyte connection: %s", err));
		return;
	}
	if (!dfe_connection_disabled(live.status))
	{
		row(r, "connection", "ok", psprintf("the Airbyte connection is %s", live.status ? live.status : "active"));
		return;
	}
	if (strcmp(live.status, "deprecated") == 0)
	{
		row(r, "connection", "deprecated",
			"the Airbyte connection is deprecated (deleted): it cannot be re-enabled; create a new one and set dfe_airbyte.connection_id");
		return;
	}
	if (r->slot_broken && !r->dry_run)
	{
		row(r, "connection", "not_enabled",
			"the Airbyte connection is inactive, but the slot is still broken: it is re-enabled once the slot is repaired");
		return;
	}
	if (r->dry_run)
	{
		row(r, "connection", "would_enable",
			r->slot_broken ? "the Airbyte connection is inactive: it would be re-enabled (PATCH status active) after the slot repair"
			: "the Airbyte connection is inactive: it would be re-enabled (PATCH status active)");
		return;
	}
	err = try_step(enable_fn, NULL);
	if (err)
	{
		row(r, "connection", "failed", psprintf("could not re-enable the Airbyte connection: %s", err));
		return;
	}
	spi_begin();
	dfe_event("info", "repair_connection_enabled", dfe_setting_connection_id(),
			  "dfe_airbyte_repair(): the Airbyte connection was inactive and was re-enabled (status active)", NULL);
	spi_end();
	row(r, "connection", "enabled", "the Airbyte connection was inactive and is active again: Airbyte syncs it at the next scheduled time");
}

/* ---------- a stuck job ---------- */

typedef struct LastJob
{
	bool		found;
	AirbyteJob	job;
} LastJob;

static void
last_job_fn(void *arg)
{
	LastJob    *lj = arg;

	lj->found = dfe_airbyte_last_job("sync", &lj->job);
}

static void
cancel_fn(void *arg)
{
	cJSON	   *answer = dfe_airbyte_request("the Airbyte job cancel", "DELETE",
										 psprintf("/api/public/v1/jobs/" INT64_FORMAT, *(int64 *) arg), NULL);

	cJSON_Delete(answer);
}

static void
start_fn(void *arg)
{
	bool		running;

	*(int64 *) arg = dfe_airbyte_api_start_sync(&running);
}

/* without progress since when, as the worker recorded it; NULL when it moved */
static char *
stuck_since(const AirbyteJob *job)
{
	const char *args[5] = {
		dfe_int64_str(job->job_id),
		job->rows_synced >= 0 ? dfe_int64_str(job->rows_synced) : NULL,
		job->bytes_synced >= 0 ? dfe_int64_str(job->bytes_synced) : NULL,
		psprintf("%d", dfe_job_stuck_after_s),
		dfe_target_current()
	};
	char	   *since = NULL;

	spi_begin();
	dfe_sql("read the job progress",
			"SELECT progress_since::text FROM dfe_airbyte.connection_watch\n"
			"WHERE target = $5 AND progress_job_id = $1::bigint AND progress_rows IS NOT DISTINCT FROM $2::bigint\n"
			"  AND progress_bytes IS NOT DISTINCT FROM $3::bigint\n"
			"  AND progress_since < now() - make_interval(secs => $4::int)",
			5, args, SPI_OK_SELECT);
	if (SPI_processed > 0)
		since = dfe_col_text(0, 1);
	spi_end();
	return since;
}

static void
repair_job(Repair *r)
{
	LastJob		lj = {0};
	char	   *err = try_step(last_job_fn, &lj);
	char	   *since;
	int64		id;
	int64		new_id = 0;

	if (err)
	{
		row(r, "job", "failed", psprintf("could not read the last Airbyte sync job: %s", err));
		return;
	}
	if (!lj.found || !dfe_airbyte_job_active(lj.job.status))
	{
		row(r, "job", "ok", lj.found ? psprintf("no sync job running (job " INT64_FORMAT " %s)", lj.job.job_id, lj.job.status)
			: "no sync job yet");
		return;
	}
	id = lj.job.job_id;
	since = stuck_since(&lj.job);
	if (since == NULL)
	{
		row(r, "job", "running",
			psprintf("sync job " INT64_FORMAT " is %s and has made progress within dfe_airbyte.job_stuck_after (%d s), as far as the worker saw",
					 id, lj.job.status, dfe_job_stuck_after_s));
		return;
	}
	if (!r->cancel_stuck || r->dry_run)
	{
		row(r, "job", r->cancel_stuck ? "would_cancel" : "stuck",
			psprintf("sync job " INT64_FORMAT " is %s without progress since %s (dfe_airbyte.job_stuck_after = %d s)%s",
					 id, lj.job.status, since, dfe_job_stuck_after_s,
					 r->cancel_stuck ? ": it would be cancelled and a new sync started"
					 : "; dfe_airbyte_repair(dry_run => false, cancel_stuck => true) cancels it and starts a new sync"));
		return;
	}
	err = try_step(cancel_fn, &id);
	if (err)
	{
		row(r, "job", "failed", psprintf("could not cancel sync job " INT64_FORMAT ": %s", id, err));
		return;
	}
	spi_begin();
	dfe_event("warning", "repair_job_cancelled", psprintf("job " INT64_FORMAT, id),
			  psprintf("dfe_airbyte_repair(): sync job " INT64_FORMAT " made no progress since %s and was cancelled", id, since),
			  NULL);
	spi_end();
	row(r, "job", "cancelled", psprintf("sync job " INT64_FORMAT " was cancelled (no progress since %s)", id, since));
	err = try_step(start_fn, &new_id);
	if (err)
	{
		row(r, "job", "failed", psprintf("could not start a new sync: %s; Airbyte starts one at the next scheduled time", err));
		return;
	}
	spi_begin();
	dfe_event("info", "repair_sync_started", psprintf("job " INT64_FORMAT, new_id),
			  psprintf("dfe_airbyte_repair(): sync job " INT64_FORMAT " started in place of the cancelled job " INT64_FORMAT, new_id, id),
			  NULL);
	spi_end();
	row(r, "job", "restarted", psprintf("sync job " INT64_FORMAT " started in place of job " INT64_FORMAT, new_id, id));
}

/* ---------- the function ---------- */

PG_FUNCTION_INFO_V1(dfe_airbyte_repair);

Datum
dfe_airbyte_repair(PG_FUNCTION_ARGS)
{
	Repair		r = {0};
	const char *target;
	DfeTargetScope *scope;

	DFE_REQUIRE_MATCHING_SQL();
	if (RecoveryInProgress())
		ereport(ERROR,
				(errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
				 errmsg("dfe_airbyte_repair() cannot run during recovery"),
				 errhint("Run it on the primary.")));
	r.dry_run = PG_GETARG_BOOL(0);
	r.cancel_stuck = PG_GETARG_BOOL(1);
	target = PG_NARGS() > 2 ? text_to_cstring(PG_GETARG_TEXT_PP(2)) : DFE_LOCAL_TARGET;
	scope = dfe_target_scope_enter(target);
	r.slot_name = pstrdup(dfe_setting_slot_name());
	r.target = dfe_target_scope_target(scope);
	r.side = dfe_target_is_local(r.target) ? &local_side : &remote_side;
	if (!r.dry_run && r.side->check_xact)
		r.side->check_xact();
	InitMaterializedSRF(fcinfo, 0);
	r.rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	repair_slot(&r);
	if (!dfe_airbyte_configured())
	{
		row(&r, "airbyte", "not_configured",
			"the Airbyte settings are not all set (see dfe_airbyte.config_problems): Airbyte's saved position, the connection and its jobs were not checked");
		dfe_target_scope_leave(scope);
		return (Datum) 0;
	}
	repair_state(&r);
	repair_connection(&r);
	repair_job(&r);
	dfe_target_scope_leave(scope);
	return (Datum) 0;
}
