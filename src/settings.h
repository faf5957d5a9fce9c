/*
 * settings.h — every dfe_airbyte.* GUC, with the environment fallbacks that
 * a Terraform-provisioned dfe-analytics pod already carries (README.md,
 * "Settings").
 *
 * Read string settings through dfe_setting_*() rather than the raw GUC
 * variables: they apply the environment fallback and treat "" as unset.
 */
#ifndef DFE_AIRBYTE_SETTINGS_H
#define DFE_AIRBYTE_SETTINGS_H

typedef enum SlotLimitAction
{
	SLOT_LIMIT_WARN,
	SLOT_LIMIT_TERMINATE,
	SLOT_LIMIT_RECREATE
} SlotLimitAction;

/* raw GUC variables read elsewhere (strings may be NULL or "") */
extern char *dfe_database;
extern char *dfe_airbyte_client_secret;
extern char *dfe_google_credentials;
extern int	dfe_max_slot_wal_size_mb;
extern int	dfe_slot_limit_action;
extern int	dfe_check_interval_s;

/* our own additions */
extern int	dfe_http_connect_timeout_s;
extern int	dfe_http_timeout_s;
extern int	dfe_http_max_retries;
extern int	dfe_http_retry_base_ms;
extern int	dfe_policy_tag_concurrency;
extern int	dfe_migration_wait_timeout_s;
extern int	dfe_migration_poll_interval_s;
extern int	dfe_job_timeout_s;
extern int	dfe_job_poll_interval_s;
extern int	dfe_sync_poll_interval_s;
extern int	dfe_history_retention_min;
extern int	dfe_history_max_rows;
extern int	dfe_reconcile_max_bytes_billed_kb;
extern int	dfe_reconcile_daily_mb;
extern int	dfe_reconcile_interval_s;
extern int	dfe_reconcile_checksum_every;
extern double dfe_slot_warning_fraction;
extern char *dfe_http_ca_file;
extern int	dfe_deploy_retry_timeout_s;

/* slot health: Airbyte's rhythm, data flow checks, limit advice */
extern int	dfe_sync_interval_s;	/* 0: sync_stale_after / 3 */
extern int	dfe_slot_inactive_intervals;
extern int	dfe_disk_free_override_mb;

/* targets: service databases reached over libpq (src/target.c) */
extern char *dfe_passfile;		/* libpq passfile for every remote target */
extern int	dfe_target_timeout_ms;	/* deadline of one round trip to a target */
extern int	dfe_job_stuck_after_s;

/* the sync schedule interval in seconds, after the fallback (never 0) */
extern int	dfe_effective_sync_interval_s(void);

/* connection watch, deploy plan and repair (connection.c, deploy_plan.c, repair.c) */
extern bool dfe_remove_connection_drift;
extern int	dfe_airbyte_max_fields;

/* the slot guard never recreates in a loop */
extern int	dfe_max_slot_recreations_per_day;

/* safety: largest HTTP response body accepted, in kB */
extern int	dfe_http_max_response_size_kb;
/* BigQuery policy tags and the lists */
extern bool dfe_hide_unlisted_columns;
extern int	dfe_bigquery_table_update_limit;
extern int	dfe_bigquery_table_update_window_ms;
extern int	dfe_test_prune_interval_ms;
extern const char *dfe_setting_rails_env(void);	/* GUC, else RAILS_ENV, else NULL */

extern void dfe_define_settings(void);

/*
 * Effective values: GUC if set, else the environment variable, else the
 * documented default (or NULL when there is none).  The result is palloc'd
 * in CurrentMemoryContext or points at static storage; never pfree it.
 */
extern const char *dfe_setting_airbyte_url(void);
extern const char *dfe_setting_airbyte_client_id(void);
extern const char *dfe_setting_airbyte_client_secret(void);
extern const char *dfe_setting_connection_id(void);
extern const char *dfe_setting_source_id(void);
extern const char *dfe_setting_bigquery_project(void);
extern const char *dfe_setting_bigquery_dataset(void);
extern const char *dfe_setting_bigquery_internal_dataset(void);
extern const char *dfe_setting_hidden_policy_tag(void);
extern const char *dfe_setting_google_credentials(void);
extern const char *dfe_setting_azure_client_id(void);
extern const char *dfe_setting_azure_federated_token_file(void);
extern const char *dfe_setting_bigquery_url(void);
extern const char *dfe_setting_slot_name(void);

/* lists: effective source schema and publication (defaults when unset) */
extern const char *dfe_setting_source_schema(void);
extern const char *dfe_setting_publication(void);

/* ereport(ERROR) naming the setting and its environment variable when unset */
extern const char *dfe_require_setting(const char *value, const char *guc,
									   const char *envvar);

#endif
