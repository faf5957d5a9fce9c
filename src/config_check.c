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
#include "version.h"

typedef struct ProblemSink
{
	ReturnSetInfo *rsinfo;
} ProblemSink;

static void
add_problem(ProblemSink *sink, const char *severity, const char *object,
			const char *problem, const char *hint)
{
	Datum		values[4];
	bool		nulls[4] = {false, false, false, false};

	values[0] = CStringGetTextDatum(severity);
	values[1] = CStringGetTextDatum(object);
	values[2] = CStringGetTextDatum(problem);
	values[3] = CStringGetTextDatum(hint);
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

static void
check_airbyte(ProblemSink *sink)
{
	const char *url = dfe_setting_airbyte_url();
	const char *config_env = getenv("AIRBYTE_CONFIGURATION");
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

	if (!is_set(dfe_setting_connection_id()))
	{
		if (is_set(config_env))
			add_problem(sink, "error", "dfe_airbyte.connection_id",
						"the Airbyte connection id is not set, and the environment variable AIRBYTE_CONFIGURATION is not a JSON object with a CONNECTION_ID (or connectionId) string",
						"Fix AIRBYTE_CONFIGURATION, or ALTER SYSTEM SET dfe_airbyte.connection_id = '...'; SELECT pg_reload_conf();");
		else
			add_problem(sink, "error", "dfe_airbyte.connection_id",
						"the Airbyte connection id is not set (neither dfe_airbyte.connection_id nor CONNECTION_ID in the environment variable AIRBYTE_CONFIGURATION): deploys cannot reach Airbyte",
						"ALTER SYSTEM SET dfe_airbyte.connection_id = '...'; SELECT pg_reload_conf(); or start the server with AIRBYTE_CONFIGURATION='{\"CONNECTION_ID\": \"...\"}' in its environment.");
	}
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

static void
check_bigquery(ProblemSink *sink)
{
	const char *consequence = "sensitive columns cannot be given the hidden policy tag";
	const char *tag = dfe_setting_hidden_policy_tag();
	const char *creds = dfe_setting_google_credentials();

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
	if (require(sink, creds, "dfe_airbyte.google_credentials", "GOOGLE_CLOUD_CREDENTIALS",
				"the Google credential configuration", consequence))
		check_google_credentials(sink, creds);
}

static void
check_server(ProblemSink *sink)
{
	if (wal_level < WAL_LEVEL_LOGICAL)
		add_problem(sink, "error", "wal_level",
					"wal_level is not logical: Airbyte's CDC cannot read changes",
					"ALTER SYSTEM SET wal_level = logical; then restart the server.");
	if (dfe_max_slot_wal_size_mb < 0)
		add_problem(sink, "warning", "dfe_airbyte.max_slot_wal_size",
					"no per-service limit on the WAL the Airbyte slot may retain (-1): a stalled Airbyte can fill the disk",
					"ALTER SYSTEM SET dfe_airbyte.max_slot_wal_size = '10GB'; SELECT pg_reload_conf(); and choose dfe_airbyte.slot_limit_action.");
	if (max_slot_wal_keep_size_mb < 0)
		add_problem(sink, "warning", "max_slot_wal_keep_size",
					"max_slot_wal_keep_size is -1: the server has no backstop against a replication slot retaining WAL without limit",
					"ALTER SYSTEM SET max_slot_wal_keep_size = '50GB' (above dfe_airbyte.max_slot_wal_size); SELECT pg_reload_conf();");
}

/*
 * The Airbyte connection as the worker last read it (connection.c):
 * Airbyte's own schema propagation and a disabled connection.
 */
static void
check_connection_watch(ProblemSink *sink)
{
	char	   *behavior = NULL;
	char	   *status = NULL;

	if (SPI_connect() != SPI_OK_CONNECT)
		return;
	/* the SQL objects may be older than the library (before ALTER EXTENSION UPDATE) */
	if (SPI_execute("SELECT 1 WHERE pg_catalog.to_regclass('dfe_airbyte.connection_watch') IS NOT NULL",
					true, 1) == SPI_OK_SELECT && SPI_processed > 0 &&
		SPI_execute("SELECT schema_behavior, status FROM dfe_airbyte.connection_watch", true, 1) == SPI_OK_SELECT &&
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

PG_FUNCTION_INFO_V1(dfe_airbyte_setting_problems);

/* dfe_airbyte_setting_problems() → TABLE(severity, object, problem, hint) */
Datum
dfe_airbyte_setting_problems(PG_FUNCTION_ARGS)
{
	ProblemSink sink;

	InitMaterializedSRF(fcinfo, 0);
	sink.rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	if (check_version(&sink))
		check_worker(&sink);
	check_airbyte(&sink);
	check_bigquery(&sink);
	check_server(&sink);
	check_connection_watch(&sink);
	return (Datum) 0;
}
