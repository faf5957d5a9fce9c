/*
 * resync.c — the full re-sync that a slot recreation needs:
 * exactly one per recreation, on every Airbyte version.
 *
 * The slot guard never calls out: when it recreates the Airbyte slot it
 * records the recreation in dfe_airbyte.slot_recreations with resync_state
 * 'pending' (in the same transaction as the recreation), and this task, on
 * the network side, asks Airbyte for the full re-sync outside any
 * transaction.
 *
 * Why "exactly once" needs care (airbyte-platform StreamRefreshesHandler,
 * DefaultJobCreator): every
 * accepted POST /api/v1/connections/refresh first SAVES the streams to
 * refresh and only then asks for a job; the next job created for the
 * connection — the one it starts, or the scheduler's next sync when a job
 * was running — consumes those rows and becomes the refresh.  A second
 * accepted call queues a second full re-read of the whole database.  So:
 *
 *  1. "asked at T" (resync_asked_at) is committed BEFORE the POST, and the
 *     POST is made once (no HTTP retry).
 *  2. The answer is recorded (resync_answer, resync_answered_at):
 *     {"job":{id}} → started, done.  {"value":true}, {"job":null} or a lost
 *     answer (timeout, reset, 5xx after sending) → we do not know the job
 *     yet.  {"value":false} → the destination does not support refreshes:
 *     nothing was saved, a critical event, asked again only hourly.  A
 *     refusal before sending or a 4xx → nothing was saved, asked again.
 *  3. With T recorded and no job known (also after a lost answer and after
 *     a worker restart between 1 and 2), we never POST again without proof
 *     that the request did not land: we read the connection's jobs of every
 *     type (public list from 1.8.0, config API before: airbyte.c).  A
 *     refresh job created after T is ours: started.  A job of another type
 *     created after the attempt ended is the proof: had the rows been saved
 *     it would have been the refresh.  Then, after a lost answer, we ask
 *     again; after {"job":null} it means refreshes are not supported.
 *     Otherwise we wait (the refresh comes with the next job Airbyte
 *     creates, e.g. the next scheduled sync).
 *
 * Job times come from Airbyte's clock, T from ours: CLOCK_SLACK_S is how
 * far they may disagree (NTP keeps them far closer; Airbyte's config API
 * has whole seconds).
 */
#include "postgres.h"

#include "access/xact.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include <cjson/cJSON.h>

#include "airbyte.h"
#include "events.h"
#include "settings.h"
#include "spi_xact.h"
#include "target_scope.h"
#include "worker.h"

/* how far Airbyte's job times and ours may disagree */
#define CLOCK_SLACK_S 5
/* how many recent jobs are read to find ours */
#define RESYNC_RECENT_JOBS 50
/* the server version event is written again at least this often */
#define VERSION_REPORT_EVERY_S (24 * 3600)
/* a destination without refresh support is asked again this rarely */
#define UNSUPPORTED_RETRY_S 3600

/* the task's context: where an ERROR's data is copied */
static MemoryContext resync_cxt = NULL;

/* the pending recreations, as one request */
typedef struct PendingResync
{
	int64		count;
	int64		max_id;
	bool		notify;			/* no warning for an hour: say it again */
	char	   *slots;
	TimestampTz asked_at;		/* 0: not asked (or proven not landed) */
	TimestampTz answered_at;	/* 0: no answer recorded */
	char	   *answer;			/* resync_answer, or NULL */
	TimestampTz last_attempt_at;
	int64		last_claimed_job;	/* newest refresh job an earlier recreation followed */
} PendingResync;

static char *
resync_event_data(const char *slots, const char *error, int64 job_id)
{
	cJSON	   *o = cJSON_CreateObject();
	char	   *out;

	cJSON_AddStringToObject(o, "slot_name", slots);
	if (error)
		cJSON_AddStringToObject(o, "error", error);
	if (job_id)
		cJSON_AddNumberToObject(o, "job_id", (double) job_id);
	out = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	return out;
}

