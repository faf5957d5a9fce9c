/*
 * slot_remote.c — the slot guard over the remote targets (README,
 * "Targets"; docs/design.md, "Targets").
 *
 * Each check, after the local one, the guard submits one read-only sample
 * query to every enabled remote target at once over connections it keeps
 * (target_conn.h), each with its own deadline (dfe_airbyte.target_timeout,
 * at most dfe_airbyte.check_interval), and drives them all from one wait:
 * a target that hangs, refuses or whose host name does not resolve costs
 * the others nothing but the wait for its own deadline, and is recorded as
 * unreachable (dfe_airbyte.guard_targets; an event when it becomes
 * unreachable and when it is back).  Then, target by target, in the
 * target's scope (its settings over the global ones) and a short
 * transaction of the control database: the samples go into
 * dfe_airbyte.slot_samples and slot_state with the target's name, and the
 * Airbyte slot's condition is judged and acted on as for the local one
 * (slots.c).  An error of one target is a WARNING naming it, never the end
 * of the others' check.
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "events.h"
#include "settings.h"
#include "slot_guard.h"
#include "slots.h"
#include "spi_xact.h"
#include "target_conn.h"
#include "target_scope.h"

/* one remote target the guard keeps a connection to */
typedef struct RemoteTarget
{
	MemoryContext cxt;			/* holds all of it; deleted when the target goes */
	MemoryContext conn_cxt;		/* tc and rc; reset when the conninfo changes */
	char	   *name;
	char	   *conninfo;
	TargetConn *tc;
	TargetConn *rc;				/* the recreation's own connection, opened when needed */
	RemoteRecreation *rr;		/* its steps (slot_remote_recreate.c) */
	bool		listed;			/* still enabled at the last listing */
	TimestampTz held_notified_at;	/* last target_server_changed event; 0 none */
	TimestampTz disk_measured_at;	/* when its disk use was last measured; 0 never */
} RemoteTarget;

/*
 * The disk use of a remote target (every database's size and the WAL, what
 * fills its disk_size) is measured at most this often: pg_database_size()
 * reads the size of every file, too much for every check of a big server;
 * the advice and the configuration check read the last measurement
 * (slot_health.c).
 */
#define DISK_MEASURE_INTERVAL_MS 60000

static MemoryContext remote_cxt = NULL;
static List *remote_targets = NIL;

/*
 * The remote target's logical slots of its own database, and where its WAL
 * is; always at least one row (slot_name NULL when there is no slot), read
 * with pg_monitor's rights only.  Every name and operator qualified.  Also
 * the server's max_slot_wal_keep_size (bytes, NULL: none) and, when $1 is
 * true, its disk use (its databases, as config_targets.c counted them
 * before, and the WAL directory; pg_ls_waldir() is granted to pg_monitor):
 * a scalar subquery in a CASE branch not taken is never run.  The columns
 * only some majors have (inactive_since and invalidation_reason, 17 on) are
 * read by name from the row's JSON, so the same text runs on 15 to 18 and
 * gives NULL where the major lacks them.
 */
