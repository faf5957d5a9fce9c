/*
 * compat.h — what differs between the PostgreSQL majors dfe_airbyte builds
 * against (15 to 18), in one place.
 *
 * Included after postgres.h by every file that needs one of these, and by
 * every file that defines a SQL function (PG_FUNCTION_INFO_V1) or another
 * symbol PostgreSQL looks up by name (see "Symbol visibility" below).
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

/*
 * Symbol visibility.  The library is compiled with -fvisibility=hidden (the
 * Makefile; PostgreSQL 16's PGXS does it itself, CFLAGS_SL_MODULE in
 * src/Makefile.global.in), so that only what PostgreSQL looks up by name is
 * exported: the SQL functions and their pg_finfo_ records (fmgr.h),
 * Pg_magic_func (PG_MODULE_MAGIC), _PG_init and the background workers'
 * entry points.  16's c.h defines PGDLLEXPORT as visibility("default") and
 * its PG_FUNCTION_INFO_V1 declares the function itself PGDLLEXPORT; 15's
 * PGDLLEXPORT is empty outside Windows and its PG_FUNCTION_INFO_V1 marks only
 * the pg_finfo_ record, so for 15 both are defined here as 16 defines them.
 * A SQL function left hidden fails CREATE EXTENSION ("could not find
 * function ... in file"), which every test run does first.
 */
#if PG_VERSION_NUM < 160000
#include "fmgr.h"

#undef PGDLLEXPORT
#if defined(__GNUC__) || defined(__clang__)
#define PGDLLEXPORT __attribute__((visibility("default")))
#else
#define PGDLLEXPORT
#endif

#undef PG_FUNCTION_INFO_V1
#define PG_FUNCTION_INFO_V1(funcname) \
extern PGDLLEXPORT Datum funcname(PG_FUNCTION_ARGS); \
extern PGDLLEXPORT const Pg_finfo_record * CppConcat(pg_finfo_,funcname)(void); \
const Pg_finfo_record * \
CppConcat(pg_finfo_,funcname) (void) \
{ \
	static const Pg_finfo_record my_finfo = { 1 }; \
	return &my_finfo; \
} \
extern int no_such_variable
#endif

#endif							/* DFE_COMPAT_H */
