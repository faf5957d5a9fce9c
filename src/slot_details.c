/*
 * slot_details.c — dfe_airbyte_slot_details(): the fields of this database's
 * logical replication slots that differ between PostgreSQL majors, for
 * dfe_airbyte.replication_slot_health:
 *
 *   inactive_since       when the slot was last released (17 and later;
 *                        NULL before);
 *   invalidation_reason  why the slot was invalidated, in PostgreSQL's own
 *                        words (pg_replication_slots.invalidation_reason of
 *                        17): wal_removed (max_slot_wal_keep_size),
 *                        rows_removed and wal_level_insufficient (a slot on
 *                        a standby in conflict with recovery, 16 and later),
 *                        idle_timeout (idle_replication_slot_timeout, 18);
 *                        on 15 only wal_removed exists;
 *   failover, synced     a failover slot, and one that the standby's slot
 *                        sync worker copied from the primary (17 and later;
 *                        false before).
 *
 * Why C and not SQL: the extension's SQL objects are created once, and
 * pg_upgrade carries them unchanged from one major to the next, while the
 * module is built for each major.  A view that named pg_replication_slots'
 * newer columns could not be created on 15, and one created on 15 would not
 * show them after pg_upgrade to 17.  So the SQL stays the same on every
 * major and this function, compiled per major, fills in what the server
 * has.  It reads the slots as pg_get_replication_slots() does
 * (src/backend/replication/slotfuncs.c): under ReplicationSlotControlLock,
 * each slot copied under its spinlock.  It reads no table and calls out to
 * nothing, so the view stays cheap to scrape.
 */
#include "postgres.h"

#include "access/xlogdefs.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "replication/slot.h"
#include "storage/lwlock.h"
#include "storage/spin.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "compat.h"


/* PostgreSQL's name for why the slot was invalidated; NULL when valid */
static const char *
invalidation_reason(const ReplicationSlot *s)
{
#if PG_VERSION_NUM >= 160000
	switch (s->data.invalidated)
	{
		case RS_INVAL_NONE:
			return NULL;
		case RS_INVAL_WAL_REMOVED:
			return "wal_removed";
		case RS_INVAL_HORIZON:
			return "rows_removed";
		case RS_INVAL_WAL_LEVEL:
			return "wal_level_insufficient";
#if PG_VERSION_NUM >= 180000
		case RS_INVAL_IDLE_TIMEOUT:
			return "idle_timeout";
#endif
	}
	/* a cause added by a later minor or major than this module knows */
	return "unknown";
#else
	/* 15: invalidated only by max_slot_wal_keep_size (slotfuncs.c: "lost") */
	if (XLogRecPtrIsInvalid(s->data.restart_lsn) &&
		!XLogRecPtrIsInvalid(s->data.invalidated_at))
		return "wal_removed";
	return NULL;
#endif
}

PG_FUNCTION_INFO_V1(dfe_airbyte_slot_details);

Datum
dfe_airbyte_slot_details(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int			i;

	InitMaterializedSRF(fcinfo, 0);
	LWLockAcquire(ReplicationSlotControlLock, LW_SHARED);
	for (i = 0; i < max_replication_slots; i++)
	{
		ReplicationSlot *slot = &ReplicationSlotCtl->replication_slots[i];
		ReplicationSlot s;
		Datum		values[5];
		bool		nulls[5] = {false, false, false, false, false};
		const char *reason;

		if (!slot->in_use)
			continue;
		SpinLockAcquire(&slot->mutex);
		s = *slot;
		SpinLockRelease(&slot->mutex);
		/* logical slots of this database only, as the view shows */
		if (s.data.database != MyDatabaseId)
			continue;

		values[0] = CStringGetTextDatum(NameStr(s.data.name));
#if PG_VERSION_NUM >= 170000
		nulls[1] = s.inactive_since == 0;
		values[1] = TimestampTzGetDatum(s.inactive_since);
		values[3] = BoolGetDatum(s.data.failover);
		values[4] = BoolGetDatum(s.data.synced);
#else
		nulls[1] = true;
		values[1] = (Datum) 0;
		values[3] = BoolGetDatum(false);
		values[4] = BoolGetDatum(false);
#endif
		reason = invalidation_reason(&s);
		nulls[2] = reason == NULL;
		values[2] = reason ? CStringGetTextDatum(reason) : (Datum) 0;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	LWLockRelease(ReplicationSlotControlLock);
	return (Datum) 0;
}
