/*
 * connection.h — the Airbyte connection as it really is, compared with the
 * allowlist: the connection watch run after each sync
 * health poll, and the pieces dfe_airbyte_deploy_plan() and
 * dfe_airbyte_repair() share with it.
 */
#ifndef DFE_AIRBYTE_CONNECTION_H
#define DFE_AIRBYTE_CONNECTION_H

#include "postgres.h"

#include "nodes/pg_list.h"

/* one stream of configurations.streams[] */
typedef struct LiveStream
{
	char	   *name;
	char	   *sync_mode;		/* NULL when absent */
	char	   *primary_key;	/* "a, b", NULL when absent */
	List	   *fields;			/* char *: selectedFields, in order */
	bool		all_fields;		/* no selectedFields: every field is selected */
} LiveStream;

typedef struct LiveConnection
{
	char	   *status;			/* active, inactive, deprecated; NULL when absent */
	char	   *schema_behavior;	/* nonBreakingSchemaUpdatesBehavior, NULL when absent */
	List	   *streams;		/* LiveStream * */
	int			nfields;		/* selected fields of streams that list theirs */
} LiveConnection;

/* something the connection selects that the allowlist does not list */
typedef struct Unlisted
{
	char	   *stream;
	char	   *field;			/* NULL: the whole stream; "*": every field (no selection) */
} Unlisted;

/* GET /api/public/v1/connections/{id} (HTTP: outside a transaction in the worker) */
extern void dfe_connection_read(LiveConnection *c);

/* the allowlist's stream configuration (needs a transaction); *json gets the PATCH body */
extern void dfe_connection_wanted(LiveConnection *c, char **json);

extern LiveStream *dfe_connection_stream(const LiveConnection *c, const char *name);
extern bool dfe_stream_selects(const LiveStream *s, const char *field);

/* Unlisted *: streams and fields of live that wanted lacks (Airbyte's own metadata fields aside) */
extern List *dfe_connection_unlisted(const LiveConnection *live, const LiveConnection *wanted);

/* inactive or deprecated */
extern bool dfe_connection_disabled(const char *status);

/* PATCH {"status": "active"} */
extern void dfe_connection_enable(void);

/*
 * sync_health.c: read the connection right after the jobs (both outside a
 * transaction, before the poll is recorded), then, after the poll was
 * recorded, dfe_connection_watch_poll() acts on that read.
 */
extern void dfe_connection_watch_read(void);

/* sync_health.c: after each poll (jobs: the AirbyteJob * just read; new_success: 0 or a job id) */
extern void dfe_connection_watch_poll(List *jobs, int64 new_success);

#endif
