/*
 * version.h — the installed SQL objects' version against the library's.
 *
 * ALTER EXTENSION dfe_airbyte UPDATE is what brings the SQL objects up to a
 * newly installed library; until it runs, the worker warns and
 * dfe_airbyte.config_problems says so.
 */
#ifndef DFE_AIRBYTE_VERSION_H
#define DFE_AIRBYTE_VERSION_H

/*
 * pg_extension.extversion of dfe_airbyte in this database, palloc'd; NULL
 * when it is not installed.  Needs a transaction; reads the catalog
 * directly (no SQL, so no search_path).
 */
extern char *dfe_installed_version(void);

/*
 * Worker: a WARNING naming both versions (with the ALTER EXTENSION hint)
 * the first time it sees an installed version that differs from the
 * library's, and again whenever that version changes.
 */
extern void dfe_worker_note_version(const char *installed);

#endif
