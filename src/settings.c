/*
 * settings.c — GUC definitions and environment fallbacks (README.md,
 * "Settings": every setting, its environment variable and its default).
 *
 * Connection details and secrets are PGC_SIGHUP: only a superuser can set
 * them (postgresql.conf or ALTER SYSTEM), so no ordinary role can point the
 * extension at another URL or read a secret.  Secrets are also
 * GUC_SUPERUSER_ONLY and GUC_NO_SHOW_ALL, so SHOW ALL and pg_settings do not
 * show them to anyone but a superuser.
 */
#include "postgres.h"

#include <limits.h>
#include <stdlib.h>

#include "miscadmin.h"
#include "utils/guc.h"

#include <cjson/cJSON.h>

#include "settings.h"

char	   *dfe_database = NULL;
static char	   *dfe_airbyte_url = NULL;
static char	   *dfe_airbyte_client_id = NULL;
char	   *dfe_airbyte_client_secret = NULL;
static char	   *dfe_connection_id = NULL;
static char	   *dfe_source_id = NULL;
static char	   *dfe_bigquery_project = NULL;
static char	   *dfe_bigquery_dataset = NULL;
static char	   *dfe_bigquery_internal_dataset = NULL;
static char	   *dfe_hidden_policy_tag = NULL;
char	   *dfe_google_credentials = NULL;
static char	   *dfe_azure_client_id = NULL;
static char	   *dfe_azure_federated_token_file = NULL;
static char	   *dfe_bigquery_url = NULL;
static char	   *dfe_slot_name = NULL;
int			dfe_max_slot_wal_size_mb = -1;
int			dfe_slot_limit_action = SLOT_LIMIT_WARN;
int			dfe_check_interval_s = 10;
char	   *dfe_passfile = NULL;
int			dfe_target_timeout_ms = 5000;
static int			dfe_sync_stale_after_min = 45;

int			dfe_http_connect_timeout_s = 10;
int			dfe_http_timeout_s = 60;
int			dfe_http_max_retries = 5;
int			dfe_http_retry_base_ms = 500;
int			dfe_policy_tag_concurrency = 16;
int			dfe_migration_wait_timeout_s = 600;
int			dfe_migration_poll_interval_s = 5;
int			dfe_job_timeout_s = 3600;
int			dfe_job_poll_interval_s = 10;
int			dfe_sync_poll_interval_s = 60;

/* connection watch, deploy plan and repair */
bool		dfe_remove_connection_drift = true;
int			dfe_airbyte_max_fields = 20000;

int			dfe_max_slot_recreations_per_day = 2;	/* slot guard independence */
int			dfe_history_retention_min = 7 * 24 * 60;
int			dfe_history_max_rows = 100000;
int			dfe_reconcile_max_bytes_billed_kb = 50 * 1024 * 1024;
int			dfe_reconcile_daily_mb = 500 * 1024;
int			dfe_reconcile_interval_s = 86400;
int			dfe_reconcile_checksum_every = 0;
double		dfe_slot_warning_fraction = 0.8;
char	   *dfe_http_ca_file = NULL;
static char	   *dfe_source_schema = NULL;
static char	   *dfe_publication = NULL;
int			dfe_deploy_retry_timeout_s = 600;

/* slot health: Airbyte's rhythm, data flow checks, limit advice */
int			dfe_sync_interval_s = 0;
int			dfe_slot_inactive_intervals = 3;
int			dfe_disk_free_override_mb = -1;
int			dfe_job_stuck_after_s = 3600;

/* safety: response size cap */
int			dfe_http_max_response_size_kb = 64 * 1024;
/* BigQuery policy tags and the lists */
bool		dfe_hide_unlisted_columns = true;
int			dfe_bigquery_table_update_limit = 4;
int			dfe_bigquery_table_update_window_ms = 10000;
static char	   *dfe_rails_env = NULL;

/* for the test suite only: see define_test_settings() */
int			dfe_test_prune_interval_ms = 60 * 1000;

static const struct config_enum_entry slot_limit_action_options[] = {
	{"warn", SLOT_LIMIT_WARN, false},
	{"terminate", SLOT_LIMIT_TERMINATE, false},
	{"recreate", SLOT_LIMIT_RECREATE, false},
	{NULL, 0, false}
};

