/*
 * lists.h — the allowlist and the blocklist, loaded from the dfe-analytics
 * configuration files (dfe_airbyte_load_config()).
 *
 * Accepted text (YAML through libyaml, or JSON through cJSON when the text
 * starts with "{"):
 *
 *   shared:                     or, bare:     users:
 *     users:                                    - id
 *       - id                                    - email
 *       - email
 *
 * Every table maps to a list of column names; "users: []" means no columns
 * (the table is left out).  Anything else is an ERROR naming the list, the
 * line and the key.
 */
#ifndef DFE_AIRBYTE_LISTS_H
#define DFE_AIRBYTE_LISTS_H

typedef struct ListColumn
{
	char	   *name;			/* in the server encoding */
	int			line;			/* 1-based line in the input text */
	char	   *policy_tag;		/* blocklist: its own policy tag, or NULL */
} ListColumn;

typedef struct ListTable
{
	char	   *name;
	int			line;
	int			ncolumns;		/* 0 for "table: []" */
	ListColumn *columns;		/* in document order */
} ListTable;

typedef struct ParsedList
{
	const char *which;			/* "allowlist", "blocklist" or "excluded" */
	int			ntables;
	ListTable  *tables;			/* in document order */
	int			ncolumns;		/* sum over the tables */
} ParsedList;

/*
 * Parse and validate one list's text (palloc'd result).  allow_empty: an
 * empty document, or one without any column, is an empty list (blocklist)
 * rather than an ERROR (allowlist).  Raises ERROR on bad input.
 */
extern ParsedList *dfe_lists_parse(const char *which, const char *text,
							   bool allow_empty);

/*
 * lists_store.c: replace the target's rows of dfe_airbyte.<relname> by the
 * list (SPI connected); dfe_lists_lock() first, in a fixed order of relnames.
 */
extern void dfe_lists_lock(const char *relname);
extern void dfe_lists_replace(const char *relname, const char *target, ParsedList *list,
						  int *added, int *removed);

#endif
