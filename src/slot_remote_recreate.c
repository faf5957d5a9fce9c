/*
 * slot_remote_recreate.c — slot_limit_action = recreate for a remote
 * target (README, "Targets"; docs/design.md, "Targets").
 *
 * dfe_slot_judge() (slots.c) decides it and records the recreation in
 * dfe_airbyte.slot_recreations, with the target, before anything is
 * dropped; this file then drives the steps on the target over a connection
 * of their own, kept next to the sample connection and driven by the same
 * non-blocking loop (target_conn.h), so that no step ever holds up the
 * guard's other targets:
 *
 *   terminate  end the walsender that holds the slot (pg_signal_backend);
 *   look       who holds the slot now; whether the server synchronises
 *              slots (PostgreSQL 17's sync_replication_slots: the new slot
 *              is then a failover slot); lock_timeout for this session;
 *   pause      a short sleep on the target (not here) while a terminated
 *              walsender lets go, then look again, for at most one
 *              check_interval (the next check resumes);
 *   drop       the old slot first: an Azure HA server keeps few spare slots;
 *   create     with a bounded wait: creating a logical slot waits for every
 *              transaction that held a transaction id when it started
 *              (SnapBuildWaitSnapshot in PostgreSQL's
 *              src/backend/replication/logical/snapbuild.c), and obeys
 *              lock_timeout while it does;
 *   blockers   when the create ran out of time: what it waited for, for the
 *              slot_recreation_waiting event; the recreation stays open and
 *              the next check resumes it, as for the local database.
 *
 * The full re-sync is asked for by the network worker (resync.c), for the
 * recreation's target and with that target's connection id.
 *
 * dfe_airbyte_repair() (repair.c) runs the same steps for a remote target
 * through dfe_rr_run_now(): driven to their end at once on the target's
 * connection instead of across the guard's checks, and recorded by the
 * caller, in its own transaction, instead of here.
 */
#include "postgres.h"

#include "access/xact.h"
#include "miscadmin.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "settings.h"
#include "shared.h"
#include "slot_guard.h"
#include "slots.h"
#include "spi_xact.h"
#include "target_conn.h"
#include "target_scope.h"

typedef enum RecreationStep
{
	RR_NONE, RR_TERMINATE, RR_LOOK, RR_PAUSE, RR_DROP, RR_CREATE, RR_BLOCKERS
} RecreationStep;

struct RemoteRecreation
{
	MemoryContext cxt;			/* the recreation's own; reset at each start */
	SlotRecreation rec;
	bool		kept;			/* rec is to be started */
	RecreationStep step;
	bool		failover;		/* create a failover slot */
	bool		exists;			/* the slot was there at the look */
	int			looks;
	TimestampTz attempt_at;		/* the create's start */
	char	   *waited;			/* the create's error */
	CreationWait cw;			/* kept across checks */
	/* dfe_rr_run_now(): the caller records the end, from these */
	bool		now;
	char	   *new_lsn;		/* created at; NULL: not created */
	char	   *why;			/* why not: the step's error, the holder, the blockers */
	int			why_code;		/* its ERRCODE */
};

/* who holds the slot, whether slots are synchronised; this session's lock_timeout */
static const char *const look_sql =
"SELECT (SELECT s.active_pid FROM pg_catalog.pg_replication_slots s\n"
"        WHERE s.slot_name OPERATOR(pg_catalog.=) $1),\n"
"       EXISTS (SELECT 1 FROM pg_catalog.pg_replication_slots s WHERE s.slot_name OPERATOR(pg_catalog.=) $1),\n"
"       coalesce(pg_catalog.current_setting('sync_replication_slots', true), 'off'),\n"
"       pg_catalog.set_config('lock_timeout', $2, false)";

RemoteRecreation *
dfe_rr_create(MemoryContext parent)
{
	RemoteRecreation *rr = MemoryContextAllocZero(parent, sizeof(RemoteRecreation));

	rr->cxt = AllocSetContextCreate(parent, "dfe_airbyte remote slot recreation",
									ALLOCSET_SMALL_SIZES);
	return rr;
}

bool
dfe_rr_busy(RemoteRecreation *rr)
{
	return rr->step != RR_NONE;
}