static const char *const remote_sample_sql =
"SELECT r.slot_name::pg_catalog.text, r.plugin::pg_catalog.text, r.active, r.active_pid,\n"
"       r.wal_status, r.safe_wal_size,\n"
"       (c.lsn OPERATOR(pg_catalog.-) r.restart_lsn)::pg_catalog.int8,\n"
"       (c.lsn OPERATOR(pg_catalog.-) r.confirmed_flush_lsn)::pg_catalog.int8,\n"
"       r.restart_lsn, r.confirmed_flush_lsn, c.lsn, r.two_phase, c.in_recovery, c.sysid, c.tli,\n"
"       c.keep_bytes, c.disk_used,\n"
"       pg_catalog.to_jsonb(r) OPERATOR(pg_catalog.->>) 'inactive_since',\n"
"       pg_catalog.to_jsonb(r) OPERATOR(pg_catalog.->>) 'invalidation_reason'\n"
"FROM (SELECT pg_catalog.pg_is_in_recovery() AS in_recovery,\n"
"             CASE WHEN pg_catalog.current_setting('max_slot_wal_keep_size') OPERATOR(pg_catalog.<>) '-1'\n"
"                  THEN pg_catalog.pg_size_bytes(pg_catalog.current_setting('max_slot_wal_keep_size')) END AS keep_bytes,\n"
"             CASE WHEN $1::pg_catalog.bool THEN\n"
"                 (SELECT pg_catalog.sum(pg_catalog.pg_database_size(d.oid)) FROM pg_catalog.pg_database d\n"
"                   WHERE d.datallowconn AND pg_catalog.has_database_privilege(d.oid, 'CONNECT'))::pg_catalog.int8\n"
"                 OPERATOR(pg_catalog.+)\n"
"                 (SELECT coalesce(pg_catalog.sum(w.size), 0) FROM pg_catalog.pg_ls_waldir() w)::pg_catalog.int8\n"
"             END AS disk_used,\n"
"             (SELECT s.system_identifier FROM pg_catalog.pg_control_system() s) AS sysid,\n"
"             (SELECT k.timeline_id FROM pg_catalog.pg_control_checkpoint() k) AS tli,\n"
"             CASE WHEN pg_catalog.pg_is_in_recovery() THEN pg_catalog.pg_last_wal_replay_lsn()\n"
"                  ELSE pg_catalog.pg_current_wal_lsn() END AS lsn) c\n"
"LEFT JOIN pg_catalog.pg_replication_slots r\n"
"    ON r.slot_type OPERATOR(pg_catalog.=) 'logical'\n"
"   AND r.database OPERATOR(pg_catalog.=) pg_catalog.current_database()";

/* the remote answer's columns, in remote_sample_sql's order */
enum
{
	RS_NAME, RS_PLUGIN, RS_ACTIVE, RS_PID, RS_WAL_STATUS, RS_SAFE, RS_RETAINED,
	RS_FLUSH_LAG, RS_RESTART, RS_CONFIRMED, RS_CURRENT, RS_TWO_PHASE, RS_IN_RECOVERY,
	RS_SYSID, RS_TLI, RS_KEEP, RS_DISK_USED, RS_INACTIVE_SINCE, RS_INVALIDATION
};

static RemoteTarget *
find_target(const char *name)
{
	ListCell   *lc;

	foreach(lc, remote_targets)
	{
		RemoteTarget *rt = lfirst(lc);

		if (strcmp(rt->name, name) == 0)
			return rt;
	}
	return NULL;
}

/* a target listed now: kept as it is, reopened when its conninfo changed, or new */
static void
keep_target(const char *name, const char *conninfo)
{
	RemoteTarget *rt = find_target(name);
	MemoryContext old;

	if (rt && strcmp(rt->conninfo, conninfo) == 0)
	{
		rt->listed = true;
		return;
	}
	if (rt == NULL)
	{
		MemoryContext cxt = AllocSetContextCreate(remote_cxt, "dfe_airbyte remote target",
												  ALLOCSET_SMALL_SIZES);

		rt = MemoryContextAllocZero(cxt, sizeof(RemoteTarget));
		rt->cxt = cxt;
		rt->conn_cxt = AllocSetContextCreate(cxt, "dfe_airbyte remote target connections",
											 ALLOCSET_SMALL_SIZES);
		rt->name = MemoryContextStrdup(cxt, name);
		rt->rr = dfe_rr_create(cxt);
		old = MemoryContextSwitchTo(remote_cxt);
		remote_targets = lappend(remote_targets, rt);
		MemoryContextSwitchTo(old);
	}
	else
	{
		/* closes both connections (their reset callbacks) and frees them */
		MemoryContextReset(rt->conn_cxt);
		pfree(rt->conninfo);
	}
	/* a recreation in flight (rr) survives: its next step uses the new connection */
	rt->conninfo = MemoryContextStrdup(rt->cxt, conninfo);
	rt->tc = dfe_tc_create(rt->conn_cxt, name, conninfo);
	rt->rc = dfe_tc_create(rt->conn_cxt, name, conninfo);
	rt->listed = true;
}

