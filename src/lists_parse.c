/*
 * dfe_lists_parse.c — validation of the ConfNode tree into a ParsedList
 * (lists.h), and dfe_lists_parse(), which picks the parser.
 */
#include "postgres.h"

#include <string.h>

#include "mb/pg_wchar.h"

#include "dfe_assert.h"
#include "lists.h"
#include "lists_conf.h"

/* ---------------------------------------------------------------------
 * Validation: ConfNode tree → ParsedList
 * ---------------------------------------------------------------------
 */
typedef struct NamedLine
{
	const char *name;
	int			line;
	int			order;			/* position in the document */
} NamedLine;

static int
cmp_named_line(const void *a, const void *b)
{
	const NamedLine *x = a;
	const NamedLine *y = b;
	int			c = strcmp(x->name, y->name);

	if (c != 0)
		return c;
	return (x->order > y->order) - (x->order < y->order);
}

/*
 * Find a repeated name; of all repeats, the one that comes first in the
 * document, with the earlier occurrence it repeats.
 */
static bool
find_duplicate(const NamedLine *entries, int n, NamedLine *repeat, NamedLine *first)
{
	NamedLine  *sorted;
	bool		found = false;

	if (n < 2)
		return false;
	sorted = palloc(sizeof(NamedLine) * n);
	memcpy(sorted, entries, sizeof(NamedLine) * n);
	qsort(sorted, n, sizeof(NamedLine), cmp_named_line);
	for (int i = 1; i < n; i++)
		if (strcmp(sorted[i].name, sorted[i - 1].name) == 0 &&
			(!found || sorted[i].order < repeat->order))
		{
			*repeat = sorted[i];
			*first = sorted[i - 1];
			found = true;
		}
	pfree(sorted);
	return found;
}

static void
empty_list_error(const char *which, bool no_document)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 no_document ? errmsg("the %s is empty", which)
			 : errmsg("the %s lists no columns", which),
			 no_document ? errdetail("The text holds no YAML or JSON document.")
			 : errdetail("Every table in it has an empty list of columns."),
			 errhint("Pass the text of config/analytics.yml. To stop replicating every table, run DELETE FROM dfe_airbyte.allowlist instead.")));
}

/* the policy tag of a column entry given as a mapping (blocklist only) */
static bool
valid_policy_tag(const char *tag)
{
	const char *parts[] = {"projects/", "/locations/", "/taxonomies/", "/policyTags/"};
	const char *p = tag;

	for (int i = 0; i < 4; i++)
	{
		size_t		len = strlen(parts[i]);

		if (strncmp(p, parts[i], len) != 0)
			return false;
		p += len;
		if (*p == '\0' || *p == '/')
			return false;
		while (*p && *p != '/')
			p++;
	}
	return *p == '\0';
}

/*
 * "- {name: email, policy_tag: projects/…/policyTags/ID}": a blocklisted
 * column with its own policy tag.  Fills col->text (the name) and *tag.
 */
static void
column_mapping(const char *which, ConfNode *col, ListTable *table, char **tag)
{
	ConfNode   *name = NULL;

	*tag = NULL;
	if (strcmp(which, "blocklist") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid %s at line %d: an entry of table \"%s\" is a mapping, not a column name",
						which, col->line, table->name),
				 errdetail("Only blocklist entries may be mappings ({name: column, policy_tag: projects/…}), to give a column its own policy tag."),
				 errhint("Check the indentation: \"- name:\" (with a colon) makes a mapping; write \"- name\".")));
	for (int i = 0; i < col->n; i++)
	{
		ConfNode   *key = col->keys[i];
		ConfNode   *value = col->items[i];

		if (key->kind == CK_STRING && strcmp(key->text, "name") == 0 && value->kind == CK_STRING &&
			value->text[0] != '\0')
			name = value;
		else if (key->kind == CK_STRING && strcmp(key->text, "policy_tag") == 0)
		{
			if (value->kind != CK_STRING || !valid_policy_tag(value->text))
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("invalid %s at line %d: the policy_tag of an entry of table \"%s\" is not a policy tag name",
								which, value->line, table->name),
						 errdetail("It is %s%s%s.", value->text ? "\"" : "", value->text ? value->text : dfe_conf_kind_phrase(value),
								   value->text ? "\"" : ""),
						 errhint("Write the tag's full name, projects/P/locations/L/taxonomies/T/policyTags/ID, as the Data Catalog taxonomy shows it.")));
			*tag = value->text;
		}
		else
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid %s at line %d: unexpected key \"%s\" in an entry of table \"%s\"",
							which, key->line, key->text ? key->text : dfe_conf_kind_phrase(key), table->name),
					 errdetail("A column given as a mapping takes \"name\" (the column) and \"policy_tag\" (projects/P/locations/L/taxonomies/T/policyTags/ID)."),
					 errhint("Write - {name: email, policy_tag: projects/P/locations/L/taxonomies/T/policyTags/ID}.")));
	}
	if (name == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid %s at line %d: an entry of table \"%s\" has no \"name\"",
						which, col->line, table->name),
				 errhint("Write - {name: email, policy_tag: projects/P/locations/L/taxonomies/T/policyTags/ID}.")));
	col->text = name->text;
}