static TimestampTz
step_deadline(int extra_ms)
{
	return TimestampTzPlusMilliseconds(GetCurrentTimestamp(), dfe_target_timeout_ms + extra_ms);
}

static void
submit(RemoteRecreation *rr, TargetConn *rc, RecreationStep step)
{
	const char *slot = rr->rec.slot_name;

	rr->step = step;
	switch (step)
	{
		case RR_TERMINATE:
			{
				const char *args[1] = {psprintf("%d", rr->rec.g.active_pid)};

				dfe_tc_submit(rc, "SELECT pg_catalog.pg_terminate_backend($1::pg_catalog.int4)",
						  1, args, step_deadline(0));
				break;
			}
		case RR_LOOK:
			{
				const char *args[2] = {slot, psprintf("%d", dfe_creation_wait_ms())};

				dfe_tc_submit(rc, look_sql, 2, args, step_deadline(0));
				break;
			}
		case RR_PAUSE:
			dfe_tc_submit(rc, "SELECT pg_catalog.pg_sleep(0.2)", 0, NULL, step_deadline(200));
			break;
		case RR_DROP:
			dfe_tc_submit(rc, "SELECT pg_catalog.pg_drop_replication_slot($1)", 1, &slot,
					  step_deadline(0));
			break;
		case RR_CREATE:
			{
				const char *args[4] = {slot, rr->rec.plugin,
					rr->rec.g.found && rr->rec.g.two_phase ? "true" : "false",
				rr->failover ? "true" : "false"};
				bool		v17 = dfe_tc_server_version(rc) >= 170000;

				rr->attempt_at = GetCurrentTimestamp();
				dfe_tc_submit(rc, v17
						  ? "SELECT lsn::pg_catalog.text FROM pg_catalog.pg_create_logical_replication_slot($1, $2, false, $3::pg_catalog.bool, $4::pg_catalog.bool)"
						  : "SELECT lsn::pg_catalog.text FROM pg_catalog.pg_create_logical_replication_slot($1, $2, false, $3::pg_catalog.bool)",
						  v17 ? 4 : 3, args, step_deadline(dfe_creation_wait_ms()));
				break;
			}
		case RR_BLOCKERS:
			{
				const char *args[1] = {timestamptz_to_str(rr->attempt_at)};

				dfe_tc_submit(rc, dfe_creation_blockers_sql, 1, args, step_deadline(0));
				break;
			}
		case RR_NONE:
			break;
	}
}

/*
 * Keeps the recreation dfe_slot_judge() decided, in the check's transaction
 * (its strings are SPI's, gone at the commit); dfe_rr_start() starts it
 * once the transaction with its slot_recreations row is committed.  NULL
 * forgets one kept by a check whose transaction did not commit.
 */
void
dfe_rr_keep(RemoteRecreation *rr, const SlotRecreation *rec)
{
	MemoryContext old;

	if (rr->step != RR_NONE)
		return;					/* one at a time; this one resumes the open row */
	rr->kept = false;
	if (rec == NULL)
		return;
	MemoryContextReset(rr->cxt);
	rr->new_lsn = rr->why = NULL;
	rr->why_code = 0;
	old = MemoryContextSwitchTo(rr->cxt);
	rr->rec = *rec;
	rr->rec.slot_name = pstrdup(rec->slot_name);
	rr->rec.plugin = pstrdup(rec->plugin);
	rr->rec.g.plugin = rec->g.plugin ? pstrdup(rec->g.plugin) : NULL;
	rr->rec.g.wal_status = rec->g.wal_status ? pstrdup(rec->g.wal_status) : NULL;
	MemoryContextSwitchTo(old);
	rr->kept = true;
}

/* starts the kept recreation: its first step is submitted on rc */
void
dfe_rr_start(RemoteRecreation *rr, TargetConn *rc)
{
	const SlotRecreation *rec = &rr->rec;

	if (!rr->kept || rr->step != RR_NONE)
		return;
	rr->kept = false;
	rr->looks = 0;
	rr->failover = rec->g.found && rec->g.failover;
	if (rr->cw.rec_id != rec->rec_id)
		memset(&rr->cw, 0, sizeof(rr->cw));
	submit(rr, rc, rec->g.found && rec->g.active && rec->g.active_pid != 0 ? RR_TERMINATE : RR_LOOK);
}

