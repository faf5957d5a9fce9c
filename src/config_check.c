/*
 * config_check.c — dfe_airbyte_setting_problems(): the part of
 * dfe_airbyte.config_problems that SQL cannot see (settings with their
 * environment fallbacks, secrets, the worker).  The view adds the checks
 * of the lists against the catalog.
 *
 * A secret's value never appears in a row: only whether it is set and
 * usable.
 */
#include "postgres.h"

#include <ctype.h>
#include <stdlib.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "executor/spi.h"
#include "compat.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"

#include "restore.h"
#include "settings.h"
#include "spi_xact.h"
#include "shared.h"
#include "target.h"
#include "target_scope.h"
#include "version.h"

typedef struct ProblemSink
{
	ReturnSetInfo *rsinfo;
	const char *target;			/* of the rows added now; NULL: the installation's */
} ProblemSink;

static void
add_problem(ProblemSink *sink, const char *severity, const char *object,
			const char *problem, const char *hint)
{
	Datum		values[5];
	bool		nulls[5] = {false, false, false, false, false};

	values[0] = CStringGetTextDatum(severity);
	values[1] = CStringGetTextDatum(object);
	values[2] = CStringGetTextDatum(problem);
	values[3] = CStringGetTextDatum(hint);
	/* 0.2.0's SQL (before ALTER EXTENSION UPDATE) declares four columns: the fifth is not read */
	nulls[4] = sink->target == NULL;
	values[4] = sink->target ? CStringGetTextDatum(sink->target) : (Datum) 0;
	tuplestore_putvalues(sink->rsinfo->setResult, sink->rsinfo->setDesc, values, nulls);
}

static bool
is_set(const char *s)
{
	return s != NULL && s[0] != '\0';
}

static char *
set_hint(const char *guc, const char *envvar)
{
	if (envvar)
		return psprintf("ALTER SYSTEM SET %s = '...'; SELECT pg_reload_conf(); or start the server with the environment variable %s.",
						guc, envvar);
	return psprintf("ALTER SYSTEM SET %s = '...'; SELECT pg_reload_conf();", guc);
}

/* true when set; else a row "<what> is not set" */
static bool
require(ProblemSink *sink, const char *value, const char *guc,
		const char *envvar, const char *what, const char *consequence)
{
	if (is_set(value))
		return true;
	add_problem(sink, "error", guc,
				envvar ? psprintf("%s is not set (neither %s nor the environment variable %s): %s",
								  what, guc, envvar, consequence)
				: psprintf("%s is not set: %s", what, consequence),
				set_hint(guc, envvar));
	return false;
}

static bool
url_is_http(const char *url, bool *plain)
{
	*plain = pg_strncasecmp(url, "http://", 7) == 0;
	return *plain || pg_strncasecmp(url, "https://", 8) == 0;
}

static bool
url_is_local(const char *url)
{
	const char *host = strstr(url, "://") + 3;

	return pg_strncasecmp(host, "localhost", 9) == 0 ||
		strncmp(host, "127.", 4) == 0 || strncmp(host, "[::1]", 5) == 0;
}

/* projects/P/locations/L/taxonomies/T/policyTags/ID */
static bool
policy_tag_well_formed(const char *tag)
{
	static const char *const words[] = {"projects", "locations", "taxonomies", "policyTags"};
	const char *p = tag;

	for (int i = 0; i < 4; i++)
	{
		size_t		len = strlen(words[i]);
		const char *slash;

		if (strncmp(p, words[i], len) != 0 || p[len] != '/')
			return false;
		p += len + 1;
		slash = strchr(p, '/');
		if (i < 3)
		{
			if (slash == NULL || slash == p)
				return false;
			p = slash + 1;
		}
		else if (slash != NULL || *p == '\0')
			return false;
	}
	return true;
}