/* the enabled remote targets now; connections of the others closed */
static void
refresh_targets(void)
{
	int			n;
	int			i;
	char	  **names;
	char	  **conninfos;
	List	   *keep = NIL;
	ListCell   *lc;
	MemoryContext old;

	if (remote_cxt == NULL)
		remote_cxt = AllocSetContextCreate(TopMemoryContext, "dfe_airbyte remote slot guard",
										   ALLOCSET_DEFAULT_SIZES);
	dfe_xact_begin("dfe_airbyte slot guard");
	(void) dfe_sql("list the remote targets",
				   "SELECT name, conninfo FROM dfe_airbyte.targets\n"
				   "WHERE enabled AND name <> 'local' AND conninfo IS NOT NULL ORDER BY name",
				   0, NULL, SPI_OK_SELECT);
	n = (int) SPI_processed;
	names = palloc(sizeof(char *) * Max(n, 1));
	conninfos = palloc(sizeof(char *) * Max(n, 1));
	for (i = 0; i < n; i++)
	{
		names[i] = dfe_col_text(i, 1);
		conninfos[i] = dfe_col_text(i, 2);
	}
	dfe_xact_end();

	foreach(lc, remote_targets)
		((RemoteTarget *) lfirst(lc))->listed = false;
	for (i = 0; i < n; i++)
		keep_target(names[i], conninfos[i]);
	foreach(lc, remote_targets)
	{
		RemoteTarget *rt = lfirst(lc);

		if (rt->listed)
			keep = lappend(keep, rt);
		else
			MemoryContextDelete(rt->cxt);	/* its connections closed, its memory freed */
	}
	list_free(remote_targets);
	old = MemoryContextSwitchTo(remote_cxt);
	remote_targets = list_copy(keep);
	MemoryContextSwitchTo(old);
	list_free(keep);
}

/*
 * Whether the target answered: dfe_airbyte.guard_targets, and an event when
 * it becomes unreachable (the first check included) and when it is back.
 */
static void
record_reach(RemoteTarget *rt, bool ok)
{
	const char *args[6];
	char	   *was;

	args[0] = rt->name;
	args[1] = ok ? "true" : "false";
	args[2] = ok ? NULL : dfe_tc_error(rt->tc);
	args[3] = ok ? NULL : unpack_sql_state(dfe_tc_errcode(rt->tc));
	args[4] = dfe_tc_elapsed_ms(rt->tc) >= 0 ? psprintf("%.3f", dfe_tc_elapsed_ms(rt->tc)) : NULL;
	args[5] = dfe_tc_server_version(rt->tc) > 0 ? psprintf("%d", dfe_tc_server_version(rt->tc)) : NULL;
	dfe_sql("record whether the target was reached",
			"WITH old AS (SELECT reachable FROM dfe_airbyte.guard_targets WHERE target = $1),\n"
			"up AS (INSERT INTO dfe_airbyte.guard_targets AS g (target, reachable, checked_at, last_reached_at,\n"
			"           unreachable_since, last_error, last_errcode, elapsed_ms, server_version)\n"
			"    VALUES ($1, $2::bool, now(), CASE WHEN $2::bool THEN now() END,\n"
			"            CASE WHEN NOT $2::bool THEN now() END, $3, $4, $5::float8, $6::int)\n"
			"    ON CONFLICT (target) DO UPDATE SET reachable = excluded.reachable, checked_at = now(),\n"
			"        last_reached_at = coalesce(excluded.last_reached_at, g.last_reached_at),\n"
			"        unreachable_since = CASE WHEN excluded.reachable THEN NULL\n"
			"                                 ELSE coalesce(g.unreachable_since, now()) END,\n"
			"        last_error = excluded.last_error, last_errcode = excluded.last_errcode,\n"
			"        elapsed_ms = excluded.elapsed_ms,\n"
			"        server_version = coalesce(excluded.server_version, g.server_version))\n"
			"SELECT (SELECT reachable::text FROM old)",
			6, args, SPI_OK_SELECT);
	was = dfe_col_text(0, 1);
	if (!ok && (was == NULL || strcmp(was, "true") == 0))
		dfe_event("warning", "target_unreachable", NULL,
				  psprintf("the slot guard could not sample target \"%s\": %s; its slots are not watched until it answers again (the other targets are not delayed)",
						   rt->name, args[2] ? args[2] : "no answer"),
				  psprintf("{\"errcode\": \"%s\", \"timed_out\": %s}", args[3],
						   dfe_tc_timed_out(rt->tc) ? "true" : "false"));
	else if (ok && was != NULL && strcmp(was, "false") == 0)
		dfe_event("info", "target_reachable", NULL,
				  psprintf("the slot guard reaches target \"%s\" again", rt->name), NULL);
}