/*
 * The settings, in tables: one line each, so that adding one is one line.
 * Connection details and secrets are PGC_SIGHUP (see the top of this file);
 * SECRET hides a setting from everyone but superusers.
 */
#define SECRET (GUC_SUPERUSER_ONLY | GUC_NO_SHOW_ALL)

typedef struct StringSetting
{
	const char *name;
	const char *desc;
	char	  **var;
	const char *boot;
	GucContext	context;
	int			flags;
} StringSetting;

typedef struct IntSetting
{
	const char *name;
	const char *desc;
	int		   *var;
	int			boot;
	int			min;
	int			max;
	int			flags;			/* the unit */
} IntSetting;

static const StringSetting string_settings[] = {
	{"dfe_airbyte.airbyte_url", "Airbyte server base URL (env AIRBYTE_SERVER_URL).",
	&dfe_airbyte_url, NULL, PGC_SIGHUP, 0},
	{"dfe_airbyte.airbyte_client_id", "Airbyte application client id (env AIRBYTE_CLIENT_ID).",
	&dfe_airbyte_client_id, NULL, PGC_SIGHUP, 0},
	{"dfe_airbyte.airbyte_client_secret", "Airbyte application client secret (env AIRBYTE_CLIENT_SECRET).",
	&dfe_airbyte_client_secret, NULL, PGC_SIGHUP, SECRET},
	{"dfe_airbyte.connection_id", "Airbyte connection id (env AIRBYTE_CONFIGURATION, key CONNECTION_ID).",
	&dfe_connection_id, NULL, PGC_SIGHUP, 0},
	{"dfe_airbyte.source_id", "Airbyte source id; read from the connection when unset (env AIRBYTE_CONFIGURATION, key SOURCE_ID).",
	&dfe_source_id, NULL, PGC_SIGHUP, 0},
	{"dfe_airbyte.bigquery_project", "GCP project of the BigQuery datasets (env BIGQUERY_PROJECT_ID).",
	&dfe_bigquery_project, NULL, PGC_SIGHUP, 0},
	{"dfe_airbyte.bigquery_dataset", "BigQuery dataset of the final tables (env BIGQUERY_AIRBYTE_DATASET).",
	&dfe_bigquery_dataset, NULL, PGC_SIGHUP, 0},
	{"dfe_airbyte.bigquery_internal_dataset", "BigQuery dataset of Airbyte's raw tables (env AIRBYTE_INTERNAL_DATASET, default airbyte_internal).",
	&dfe_bigquery_internal_dataset, NULL, PGC_SIGHUP, 0},
	{"dfe_airbyte.hidden_policy_tag", "Policy tag put on sensitive columns (env BIGQUERY_HIDDEN_POLICY_TAG).",
	&dfe_hidden_policy_tag, NULL, PGC_SIGHUP, 0},
	{"dfe_airbyte.google_credentials", "Google external-account credential configuration, as JSON or a file path (env GOOGLE_CLOUD_CREDENTIALS).",
	&dfe_google_credentials, NULL, PGC_SIGHUP, SECRET},
	{"dfe_airbyte.azure_client_id", "Azure client id for workload identity (env AZURE_CLIENT_ID).",
	&dfe_azure_client_id, NULL, PGC_SIGHUP, 0},
	{"dfe_airbyte.azure_federated_token_file", "Azure federated token file (env AZURE_FEDERATED_TOKEN_FILE).",
	&dfe_azure_federated_token_file, NULL, PGC_SIGHUP, 0},
	{"dfe_airbyte.bigquery_url", "BigQuery API base URL.",
	&dfe_bigquery_url, "https://bigquery.googleapis.com", PGC_SIGHUP, 0},
	{"dfe_airbyte.slot_name", "The Airbyte logical replication slot.",
	&dfe_slot_name, "airbyte_slot", PGC_SIGHUP, 0},
	/* it holds every target's password: hidden like the secrets, although only its path is shown */
	{"dfe_airbyte.passfile", "libpq password file (mode 0600) for the roles of remote targets.",
	&dfe_passfile, NULL, PGC_SIGHUP, SECRET},
	{"dfe_airbyte.http_ca_file", "Extra CA bundle (PEM file) trusted for TLS; verification itself is always on.",
	&dfe_http_ca_file, NULL, PGC_SIGHUP, 0},
	{"dfe_airbyte.source_schema", "Schema of the allowlisted tables (the schema Airbyte replicates).",
	&dfe_source_schema, "public", PGC_SIGHUP, 0},
	{"dfe_airbyte.publication", "Publication the Airbyte source reads; config_problems checks that it covers the allowlisted tables.",
	&dfe_publication, "airbyte_publication", PGC_SIGHUP, 0},
	{"dfe_airbyte.rails_env", "Rails environment whose section of the dfe-analytics files is merged over shared: (env RAILS_ENV).",
	&dfe_rails_env, NULL, PGC_USERSET, 0},
};

