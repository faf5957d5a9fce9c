/*
 * bigquery_pace.c — the rate window: pacing the PATCHes of one BigQuery
 * table (see bigquery_pace.h).
 */
#include "postgres.h"

#include <time.h>

#include "utils/hsearch.h"
#include "utils/memutils.h"

#include "bigquery_pace.h"
#include "settings.h"

/*
 * BigQuery allows about 5 metadata updates per 10 s per table ("Maximum
 * rate of table metadata update operations per table", BigQuery quotas),
 * and Airbyte's own schema changes count too.  Each process remembers when
 * it PATCHed each table (within a run and across runs) and holds a PATCH
 * back until fewer than dfe_airbyte.bigquery_table_update_limit of its
 * PATCHes of that table fall in the last bigquery_table_update_window.
 * What other processes do is not known here: a 403 rateLimitExceeded is
 * retried with backoff by the HTTP layer.
 */
#define PACE_KEY_LEN 256
#define PACE_MAX 64

typedef struct PaceEntry
{
	char		key[PACE_KEY_LEN];	/* the table's URL (truncated) */
	int			n;
	int64		at_ms[PACE_MAX];	/* monotonic ms of the last PATCHes, oldest first */
} PaceEntry;

static HTAB *pace_table = NULL;

int64
dfe_bq_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static PaceEntry *
pace_entry(const char *url)
{
	char		key[PACE_KEY_LEN];
	bool		found;
	PaceEntry  *e;

	if (pace_table == NULL)
	{
		HASHCTL		ctl;

		memset(&ctl, 0, sizeof(ctl));
		ctl.keysize = PACE_KEY_LEN;
		ctl.entrysize = sizeof(PaceEntry);
		ctl.hcxt = TopMemoryContext;
		pace_table = hash_create("dfe_airbyte BigQuery table updates", 64, &ctl,
								 HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	}
	strlcpy(key, url, sizeof(key));
	e = hash_search(pace_table, key, HASH_ENTER, &found);
	if (!found)
		e->n = 0;
	return e;
}

/* when the next PATCH of url may go (monotonic ms) */
int64
dfe_bq_pace_due(const char *url, int64 now)
{
	PaceEntry  *e = pace_entry(url);
	int			limit = Min(dfe_bigquery_table_update_limit, PACE_MAX);
	int64		window = dfe_bigquery_table_update_window_ms;
	int			drop = 0;

	while (drop < e->n && e->at_ms[drop] <= now - window)
		drop++;
	if (drop > 0)
	{
		memmove(e->at_ms, e->at_ms + drop, sizeof(int64) * (e->n - drop));
		e->n -= drop;
	}
	if (e->n < limit)
		return now;
	/* the (n - limit + 1)-th newest must leave the window first */
	return e->at_ms[e->n - limit] + window + 1;
}

void
dfe_bq_pace_record(const char *url, int64 at)
{
	PaceEntry  *e = pace_entry(url);

	if (e->n == PACE_MAX)
	{
		memmove(e->at_ms, e->at_ms + 1, sizeof(int64) * (PACE_MAX - 1));
		e->n--;
	}
	e->at_ms[e->n++] = at;
}

