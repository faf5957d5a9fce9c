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

/* Worker: is the installed version one that differs from the library's? */
extern bool dfe_version_mismatch_warned(void);

/*
 * ERROR (with the ALTER EXTENSION hint) when the installed SQL objects are
 * not the library's version.  Checked once per statement (a transaction
 * that runs ALTER EXTENSION ... UPDATE sees the new version at its next
 * command); skipped while an extension script runs (CREATE or ALTER
 * EXTENSION), whose objects are of the version being installed.
 */
extern void dfe_require_matching_sql(const char *function);

/*
 * At the entry of every SQL-callable C function, except those that read
 * only settings, shared memory or the operating system and so work with
 * the SQL of every release: dfe_airbyte_worker_pid(), dfe_airbyte_workers()
 * and dfe_airbyte_setting_problems() (they explain the mismatch: the
 * config_problems view, the workers' pids), dfe_airbyte_migration_lock_key(),
 * dfe_airbyte_system_identifier(), dfe_airbyte_slot_guard_settings(),
 * dfe_airbyte_slot_rhythm() and dfe_airbyte_disk_space().
 */
#define DFE_REQUIRE_MATCHING_SQL() dfe_require_matching_sql(__func__)

#endif
