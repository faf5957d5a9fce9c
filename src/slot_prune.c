/*
 * slot_prune.c — the slot guard keeps its history bounded: at most once a
 * minute (dfe_test_prune_interval_ms, shorter in tests) it deletes slot
 * samples, events, finished slot recreations and finished deploys older
 * than dfe_airbyte.history_retention
 * and beyond dfe_airbyte.history_max_rows (README, "Settings").  Every
 * target's rows alike: the limits are the control database's.
 */
#include "postgres.h"

#include "executor/spi.h"
#include "utils/timestamp.h"

#include "settings.h"
#include "slot_guard.h"
#include "slots.h"
#include "spi_xact.h"

static TimestampTz last_prune = 0;

static void
prune_history(void)
{
	const char *args[2] = {psprintf("%d", dfe_history_retention_min),
	psprintf("%d", dfe_history_max_rows)};

	dfe_xact_begin("dfe_airbyte slot guard");
	dfe_sql("prune slot samples",
			"DELETE FROM dfe_airbyte.slot_samples WHERE sampled_at < now() - make_interval(mins => $1::int)",
			1, args, SPI_OK_DELETE);
	dfe_sql("prune slot samples",
			"DELETE FROM dfe_airbyte.slot_samples\n"
			"WHERE id <= (SELECT max(id) FROM dfe_airbyte.slot_samples) - $2::bigint",
			2, args, SPI_OK_DELETE);
	dfe_sql("prune events",
			"DELETE FROM dfe_airbyte.events WHERE at < now() - make_interval(mins => $1::int)",
			1, args, SPI_OK_DELETE);
	dfe_sql("prune events",
			"DELETE FROM dfe_airbyte.events\n"
			"WHERE id <= (SELECT max(id) FROM dfe_airbyte.events) - $2::bigint",
			2, args, SPI_OK_DELETE);
	dfe_sql("prune slot recreations",
			"DELETE FROM dfe_airbyte.slot_recreations\n"
			"WHERE decided_at < now() - greatest(make_interval(mins => $1::int), interval '1 day')\n"
			"  AND resync_state = 'started'",
			1, args, SPI_OK_DELETE);
	/* finished deploys only: a queued or running one is never pruned */
	dfe_sql("prune deploys",
			"DELETE FROM dfe_airbyte.deploys\n"
			"WHERE state NOT IN ('queued', 'running')\n"
			"  AND coalesce(finished_at, requested_at) < now() - make_interval(mins => $1::int)",
			1, args, SPI_OK_DELETE);
	dfe_sql("prune deploys",
			"DELETE FROM dfe_airbyte.deploys\n"
			"WHERE state NOT IN ('queued', 'running')\n"
			"  AND id <= (SELECT max(id) FROM dfe_airbyte.deploys) - $2::bigint",
			2, args, SPI_OK_DELETE);
	dfe_xact_end();
}

void
dfe_slot_prune_if_due(void)
{
	if (!TimestampDifferenceExceeds(last_prune, GetCurrentTimestamp(), dfe_test_prune_interval_ms))
		return;
	prune_history();
	last_prune = GetCurrentTimestamp();
}
