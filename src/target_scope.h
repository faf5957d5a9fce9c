/*
 * target_scope.h — a task acting for one target.
 *
 * Every per-service task (slot guard, deploys, sync health, policy tags,
 * lists, configuration check, reconciliation, ...) does its work for one
 * target at a time, between dfe_target_scope_enter() and
 * dfe_target_scope_leave(); a scope may span several of the task's short
 * transactions (a network task commits before each HTTP call):
 *
 *   - the target's own settings (dfe_airbyte.targets.settings, keyed by the
 *     setting's name without "dfe_airbyte.") are applied over the global
 *     ones as session-level GUC values, so every dfe_setting_*() call and
 *     every GUC variable reads the target's value; leave resets them to the
 *     configuration file's values, so nothing of one target leaks into the
 *     next (the worker's error path calls dfe_target_scope_reset());
 *   - dfe_target_current() names the target for the rows the task writes
 *     (every per-service table has a "target" column) and for dfe_event();
 *   - the service database's catalog, slots and tables are read through
 *     dfe_target_query(dfe_target_scope_target(scope), ...) (target.h): SPI
 *     for "local", libpq for the others, the same SQL text for both.
 *
 * Outside any scope the current target is "local" and the global settings
 * apply: what 0.2.0 did, unchanged.  Scopes do not nest.
 */
#ifndef DFE_AIRBYTE_TARGET_SCOPE_H
#define DFE_AIRBYTE_TARGET_SCOPE_H

#include "postgres.h"

#include "fmgr.h"
#include "nodes/pg_list.h"

#include "target.h"

typedef struct DfeTargetScope DfeTargetScope;

/*
 * Enters the scope of a registered target ("local" included): reads its row
 * (a short transaction of its own when none is open).  ERROR, with a hint,
 * when the target does not exist or is disabled.
 */
extern DfeTargetScope *dfe_target_scope_enter(const char *target);

/*
 * The same for a SQL function that reports rather than fails when the
 * target's settings cannot be applied (a value the server refuses, a name
 * it does not know: an UPDATE of dfe_airbyte.targets.settings is not
 * checked): tries in a subtransaction of the open transaction and returns
 * NULL with *error set then.  A target that does not exist or is disabled
 * is still an ERROR.
 */
extern DfeTargetScope *dfe_target_scope_try_enter(const char *target, ErrorData **error);

/*
 * For a SQL function whose argument argno names the target it reports on
 * (absent when an older release's SQL calls it): that target's scope, or
 * NULL when none is to be entered, for "local" (this database, its own
 * settings, as in 0.2.0: also where "local" is disabled) and for the target
 * whose scope is already open.  ERROR when another target's scope is open:
 * scopes do not nest.  Leave a non-NULL one with dfe_target_scope_leave().
 */
extern DfeTargetScope *dfe_target_scope_enter_arg(FunctionCallInfo fcinfo, int argno);

/* Undoes the target's settings; the current target is "local" again. */
extern void dfe_target_scope_leave(DfeTargetScope *scope);

/* After an error: leaves whatever scope is open (no-op when none is). */
extern void dfe_target_scope_reset(void);

/* The open scope, NULL outside any. */
extern DfeTargetScope *dfe_target_scope_current(void);

/*
 * A task that caught an error inside a scope it entered outside any
 * transaction (dfe_for_each_target) and goes on for the same target: the
 * abort made the current target "local"; this makes the scope current again.
 * Its settings were applied outside the aborted transaction and still hold.
 */
extern void dfe_target_scope_resume(DfeTargetScope *scope);

/* The target of the current scope, "local" outside any scope. */
extern const char *dfe_target_current(void);

/*
 * The target to query, opened on first use (in a short transaction of its
 * own when none is open), closed at leave — except in a worker that keeps
 * its connections (dfe_target_keep_connections(), target.h).
 */
extern DfeTarget *dfe_target_scope_target(DfeTargetScope *scope);

/*
 * The target of the current scope to query (dfe_target_scope_target() of
 * the open scope), or the local one outside any scope: for code that
 * builds something for "the current service" without being handed the
 * scope (the stream configuration, the configuration check).
 */
extern DfeTarget *dfe_target_current_target(void);

/*
 * The target's disk_size setting in MB (what Azure Flexible Server calls its
 * storage size), or -1 when it has none: a remote server's free space cannot
 * be read, and this stands in for it.
 */
extern int64 dfe_target_disk_size_mb(const char *target);

/*
 * Why the value of a target's setting key is refused (a name a target may
 * not set, a value dfe_airbyte_add_target() would refuse), or NULL when it
 * is fine; json_type is jsonb_typeof() of the value, value its text
 * (targets_sql.c).
 */
extern const char *dfe_target_setting_problem(const char *key, const char *json_type,
											  const char *value);

/*
 * This process's own state for a target, kept across loops in
 * TopMemoryContext: the entry of *list whose first member, a
 * char[NAMEDATALEN], names the target, or a new zeroed one of size bytes.
 */
extern void *dfe_target_state(List **list, const char *target, Size size);

/*
 * Runs fn(target, arg) once per enabled target, each in its own scope: an
 * error of one target is caught (the open transaction aborted, the scope
 * reset), logged as a WARNING naming the target, and never stops the others.
 * Called outside a transaction, by worker tasks; fn opens its own.
 */
typedef void (*DfeTargetTaskFn) (const char *target, void *arg);
extern void dfe_for_each_target(DfeTargetTaskFn fn, void *arg);

#endif