static const char *
value(TargetConn *rc, int col)
{
	PGresult   *res = dfe_tc_result(rc);

	if (PQntuples(res) < 1 || PQnfields(res) <= col || PQgetisnull(res, 0, col))
		return NULL;
	return PQgetvalue(res, 0, col);
}

/* what to do after the look: wait for the holder, drop, create, or nothing to create */
static RecreationStep
after_look(RemoteRecreation *rr, TargetConn *rc, const char *target)
{
	const char *holder = value(rc, 0);
	const char *sync = value(rc, 2);

	rr->exists = value(rc, 1) && strcmp(value(rc, 1), "t") == 0;
	rr->failover = rr->failover || (sync && strcmp(sync, "on") == 0);
	if (holder != NULL)
	{
		/* within one check: the next one resumes the open recreation */
		if (++rr->looks * 200L < (rr->now ? SLOT_RELEASE_WAIT_MS
								  : Min(SLOT_RELEASE_WAIT_MS, dfe_check_interval_s * 1000L)))
			return RR_PAUSE;
		rr->why = MemoryContextStrdup(rr->cxt, psprintf("process %s still uses it", holder));
		rr->why_code = ERRCODE_OBJECT_IN_USE;
		ereport(rr->now ? DEBUG1 : LOG,
				(errcode(ERRCODE_OBJECT_IN_USE),
				 errmsg("dfe_airbyte could not recreate replication slot \"%s\" of target \"%s\" yet: process %s still uses it",
						rr->rec.slot_name, target, holder),
				 errhint("The guard tries again at its next check; stop the Airbyte connection if this repeats.")));
		return RR_NONE;
	}
	if (rr->exists && !rr->rec.missing)
		return RR_DROP;
	return RR_CREATE;
}

/* dfe_rr_run_now(): what the caller needs to record or report the end */
static void
keep_end(RemoteRecreation *rr, TargetConn *rc, bool created)
{
	bool		done = dfe_tc_state(rc) == TC_DONE;

	if (created)
		rr->new_lsn = MemoryContextStrdup(rr->cxt, value(rc, 0));
	else if (rr->step == RR_LOOK)
	{
		rr->why = "it was created by someone else meanwhile (the slot guard?)";
		rr->why_code = ERRCODE_DUPLICATE_OBJECT;
	}
	else
	{
		rr->why = psprintf("creating it waited longer than %d ms for other transactions to end (%s); it waits for: %s",
						   dfe_creation_wait_ms(), rr->waited,
						   done && value(rc, 1) && value(rc, 1)[0] ? value(rc, 1) : "no transaction any more");
		rr->why_code = ERRCODE_LOCK_NOT_AVAILABLE;
	}
}

/* the control database's side of a finished step, in the target's scope and a transaction */
static void
record_step(RemoteRecreation *rr, TargetConn *rc, const char *target, bool created)
{
	DfeTargetScope *scope;

	if (rr->now)
	{
		keep_end(rr, rc, created);
		return;
	}
	dfe_xact_begin("dfe_airbyte slot guard");
	scope = dfe_target_scope_enter(target);
	if (created || rr->step == RR_LOOK)
		dfe_slot_recreation_done(&rr->rec, created ? value(rc, 0) : NULL, created, &rr->cw);
	else
		dfe_slot_note_creation_wait(rr->rec.slot_name, rr->rec.rec_id, &rr->cw, rr->attempt_at,
									rr->waited,
									dfe_tc_state(rc) == TC_DONE ? value(rc, 0) : NULL,
									dfe_tc_state(rc) == TC_DONE ? value(rc, 1) : NULL,
									dfe_tc_state(rc) == TC_DONE ? value(rc, 2) : NULL);
	dfe_target_scope_leave(scope);
	dfe_xact_end();
	if (created || rr->step == RR_LOOK)
		dfe_wake(DFE_NET_WORKER);
}

/*
 * The terminate step's answer: pg_terminate_backend() true, false (the
 * process was gone), or an error (no right to signal it); the same
 * slot_walsender_terminated event as the local recreation's, for the target.
 */