static const char *
answer_value(PGresult *res, int row, int col)
{
	return PQgetisnull(res, row, col) ? NULL : PQgetvalue(res, row, col);
}

/* one sampled slot into slot_samples (the target's name on it) */
static void
store_sample(const char *target, PGresult *res, int row)
{
	const char *args[13];

	args[0] = target;
	args[1] = answer_value(res, row, RS_NAME);
	args[2] = answer_value(res, row, RS_ACTIVE);
	args[3] = answer_value(res, row, RS_PID);
	args[4] = answer_value(res, row, RS_WAL_STATUS);
	args[5] = answer_value(res, row, RS_SAFE);
	args[6] = answer_value(res, row, RS_RETAINED);
	args[7] = answer_value(res, row, RS_FLUSH_LAG);
	args[8] = answer_value(res, row, RS_RESTART);
	args[9] = answer_value(res, row, RS_CONFIRMED);
	args[10] = answer_value(res, row, RS_CURRENT);
	args[11] = answer_value(res, row, RS_INACTIVE_SINCE);
	args[12] = answer_value(res, row, RS_INVALIDATION);
	dfe_sql("store a remote slot sample",
			"INSERT INTO dfe_airbyte.slot_samples (target, sampled_at, slot_name, active, active_pid, wal_status,\n"
			"    safe_wal_size, retained_bytes, flush_lag_bytes, restart_lsn, confirmed_flush_lsn, current_lsn,\n"
			"    inactive_since, invalidation_reason)\n"
			"VALUES ($1, now(), $2, $3::bool, $4::int, $5, $6::bigint, $7::bigint, $8::bigint,\n"
			"        $9::pg_lsn, $10::pg_lsn, $11::pg_lsn, $12::timestamptz, $13)",
			13, args, SPI_OK_INSERT);
}

/*
 * slot_state of the target from this check's samples, as the local check
 * keeps it (slots.c's sample_sql): first sight, last activity, and dropped
 * slots forgotten but the Airbyte one.
 */
static void
update_state(const char *target, const char *slot_name)
{
	const char *args[2] = {target, slot_name};

	dfe_sql("update the remote slot state",
			"WITH s AS (SELECT slot_name, active, confirmed_flush_lsn FROM dfe_airbyte.slot_samples\n"
			"           WHERE target = $1 AND sampled_at = now()),\n"
			"up AS (\n"
			"    INSERT INTO dfe_airbyte.slot_state AS st (target, slot_name, first_seen_at, last_active_at, confirmed_flush_lsn)\n"
			"    SELECT $1, slot_name, now(), CASE WHEN active THEN now() END, confirmed_flush_lsn FROM s\n"
			"    ON CONFLICT (target, slot_name) DO UPDATE\n"
			"        SET first_seen_at = coalesce(st.first_seen_at, excluded.first_seen_at),\n"
			"            last_active_at = CASE WHEN excluded.last_active_at IS NOT NULL\n"
			"                                    OR excluded.confirmed_flush_lsn > st.confirmed_flush_lsn\n"
			"                                  THEN now() ELSE st.last_active_at END,\n"
			"            confirmed_flush_lsn = excluded.confirmed_flush_lsn\n"
			"        WHERE st.first_seen_at IS NULL OR excluded.last_active_at IS NOT NULL\n"
			"           OR excluded.confirmed_flush_lsn IS DISTINCT FROM st.confirmed_flush_lsn)\n"
			"DELETE FROM dfe_airbyte.slot_state st\n"
			"WHERE st.target = $1 AND st.slot_name <> $2\n"
			"  AND NOT EXISTS (SELECT 1 FROM s WHERE s.slot_name = st.slot_name)",
			2, args, SPI_OK_DELETE);
}