typedef struct ResyncCall
{
	AirbyteRefreshAnswer answer;
	int64	   *job_id;
	AirbyteJob *jobs;
	int			max;
	int			n;
} ResyncCall;

static void
do_full_resync(void *arg)
{
	ResyncCall *c = arg;

	c->answer = dfe_airbyte_full_resync(c->job_id);
}

static void
do_recent_jobs(void *arg)
{
	ResyncCall *c = arg;

	c->n = dfe_airbyte_recent_jobs(c->jobs, c->max);
}

/* fn(c); an ERROR it raises becomes *error ("message: detail", in resync_cxt) */
static bool
call_caught(void (*fn) (void *), ResyncCall *c, char **error)
{
	ErrorData  *edata;

	if (dfe_catch(fn, c, 0, resync_cxt, &edata))
		return true;
	*error = dfe_error_text(edata);
	return false;
}

/*
 * dfe_airbyte_full_resync(), with any ERROR it raises (the request certainly
 * did not land) turned into *error.
 */
static bool
call_full_resync(AirbyteRefreshAnswer *answer, int64 *job_id, char **error)
{
	ResyncCall	c = {0};

	c.job_id = job_id;
	if (!call_caught(do_full_resync, &c, error))
		return false;
	*answer = c.answer;
	return true;
}

/* dfe_airbyte_recent_jobs(), an ERROR turned into *error */
static int
call_recent_jobs(AirbyteJob *jobs, int max, char **error)
{
	ResyncCall	c = {0};

	c.jobs = jobs;
	c.max = max;
	return call_caught(do_recent_jobs, &c, error) ? c.n : -1;
}

static TimestampTz
col_timestamp(int col)
{
	bool		isnull;
	Datum		d = dfe_col_datum(0, col, &isnull);

	return isnull ? 0 : DatumGetTimestampTz(d);
}

/* read the pending recreations (they are answered by one request) */
static bool
read_pending(PendingResync *p)
{
	bool		isnull;
	const char *args[1] = {dfe_target_current()};

	dfe_xact_begin("dfe_airbyte full re-sync");
	dfe_sql("read pending re-syncs",
			"WITH p AS (SELECT * FROM dfe_airbyte.slot_recreations\n"
			"           WHERE target = $1 AND resync_state = 'pending' AND recreated_at IS NOT NULL),\n"
			"last AS (SELECT * FROM p ORDER BY resync_asked_at DESC NULLS LAST, id DESC LIMIT 1)\n"
			"SELECT (SELECT count(*) FROM p), (SELECT max(id) FROM p),\n"
			"       coalesce((SELECT bool_or(resync_notified_at IS NULL OR resync_notified_at < now() - interval '1 hour') FROM p), false),\n"
			"       (SELECT string_agg(DISTINCT slot_name, ', ') FROM p),\n"
			"       last.resync_asked_at, last.resync_answered_at, last.resync_answer,\n"
			"       (SELECT max(resync_last_attempt_at) FROM p),\n"
			"       (SELECT coalesce(max(resync_job_id), 0) FROM dfe_airbyte.slot_recreations\n"
			"        WHERE target = $1 AND resync_state = 'started')\n"
			"FROM (SELECT 1) one LEFT JOIN last ON true",
			1, args, SPI_OK_SELECT);
	p->count = DatumGetInt64(dfe_col_datum(0, 1, &isnull));
	p->max_id = p->count > 0 ? DatumGetInt64(dfe_col_datum(0, 2, &isnull)) : 0;
	p->notify = DatumGetBool(dfe_col_datum(0, 3, &isnull));
	p->slots = dfe_col_text(0, 4);
	p->asked_at = col_timestamp(5);
	p->answered_at = col_timestamp(6);
	p->answer = dfe_col_text(0, 7);
	p->last_attempt_at = col_timestamp(8);
	p->last_claimed_job = DatumGetInt64(dfe_col_datum(0, 9, &isnull));
	dfe_xact_end();
	return p->count > 0;
}

