/*
 * airbyte.c — Airbyte API client (SPEC §4).  Placeholder: the Airbyte issue
 * replaces this file.
 */
#include "postgres.h"

#include "airbyte.h"

bool
airbyte_configured(void)
{
	return false;
}

void
airbyte_require_configuration(void)
{
	ereport(ERROR,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("the Airbyte client is not available in this build"),
			 errhint("Install a dfe_airbyte version with Airbyte support.")));
}

char *
airbyte_refresh_connection(const char *stream_config_json)
{
	airbyte_require_configuration();
	return NULL;
}

bool
airbyte_last_job(const char *job_type, AirbyteJob *job)
{
	airbyte_require_configuration();
	return false;
}

int64
airbyte_start_sync(bool *already_running)
{
	airbyte_require_configuration();
	return 0;
}

void
airbyte_get_job(int64 job_id, AirbyteJob *job)
{
	airbyte_require_configuration();
}

int64
airbyte_full_resync(void)
{
	airbyte_require_configuration();
	return 0;
}

bool
airbyte_job_finished(const char *status)
{
	return strcmp(status, "succeeded") == 0 || strcmp(status, "failed") == 0 ||
		strcmp(status, "cancelled") == 0;
}

bool
airbyte_job_active(const char *status)
{
	return !airbyte_job_finished(status);
}