/* the Airbyte slot's row of the answer */
static void
guarded_slot(PGresult *res, int row, GuardedSlot *g)
{
	const char *v;

	g->found = true;
	g->plugin = pstrdup(PQgetvalue(res, row, RS_PLUGIN));
	g->active = strcmp(PQgetvalue(res, row, RS_ACTIVE), "t") == 0;
	v = answer_value(res, row, RS_PID);
	g->active_pid = v ? atoi(v) : 0;
	v = answer_value(res, row, RS_WAL_STATUS);
	g->wal_status = v ? pstrdup(v) : NULL;
	v = answer_value(res, row, RS_RETAINED);
	g->has_retained = v != NULL;
	g->retained = v ? strtoll(v, NULL, 10) : 0;
	g->two_phase = strcmp(PQgetvalue(res, row, RS_TWO_PHASE), "t") == 0;
}

/*
 * The target is held (record_identity): an event when the other server is
 * first seen and every SLOT_RENOTIFY_MS while the hold lasts, as the local
 * database_restored event is (slots.c).
 */
static void
report_held(RemoteTarget *rt, const char *sysid, const char *recorded)
{
	if (rt->held_notified_at != 0 &&
		!TimestampDifferenceExceeds(rt->held_notified_at, GetCurrentTimestamp(), (int) SLOT_RENOTIFY_MS))
		return;
	dfe_event("critical", "target_server_changed", NULL,
			  psprintf("target \"%s\" is now another server (system identifier %s, was %s): a restore of another server's backup or a new server behind its address; its Airbyte slot is not the one Airbyte read from, so the slot guard terminates and recreates nothing there and the network worker runs no deploy or re-sync for it until a DBA checks the target and runs SELECT dfe_airbyte_confirm_restore('%s')",
					   rt->name, sysid, recorded, rt->name),
			  psprintf("{\"system_identifier\": \"%s\", \"previous_system_identifier\": \"%s\"}",
					   sysid, recorded));
	rt->held_notified_at = GetCurrentTimestamp();
}

/*
 * guard_targets' columns of the server's max_slot_wal_keep_size and disk use
 * (record_disk), set from the parameters named: in the guard's check they
 * go into the same UPDATE as the server's identity (record_identity), one
 * write of the target's row instead of two.
 */
#define SET_DISK(keep, used) \
	"server_limit_bytes = " keep "::bigint,\n" \
	"    disk_used_bytes = coalesce(" used "::bigint, disk_used_bytes),\n" \
	"    disk_used_at = CASE WHEN " used "::bigint IS NOT NULL THEN now() ELSE disk_used_at END"

/*
 * The server's max_slot_wal_keep_size and, when this check measured it, its
 * disk use, into dfe_airbyte.guard_targets (nothing when the guard has no row
 * for the target yet).  Returns whether the disk use was measured.
 */
static bool
record_disk(const char *target, PGresult *res)
{
	const char *args[3] = {target, answer_value(res, 0, RS_KEEP), answer_value(res, 0, RS_DISK_USED)};

	dfe_sql("record the target's disk use",
			"UPDATE dfe_airbyte.guard_targets SET " SET_DISK("$2", "$3") "\n"
			"WHERE target = $1",
			3, args, SPI_OK_UPDATE);
	return args[2] != NULL;
}

