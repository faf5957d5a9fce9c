/*
 * slot_guard.h — what the slot guard's parts share (slots.c: the local
 * check, the limit actions, recreation and pruning; slot_remote.c: the
 * remote targets' checks, all at once over connections it keeps).
 */
#ifndef DFE_AIRBYTE_SLOT_GUARD_H
#define DFE_AIRBYTE_SLOT_GUARD_H

#include "postgres.h"

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

/*
 * In the target's scope and a transaction: report the Airbyte slot's
 * condition with the target's settings (events, terminate).
 */
extern void dfe_slot_judge(const char *slot_name, const GuardedSlot *g);

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

#endif
