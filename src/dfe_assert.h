/*
 * dfe_assert.h — dfe_Assert(), assertions of dfe_airbyte's own invariants.
 *
 * PostgreSQL's Assert() only checks when the server was configured with
 * --enable-cassert, which the Debian/PGDG packages are not: against them an
 * Assert() in this code compiles to nothing.  dfe_Assert() checks when the
 * extension is built with "make DFE_ASSERTS=1" (test/check does; a
 * production "make" does not), whatever the server.  A failed check calls
 * ExceptionalCondition(), which the server exports in every build "so as to
 * support use of extensions that are built with that #define with a backend
 * that isn't" (src/include/c.h): it logs TRAP: FailedAssertion("...",
 * File: "...", Line: N) and aborts the backend, so the postmaster restarts
 * and the test fails loudly.
 *
 * Why not simply define USE_ASSERT_CHECKING for our files: against a server
 * built without it, the server's own headers change meaning.
 * pg_config_manual.h then turns on MEMORY_CONTEXT_CHECKING and
 * CLOBBER_FREED_MEMORY, which the server's allocator was not built with, and
 * headers such as utils/relcache.h and storage/bufmgr.h declare functions
 * (AssertCouldGetRelation, AssertBufferLocksPermitCatalogRead) that exist
 * only in an assert-enabled server, so an inline that calls one leaves the
 * module with an undefined symbol.  A flag of our own checks only our code.
 */
#ifndef DFE_AIRBYTE_ASSERT_H
#define DFE_AIRBYTE_ASSERT_H

#ifdef DFE_ASSERT_CHECKING

/* PostgreSQL 16 dropped ExceptionalCondition's errorType argument */
#if PG_VERSION_NUM >= 160000
#define dfe_Assert(condition) \
	do { \
		if (!(condition)) \
			ExceptionalCondition(#condition, __FILE__, __LINE__); \
	} while (0)
#else
#define dfe_Assert(condition) \
	do { \
		if (!(condition)) \
			ExceptionalCondition(#condition, "FailedAssertion", \
								 __FILE__, __LINE__); \
	} while (0)
#endif

#else

/* not evaluated: a check may be costly or read what only it needs */
#define dfe_Assert(condition) ((void) true)

#endif							/* DFE_ASSERT_CHECKING */

#endif							/* DFE_AIRBYTE_ASSERT_H */