static const IntSetting int_settings[] = {
	{"dfe_airbyte.max_slot_wal_size", "Most WAL the Airbyte slot may retain before slot_limit_action is taken (-1: no limit).",
	&dfe_max_slot_wal_size_mb, -1, -1, INT_MAX, GUC_UNIT_MB},
	{"dfe_airbyte.check_interval", "How often the guard worker samples the replication slots.",
	&dfe_check_interval_s, 10, 1, 86400, GUC_UNIT_S},
	{"dfe_airbyte.target_timeout", "Deadline of connecting to a remote target or of one query on it.",
	&dfe_target_timeout_ms, 5000, 100, 600000, GUC_UNIT_MS},
	{"dfe_airbyte.sync_stale_after", "A sync older than this is stale.",
	&dfe_sync_stale_after_min, 45, 1, 7 * 24 * 60, GUC_UNIT_MIN},
	{"dfe_airbyte.http_connect_timeout", "Connect timeout of every outside HTTP call.",
	&dfe_http_connect_timeout_s, 10, 1, 600, GUC_UNIT_S},
	{"dfe_airbyte.http_timeout", "Total timeout of one HTTP attempt.",
	&dfe_http_timeout_s, 60, 1, 3600, GUC_UNIT_S},
	{"dfe_airbyte.http_max_retries", "Retries of an HTTP call after 429, 5xx or a transport error.",
	&dfe_http_max_retries, 5, 0, 100, 0},
	{"dfe_airbyte.http_retry_base_delay", "First retry delay; each retry doubles it, with jitter.",
	&dfe_http_retry_base_ms, 500, 1, 600000, GUC_UNIT_MS},
	{"dfe_airbyte.policy_tag_concurrency", "BigQuery tables processed at once by dfe_airbyte_apply_policy_tags().",
	&dfe_policy_tag_concurrency, 16, 1, 256, 0},
	{"dfe_airbyte.migration_wait_timeout", "How long a deploy waits for a running Rails migration.",
	&dfe_migration_wait_timeout_s, 600, 0, 86400, GUC_UNIT_S},
	{"dfe_airbyte.migration_poll_interval", "How often the network worker reads a remote target's schema_migrations for a new version to deploy.",
	&dfe_migration_poll_interval_s, 5, 1, 3600, GUC_UNIT_S},
	{"dfe_airbyte.job_timeout", "How long a deploy waits for its Airbyte sync job.",
	&dfe_job_timeout_s, 3600, 1, 7 * 86400, GUC_UNIT_S},
	{"dfe_airbyte.job_poll_interval", "How often a waiting deploy polls its Airbyte job.",
	&dfe_job_poll_interval_s, 10, 1, 3600, GUC_UNIT_S},
	{"dfe_airbyte.sync_poll_interval", "How often the worker reads the last Airbyte sync job for sync_health.",
	&dfe_sync_poll_interval_s, 60, 1, 86400, GUC_UNIT_S},
	{"dfe_airbyte.history_retention", "How long slot samples, sync jobs, events and finished deploys are kept.",
	&dfe_history_retention_min, 7 * 24 * 60, 1, 365 * 24 * 60, GUC_UNIT_MIN},
	{"dfe_airbyte.history_max_rows", "Most rows kept in each history table.",
	&dfe_history_max_rows, 100000, 100, INT_MAX, 0},
	/* reconciliation (src/reconcile.c): BigQuery bills per byte read */
	{"dfe_airbyte.reconcile_max_bytes_billed", "Most bytes one reconciliation query may bill in BigQuery (maximumBytesBilled).",
	&dfe_reconcile_max_bytes_billed_kb, 50 * 1024 * 1024, 1024, INT_MAX, GUC_UNIT_KB},
	{"dfe_airbyte.reconcile_daily_bytes", "Most bytes reconciliation may bill in BigQuery in 24 hours (0: no reconciliation query runs).",
	&dfe_reconcile_daily_mb, 500 * 1024, 0, INT_MAX, GUC_UNIT_MB},
	{"dfe_airbyte.reconcile_interval", "Least time between two reconciliations of one table by the worker (0: the worker does not reconcile).",
	&dfe_reconcile_interval_s, 86400, 0, INT_MAX, GUC_UNIT_S},
	{"dfe_airbyte.reconcile_checksum_every", "Every Nth reconciliation of a table by the worker is in checksum mode (0: count mode only).",
	&dfe_reconcile_checksum_every, 0, 0, INT_MAX, 0},
	/* the slot guard never recreates in a loop */
	{"dfe_airbyte.max_slot_recreations_per_day", "Most recreations of the Airbyte slot by slot_limit_action = recreate in any 24 hours; past it the guard only warns.",
	&dfe_max_slot_recreations_per_day, 2, 0, 100, 0},
	{"dfe_airbyte.deploy_retry_timeout", "How long a deploy step keeps being retried while Airbyte does not answer or answers 429/5xx.",
	&dfe_deploy_retry_timeout_s, 600, 0, 86400, GUC_UNIT_S},
	/* slot health: Airbyte's rhythm, data flow checks, limit advice */
	{"dfe_airbyte.sync_interval", "Interval of the Airbyte connection's sync schedule; 0: dfe_airbyte.sync_stale_after / 3.",
	&dfe_sync_interval_s, 0, 0, 7 * 86400, GUC_UNIT_S},
	{"dfe_airbyte.slot_inactive_intervals", "A slot nobody consumed for this many sync intervals is inactive.",
	&dfe_slot_inactive_intervals, 3, 1, 1000, 0},
	{"dfe_airbyte.disk_free_override", "Free space to assume for the data directory's disk, where it is a quota statvfs cannot see (-1: measure it).",
	&dfe_disk_free_override_mb, -1, -1, INT_MAX, GUC_UNIT_MB},
	{"dfe_airbyte.job_stuck_after", "A running Airbyte job without progress (rows, bytes, update time) for this long is stuck.",
	&dfe_job_stuck_after_s, 3600, 1, 7 * 86400, GUC_UNIT_S},
	/* connection watch, deploy plan and repair */
	{"dfe_airbyte.airbyte_max_fields", "Airbyte's limit on selected fields per connection (its MAX_FIELDS_PER_CONNECTION), for dfe_airbyte_deploy_plan().",
	&dfe_airbyte_max_fields, 20000, 1, INT_MAX, 0},
	/* safety: a server cannot fill a backend's memory */
	{"dfe_airbyte.http_max_response_size", "Largest HTTP response body accepted from Airbyte or Google; a larger one fails the call.",
	&dfe_http_max_response_size_kb, 64 * 1024, 64, 512 * 1024, GUC_UNIT_KB},
	/* BigQuery policy tags */
	{"dfe_airbyte.bigquery_table_update_limit", "Most PATCHes of one BigQuery table per bigquery_table_update_window (BigQuery allows about 5 per 10 s).",
	&dfe_bigquery_table_update_limit, 4, 1, 1000, 0},
	{"dfe_airbyte.bigquery_table_update_window", "The sliding window of bigquery_table_update_limit.",
	&dfe_bigquery_table_update_window_ms, 10000, 0, 3600000, GUC_UNIT_MS},
};