static void
record_terminate(RemoteRecreation *rr, TargetConn *rc, const char *target)
{
	DfeTargetScope *scope;
	const char *v = dfe_tc_state(rc) == TC_DONE ? value(rc, 0) : NULL;

	dfe_xact_begin("dfe_airbyte slot guard");
	scope = dfe_target_scope_enter(target);
	dfe_slot_recreation_terminated(&rr->rec, v != NULL && strcmp(v, "t") == 0);
	dfe_target_scope_leave(scope);
	dfe_xact_end();
}

/* a step failed: the recreation stays open and the next check resumes it */
static void
step_failed(RemoteRecreation *rr, TargetConn *rc, const char *target)
{
	rr->why = MemoryContextStrdup(rr->cxt, dfe_tc_error(rc));
	rr->why_code = dfe_tc_errcode(rc);
	ereport(rr->now ? DEBUG1 : WARNING,
			(errcode(dfe_tc_errcode(rc)),
			 errmsg("dfe_airbyte slot guard could not recreate replication slot \"%s\" of target \"%s\": %s",
					rr->rec.slot_name, target, dfe_tc_error(rc)),
			 errhint("The guard tries again at its next check; dfe_airbyte.slot_recreations shows the open recreation.")));
	rr->step = RR_NONE;
}

/*
 * rc finished its step (answer or failure): record what it means and submit
 * the next one, or end (rr busy no more).  Outside a transaction.
 */
void
dfe_rr_advance(RemoteRecreation *rr, TargetConn *rc, const char *target)
{
	bool		ok = dfe_tc_state(rc) == TC_DONE;
	RecreationStep next;

	if (rr->step == RR_CREATE && !ok &&
		(dfe_tc_errcode(rc) == ERRCODE_LOCK_NOT_AVAILABLE || dfe_tc_errcode(rc) == ERRCODE_QUERY_CANCELED ||
		 dfe_tc_timed_out(rc)))
	{
		rr->waited = MemoryContextStrdup(rr->cxt, dfe_tc_error(rc));
		submit(rr, rc, RR_BLOCKERS);
		return;
	}
	if (rr->step == RR_BLOCKERS)
	{
		record_step(rr, rc, target, false);
		rr->step = RR_NONE;
		return;
	}
	if (rr->step == RR_TERMINATE)
		record_terminate(rr, rc, target);
	if (!ok && rr->step != RR_TERMINATE)
	{
		step_failed(rr, rc, target);
		return;
	}
	switch (rr->step)
	{
		case RR_LOOK:
			next = after_look(rr, rc, target);
			/* the missing slot was created by someone else meanwhile: it is new all the same */
			if (next == RR_CREATE && rr->exists)
			{
				record_step(rr, rc, target, false);
				next = RR_NONE;
			}
			break;
		case RR_CREATE:
			record_step(rr, rc, target, true);
			next = RR_NONE;
			break;
		case RR_DROP:
			next = RR_CREATE;
			break;
		default:				/* terminate, pause */
			next = RR_LOOK;
			break;
	}
	if (next == RR_NONE)
		rr->step = RR_NONE;
	else
		submit(rr, rc, next);
}

/* a step's error was caught (a WARNING): the next check resumes the open recreation */
void
dfe_rr_abandon(RemoteRecreation *rr)
{
	rr->step = RR_NONE;
}

/*
 * dfe_airbyte_repair()'s recreation of a remote target's slot (rec: the
 * slot as the repair read it, rec_id 0): the guard's steps, driven to their
 * end now on rc, in the caller's memory context.  Returns the new slot's
 * LSN; NULL with *why and *why_code when it was not created (a step failed,
 * the slot stayed in use, the creation ran out of time, or someone else
 * created it).  The caller records the recreation.
 */
char *
dfe_rr_run_now(const SlotRecreation *rec, TargetConn *rc, const char *target,
			   char **why, int *why_code)
{
	RemoteRecreation *rr = dfe_rr_create(CurrentMemoryContext);

	rr->now = true;
	dfe_rr_keep(rr, rec);
	dfe_rr_start(rr, rc);
	while (dfe_rr_busy(rr))
	{
		dfe_tc_run(&rc, 1);
		dfe_rr_advance(rr, rc, target);
	}
	*why = rr->why ? pstrdup(rr->why) : pstrdup("it was not created");
	*why_code = rr->why_code ? rr->why_code : ERRCODE_INTERNAL_ERROR;
	return rr->new_lsn ? pstrdup(rr->new_lsn) : NULL;
}
