/*
 * deploy_migration.c — ActiveRecord's migration lock, and the watch that
 * runs a deploy when a remote target's schema_migrations gains a version.
 *
 * A service database served over libpq has nothing of dfe_airbyte
 * installed, so no migration can call dfe_airbyte_deploy() there.  The
 * network worker looks instead, every dfe_airbyte.migration_poll_interval
 * per target, at what a migration leaves behind once committed: the rows of
 * schema_migrations (ActiveRecord inserts the version in the migration's
 * transaction, activerecord/lib/active_record/migration.rb,
 * Migrator#record_version_state_after_migrating) and ActiveRecord's session
 * advisory lock, held for the whole db:migrate (Migrator#with_advisory_lock).
 * A changed version while the lock is free queues one deploy, recorded with
 * that version; while the lock is held the watch waits, so a db:migrate of
 * many migrations is one deploy.  The first sight of a target records its
 * version without deploying: what it held before is not news.
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/dbcommands.h"
#include "compat.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/memutils.h"
#include "utils/pg_crc.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "deploy_int.h"
#include "events.h"
#include "settings.h"
#include "shared.h"
#include "spi_xact.h"
#include "target.h"
#include "target_scope.h"
#include "worker.h"

/* ActiveRecord::Migrator::MIGRATOR_SALT */
#define RAILS_MIGRATOR_SALT INT64CONST(2053462845)

/*
 * ActiveRecord: MIGRATOR_SALT * Zlib.crc32(current_database).  zlib's
 * CRC-32 is PostgreSQL's "traditional" CRC-32 (pg_crc.h), not the legacy
 * one, which uses the table the wrong way round.
 */
static int64
rails_migration_lock_key(const char *dbname)
{
	pg_crc32	crc;

	INIT_TRADITIONAL_CRC32(crc);
	COMP_TRADITIONAL_CRC32(crc, dbname, strlen(dbname));
	FIN_TRADITIONAL_CRC32(crc);
	return RAILS_MIGRATOR_SALT * (int64) crc;
}

PG_FUNCTION_INFO_V1(dfe_airbyte_migration_lock_key);

Datum
dfe_airbyte_migration_lock_key(PG_FUNCTION_ARGS)
{
	char	   *dbname = get_database_name(MyDatabaseId);

	if (dbname == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_DATABASE),
				 errmsg("could not find the name of the current database"),
				 errhint("The database may have been dropped or renamed; reconnect.")));
	PG_RETURN_INT64(rails_migration_lock_key(dbname));
}

/*
 * The advisory locks of the target's own database that could be
 * ActiveRecord's, with the database's name: the key depends on it, and
 * comparing in C keeps this one round trip.  pg_locks shows a bigint
 * advisory key as classid = high 32 bits, objid = low 32 bits, objsubid = 1.
 */
#define LOCKS_SQL \
	"(SELECT pg_catalog.string_agg(l.classid::text OPERATOR(pg_catalog.||) ':' " \
	"OPERATOR(pg_catalog.||) l.objid::text OPERATOR(pg_catalog.||) ':' " \
	"OPERATOR(pg_catalog.||) l.pid::text, ',' ORDER BY l.pid) " \
	"FROM pg_catalog.pg_locks l WHERE l.locktype OPERATOR(pg_catalog.=) 'advisory' " \
	"AND l.objsubid OPERATOR(pg_catalog.=) 1 AND l.granted " \
	"AND l.database OPERATOR(pg_catalog.=) (SELECT d.oid FROM pg_catalog.pg_database d " \
	"WHERE d.datname OPERATOR(pg_catalog.=) pg_catalog.current_database()))"

/* the pid holding key among "classid:objid:pid,..." (NULL: none), 0 if none */
static int
holder_in(const char *locks, int64 key)
{
	uint32		hi = (uint32) ((uint64) key >> 32);
	uint32		lo = (uint32) ((uint64) key & 0xFFFFFFFF);
	const char *p = locks;

	while (p != NULL && *p != '\0')
	{
		unsigned long c,
					o;
		int			pid;

		if (sscanf(p, "%lu:%lu:%d", &c, &o, &pid) == 3 && c == hi && o == lo)
			return pid;
		p = strchr(p, ',');
		if (p != NULL)
			p++;
	}
	return 0;
}

int
dfe_deploy_migration_lock_holder(DfeTarget *t, int64 *key)
{
	DfeRows    *r;

	r = dfe_target_query(t, "read the migration lock",
						 "SELECT pg_catalog.current_database(), " LOCKS_SQL, 0, NULL);
	*key = rails_migration_lock_key(dfe_rows_value(r, 0, 0));
	return holder_in(dfe_rows_value(r, 0, 1), *key);
}

/* ---------------------------------------------------------------------- */
/* the watch of schema_migrations                                         */
/* ---------------------------------------------------------------------- */

/* when each target is looked at next (worker memory: a restart looks at once) */
typedef struct WatchDue
{
	char		target[NAMEDATALEN];
	TimestampTz due;
} WatchDue;

static List *watch_dues = NIL;	/* of WatchDue, in TopMemoryContext */
static long watch_next_ms;

/* a failing target is looked at again after this, not at every poll */
#define WATCH_FAILED_RETRY_MS 60000L

static WatchDue *
watch_due(const char *target)
{
	return dfe_target_state(&watch_dues, target, sizeof(WatchDue));
}