/* UPDATE the pending recreations (id <= max_id) with set_sql; one transaction */
static void
update_pending(const PendingResync *p, const char *what, const char *set_sql,
			   const char *arg2, const char *arg3)
{
	const char *args[4] = {dfe_int64_str(p->max_id), arg2, arg3, dfe_target_current()};

	dfe_sql(what,
			psprintf("UPDATE dfe_airbyte.slot_recreations SET %s\n"
					 "WHERE target = $4 AND resync_state = 'pending' AND recreated_at IS NOT NULL\n"
					 "  AND id <= $1::bigint",
					 set_sql),
			4, args, SPI_OK_UPDATE);
}

static void
record_started(const PendingResync *p, int64 job_id, const char *how)
{
	dfe_xact_begin("dfe_airbyte full re-sync");
	update_pending(p, "record the started re-sync",
				   "resync_state = 'started', resync_job_id = $2::bigint, resync_started_at = now()",
				   dfe_int64_str(job_id), NULL);
	dfe_event("info", "full_resync_started", p->slots,
			  psprintf("Airbyte %s the full re-sync (refresh job " INT64_FORMAT ") that the recreation of replication slot %s requires",
					   how, job_id, p->slots),
			  resync_event_data(p->slots, NULL, job_id));
	dfe_xact_end();
}

static void
record_unsupported(const PendingResync *p, const char *why)
{
	dfe_xact_begin("dfe_airbyte full re-sync");
	update_pending(p, "record a refused re-sync",
				   "resync_answer = 'unsupported', resync_asked_at = NULL, resync_last_error = $2,\n"
				   "    resync_notified_at = now()",
				   why, NULL);
	dfe_event("critical", "full_resync_unsupported", p->slots,
			  psprintf("Airbyte did not queue the full re-sync that the recreation of replication slot %s requires: %s. "
					   "Start a full refresh of connection %s in the Airbyte UI (Merge, all streams); the worker asks again once an hour",
					   p->slots, why, dfe_setting_connection_id()),
			  resync_event_data(p->slots, why, 0));
	dfe_xact_end();
}

