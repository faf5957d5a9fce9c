/*
 * version.c — is the installed SQL (pg_extension.extversion) the version
 * of the loaded library (DFE_AIRBYTE_VERSION)?
 *
 * Installing a new package replaces the library at once but leaves the SQL
 * objects as they were until ALTER EXTENSION dfe_airbyte UPDATE runs: the
 * new library then queries tables and columns that may not exist yet.  The
 * workers wait with a warning in the log, every SQL-callable function that
 * needs the SQL objects stops with an error saying what to run, and
 * dfe_airbyte.config_problems shows it (config_check.c).
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/indexing.h"
#include "catalog/pg_extension.h"
#include "commands/extension.h"
#include "storage/proc.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/rel.h"

#include "compat.h"
#include "version.h"

char *
dfe_installed_version(void)
{
	Relation	rel;
	SysScanDesc scan;
	ScanKeyData key;
	HeapTuple	tuple;
	char	   *version = NULL;

	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_extension_extname, BTEqualStrategyNumber,
				F_NAMEEQ, CStringGetDatum("dfe_airbyte"));
	scan = systable_beginscan(rel, ExtensionNameIndexId, true, NULL, 1, &key);
	tuple = systable_getnext(scan);
	if (HeapTupleIsValid(tuple))
	{
		bool		isnull;
		Datum		d = heap_getattr(tuple, Anum_pg_extension_extversion,
									 RelationGetDescr(rel), &isnull);

		version = isnull ? pstrdup("") : text_to_cstring(DatumGetTextPP(d));
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return version;
}

/* the installed version the worker last warned about; "" none */
static char warned[NAMEDATALEN] = "";

bool
dfe_version_mismatch_warned(void)
{
	return warned[0] != '\0';
}

void
dfe_worker_note_version(const char *installed)
{
	if (installed == NULL || strcmp(installed, DFE_AIRBYTE_VERSION) == 0)
	{
		warned[0] = '\0';
		return;
	}
	if (strcmp(warned, installed) == 0)
		return;
	strlcpy(warned, installed, sizeof(warned));
	ereport(WARNING,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("dfe_airbyte: the installed SQL objects are version %s but the loaded library is version %s",
					installed, DFE_AIRBYTE_VERSION),
			 errdetail("The dfe_airbyte workers wait (they sample no slot and call no service) until the SQL objects match the library."),
			 errhint("Run ALTER EXTENSION dfe_airbyte UPDATE; as a superuser in that database.")));
}

/* the statement whose installed version was last found to match */
static LocalTransactionId checked_lxid = InvalidLocalTransactionId;
static CommandId checked_cid = InvalidCommandId;

void
dfe_require_matching_sql(const char *function)
{
	char	   *installed;
	CommandId	cid = GetCurrentCommandId(false);

	if (creating_extension)
		return;
	if (checked_lxid == DFE_MY_LXID && checked_cid == cid)
		return;
	installed = dfe_installed_version();
	if (installed != NULL && strcmp(installed, DFE_AIRBYTE_VERSION) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("%s() cannot run: the installed dfe_airbyte SQL objects are version %s but the loaded library is version %s",
						function, installed, DFE_AIRBYTE_VERSION),
				 errdetail("A new version of dfe_airbyte was installed; its functions need the SQL objects of that version."),
				 errhint("Run ALTER EXTENSION dfe_airbyte UPDATE; as a superuser in this database.")));
	checked_lxid = DFE_MY_LXID;
	checked_cid = cid;
}
