/*
 * compat.h — what differs between the PostgreSQL majors dfe_airbyte builds
 * against (15 to 18), in one place.
 *
 * Included after postgres.h by every file that needs one of these.
 */
#ifndef DFE_COMPAT_H
#define DFE_COMPAT_H

/*
 * A function that never returns.  PostgreSQL 18 replaced the attribute
 * written after a declaration, pg_attribute_noreturn(), with pg_noreturn,
 * written before it (C11 _Noreturn; PostgreSQL 18's src/include/c.h).
 * Before 18, pg_noreturn is defined here the way 15-17's
 * c.h defines pg_attribute_noreturn() for GCC and Clang, so that one
 * spelling, "pg_noreturn extern void f(...);", builds on every major.
 */
#ifndef pg_noreturn
#if defined(__GNUC__) || defined(__clang__)
#define pg_noreturn __attribute__((noreturn))
#else
#define pg_noreturn
#endif
#endif

/*
 * The output buffer of pg_b64_decode() (src/include/common/base64.h): char *
 * up to 17, uint8 * from 18.
 */
#if PG_VERSION_NUM >= 180000
typedef uint8 dfe_b64_byte;
#else
typedef char dfe_b64_byte;
#endif

/*
 * ReplicationSlotCleanup() takes "synced_only" from 17 on
 * (src/include/replication/slot.h); PostgresMain's error recovery passes
 * false, which is what 15 and 16 do for every temporary slot.
 */
#if PG_VERSION_NUM >= 170000
#define dfe_ReplicationSlotCleanup() ReplicationSlotCleanup(false)
#else
#define dfe_ReplicationSlotCleanup() ReplicationSlotCleanup()
#endif

/*
 * This backend's local transaction id: PGPROC.lxid up to 16, inside
 * PGPROC.vxid from 17 on (src/include/storage/proc.h).
 */
#if PG_VERSION_NUM >= 170000
#define DFE_MY_LXID (MyProc->vxid.lxid)
#else
#define DFE_MY_LXID (MyProc->lxid)
#endif

#endif							/* DFE_COMPAT_H */