/*
 * Refuse an entry of a table's column list that is not a column name; a
 * mapping ({name, policy_tag}) sets *tag and leaves its name in col->text.
 */
static void
check_column_entry(const char *which, ConfNode *col, ListTable *table, char **tag)
{
	switch (col->kind)
	{
		case CK_STRING:
			if (col->text[0] == '\0')
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("invalid %s at line %d: empty column name in table \"%s\"",
								which, col->line, table->name),
						 errhint("Remove the empty entry or write the column's name.")));
			break;
		case CK_NULL:
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid %s at line %d: empty column name in table \"%s\"",
							which, col->line, table->name),
					 errdetail("The entry is empty or null (\"-\" with nothing after it, \"~\" or \"null\")."),
					 errhint("Remove the empty entry or write the column's name; quote a column really called null: - \"null\".")));
			break;
		case CK_OTHER:
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid %s at line %d: column %s of table \"%s\" is %s, not a string",
							which, col->line, col->text, table->name, col->what),
					 errhint("Quote it if it really is the column's name: \"%s\".",
							 col->text)));
			break;
		case CK_MAP:
			column_mapping(which, col, table, tag);
			break;
		case CK_SEQ:
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid %s at line %d: an entry of table \"%s\" is %s, not a column name",
							which, col->line, table->name, dfe_conf_kind_phrase(col)),
					 errdetail("Each entry of a table's list must be a plain column name."),
					 errhint("Check the indentation: \"- name:\" (with a colon) makes a mapping; write \"- name\".")));
			break;
	}
}

/*
 * A column listed twice is kept once, as the gem does (it reads the list as
 * a set); register-trainee-teachers' analytics.yml has one.  Two different
 * policy tags for one column cannot both be right.  Returns whether col
 * repeats one of the first kept columns (merging its tag into that one).
 */
static bool
merge_repeated_column(const char *which, ConfNode *col, char *tag, ListTable *table,
					  const NamedLine *names, int kept)
{
	for (int j = 0; j < kept; j++)
	{
		if (strcmp(names[j].name, col->text) != 0)
			continue;
		if (tag && table->columns[j].policy_tag == NULL)
			table->columns[j].policy_tag = tag;
		else if (tag && strcmp(tag, table->columns[j].policy_tag) != 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid %s at line %d: column \"%s\" of table \"%s\" is listed again with another policy tag",
							which, col->line, col->text, table->name),
					 errdetail("It is first listed at line %d.", names[j].line),
					 errhint("Keep one entry, with the policy tag the column should have.")));
		ereport(NOTICE,
				(errmsg("%s line %d: column \"%s\" of table \"%s\" is listed twice; it is kept once",
						which, col->line, col->text, table->name),
				 errdetail("It is first listed at line %d.", names[j].line),
				 errhint("Remove the second entry from the file when convenient.")));
		return true;
	}
	return false;
}

static void
check_columns(const char *which, ConfNode *seq, ListTable *table)
{
	NamedLine  *names = palloc(sizeof(NamedLine) * Max(seq->n, 1));
	int			kept = 0;

	table->columns = palloc0(sizeof(ListColumn) * Max(seq->n, 1));
	for (int i = 0; i < seq->n; i++)
	{
		ConfNode   *col = seq->items[i];
		char	   *tag = NULL;

		check_column_entry(which, col, table, &tag);
		if (merge_repeated_column(which, col, tag, table, names, kept))
			continue;
		table->columns[kept].name = col->text;
		table->columns[kept].line = col->line;
		table->columns[kept].policy_tag = tag;
		names[kept].name = col->text;
		names[kept].line = col->line;
		names[kept].order = kept;
		kept++;
	}
	table->ncolumns = kept;
	pfree(names);
}

/*
 * What dfe_lists_replace() relies on (it diffs the list against a table's rows
 * as sets): every kept table has a non-empty name and at least one column,
 * no table is kept twice, no column twice within its table, and ncolumns
 * is their sum.  validate() and check_columns() establish it by refusing
 * repeated tables and keeping a repeated column once.
 */
static pg_attribute_unused() bool
parsed_list_is_valid(const ParsedList *list)
{
	int			ncolumns = 0;

	for (int i = 0; i < list->ntables; i++)
	{
		const ListTable *t = &list->tables[i];

		if (t->name == NULL || t->name[0] == '\0' || t->ncolumns <= 0)
			return false;
		for (int j = 0; j < i; j++)
			if (strcmp(list->tables[j].name, t->name) == 0)
				return false;
		for (int c = 0; c < t->ncolumns; c++)
		{
			if (t->columns[c].name == NULL || t->columns[c].name[0] == '\0')
				return false;
			for (int d = 0; d < c; d++)
				if (strcmp(t->columns[d].name, t->columns[c].name) == 0)
					return false;
		}
		ncolumns += t->ncolumns;
	}
	return ncolumns == list->ncolumns;
}