/* the settings of other types: one enum, one real, two booleans */
static void
define_other_settings(void)
{
	DefineCustomEnumVariable("dfe_airbyte.slot_limit_action",
							 "What to do when the Airbyte slot passes max_slot_wal_size: warn, terminate or recreate.",
							 NULL, &dfe_slot_limit_action, SLOT_LIMIT_WARN,
							 slot_limit_action_options, PGC_SIGHUP, 0,
							 NULL, NULL, NULL);
	DefineCustomRealVariable("dfe_airbyte.slot_warning_fraction",
							 "Fraction of max_slot_wal_size at which a slot's status becomes warning.",
							 NULL, &dfe_slot_warning_fraction, 0.8, 0.01, 1.0,
							 PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomBoolVariable("dfe_airbyte.remove_connection_drift",
							 "Take streams and fields the allowlist does not list out of the Airbyte connection after each successful sync.",
							 NULL, &dfe_remove_connection_drift, true, PGC_SIGHUP, 0,
							 NULL, NULL, NULL);
	DefineCustomBoolVariable("dfe_airbyte.hide_unlisted_columns",
							 "Put the hidden policy tag also on final-table columns that are not allowlisted (not Airbyte's own).",
							 NULL, &dfe_hide_unlisted_columns, true, PGC_SIGHUP, 0,
							 NULL, NULL, NULL);
}

/*
 * Settings for the test suite only, so that it need not wait out intervals
 * fixed for production (docs/development.md).  Like PostgreSQL's developer
 * options they are left out of postgresql.conf.sample, and also out of SHOW
 * ALL and pg_settings, so nobody mistakes them for something to tune; the
 * defaults are the production values.
 */
static void
define_test_settings(void)
{
	DefineCustomIntVariable("dfe_airbyte.test_prune_interval",
							"For tests only: how often the slot guard prunes the history tables.",
							NULL, &dfe_test_prune_interval_ms, 60 * 1000, 1000, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS | GUC_NOT_IN_SAMPLE | GUC_NO_SHOW_ALL,
							NULL, NULL, NULL);
}

void
dfe_define_settings(void)
{
	int			i;

	/*
	 * PostgreSQL only allows postmaster-level settings while preloading (it
	 * raises FATAL otherwise); without preloading there is no worker anyway.
	 */
	if (process_shared_preload_libraries_in_progress)
		DefineCustomStringVariable("dfe_airbyte.database",
								   "Database both dfe_airbyte workers connect to.",
								   NULL, &dfe_database, "postgres", PGC_POSTMASTER, 0,
								   NULL, NULL, NULL);
	for (i = 0; i < lengthof(string_settings); i++)
	{
		const StringSetting *s = &string_settings[i];

		DefineCustomStringVariable(s->name, s->desc, NULL, s->var, s->boot, s->context,
								   s->flags, NULL, NULL, NULL);
	}
	for (i = 0; i < lengthof(int_settings); i++)
	{
		const IntSetting *s = &int_settings[i];

		DefineCustomIntVariable(s->name, s->desc, NULL, s->var, s->boot, s->min, s->max,
								PGC_SIGHUP, s->flags, NULL, NULL, NULL);
	}
	define_other_settings();
	define_test_settings();

	MarkGUCPrefixReserved("dfe_airbyte");
}

int
dfe_effective_sync_interval_s(void)
{
	if (dfe_sync_interval_s > 0)
		return dfe_sync_interval_s;
	/* sync_stale_after defaults to three missed syncs (45 min for 15 min) */
	return Max(1, dfe_sync_stale_after_min * 60 / 3);
}

static bool
is_set(const char *s)
{
	return s != NULL && s[0] != '\0';
}

static const char *
setting_or_env(const char *guc_value, const char *envvar, const char *dflt)
{
	const char *env;

	if (is_set(guc_value))
		return guc_value;
	if (envvar && is_set(env = getenv(envvar)))
		return env;
	return dflt;
}

/*
 * AIRBYTE_CONFIGURATION is the JSON blob dfe-analytics' Terraform gives the
 * pod, e.g. {"CONNECTION_ID": "...", "SOURCE_ID": "..."} (older pods used
 * camelCase keys).  Invalid JSON is treated as absent: config_problems
 * reports the setting as missing.
 */
static const char *
from_airbyte_configuration(const char *upper_key, const char *camel_key)
{
	const char *env = getenv("AIRBYTE_CONFIGURATION");
	cJSON	   *root;
	cJSON	   *item;
	char	   *result = NULL;

	if (!is_set(env))
		return NULL;
	root = cJSON_Parse(env);
	if (root == NULL)
		return NULL;
	item = cJSON_GetObjectItemCaseSensitive(root, upper_key);
	if (!cJSON_IsString(item))
		item = cJSON_GetObjectItemCaseSensitive(root, camel_key);
	if (cJSON_IsString(item) && is_set(item->valuestring))
		result = pstrdup(item->valuestring);
	cJSON_Delete(root);
	return result;
}

const char *
dfe_setting_airbyte_url(void)
{
	return setting_or_env(dfe_airbyte_url, "AIRBYTE_SERVER_URL", NULL);
}

const char *
dfe_setting_airbyte_client_id(void)
{
	return setting_or_env(dfe_airbyte_client_id, "AIRBYTE_CLIENT_ID", NULL);
}

const char *
dfe_setting_airbyte_client_secret(void)
{
	return setting_or_env(dfe_airbyte_client_secret, "AIRBYTE_CLIENT_SECRET", NULL);
}

const char *
dfe_setting_connection_id(void)
{
	if (is_set(dfe_connection_id))
		return dfe_connection_id;
	return from_airbyte_configuration("CONNECTION_ID", "connectionId");
}

const char *
dfe_setting_source_id(void)
{
	if (is_set(dfe_source_id))
		return dfe_source_id;
	return from_airbyte_configuration("SOURCE_ID", "sourceId");
}

const char *
dfe_setting_bigquery_project(void)
{
	return setting_or_env(dfe_bigquery_project, "BIGQUERY_PROJECT_ID", NULL);
}

const char *
dfe_setting_bigquery_dataset(void)
{
	return setting_or_env(dfe_bigquery_dataset, "BIGQUERY_AIRBYTE_DATASET", NULL);
}

const char *
dfe_setting_bigquery_internal_dataset(void)
{
	return setting_or_env(dfe_bigquery_internal_dataset, "AIRBYTE_INTERNAL_DATASET",
						  "airbyte_internal");
}

const char *
dfe_setting_hidden_policy_tag(void)
{
	const char *tag = setting_or_env(dfe_hidden_policy_tag, "BIGQUERY_HIDDEN_POLICY_TAG", NULL);

	/* the name Terraform supplies from dfe-analytics 1.16 (README.md, "Settings") */
	return tag ? tag : setting_or_env(NULL, "BIGQUERY_POLICY_TAG", NULL);
}

const char *
dfe_setting_rails_env(void)
{
	return setting_or_env(dfe_rails_env, "RAILS_ENV", NULL);
}

const char *
dfe_setting_google_credentials(void)
{
	return setting_or_env(dfe_google_credentials, "GOOGLE_CLOUD_CREDENTIALS", NULL);
}

const char *
dfe_setting_azure_client_id(void)
{
	return setting_or_env(dfe_azure_client_id, "AZURE_CLIENT_ID", NULL);
}

const char *
dfe_setting_azure_federated_token_file(void)
{
	return setting_or_env(dfe_azure_federated_token_file, "AZURE_FEDERATED_TOKEN_FILE", NULL);
}

const char *
dfe_setting_bigquery_url(void)
{
	return setting_or_env(dfe_bigquery_url, NULL, "https://bigquery.googleapis.com");
}

const char *
dfe_setting_slot_name(void)
{
	return setting_or_env(dfe_slot_name, NULL, "airbyte_slot");
}

const char *
dfe_require_setting(const char *value, const char *guc, const char *envvar)
{
	if (is_set(value))
		return value;
	if (envvar)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s is not set", guc),
				 errhint("Set it with ALTER SYSTEM SET %s = '...' and SELECT pg_reload_conf(), or give the server the environment variable %s.",
						 guc, envvar)));
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("%s is not set", guc),
			 errhint("Set it with ALTER SYSTEM SET %s = '...' and SELECT pg_reload_conf().", guc)));
	return NULL;				/* keep compiler quiet */
}

const char *
dfe_setting_source_schema(void)
{
	return setting_or_env(dfe_source_schema, NULL, "public");
}

const char *
dfe_setting_publication(void)
{
	return setting_or_env(dfe_publication, NULL, "airbyte_publication");
}