/*
 * Which server answered (pg_control_system(), pg_control_checkpoint(), both
 * readable by pg_monitor), against the one the target's history is from
 * (dfe_airbyte.guard_targets.system_identifier, recorded at the first
 * answer).  Another system identifier — a restore of another server's
 * backup, a new server behind the address — holds the target as a restore
 * of the local database is held (restore.h): recorded as
 * unconfirmed_system_identifier until dfe_airbyte_confirm_restore(target)
 * or until the recorded server answers again.  A higher timeline with the
 * same identifier is a failover (or a point-in-time restore of the same
 * server): an event, no hold.  The server's disk facts (record_disk) are
 * written by the same UPDATE.  Returns true while the target is held.
 */
static bool
record_identity(RemoteTarget *rt, PGresult *res)
{
	const char *args[5] = {rt->name, answer_value(res, 0, RS_SYSID), answer_value(res, 0, RS_TLI),
	answer_value(res, 0, RS_KEEP), answer_value(res, 0, RS_DISK_USED)};
	char	   *old_sysid;
	char	   *old_tli;

	if (args[1] == NULL)
	{
		(void) record_disk(rt->name, res);
		return false;
	}
	/* FOR UPDATE: a confirmation committed meanwhile is read, not undone */
	dfe_sql("record the target's server identity",
			"WITH old AS (SELECT system_identifier, timeline FROM dfe_airbyte.guard_targets WHERE target = $1\n"
			"             FOR UPDATE)\n"
			"UPDATE dfe_airbyte.guard_targets g\n"
			"SET system_identifier = coalesce(old.system_identifier, $2::bigint),\n"
			"    timeline = CASE WHEN coalesce(old.system_identifier, $2::bigint) = $2::bigint\n"
			"                    THEN $3::int ELSE old.timeline END,\n"
			"    unconfirmed_system_identifier = CASE WHEN coalesce(old.system_identifier, $2::bigint) <> $2::bigint\n"
			"                                         THEN $2::bigint END,\n"
			"    " SET_DISK("$4", "$5") "\n"
			"FROM old WHERE g.target = $1\n"
			"RETURNING old.system_identifier::text, old.timeline::text",
			5, args, SPI_OK_UPDATE_RETURNING);
	if (SPI_processed != 1)
		return false;
	old_sysid = dfe_col_text(0, 1);
	old_tli = dfe_col_text(0, 2);
	if (old_sysid && strcmp(old_sysid, args[1]) != 0)
	{
		report_held(rt, args[1], old_sysid);
		return true;
	}
	rt->held_notified_at = 0;
	if (old_tli && args[2] && atoi(args[2]) > atoi(old_tli))
		dfe_event("warning", "target_failover", NULL,
				  psprintf("target \"%s\" moved to timeline %s (was %s): a failover or a point-in-time restore; the Airbyte slot survives a failover only where it was synchronised to the standby (PostgreSQL 17 failover slots), so the guard's next checks show whether it is missing",
						   rt->name, args[2], old_tli),
				  psprintf("{\"timeline\": %s, \"previous_timeline\": %s}", args[2], old_tli));
	return false;
}

