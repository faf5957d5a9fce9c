/*
 * lists_store.c — a target's rows of one list replaced by difference:
 * rows no longer listed are deleted, new ones inserted, so loaded_at of an
 * unchanged row keeps telling when it was first listed.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/array.h"
#include "utils/builtins.h"

#include "lists.h"
#include "shared.h"

/* ---------------------------------------------------------------------
 * Replacing a table's rows by difference
 * ---------------------------------------------------------------------
 */
static ArrayType *
text_array(Datum *elems, int n)
{
	return construct_array(elems, n, TEXTOID, -1, false, TYPALIGN_INT);
}

void
dfe_lists_replace(const char *relname, const char *target, ParsedList *list, int *added, int *removed)
{
	Datum	   *tables = palloc(sizeof(Datum) * Max(list->ncolumns, 1));
	Datum	   *columns = palloc(sizeof(Datum) * Max(list->ncolumns, 1));
	Datum	   *tags = palloc(sizeof(Datum) * Max(list->ncolumns, 1));
	bool	   *tag_nulls = palloc(sizeof(bool) * Max(list->ncolumns, 1));
	bool		blocklist = strcmp(relname, "blocklist") == 0;
	Oid			argtypes[4] = {TEXTARRAYOID, TEXTARRAYOID, TEXTOID, TEXTARRAYOID};
	Datum		args[4];
	int			dims[1];
	int			lbs[1] = {1};
	int			n = 0;
	char	   *sql;
	int			rc;

	for (int i = 0; i < list->ntables; i++)
		for (int j = 0; j < list->tables[i].ncolumns; j++)
		{
			ListColumn *col = &list->tables[i].columns[j];

			tables[n] = CStringGetTextDatum(list->tables[i].name);
			columns[n] = CStringGetTextDatum(col->name);
			tag_nulls[n] = col->policy_tag == NULL;
			tags[n] = col->policy_tag ? CStringGetTextDatum(col->policy_tag) : (Datum) 0;
			n++;
		}
	args[0] = PointerGetDatum(text_array(tables, n));
	args[1] = PointerGetDatum(text_array(columns, n));
	args[2] = CStringGetTextDatum(target);
	dims[0] = n;
	args[3] = PointerGetDatum(n > 0
							  ? construct_md_array(tags, tag_nulls, 1, dims, lbs, TEXTOID, -1, false, TYPALIGN_INT)
							  : construct_empty_array(TEXTOID));

	sql = psprintf("DELETE FROM dfe_airbyte.%s AS l "
				   "WHERE l.target OPERATOR(pg_catalog.=) $3 AND NOT EXISTS (SELECT 1 FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2)) AS n(t, c) "
				   "WHERE n.t OPERATOR(pg_catalog.=) l.table_name AND n.c OPERATOR(pg_catalog.=) l.column_name)", relname);
	rc = SPI_execute_with_args(sql, 3, argtypes, args, NULL, false, 0);
	if (rc != SPI_OK_DELETE)
		dfe_internal_error("dfe_airbyte: deleting from %s failed: %s", relname,
			 SPI_result_code_string(rc));
	*removed = (int) SPI_processed;

	/* a blocklist row whose policy tag changed counts as added */
	if (blocklist)
		sql = "INSERT INTO dfe_airbyte.blocklist AS b (target, table_name, column_name, policy_tag) "
			"SELECT $3, t, c, g FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2), pg_catalog.unnest($4)) AS n(t, c, g) "
			"ON CONFLICT (target, table_name, column_name) DO UPDATE SET policy_tag = EXCLUDED.policy_tag "
			"WHERE b.policy_tag IS DISTINCT FROM EXCLUDED.policy_tag";
	else
		sql = psprintf("INSERT INTO dfe_airbyte.%s (target, table_name, column_name) "
					   "SELECT $3, t, c FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2)) AS n(t, c) "
					   "ON CONFLICT (target, table_name, column_name) DO NOTHING", relname);
	rc = SPI_execute_with_args(sql, blocklist ? 4 : 3, argtypes, args, NULL, false, 0);
	if (rc != SPI_OK_INSERT)
		dfe_internal_error("dfe_airbyte: inserting into %s failed: %s", relname,
			 SPI_result_code_string(rc));
	*added = (int) SPI_processed;
}

void
dfe_lists_lock(const char *relname)
{
	char	   *sql = psprintf("LOCK TABLE dfe_airbyte.%s IN SHARE ROW EXCLUSIVE MODE", relname);

	if (SPI_execute(sql, false, 0) != SPI_OK_UTILITY)
		dfe_internal_error("dfe_airbyte: could not lock dfe_airbyte.%s", relname);
}