/* a restore of another server's backup that no DBA has confirmed (restore.h) */
static void
check_restore(ProblemSink *sink)
{
	char	   *recorded = NULL;
	DfeIdentity id;

	if (RecoveryInProgress())
		return;
	dfe_set_result_context(CurrentMemoryContext);
	if (SPI_connect() != SPI_OK_CONNECT)
		dfe_internal_error("config_problems could not connect to SPI");
	id = dfe_identity_check(false, &recorded);
	SPI_finish();
	if (id == IDENTITY_OTHER)
		add_problem(sink, "error", "restored",
					psprintf("this database was restored from a backup of another server (system identifier %s, the slot guard's history is from %s): the slot guard recreates no slot and asks Airbyte for no re-sync until you confirm",
							 dfe_system_identifier_text(), recorded),
					"Check that dfe_airbyte's settings (Airbyte connection, BigQuery dataset, slot) are this environment's, then run SELECT dfe_airbyte_confirm_restore().");
}

static void
check_worker(ProblemSink *sink)
{
	char	   *here = get_database_name(MyDatabaseId);

	if (dfe_shared == NULL)
	{
		add_problem(sink, "error", "shared_preload_libraries",
					"dfe_airbyte is not in shared_preload_libraries: there is no background worker, so deploys are queued but never run and the replication slot is not watched",
					"Add dfe_airbyte to shared_preload_libraries, set dfe_airbyte.database to this database and restart the server.");
		return;
	}
	if (!is_set(dfe_database) || here == NULL || strcmp(dfe_database, here) != 0)
	{
		add_problem(sink, "error", "dfe_airbyte.database",
					psprintf("the background worker works in database \"%s\", not in this one (\"%s\"): the lists, deploys and health history here are not used",
							 dfe_database ? dfe_database : "", here ? here : ""),
					psprintf("Use the extension in database \"%s\", or set dfe_airbyte.database = '%s' in postgresql.conf and restart the server.",
							 dfe_database ? dfe_database : "", here ? here : ""));
		return;
	}
	if (dfe_worker_pid_of(DFE_GUARD_WORKER) == 0)
		add_problem(sink, "warning", "background worker",
					"the dfe_airbyte guard worker is not running: the replication slot is not watched",
					"Look in the server log for the \"dfe_airbyte guard\" worker's last error; the server restarts it after a few seconds (SELECT * FROM dfe_airbyte.workers).");
	if (!dfe_worker_running())
		add_problem(sink, "warning", "background worker",
					"the dfe_airbyte network worker is not running: deploys wait, and re-syncs and sync health are not followed",
					"Look in the server log for the \"dfe_airbyte network worker\"'s last error; the server restarts it after a few seconds (SELECT * FROM dfe_airbyte.workers).");
	check_restore(sink);
}

/* the Airbyte server and its credentials: one for the installation */
static void
check_airbyte(ProblemSink *sink)
{
	const char *url = dfe_setting_airbyte_url();
	const char *consequence = "deploys cannot reach Airbyte";

	if (require(sink, url, "dfe_airbyte.airbyte_url", "AIRBYTE_SERVER_URL",
				"the Airbyte server URL", consequence))
	{
		bool		plain;

		if (!url_is_http(url, &plain))
			add_problem(sink, "error", "dfe_airbyte.airbyte_url",
						"the Airbyte server URL does not start with http:// or https://",
						"Set it to the Airbyte server's base URL, e.g. https://airbyte.example.org (without /api).");
		else if (plain && !url_is_local(url))
			add_problem(sink, "warning", "dfe_airbyte.airbyte_url",
						"the Airbyte server URL uses plain http://: the client secret and access tokens travel unencrypted",
						"Use the server's https:// URL.");
	}
	require(sink, dfe_setting_airbyte_client_id(), "dfe_airbyte.airbyte_client_id",
			"AIRBYTE_CLIENT_ID", "the Airbyte client id", consequence);
	require(sink, dfe_setting_airbyte_client_secret(), "dfe_airbyte.airbyte_client_secret",
			"AIRBYTE_CLIENT_SECRET", "the Airbyte client secret", consequence);
}

