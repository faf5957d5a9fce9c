/*
 * lists_tree.c — helpers of the neutral tree (lists_conf.h): phrases for
 * error messages, encoding conversion, line and column of an offset.
 */
#include "postgres.h"

#include <string.h>

#include "mb/pg_wchar.h"

#include "lists_conf.h"

const char *
dfe_conf_kind_phrase(const ConfNode *node)
{
	switch (node->kind)
	{
		case CK_MAP:
			return "a mapping";
		case CK_SEQ:
			return "a list";
		case CK_STRING:
			return "a string";
		case CK_NULL:
			return "empty (null)";
		case CK_OTHER:
			return node->what;
	}
	return "a value";
}

/* UTF-8 (parser output) to the server encoding; validates the bytes */
char *
dfe_conf_to_server(const char *utf8, size_t len)
{
	char	   *s = pnstrdup(utf8, len);

	return pg_any_to_server(s, strlen(s), PG_UTF8);
}

/* number of characters (not bytes) of utf8 between start and p */
static int
utf8_chars(const char *start, const char *p)
{
	int			n = 0;

	for (; start < p; start++)
		if (((unsigned char) *start & 0xC0) != 0x80)
			n++;
	return n;
}

/* 1-based line and column of byte offset off in text */
void
dfe_conf_line_col_of(const char *text, size_t off, int *line, int *col)
{
	const char *p;
	const char *line_start = text;
	size_t		len = strlen(text);

	if (off > len)
		off = len;
	*line = 1;
	for (p = text; p < text + off; p++)
		if (*p == '\n')
		{
			(*line)++;
			line_start = p + 1;
		}
	*col = utf8_chars(line_start, text + off) + 1;
}


const char *
dfe_conf_list_hint(const char *which)
{
	if (strcmp(which, "allowlist") == 0)
		return "The allowlist is the text of config/analytics.yml: a mapping of table names to lists of column names, optionally under \"shared:\".";
	if (strcmp(which, "blocklist") == 0)
		return "The blocklist is the text of config/analytics_hidden_pii.yml (the columns that get the hidden policy tag): a mapping of table names to lists of column names, optionally under \"shared:\".";
	return "The excluded list is the text of config/analytics_blocklist.yml (the columns deliberately not replicated): a mapping of table names to lists of column names, optionally under \"shared:\".";
}