/* an answer: samples stored, the Airbyte slot judged with the target's settings */
static void
handle_samples(RemoteTarget *rt)
{
	PGresult   *res = dfe_tc_result(rt->tc);
	const char *slot_name = pstrdup(dfe_setting_slot_name());
	GuardedSlot g;
	SlotRecreation rec;
	bool		held = false;
	int			i;

	memset(&g, 0, sizeof(g));
	if (PQntuples(res) > 0)
	{
		/* its identity and its disk use, in one write of its row */
		held = record_identity(rt, res);
		if (answer_value(res, 0, RS_DISK_USED) != NULL)
			rt->disk_measured_at = GetCurrentTimestamp();
	}
	for (i = 0; i < PQntuples(res); i++)
	{
		if (PQgetisnull(res, i, RS_NAME))
			continue;
		store_sample(rt->name, res, i);
		if (strcmp(PQgetvalue(res, i, RS_NAME), slot_name) == 0)
			guarded_slot(res, i, &g);
	}
	/*
	 * another server than the history's, unconfirmed: its slots are shown
	 * (the health view reads these samples) but neither judged nor acted on
	 */
	if (held)
		return;
	update_state(rt->name, slot_name);
	/* a standby (during a failover) has no slot to act on */
	if (PQntuples(res) > 0 && strcmp(PQgetvalue(res, 0, RS_IN_RECOVERY), "t") == 0)
		return;
	if (dfe_slot_judge(slot_name, &g, &rec))
		dfe_rr_keep(rt->rr, &rec);
}

/* dfe_catch's argument for for_target(): the target and what to do for it */
typedef struct ForTarget
{
	RemoteTarget *rt;
	void		(*fn) (RemoteTarget *rt);
} ForTarget;

static void
run_for_target(void *arg)
{
	ForTarget  *ft = arg;

	ft->fn(ft->rt);
}

/*
 * fn(rt) for one target; an error is a WARNING naming the target (the
 * transaction aborted, the scope left), never the end of the others' check.
 */
static void
for_target(RemoteTarget *rt, void (*fn) (RemoteTarget *rt))
{
	ErrorData  *edata;
	ForTarget	ft = {rt, fn};

	if (!dfe_catch(run_for_target, &ft, 0, CurrentMemoryContext, &edata))
	{
		dfe_target_scope_reset();
		ereport(WARNING,
				(errcode(edata->sqlerrcode),
				 errmsg("dfe_airbyte slot guard, target \"%s\": %s", rt->name, edata->message),
				 edata->detail ? errdetail_internal("%s", edata->detail) : 0,
				 errhint("%s", edata->hint ? edata->hint : "The guard tries again at its next check.")));
		FreeErrorData(edata);
	}
}

/*
 * One target's answer (or failure), in its scope and a transaction of its
 * own; a recreation it decides starts on the target's second connection
 * once that transaction (with the recreation's row) is committed.
 */
static void
handle_answer(RemoteTarget *rt)
{
	DfeTargetScope *scope;
	bool		ok = dfe_tc_state(rt->tc) == TC_DONE;

	dfe_rr_keep(rt->rr, NULL);
	dfe_xact_begin("dfe_airbyte slot guard");
	scope = dfe_target_scope_enter(rt->name);
	record_reach(rt, ok);
	if (ok)
		handle_samples(rt);
	dfe_target_scope_leave(scope);
	dfe_xact_end();
	dfe_rr_start(rt->rr, rt->rc);
}

/* the recreation's step finished: the next one, or its end */
static void
advance_recreation(RemoteTarget *rt)
{
	dfe_rr_advance(rt->rr, rt->rc, rt->name);
}

/* is the target held by an unconfirmed restore (record_identity)? */
static bool
held_now(const char *target)
{
	const char *args[1] = {target};

	dfe_sql("look for an unconfirmed restore of the target",
			"SELECT 1 FROM dfe_airbyte.guard_targets\n"
			"WHERE target = $1 AND unconfirmed_system_identifier IS NOT NULL",
			1, args, SPI_OK_SELECT);
	return SPI_processed > 0;
}

/*
 * dfe_airbyte_check_slots_now(target): one remote target's sampling now, in
 * the caller's transaction and the target's scope (SPI connected), over the
 * scope's connection; no limit action.  ERROR when the target cannot be
 * reached.  Returns the number of slots sampled.
 */