/* the service's Airbyte connection (a per-target setting) */
static void
check_connection_id(ProblemSink *sink)
{
	const char *config_env = getenv("AIRBYTE_CONFIGURATION");

	if (is_set(dfe_setting_connection_id()))
		return;
	if (is_set(config_env))
		add_problem(sink, "error", "dfe_airbyte.connection_id",
					"the Airbyte connection id is not set, and the environment variable AIRBYTE_CONFIGURATION is not a JSON object with a CONNECTION_ID (or connectionId) string",
					"Fix AIRBYTE_CONFIGURATION, or ALTER SYSTEM SET dfe_airbyte.connection_id = '...'; SELECT pg_reload_conf();");
	else
		add_problem(sink, "error", "dfe_airbyte.connection_id",
					"the Airbyte connection id is not set (neither dfe_airbyte.connection_id nor CONNECTION_ID in the environment variable AIRBYTE_CONFIGURATION): deploys cannot reach Airbyte",
					"ALTER SYSTEM SET dfe_airbyte.connection_id = '...'; SELECT pg_reload_conf(); or start the server with AIRBYTE_CONFIGURATION='{\"CONNECTION_ID\": \"...\"}' in its environment.");
}

static void
check_google_credentials(ProblemSink *sink, const char *creds)
{
	const char *p = creds;

	while (isspace((unsigned char) *p))
		p++;
	if (*p == '{')
	{
		cJSON	   *json = cJSON_Parse(p);

		if (!cJSON_IsObject(json))
			add_problem(sink, "error", "dfe_airbyte.google_credentials",
						"the Google credential configuration is not a valid JSON object",
						"Set it to the credential configuration JSON (\"type\": \"external_account\") or to the path of a file holding it.");
		if (json)
			cJSON_Delete(json);
	}
	else if (access(p, R_OK) != 0)
		add_problem(sink, "error", "dfe_airbyte.google_credentials",
					psprintf("the server cannot read the Google credential configuration file it names: %s",
							 strerror(errno)),
					"Check the path (relative paths start at the data directory) and that the file is readable by the database server's operating-system user.");
}

/* the Google credentials: one for the installation */
static void
check_google(ProblemSink *sink)
{
	const char *creds = dfe_setting_google_credentials();

	if (require(sink, creds, "dfe_airbyte.google_credentials", "GOOGLE_CLOUD_CREDENTIALS",
				"the Google credential configuration",
				"sensitive columns cannot be given the hidden policy tag"))
		check_google_credentials(sink, creds);
}

/* the service's BigQuery dataset and hidden policy tag (per-target settings) */
static void
check_bigquery(ProblemSink *sink)
{
	const char *consequence = "sensitive columns cannot be given the hidden policy tag";
	const char *tag = dfe_setting_hidden_policy_tag();

	require(sink, dfe_setting_bigquery_project(), "dfe_airbyte.bigquery_project",
			"BIGQUERY_PROJECT_ID", "the BigQuery project", consequence);
	require(sink, dfe_setting_bigquery_dataset(), "dfe_airbyte.bigquery_dataset",
			"BIGQUERY_AIRBYTE_DATASET", "the BigQuery dataset", consequence);
	if (require(sink, tag, "dfe_airbyte.hidden_policy_tag", "BIGQUERY_HIDDEN_POLICY_TAG (or BIGQUERY_POLICY_TAG)",
				"the hidden policy tag", consequence) &&
		!policy_tag_well_formed(tag))
		add_problem(sink, "error", "dfe_airbyte.hidden_policy_tag",
					psprintf("the hidden policy tag \"%s\" is not of the form projects/P/locations/L/taxonomies/T/policyTags/ID", tag),
					"Copy the policy tag's full resource name from the BigQuery taxonomy.");
}

/* the service's own bound on the WAL its slot retains (a per-target setting) */
static void
check_slot_limit(ProblemSink *sink)
{
	if (dfe_max_slot_wal_size_mb < 0)
		add_problem(sink, "warning", "dfe_airbyte.max_slot_wal_size",
					"no per-service limit on the WAL the Airbyte slot may retain (-1): a stalled Airbyte can fill the disk",
					"ALTER SYSTEM SET dfe_airbyte.max_slot_wal_size = '10GB'; SELECT pg_reload_conf(); and choose dfe_airbyte.slot_limit_action.");
}

/* this server's own settings: the local target's */
static void
check_server(ProblemSink *sink)
{
	if (wal_level < WAL_LEVEL_LOGICAL)
		add_problem(sink, "error", "wal_level",
					"wal_level is not logical: Airbyte's CDC cannot read changes",
					"ALTER SYSTEM SET wal_level = logical; then restart the server.");
	if (max_slot_wal_keep_size_mb < 0)
		add_problem(sink, "warning", "max_slot_wal_keep_size",
					"max_slot_wal_keep_size is -1: the server has no backstop against a replication slot retaining WAL without limit",
					"ALTER SYSTEM SET max_slot_wal_keep_size = '50GB' (above dfe_airbyte.max_slot_wal_size); SELECT pg_reload_conf();");
}