/* step 1 and 2: record T, POST once, record the answer */
static void
ask_for_resync(PendingResync *p)
{
	AirbyteRefreshAnswer answer = REFRESH_LOST;
	int64		job_id = -1;
	char	   *error = NULL;
	const char *answer_name;

	dfe_xact_begin("dfe_airbyte full re-sync");
	update_pending(p, "record the re-sync request",
				   "resync_asked_at = clock_timestamp(), resync_answered_at = NULL, resync_answer = NULL,\n"
				   "    resync_attempts = resync_attempts + 1, resync_last_attempt_at = clock_timestamp()",
				   NULL, NULL);
	dfe_xact_end();
	p->asked_at = GetCurrentTimestamp();

	/* outside any transaction: this is an HTTP call */
	if (!call_full_resync(&answer, &job_id, &error))
	{
		/* refused before sending, or a 4xx: nothing was saved, ask again */
		const char *notify = p->notify ? "true" : "false";

		dfe_xact_begin("dfe_airbyte full re-sync");
		update_pending(p, "record a failed re-sync request",
					   "resync_asked_at = NULL, resync_last_error = $2,\n"
					   "    resync_notified_at = CASE WHEN $3::boolean THEN now() ELSE resync_notified_at END",
					   error, notify);
		if (p->notify)
			dfe_event("warning", "full_resync_failed", p->slots,
					  psprintf("Airbyte did not accept the full re-sync that the recreation of replication slot %s requires: %s; the worker retries every dfe_airbyte.check_interval",
							   p->slots, error),
					  resync_event_data(p->slots, error, 0));
		dfe_xact_end();
		p->asked_at = 0;
		return;
	}

	if (answer == REFRESH_JOB)
	{
		dfe_xact_begin("dfe_airbyte full re-sync");
		update_pending(p, "record the re-sync answer",
					   "resync_answer = 'job', resync_answered_at = clock_timestamp(), resync_last_error = NULL",
					   NULL, NULL);
		dfe_xact_end();
		record_started(p, job_id, "accepted");
		p->count = 0;
		return;
	}
	if (answer == REFRESH_UNSUPPORTED)
	{
		record_unsupported(p, "it answered {\"value\": false}: the destination does not support refreshes");
		p->count = 0;
		return;
	}

	answer_name = answer == REFRESH_ACCEPTED ? "accepted"
		: answer == REFRESH_NULL_JOB ? "null_job" : "lost";
	dfe_xact_begin("dfe_airbyte full re-sync");
	update_pending(p, "record the re-sync answer",
				   "resync_answer = $2, resync_answered_at = clock_timestamp(), resync_last_error = NULL",
				   answer_name, NULL);
	if (answer == REFRESH_LOST)
		dfe_event("warning", "full_resync_answer_lost", p->slots,
				  psprintf("Airbyte's answer to the full re-sync request for replication slot %s was lost (%s); "
						   "the worker does not ask again unless Airbyte's job list proves the request did not arrive",
						   p->slots, dfe_airbyte_last_http_status == 0 ? "no answer"
						   : psprintf("HTTP %ld", dfe_airbyte_last_http_status)),
				  resync_event_data(p->slots, NULL, 0));
	else
		dfe_event("info", "full_resync_queued", p->slots,
				  psprintf("Airbyte queued the full re-sync that the recreation of replication slot %s requires (%s); "
						   "it runs as the next job Airbyte creates for the connection",
						   p->slots, answer == REFRESH_ACCEPTED ? "{\"value\": true}"
						   : "{\"job\": null}: a job is running"),
				  resync_event_data(p->slots, NULL, 0));
	dfe_xact_end();
	p->answer = pstrdup(answer_name);
	p->answered_at = GetCurrentTimestamp();
}

/* step 3: find our refresh job, or proof that the request did not land */
static void
follow_resync(PendingResync *p)
{
	AirbyteJob	jobs[RESYNC_RECENT_JOBS];
	char	   *error = NULL;
	int			n = call_recent_jobs(jobs, RESYNC_RECENT_JOBS, &error);
	TimestampTz refresh_after = TimestampTzPlusMilliseconds(p->asked_at, -CLOCK_SLACK_S * 1000L);
	TimestampTz attempt_end;
	TimestampTz proof_after;
	AirbyteJob *ours = NULL;
	AirbyteJob *proof = NULL;

	if (n < 0)
		return;					/* Airbyte not answering: look again next time */

	/* no answer recorded (worker restarted mid-call): the call's longest end */
	attempt_end = p->answered_at != 0 ? p->answered_at
		: TimestampTzPlusMilliseconds(p->asked_at,
									  (int64) (dfe_http_timeout_s + dfe_http_connect_timeout_s) * 1000);
	proof_after = TimestampTzPlusMilliseconds(attempt_end, CLOCK_SLACK_S * 1000L);

	/* newest first: the earliest refresh after T is ours */
	for (int i = 0; i < n; i++)
	{
		if (jobs[i].created_at == 0)
			continue;
		/* a refresh an earlier recreation followed is not ours (job ids grow) */
		if (jobs[i].job_type && strcmp(jobs[i].job_type, "refresh") == 0 &&
			jobs[i].created_at >= refresh_after && jobs[i].job_id > p->last_claimed_job)
			ours = &jobs[i];
		else if (jobs[i].created_at > proof_after)
			proof = &jobs[i];
	}

	if (ours != NULL)
	{
		record_started(p, ours->job_id, "started");
		return;
	}
	if (proof == NULL)
		return;					/* no proof either way: wait */

	if (p->answer != NULL && strcmp(p->answer, "null_job") == 0)
	{
		record_unsupported(p, psprintf("it answered {\"job\": null}, and the next job it created (" INT64_FORMAT ", %s) was not a refresh: the destination does not support refreshes",
									   proof->job_id, proof->job_type ? proof->job_type : "unknown"));
		return;
	}

	/* the request never reached Airbyte's database: asking again is safe */
	dfe_xact_begin("dfe_airbyte full re-sync");
	update_pending(p, "record a re-sync request that did not land",
				   "resync_asked_at = NULL, resync_last_error = $2",
				   psprintf("the request did not arrive: job " INT64_FORMAT " (%s) was created after it and is not a refresh",
							proof->job_id, proof->job_type ? proof->job_type : "unknown"), NULL);
	dfe_event("info", "full_resync_not_received", p->slots,
			  psprintf("Airbyte did not receive the full re-sync request for replication slot %s (job " INT64_FORMAT ", created after it, is a %s, not a refresh); the worker asks again",
					   p->slots, proof->job_id, proof->job_type ? proof->job_type : "job"),
			  resync_event_data(p->slots, NULL, proof->job_id));
	dfe_xact_end();
	p->asked_at = 0;
}

