/*
 * slot_health.c — what the slot health views need from C:
 *
 *   dfe_airbyte_slot_rhythm()   the Airbyte sync schedule interval the views
 *                               judge growth and inactivity over;
 *   dfe_airbyte_disk_space()    total and free space of the data directory's
 *                               file system (statvfs), or the free space
 *                               dfe_airbyte.disk_free_override says, for
 *                               dfe_airbyte.slot_limit_advice.
 *
 * Neither reads a table or calls out: both are cheap enough for a view that
 * a monitoring system scrapes every 15 seconds.
 */
#include "postgres.h"

#include <sys/statvfs.h>

#include "compat.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "settings.h"

static TupleDesc
result_tupdesc(FunctionCallInfo fcinfo, const char *name)
{
	TupleDesc	tupdesc;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("%s() must return a record", name),
				 errhint("Call it as SELECT * FROM %s().", name)));
	return BlessTupleDesc(tupdesc);
}

static Interval *
seconds_interval(int64 secs)
{
	Interval   *iv = palloc0(sizeof(Interval));

	iv->time = secs * USECS_PER_SEC;
	return iv;
}

PG_FUNCTION_INFO_V1(dfe_airbyte_slot_rhythm);

/*
 * dfe_airbyte_slot_rhythm() → (sync_interval, interval_source,
 * inactive_intervals).  The connection's schedule is not read from Airbyte
 * here: that would put a network call (or the network worker's state)
 * behind the slot view; dfe_airbyte.sync_interval says it, and by default
 * it is a third of dfe_airbyte.sync_stale_after (which defaults to three
 * missed syncs).
 */
Datum
dfe_airbyte_slot_rhythm(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc = result_tupdesc(fcinfo, "dfe_airbyte_slot_rhythm");
	Datum		values[3];
	bool		nulls[3] = {false, false, false};

	values[0] = IntervalPGetDatum(seconds_interval(dfe_effective_sync_interval_s()));
	values[1] = CStringGetTextDatum(dfe_sync_interval_s > 0 ? "dfe_airbyte.sync_interval"
									: "dfe_airbyte.sync_stale_after / 3");
	values[2] = Int32GetDatum(dfe_slot_inactive_intervals);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

PG_FUNCTION_INFO_V1(dfe_airbyte_disk_space);

/*
 * dfe_airbyte_disk_space() → (total_bytes, free_bytes, source).  free is
 * what an unprivileged process may still write (f_bavail: the server runs as
 * one), not f_bfree.  With dfe_airbyte.disk_free_override set, free is that
 * and total is NULL: on a quota (a managed volume, a container limit)
 * statvfs sees the host's disk, not what the server may use.
 */
Datum
dfe_airbyte_disk_space(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc = result_tupdesc(fcinfo, "dfe_airbyte_disk_space");
	Datum		values[3];
	bool		nulls[3] = {false, false, false};
	struct statvfs vfs;

	if (dfe_disk_free_override_mb >= 0)
	{
		nulls[0] = true;
		values[1] = Int64GetDatum((int64) dfe_disk_free_override_mb * 1024 * 1024);
		values[2] = CStringGetTextDatum("dfe_airbyte.disk_free_override");
	}
	else if (statvfs(DataDir, &vfs) != 0)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not read the free space of the data directory's file system: %m"),
				 errhint("Set dfe_airbyte.disk_free_override to the free space (MB) the server may use.")));
	else
	{
		values[0] = Int64GetDatum((int64) vfs.f_blocks * (int64) vfs.f_frsize);
		values[1] = Int64GetDatum((int64) vfs.f_bavail * (int64) vfs.f_frsize);
		values[2] = CStringGetTextDatum("statvfs");
	}
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}