/*
 * The Airbyte connection as the worker last read it for the sink's target
 * (connection.c): Airbyte's own schema propagation and a disabled
 * connection.
 */
static void
check_connection_watch(ProblemSink *sink)
{
	char	   *behavior = NULL;
	char	   *status = NULL;
	Oid			types[1] = {TEXTOID};
	Datum		values[1];

	values[0] = CStringGetTextDatum(sink->target);
	if (SPI_connect() != SPI_OK_CONNECT)
		return;
	if (SPI_execute_with_args("SELECT schema_behavior, status FROM dfe_airbyte.connection_watch "
							  "WHERE target OPERATOR(pg_catalog.=) $1",
							  1, types, values, NULL, true, 1) == SPI_OK_SELECT &&
		SPI_processed > 0)
	{
		char	   *b = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
		char	   *st = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
		MemoryContext spi = MemoryContextSwitchTo(sink->rsinfo->econtext->ecxt_per_query_memory);

		behavior = b ? pstrdup(b) : NULL;
		status = st ? pstrdup(st) : NULL;
		MemoryContextSwitchTo(spi);
	}
	SPI_finish();

	if (behavior && (strcmp(behavior, "propagate_columns") == 0 || strcmp(behavior, "propagate_fully") == 0))
		add_problem(sink, "warning", "Airbyte connection",
					psprintf("the Airbyte connection's nonBreakingSchemaUpdatesBehavior is %s: Airbyte adds every new column%s to the connection on its own at its schema check, so a migration's new column is copied to BigQuery, untagged, before the allowlist says so; the worker takes it out again after that sync (dfe_airbyte.remove_connection_drift)",
							 behavior, strcmp(behavior, "propagate_fully") == 0 ? " and every new table" : ""),
					"Set non_breaking_schema_updates_behavior = \"ignore\" on the connection in Terraform (the extension does not change it: Terraform owns the connection).");
	if (status && (strcmp(status, "inactive") == 0 || strcmp(status, "deprecated") == 0))
		add_problem(sink, "error", "Airbyte connection",
					psprintf("the Airbyte connection is %s: Airbyte runs no syncs for it", status),
					"Fix the cause (dfe_airbyte.events, the job logs in the Airbyte UI), then SELECT * FROM dfe_airbyte_repair(dry_run => false) re-enables it.");
}

/*
 * upgrades: the SQL objects are older (or newer) than the loaded library.
 * Returns false then: the checks that read the extension's own tables are
 * skipped, since those tables may not exist in that version.
 */
static bool
check_version(ProblemSink *sink)
{
	char	   *installed = dfe_installed_version();

	if (installed && strcmp(installed, DFE_AIRBYTE_VERSION) != 0)
	{
		add_problem(sink, "error", "dfe_airbyte",
					psprintf("the installed SQL objects are version %s but the loaded library is version %s: the worker's and the functions' queries may fail",
							 installed, DFE_AIRBYTE_VERSION),
					"ALTER EXTENSION dfe_airbyte UPDATE; (as a superuser, in this database)");
		return false;
	}
	return true;
}

/*
 * The settings the sink's target overrides in dfe_airbyte.targets.settings,
 * checked as dfe_airbyte_add_target() checks them (an UPDATE of the row is
 * not): a row for each one refused.  Returns whether the target is enabled
 * and all its settings are usable, so that its scope can be entered.
 */