/* one target's pending re-sync, in its scope: its own connection id (dfe_for_each_target) */
static void
resync_if_pending(const char *target, void *arg)
{
	PendingResync p;

	if (!read_pending(&p))
		return;

	if (p.asked_at == 0)
	{
		/* a destination without refreshes: ask again only hourly */
		if (p.answer != NULL && strcmp(p.answer, "unsupported") == 0 &&
			!TimestampDifferenceExceeds(p.last_attempt_at, GetCurrentTimestamp(),
										UNSUPPORTED_RETRY_S * 1000))
			return;
		ask_for_resync(&p);
		if (p.asked_at == 0 || p.count == 0)
			return;
	}
	/* asked: never again without proof; find the refresh job */
	follow_resync(&p);
}

/*
 * Report the Airbyte server's version (event airbyte_version, which
 * dfe_airbyte.config_problems shows with what that version lacks): when
 * first seen, when it changes, and daily so that pruning never loses it.
 * The version itself is cached per process by airbyte.c.
 */
static void
report_server_version(void)
{
	static char last_version[64] = "";
	static TimestampTz last_reported = 0;
	const char *version;
	const char *args[1];

	if (!dfe_airbyte_configured())
		return;
	version = dfe_airbyte_server_version();
	if (version == NULL)
		return;
	if (strcmp(version, last_version) == 0 &&
		!TimestampDifferenceExceeds(last_reported, GetCurrentTimestamp(), VERSION_REPORT_EVERY_S * 1000))
		return;

	args[0] = version;
	dfe_xact_begin("dfe_airbyte full re-sync");
	dfe_sql("read the reported Airbyte version",
			"SELECT 1 FROM (SELECT data->>'version' AS v, at FROM dfe_airbyte.events\n"
			"               WHERE kind = 'airbyte_version' ORDER BY id DESC LIMIT 1) e\n"
			"WHERE e.v = $1 AND e.at > now() - interval '1 day'",
			1, args, SPI_OK_SELECT);
	if (SPI_processed == 0)
	{
		cJSON	   *o = cJSON_CreateObject();
		char	   *data;

		cJSON_AddStringToObject(o, "version", version);
		data = cJSON_PrintUnformatted(o);
		cJSON_Delete(o);
		dfe_event("info", "airbyte_version", "Airbyte",
				  psprintf("the Airbyte server is version %s (GET /api/v1/instance_configuration); dfe_airbyte.config_problems says what it lacks",
						   version),
				  data);
		cJSON_free(data);
	}
	dfe_xact_end();
	strlcpy(last_version, version, sizeof(last_version));
	last_reported = GetCurrentTimestamp();
}

long
dfe_resync_worker_task(void)
{
	resync_cxt = CurrentMemoryContext;
	report_server_version();
	dfe_for_each_target(resync_if_pending, NULL);
	return dfe_check_interval_s * 1000L;
}
