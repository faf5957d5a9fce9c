/*
 * slot_guard.h — what the slot guard's parts share (slots.c: the local
 * check, the limit actions, recreation and pruning; slot_remote.c: the
 * remote targets' checks, all at once over connections it keeps).
 */
#ifndef DFE_AIRBYTE_SLOT_GUARD_H
#define DFE_AIRBYTE_SLOT_GUARD_H

#include "postgres.h"

#include "utils/timestamp.h"

/* the Airbyte slot as the sample saw it */
typedef struct GuardedSlot
{
	bool		found;
	char	   *plugin;
	bool		active;
	int32		active_pid;		/* 0 when none */
	char	   *wal_status;		/* NULL when unknown */
	bool		has_retained;	/* false when restart_lsn is NULL (lost) */
	int64		retained;
	bool		two_phase;
	bool		failover;		/* a failover slot (17 and later) */
} GuardedSlot;

/* a remote target's recreation that dfe_slot_judge() decided (and recorded) */
typedef struct SlotRecreation
{
	char	   *slot_name;
	int			reason;			/* slots.c's SlotCondition */
	char	   *plugin;
	GuardedSlot g;				/* the slot as this check's sample saw it */
	bool		seen;			/* the slot was seen before (else: first creation) */
	bool		missing;		/* nothing to drop: the slot is not there */
	int64		rec_id;			/* its open slot_recreations row */
} SlotRecreation;

/*
 * What one guard process knows of a creation that has to wait for older
 * transactions, per recreation (the resumable part is the
 * slot_recreations row): attempts, since when, the last event.
 */
typedef struct CreationWait
{
	int64		rec_id;			/* the open recreation this is about; 0 none */
	int			attempts;		/* attempts that did not finish in time */
	TimestampTz since;			/* the first of them */
	TimestampTz notified_at;	/* last slot_recreation_waiting event */
	char		oldest[16];		/* the pid of the oldest blocker it named */
} CreationWait;

/*
 * In the target's scope and a transaction: report the Airbyte slot's
 * condition with the target's settings (events, terminate); true when it is
 * to be recreated (*rec filled, its slot_recreations row open).
 */
extern bool dfe_slot_judge(const char *slot_name, const GuardedSlot *g, SlotRecreation *rec);

/* in the target's scope and a transaction: the recreation's slot was created (new_lsn) */
extern void dfe_slot_recreation_done(const SlotRecreation *rec, const char *new_lsn,
									 bool created_new, CreationWait *cw);

/* in the target's scope and a transaction: a creation attempt did not finish in time */
extern void dfe_slot_note_creation_wait(const char *slot_name, int64 rec_id, CreationWait *cw,
										TimestampTz attempt_at, const char *waited,
										const char *data, const char *summary,
										const char *oldest);

/* in the target's scope and a transaction: the recreation's terminate step ended (ok: signalled) */
extern void dfe_slot_recreation_terminated(const SlotRecreation *rec, bool ok);

/* how long one creation attempt may wait for other transactions (lock_timeout) */
extern int	dfe_creation_wait_ms(void);

/* what a creation started at $1 (timestamptz) waits for: JSON, summary, oldest pid */
extern const char *const dfe_creation_blockers_sql;

/*
 * A remote target's recreation: drop, then create, over a connection of its
 * own driven by the guard's non-blocking loop (slot_remote_recreate.c).
 */
struct TargetConn;
typedef struct RemoteRecreation RemoteRecreation;
extern RemoteRecreation *dfe_rr_create(MemoryContext parent);
extern bool dfe_rr_busy(RemoteRecreation *rr);
extern void dfe_rr_keep(RemoteRecreation *rr, const SlotRecreation *rec);
extern void dfe_rr_start(RemoteRecreation *rr, struct TargetConn *rc);
extern void dfe_rr_advance(RemoteRecreation *rr, struct TargetConn *rc, const char *target);
extern void dfe_rr_abandon(RemoteRecreation *rr);

/* the same steps driven to their end now, for dfe_airbyte_repair(); the caller records them */
extern char *dfe_rr_run_now(const SlotRecreation *rec, struct TargetConn *rc, const char *target,
							char **why, int *why_code);

/*
 * One check of every enabled remote target: samples submitted at once, each
 * with its own deadline; unreachable targets reported.  Outside a
 * transaction; errors of one target are caught as WARNINGs.
 */
extern void dfe_slot_remote_round(void);

/* history pruning, at most once every SLOT_PRUNE_INTERVAL_MS (slot_prune.c) */
extern void dfe_slot_prune_if_due(void);

/* dfe_airbyte_check_slots_now() for a remote target: its sampling now, no action */
struct DfeTargetScope;
extern int	dfe_slot_sample_remote_now(struct DfeTargetScope *scope);

/*
 * The disk of the current target (slot_health.c), for slot_limit_advice and
 * config_problems alike: total and free bytes (-1: unknown), where they come
 * from, and the reserve Azure Database for PostgreSQL flexible server needs
 * free before it turns read-only.
 */
typedef struct DfeDiskFacts
{
	int64		total;
	int64		free;
	const char *source;
	int64		reserve;
} DfeDiskFacts;

extern void dfe_disk_facts(DfeDiskFacts *f);

/* max_slot_wal_keep_size of the current remote target as the guard last sampled it, bytes; -1 none or unknown */
extern int64 dfe_target_sampled_keep_bytes(void);

#endif