static bool
check_target_settings(ProblemSink *sink)
{
	const char *args[1] = {sink->target};
	DfeRows    *r;
	bool		usable;

	r = dfe_target_query(dfe_target_open(DFE_LOCAL_TARGET), "read the target's settings",
						 "SELECT t.enabled, s.key, pg_catalog.jsonb_typeof(s.value), "
						 "s.value OPERATOR(pg_catalog.#>>) '{}' "
						 "FROM dfe_airbyte.targets t "
						 "LEFT JOIN LATERAL pg_catalog.jsonb_each(t.settings) s ON true "
						 "WHERE t.name OPERATOR(pg_catalog.=) $1 ORDER BY s.key",
						 1, args);
	if (r->nrows == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("dfe_airbyte target \"%s\" does not exist", sink->target),
				 errhint("SELECT name FROM dfe_airbyte.targets lists the targets.")));
	usable = strcmp(dfe_rows_value(r, 0, 0), "t") == 0;
	for (int i = 0; i < r->nrows; i++)
	{
		const char *key = dfe_rows_value(r, i, 1);
		const char *value = dfe_rows_value(r, i, 3);
		const char *why;

		if (key == NULL)
			continue;
		why = dfe_target_setting_problem(key, dfe_rows_value(r, i, 2), value);
		if (why == NULL)
			continue;
		add_problem(sink, "error", psprintf("dfe_airbyte.%s", key),
					psprintf("target \"%s\" sets \"%s\" to %s, which is refused: %s; the target's tasks fail until it is fixed",
							 sink->target, key, value ? psprintf("\"%s\"", value) : "null", why),
					psprintf("Correct it, e.g. UPDATE dfe_airbyte.targets SET settings = settings - %s WHERE name = '%s'; "
							 "a target's settings are valued as in postgresql.conf.",
							 quote_literal_cstr(key), sink->target));
		usable = false;
	}
	return usable;
}

/*
 * Enters the sink's target's scope: a setting the server refuses though it
 * passed check_target_settings (a number out of the setting's range) is a
 * row, not an error that hides every other row.
 */
static DfeTargetScope *
guarded_scope_enter(ProblemSink *sink)
{
	ErrorData  *edata;
	DfeTargetScope *scope = dfe_target_scope_try_enter(sink->target, &edata);

	if (scope == NULL)
		add_problem(sink, "error", "dfe_airbyte.targets",
					psprintf("the settings of target \"%s\" cannot be applied: %s; the target's tasks fail until they are fixed",
							 sink->target, edata->message),
					edata->hint ? edata->hint
					: "Correct the target's settings (UPDATE dfe_airbyte.targets SET settings = ...); they are valued as in postgresql.conf.");
	return scope;
}

/*
 * The rows of one target: its own settings, then, in its scope (its
 * settings over the global ones), the per-service settings it runs with,
 * its Airbyte connection, and for "local" this server's WAL settings.
 */
static void
check_target(ProblemSink *sink, const char *target)
{
	DfeTargetScope *scope;

	sink->target = target;
	if (!check_target_settings(sink) || (scope = guarded_scope_enter(sink)) == NULL)
		return;
	check_connection_id(sink);
	check_bigquery(sink);
	check_slot_limit(sink);
	if (strcmp(target, DFE_LOCAL_TARGET) == 0)
		check_server(sink);
	check_connection_watch(sink);
	dfe_target_scope_leave(scope);
}

/*
 * The SQL objects of another version (before ALTER EXTENSION UPDATE) have
 * no targets: the per-service checks read the global settings, as 0.2.0's.
 */
static void
check_global_settings(ProblemSink *sink)
{
	check_connection_id(sink);
	check_bigquery(sink);
	check_slot_limit(sink);
	check_server(sink);
}

PG_FUNCTION_INFO_V1(dfe_airbyte_setting_problems);

/*
 * dfe_airbyte_setting_problems(target text DEFAULT 'local')
 *   → TABLE(severity, object, problem, hint, target_name)
 *
 * The installation's rows (target_name NULL: the worker, the Airbyte server and
 * its credentials, the Google credentials), then the target's (none when
 * target is NULL).  Without an argument (0.2.0's SQL) the local one's.
 */
Datum
dfe_airbyte_setting_problems(PG_FUNCTION_ARGS)
{
	ProblemSink sink;
	const char *target = DFE_LOCAL_TARGET;
	bool		matching;

	if (PG_NARGS() > 0)
		target = PG_ARGISNULL(0) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(0));
	InitMaterializedSRF(fcinfo, 0);
	sink.rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	sink.target = NULL;

	matching = check_version(&sink);
	if (matching)
		check_worker(&sink);
	check_airbyte(&sink);
	check_google(&sink);
	if (target == NULL)
		return (Datum) 0;
	if (matching)
		check_target(&sink, target);
	else
		check_global_settings(&sink);
	return (Datum) 0;
}
