/*
 * airbyte.h — the Airbyte API client (Airbyte's public API, /api/public/v1,
 * and its config API, /api/v1).
 *
 * Every function here makes HTTP calls and so must run OUTSIDE a
 * transaction in the worker (backends calling the SQL functions are inside
 * their statement's transaction by nature).  Failures raise an ERROR
 * (dfe_http_check) naming the call, the HTTP status and Airbyte's message.
 * The access token is cached per process until shortly before it expires
 * and fetched again once on a 401.
 */
#ifndef DFE_AIRBYTE_AIRBYTE_H
#define DFE_AIRBYTE_AIRBYTE_H

#include "postgres.h"

#include "datatype/timestamp.h"

typedef struct AirbyteJob
{
	int64		job_id;
	char	   *status;			/* pending, running, incomplete, failed, succeeded, cancelled, queued */
	char	   *job_type;		/* sync, refresh, reset, ... */
	char	   *start_time;		/* ISO 8601 as Airbyte sent it, or NULL */
	char	   *last_updated_at;	/* ISO 8601 or NULL */
	TimestampTz created_at;		/* when Airbyte created it; 0: unknown */
	int64		rows_synced;	/* rowsSynced, -1 when not given */
	int64		bytes_synced;	/* bytesSynced, -1 when not given */
} AirbyteJob;

/* what Airbyte answered to POST /api/v1/connections/refresh */
typedef enum AirbyteRefreshAnswer
{
	REFRESH_JOB,				/* {"job": {...}} (>= 1.2.0): job_id set */
	REFRESH_ACCEPTED,			/* {"value": true} (<= 1.1.x), or a 2xx we
								 * cannot parse: rows saved, no job id */
	REFRESH_NULL_JOB,			/* {"job": null} (>= 1.2.0): a job is running
								 * (rows saved) or refreshes are unsupported */
	REFRESH_UNSUPPORTED,		/* {"value": false}: the destination does not
								 * support refreshes; nothing saved */
	REFRESH_LOST				/* no answer after the request may have
								 * reached the server (timeout, reset, 5xx) */
} AirbyteRefreshAnswer;

/* true when URL, client id, secret and connection id are all known */
extern bool dfe_airbyte_configured(void);

/* ERROR naming the first missing Airbyte setting, else nothing */
extern void dfe_airbyte_require_configuration(void);

/*
 * The schema refresh: read the connection (for its source id unless
 * dfe_airbyte.source_id is set), rediscover the source schema with the
 * cache disabled, then PATCH the connection with stream_config_json (the
 * output of dfe_airbyte_stream_config()).  Returns Airbyte's answer to the
 * PATCH (JSON text, palloc'd).
 */
extern char *dfe_airbyte_refresh_connection(const char *stream_config_json);

/* the newest job of job_type ("sync"); false when there is none */
extern bool dfe_airbyte_last_job(const char *job_type, AirbyteJob *job);

/* start a sync; on 409 (one runs) returns the running job and sets *already_running */
extern int64 dfe_airbyte_api_start_sync(bool *already_running);

/* one job's current state */
extern void dfe_airbyte_get_job(int64 job_id, AirbyteJob *job);

/*
 * Full re-sync after the slot was recreated: POST /api/v1/connections/refresh
 * {"connectionId", "refreshMode": "Merge"}, made ONCE (no HTTP retry: every
 * accepted call queues one more full refresh).  Returns what Airbyte
 * answered; *job_id is set for REFRESH_JOB.  ERROR only when the request
 * certainly did not land (refused before sending, or a 4xx).
 */
extern AirbyteRefreshAnswer dfe_airbyte_full_resync(int64 *job_id);

/*
 * The connection's newest jobs of every type (sync, reset, refresh, clear),
 * newest first, at most max: the public list from Airbyte 1.8.0 (before
 * that it hides refresh and clear jobs), else the config API's
 * POST /api/v1/jobs/list.  Returns the number filled in jobs[].
 */
extern int	dfe_airbyte_recent_jobs(AirbyteJob *jobs, int max);

/* the newest job of any type that is not terminal; false when none */
extern bool dfe_airbyte_latest_active_job(AirbyteJob *job);

/*
 * The Airbyte server's version from GET /api/v1/instance_configuration,
 * cached per process; NULL when it cannot be read (then every behaviour
 * that depends on it takes the choice that works on every version).
 */
extern const char *dfe_airbyte_server_version(void);

/*
 * One authenticated call (a non-2xx answer raises, with Airbyte's message);
 * returns the parsed JSON answer.  path starts with /api/.
 */
struct cJSON;
extern struct cJSON *dfe_airbyte_request(const char *what, const char *method,
									 const char *path, const char *json_body);

/* status helpers */
extern bool dfe_airbyte_job_finished(const char *status);	/* succeeded/failed/cancelled */
extern bool dfe_airbyte_job_active(const char *status);	/* pending/running/queued/incomplete */

/*
 * HTTP status of the last Airbyte request made by the functions above
 * (0: no answer, -1: none made), for callers that must tell a passing
 * outage from a rejected request after catching the ERROR.
 */
extern long dfe_airbyte_last_http_status;

/* true for no answer, 429 and 5xx: worth trying again later */
extern bool dfe_airbyte_transient_status(long status);

/* "5s", "2m 10s", "1h 0m 5s" (palloc'd) */
extern char *dfe_airbyte_format_duration(int64 secs);

#endif
