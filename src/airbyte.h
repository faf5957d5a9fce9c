/*
 * airbyte.h — the Airbyte API client (SPEC §4).
 *
 * Every function here makes HTTP calls and so must run OUTSIDE a
 * transaction in the worker (backends calling the SQL functions are inside
 * their statement's transaction by nature).  Failures raise an ERROR
 * (http_check) naming the call, the HTTP status and Airbyte's message.
 * The access token is cached per process until shortly before it expires
 * and fetched again once on a 401.
 */
#ifndef DFE_AIRBYTE_AIRBYTE_H
#define DFE_AIRBYTE_AIRBYTE_H

#include "postgres.h"

typedef struct AirbyteJob
{
	int64		job_id;
	char	   *status;			/* pending, running, incomplete, failed, succeeded, cancelled, queued */
	char	   *job_type;		/* sync, refresh, reset, ... */
	char	   *start_time;		/* ISO 8601 as Airbyte sent it, or NULL */
	char	   *last_updated_at;	/* ISO 8601 or NULL */
	int64		rows_synced;	/* progress counters, -1 when absent */
	int64		bytes_synced;
} AirbyteJob;

/* true when URL, client id, secret and connection id are all known */
extern bool airbyte_configured(void);

/* ERROR naming the first missing Airbyte setting, else nothing */
extern void airbyte_require_configuration(void);

/*
 * SPEC §4 refresh: read the connection (for its source id unless
 * dfe_airbyte.source_id is set), rediscover the source schema with the
 * cache disabled, then PATCH the connection with stream_config_json (the
 * output of dfe_airbyte_stream_config()).  Returns Airbyte's answer to the
 * PATCH (JSON text, palloc'd).
 */
extern char *airbyte_refresh_connection(const char *stream_config_json);

/* the newest job of job_type ("sync"); false when there is none */
extern bool airbyte_last_job(const char *job_type, AirbyteJob *job);

/* start a sync; on 409 (one runs) returns the running job and sets *already_running */
extern int64 airbyte_start_sync(bool *already_running);

/* one job's current state */
extern void airbyte_get_job(int64 job_id, AirbyteJob *job);

/*
 * Full re-sync after the slot was recreated: POST /api/v1/connections/refresh
 * {"connectionId", "refreshMode": "Merge"}; returns the refresh job id.
 */
extern int64 airbyte_full_resync(void);

/*
 * One authenticated call (a non-2xx answer raises, with Airbyte's message);
 * returns the parsed JSON answer.  path starts with /api/.
 */
struct cJSON;
extern struct cJSON *airbyte_request(const char *what, const char *method,
									 const char *path, const char *json_body);

/* status helpers */
extern bool airbyte_job_finished(const char *status);	/* succeeded/failed/cancelled */
extern bool airbyte_job_active(const char *status);	/* pending/running/queued/incomplete */

/*
 * HTTP status of the last Airbyte request made by the functions above
 * (0: no answer, -1: none made), for callers that must tell a passing
 * outage from a rejected request after catching the ERROR.
 */
extern long airbyte_last_http_status;

/* true for no answer, 429 and 5xx: worth trying again later */
extern bool airbyte_transient_status(long status);

/* "5s", "2m 10s", "1h 0m 5s" (palloc'd) */
extern char *airbyte_format_duration(int64 secs);

#endif
