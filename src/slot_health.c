/*
 * slot_health.c — what the slot health views need from C, for one target
 * (their argument; "local", this database, when older SQL calls them):
 *
 *   dfe_airbyte_slot_rhythm()   the Airbyte sync schedule interval the views
 *                               judge growth and inactivity over;
 *   dfe_airbyte_disk_space()    the target's disk: for "local" the data
 *                               directory's file system (statvfs) or
 *                               dfe_airbyte.disk_free_override; for a remote
 *                               target its disk_size less the use the slot
 *                               guard last measured there (slot_remote.c);
 *                               with the reserve Azure's read-only rule
 *                               needs.  dfe_airbyte.slot_limit_advice and
 *                               config_problems (config_targets.c) both read
 *                               the disk through dfe_disk_facts().
 *
 * Neither calls out to another server: both are cheap enough for a view that
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
#include "slot_guard.h"
#include "target.h"
#include "target_scope.h"

/*
 * Azure Database for PostgreSQL flexible server: "The primary server is
 * automatically switched to read-only mode when the storage usage reaches
 * 95 percent, or when the available capacity is less than 5 GiB"
 * (learn.microsoft.com, concepts-logical.md; the storage options page,
 * concepts-storage.md, describes the read-only mode of a full disk).  Kept
 * free whatever the platform: the reserve is the larger of the two.
 */
#define AZURE_READONLY_FREE_BYTES (INT64CONST(5) * 1024 * 1024 * 1024)
#define AZURE_READONLY_FREE_PART 20	/* 95 % used: a twentieth free */

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
 * dfe_airbyte_slot_rhythm(target) → (sync_interval, interval_source,
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
	DfeTargetScope *scope = dfe_target_scope_enter_arg(fcinfo, 0);
	Datum		values[3];
	bool		nulls[3] = {false, false, false};

	values[0] = IntervalPGetDatum(seconds_interval(dfe_effective_sync_interval_s()));
	values[1] = CStringGetTextDatum(dfe_sync_interval_s > 0 ? "dfe_airbyte.sync_interval"
									: "dfe_airbyte.sync_stale_after / 3");
	values[2] = Int32GetDatum(dfe_slot_inactive_intervals);
	if (scope)
		dfe_target_scope_leave(scope);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

/* one value the slot guard last sampled on the current remote target (dfe_airbyte.guard_targets) */
static int64
guard_targets_value(const char *column)
{
	const char *args[1] = {dfe_target_current()};
	DfeRows    *r;
	const char *v;

	r = dfe_target_query(dfe_target_open(DFE_LOCAL_TARGET), "read what the slot guard measured",
						 psprintf("SELECT g.%s FROM dfe_airbyte.guard_targets g "
								  "WHERE g.target OPERATOR(pg_catalog.=) $1", column),
						 1, args);
	v = r->nrows > 0 ? dfe_rows_value(r, 0, 0) : NULL;
	return v ? strtoi64(v, NULL, 10) : -1;
}

int64
dfe_target_sampled_keep_bytes(void)
{
	return guard_targets_value("server_limit_bytes");
}

/*
 * A remote server's free space cannot be read from here (statvfs sees this
 * server's disk): its disk_size (what Azure calls the storage size) stands
 * in for the total, less the use the slot guard measured there at most a
 * minute ago (its databases and WAL, slot_remote.c); free is unknown until
 * the guard has measured it, total too without disk_size.
 */
static void
remote_disk_facts(DfeDiskFacts *f)
{
	int64		mb = dfe_target_disk_size_mb(dfe_target_current());
	int64		used;

	f->total = f->free = -1;
	f->source = "disk_size";
	if (mb < 0)
	{
		f->source = "no disk_size";
		return;
	}
	f->total = mb * 1024 * 1024;
	used = guard_targets_value("disk_used_bytes");
	if (used >= 0)
		f->free = Max(0, f->total - used);
}

/*
 * Locally free is what an unprivileged process may still write (f_bavail:
 * the server runs as one), not f_bfree.  With dfe_airbyte.disk_free_override
 * set, free is that and total unknown: on a quota (a managed volume, a
 * container limit) statvfs sees the host's disk, not what the server may use.
 */
void
dfe_disk_facts(DfeDiskFacts *f)
{
	struct statvfs vfs;

	if (strcmp(dfe_target_current(), DFE_LOCAL_TARGET) != 0)
		remote_disk_facts(f);
	else if (dfe_disk_free_override_mb >= 0)
	{
		f->total = -1;
		f->free = (int64) dfe_disk_free_override_mb * 1024 * 1024;
		f->source = "dfe_airbyte.disk_free_override";
	}
	else if (statvfs(DataDir, &vfs) != 0)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not read the free space of the data directory's file system: %m"),
				 errhint("Set dfe_airbyte.disk_free_override to the free space (MB) the server may use.")));
	else
	{
		f->total = (int64) vfs.f_blocks * (int64) vfs.f_frsize;
		f->free = (int64) vfs.f_bavail * (int64) vfs.f_frsize;
		f->source = "statvfs";
	}
	f->reserve = AZURE_READONLY_FREE_BYTES;
	if (f->total >= 0)
		f->reserve = Max(f->reserve, f->total / AZURE_READONLY_FREE_PART);
}

PG_FUNCTION_INFO_V1(dfe_airbyte_disk_space);

/* dfe_airbyte_disk_space(target) → (total_bytes, free_bytes, source, reserve_bytes): dfe_disk_facts() */
Datum
dfe_airbyte_disk_space(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc = result_tupdesc(fcinfo, "dfe_airbyte_disk_space");
	DfeTargetScope *scope = dfe_target_scope_enter_arg(fcinfo, 0);
	Datum		values[4];
	bool		nulls[4] = {false, false, false, false};
	DfeDiskFacts f;

	dfe_disk_facts(&f);
	if (scope)
		dfe_target_scope_leave(scope);
	nulls[0] = f.total < 0;
	values[0] = Int64GetDatum(f.total);
	nulls[1] = f.free < 0;
	values[1] = Int64GetDatum(f.free);
	values[2] = CStringGetTextDatum(f.source);
	values[3] = Int64GetDatum(f.reserve);
	/* an older release's SQL declares the first three columns only */
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}