int
dfe_slot_sample_remote_now(DfeTargetScope *scope)
{
	DfeTarget  *t = dfe_target_scope_target(scope);
	TargetConn *tc = dfe_target_conn(t);
	PGresult   *res;
	int			n = 0;
	int			i;
	const char *measure_disk[1] = {"true"};

	dfe_tc_submit(tc, remote_sample_sql, 1, measure_disk,
			  TimestampTzPlusMilliseconds(GetCurrentTimestamp(), dfe_target_timeout_ms));
	dfe_tc_run(&tc, 1);
	if (dfe_tc_state(tc) != TC_DONE)
		ereport(ERROR,
				(errcode(dfe_tc_errcode(tc)),
				 errmsg("could not sample the replication slots of target \"%s\": %s",
						dfe_target_current(), dfe_tc_error(tc)),
				 errhint("Check the server and dfe_airbyte.targets.conninfo; dfe_airbyte.guard_targets shows what the guard last saw.")));
	res = dfe_tc_result(tc);
	for (i = 0; i < PQntuples(res); i++)
	{
		if (PQgetisnull(res, i, RS_NAME))
			continue;
		store_sample(dfe_target_current(), res, i);
		n++;
	}
	if (PQntuples(res) > 0)
		(void) record_disk(dfe_target_current(), res);
	/* another server's slots under an unconfirmed restore: shown, not the history's */
	if (!held_now(dfe_target_current()))
		update_state(dfe_target_current(), dfe_setting_slot_name());
	return n;
}

static bool
finished(TargetConn *tc)
{
	return dfe_tc_state(tc) == TC_DONE || dfe_tc_state(tc) == TC_FAILED || dfe_tc_state(tc) == TC_IDLE;
}

/*
 * Each target is acted on as soon as its answer (or failure) is there: a
 * hanging target delays no other's samples, events or terminate.  conns
 * holds the n sample connections, then the n recreation connections (in
 * flight only while a recreation runs): a recreation's steps, a creation
 * that waits for older transactions included, are driven by the same loop
 * and delay no other target either.
 */
static void
handle_as_they_come(TargetConn **conns, int n)
{
	bool	   *handled = palloc0(sizeof(bool) * n);
	int			left;
	int			i;

	do
	{
		left = dfe_tc_run_some(conns, 2 * n);
		for (i = 0; i < n; i++)
		{
			RemoteTarget *rt = (RemoteTarget *) list_nth(remote_targets, i);

			if (!handled[i] && finished(conns[i]))
			{
				handled[i] = true;
				for_target(rt, handle_answer);
			}
			if (dfe_rr_busy(rt->rr) && finished(conns[n + i]))
			{
				for_target(rt, advance_recreation);
				/* an error mid-step: the next check resumes the open recreation */
				if (dfe_rr_busy(rt->rr) && finished(conns[n + i]))
					dfe_rr_abandon(rt->rr);
			}
			if (!finished(conns[i]) || !finished(conns[n + i]))
				left = Max(left, 1);
		}
	} while (left > 0);
	pfree(handled);
}

void
dfe_slot_remote_round(void)
{
	TargetConn **conns;
	TimestampTz deadline;
	int			n = 0;
	ListCell   *lc;

	refresh_targets();
	if (remote_targets == NIL)
		return;
	/* every answer is due before the next check is */
	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
										   Min((int64) dfe_target_timeout_ms,
											   (int64) dfe_check_interval_s * 1000));
	conns = palloc(sizeof(TargetConn *) * 2 * list_length(remote_targets));
	foreach(lc, remote_targets)
	{
		RemoteTarget *rt = lfirst(lc);
		const char *measure_disk[1];

		measure_disk[0] = rt->disk_measured_at == 0 ||
			TimestampDifferenceExceeds(rt->disk_measured_at, GetCurrentTimestamp(),
									   DISK_MEASURE_INTERVAL_MS) ? "true" : "false";
		dfe_tc_submit(rt->tc, remote_sample_sql, 1, measure_disk, deadline);
		conns[n] = rt->tc;
		conns[list_length(remote_targets) + n] = rt->rc;
		n++;
	}
	handle_as_they_come(conns, n);
}