/* what one look at a target's service database found */
typedef struct MigrationState
{
	const char *version;		/* the highest, NULL when the table is empty */
	const char *migrations;		/* count(*) */
	int			lock_holder;	/* pid holding ActiveRecord's lock, 0: free */
	int64		lock_key;
} MigrationState;

/*
 * One query, only committed rows: a migration still running shows neither
 * its version nor anything but its lock.  Versions are ordered as numbers
 * (ActiveRecord's are digits; old ones are shorter).
 */
static void
read_migrations(DfeTarget *t, MigrationState *m)
{
	DfeRows    *r;

	r = dfe_target_query(t, "read schema_migrations",
						 "SELECT pg_catalog.current_database(), "
						 "(SELECT s.version FROM public.schema_migrations s "
						 "ORDER BY pg_catalog.length(s.version) DESC, s.version DESC LIMIT 1), "
						 "(SELECT pg_catalog.count(*) FROM public.schema_migrations), "
						 LOCKS_SQL, 0, NULL);
	m->lock_key = rails_migration_lock_key(dfe_rows_value(r, 0, 0));
	m->version = dfe_rows_value(r, 0, 1);
	m->migrations = dfe_rows_value(r, 0, 2);
	m->lock_holder = holder_in(dfe_rows_value(r, 0, 3), m->lock_key);
}

static void
queue_migration_deploy(const char *target, const MigrationState *m)
{
	const char *args[3];
	char	   *message = psprintf("queued: schema_migrations of target \"%s\" gained version %s",
								   target, m->version ? m->version : "(none)");
	char	   *id;

	args[0] = target;
	args[1] = m->version;
	args[2] = message;
	dfe_sql("queue the deploy",
			"INSERT INTO dfe_airbyte.deploys (target, migration_version, log) VALUES ($1, $2, "
			"pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object('at', pg_catalog.clock_timestamp(), "
			"'step', NULL, 'message', $3::text))) RETURNING id",
			3, args, SPI_OK_INSERT_RETURNING);
	id = dfe_col_text(0, 1);
	ereport(LOG,
			(errmsg("dfe_airbyte deploy %s (target %s): %s", id, target, message)));
	/* the deploy task runs in this same worker, woken by its own latch */
	dfe_wake_worker_at_commit();
}

/*
 * Compares with what was seen last; a change while the lock is free queues
 * a deploy and becomes the new "seen", a change while a migration runs is
 * left for a later look.
 */
static void
record_migrations(const char *target, const MigrationState *m)
{
	const char *args[3] = {target, m->version, m->migrations};
	bool		first;
	bool		changed;

	dfe_xact_begin("dfe_airbyte migration watch");
	dfe_sql("read the last seen migration",
			"SELECT version, migrations::text FROM dfe_airbyte.migration_watch "
			"WHERE target OPERATOR(pg_catalog.=) $1 FOR UPDATE", 1, args, SPI_OK_SELECT);
	first = SPI_processed == 0;
	changed = !first &&
		((dfe_col_isnull(0, 1) != (m->version == NULL)) ||
		 (m->version != NULL && strcmp(dfe_col_text(0, 1), m->version) != 0) ||
		 strcmp(dfe_col_text(0, 2), m->migrations) != 0);
	if (first)
		dfe_sql("record the first sight",
				"INSERT INTO dfe_airbyte.migration_watch (target, version, migrations) "
				"VALUES ($1, $2, $3::bigint)", 3, args, SPI_OK_INSERT);
	else if (changed && m->lock_holder == 0)
	{
		dfe_sql("record the new migration",
				"UPDATE dfe_airbyte.migration_watch SET version = $2, migrations = $3::bigint, "
				"seen_at = pg_catalog.now(), checked_at = pg_catalog.now() "
				"WHERE target OPERATOR(pg_catalog.=) $1", 3, args, SPI_OK_UPDATE);
		queue_migration_deploy(target, m);
	}
	else
		dfe_sql("record the look",
				"UPDATE dfe_airbyte.migration_watch SET checked_at = pg_catalog.now() "
				"WHERE target OPERATOR(pg_catalog.=) $1", 1, args, SPI_OK_UPDATE);
	dfe_xact_end();
}

static void
watch_target(const char *target, void *arg)
{
	WatchDue   *w;
	TimestampTz now = GetCurrentTimestamp();
	long		interval_ms = dfe_migration_poll_interval_s * 1000L;	/* the target's */
	MigrationState m;

	/* a migration of the local database calls dfe_airbyte_deploy() itself */
	if (strcmp(target, DFE_LOCAL_TARGET) == 0)
		return;
	w = watch_due(target);
	if (w->due > now)
	{
		watch_next_ms = Min(watch_next_ms, TimestampDifferenceMilliseconds(now, w->due));
		return;
	}
	/* set before the look: an error (a WARNING of dfe_for_each_target) leaves it */
	w->due = TimestampTzPlusMilliseconds(now, Max(WATCH_FAILED_RETRY_MS, interval_ms));
	memset(&m, 0, sizeof(m));
	read_migrations(dfe_target_scope_target(dfe_target_scope_current()), &m);
	record_migrations(target, &m);
	w->due = TimestampTzPlusMilliseconds(now, interval_ms);
	watch_next_ms = Min(watch_next_ms, interval_ms);
}

long
dfe_migration_watch_task(void)
{
	watch_next_ms = (long) dfe_migration_poll_interval_s * 1000L;
	dfe_for_each_target(watch_target, NULL);
	return Max(watch_next_ms, 100L);
}