/*
 * A table's entry: its name must be a non-empty string and its value a
 * list of columns ("users:" with nothing under it is an empty one).
 * Returns the list.
 */
static ConfNode *
table_columns(const char *which, ConfNode *key, ConfNode *value)
{
	if (key->kind != CK_STRING)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid %s at line %d: a table name is %s, not a string",
						which, key->line, dfe_conf_kind_phrase(key)),
				 errhint("Write the table's name followed by a colon, e.g. \"users:\"; quote a name that YAML reads as a number or boolean.")));
	if (key->text[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid %s at line %d: empty table name", which, key->line),
				 errhint("Write the table's name before the colon.")));
	switch (value->kind)
	{
		case CK_SEQ:
			break;
		case CK_NULL:
			/* "users:" with nothing under it: the gem reads nil, no columns */
			value = palloc0(sizeof(ConfNode));
			value->kind = CK_SEQ;
			value->line = key->line;
			break;
		case CK_MAP:
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid %s at line %d: table \"%s\" must map to a list of column names, not a mapping",
							which, key->line, key->text),
					 errhint("Write each column as a list entry (\"- id\"); check the indentation and that no column has a colon after it. "
							 "If \"%s\" is a Rails environment, set dfe_airbyte.rails_env (or RAILS_ENV) to it.", key->text)));
			break;
		case CK_STRING:
		case CK_OTHER:
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid %s at line %d: table \"%s\" must map to a list of column names, not the scalar \"%s\"",
							which, key->line, key->text, value->text),
					 errhint("Write the columns as a list: \"%s: [%s]\" or one \"- %s\" per line under the table.",
							 key->text, value->text, value->text)));
			break;
	}
	return value;
}

static ParsedList *
validate(const char *which, ConfNode *root, bool allow_empty)
{
	ParsedList *list = palloc0(sizeof(ParsedList));
	ConfNode   *tables = root;
	NamedLine  *names;
	NamedLine	repeat = {0};
	NamedLine	first = {0};
	int			kept = 0;

	list->which = which;

	if (root == NULL || root->kind == CK_NULL)
	{
		if (!allow_empty)
			empty_list_error(which, true);
		return list;
	}
	if (root->kind != CK_MAP)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid %s at line %d: the document is %s, not a mapping of table names to column lists",
						which, root->line, dfe_conf_kind_phrase(root)),
				 errhint("%s", dfe_conf_list_hint(which))));

	tables = dfe_conf_rails_sections(which, root);
	if (tables == NULL || tables->kind == CK_NULL)
	{
		if (!allow_empty)
			empty_list_error(which, false);
		return list;
	}

	list->tables = palloc0(sizeof(ListTable) * Max(tables->n, 1));
	names = palloc(sizeof(NamedLine) * Max(tables->n, 1));
	for (int i = 0; i < tables->n; i++)
	{
		ConfNode   *key = tables->keys[i];
		ConfNode   *value = tables->items[i];
		ListTable  *table = &list->tables[kept];

		value = table_columns(which, key, value);
		names[i].name = key->text;
		names[i].line = key->line;
		names[i].order = i;

		table->name = key->text;
		table->line = key->line;
		check_columns(which, value, table);
		/* "users: []": listed, but no columns, so the table is left out */
		if (table->ncolumns > 0)
		{
			list->ncolumns += table->ncolumns;
			kept++;
		}
	}
	list->ntables = kept;

	if (find_duplicate(names, tables->n, &repeat, &first))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid %s at line %d: table \"%s\" is listed twice",
						which, repeat.line, repeat.name),
				 errdetail("It is first listed at line %d.", first.line),
				 errhint("Merge the two entries into one list of columns.")));
	pfree(names);

	if (list->ntables == 0 && !allow_empty)
		empty_list_error(which, false);
	dfe_Assert(parsed_list_is_valid(list));
	return list;
}

ParsedList *
dfe_lists_parse(const char *which, const char *text, bool allow_empty)
{
	char	   *utf8 = pg_server_to_any(text, strlen(text), PG_UTF8);
	const char *p = utf8;
	ConfNode   *root;

	/* JSON when the first non-blank character opens an object */
	if ((unsigned char) p[0] == 0xEF && (unsigned char) p[1] == 0xBB &&
		(unsigned char) p[2] == 0xBF)
		p += 3;
	while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
		p++;
	if (*p == '{')
		root = dfe_conf_json_parse(which, utf8);
	else
		root = dfe_conf_yaml_parse(which, utf8);

	return validate(which, root, allow_empty);
}
