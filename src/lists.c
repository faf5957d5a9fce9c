/*
 * lists.c — dfe_airbyte_load_config(allowlist text, blocklist text):
 * replace dfe_airbyte.allowlist / dfe_airbyte.blocklist from the text of
 * the dfe-analytics YAML files (or the same shape as JSON).
 *
 * Both texts are parsed and validated completely before either table is
 * touched, so bad input changes nothing.  The tables are then replaced by
 * difference (rows no longer listed are deleted, new ones inserted), so
 * loaded_at of an unchanged row keeps telling when it was first listed.
 *
 * Parsing goes through a small neutral tree (ConfNode) built from either
 * libyaml's document or cJSON's tree plus a scan of the JSON text for line
 * numbers; one validator then checks the shape and reports errors.  Only
 * the three levels the format has (root, tables, columns) are converted,
 * so YAML alias cycles or deep nesting cannot make the conversion loop.
 */
#include "postgres.h"

#include <ctype.h>
#include <string.h>

#include <yaml.h>
#include <cjson/cJSON.h>

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"

#include "lists.h"

/* ---------------------------------------------------------------------
 * The neutral tree
 * ---------------------------------------------------------------------
 */
typedef enum ConfKind
{
	CK_MAP,
	CK_SEQ,
	CK_STRING,					/* a quoted or plain YAML string, a JSON string */
	CK_NULL,					/* YAML ~ / null / empty, JSON null */
	CK_OTHER					/* number or boolean: what says which */
} ConfKind;

typedef struct ConfNode
{
	ConfKind	kind;
	int			line;			/* 1-based */
	char	   *text;			/* CK_STRING, CK_OTHER: the scalar (server encoding) */
	const char *what;			/* CK_OTHER: "a number", "a boolean" */
	int			n;				/* CK_MAP: pairs, CK_SEQ: items (0 when not converted) */
	struct ConfNode **keys;		/* CK_MAP only */
	struct ConfNode **items;	/* CK_MAP values, CK_SEQ items */
} ConfNode;

/* root = depth 0; children are converted for depth <= 2 (root, shared:, table) */
#define CONF_MAX_PARENT_DEPTH 2

static const char *
kind_phrase(const ConfNode *node)
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
static char *
to_server(const char *utf8, size_t len)
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
static void
line_col_of(const char *text, size_t off, int *line, int *col)
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

/*
 * YAML 1.1 resolves some plain (unquoted) scalars to null, booleans or
 * numbers; Ruby (Psych) would hand the gem those, not strings.  Reject
 * them as names so that "- yes" or "- 1" is not silently a column name.
 */
static bool
plain_is_null(const char *s)
{
	return s[0] == '\0' || strcmp(s, "~") == 0 || strcmp(s, "null") == 0 ||
		strcmp(s, "Null") == 0 || strcmp(s, "NULL") == 0;
}

static bool
plain_is_bool(const char *s)
{
	static const char *const words[] = {
		"true", "True", "TRUE", "false", "False", "FALSE",
		"yes", "Yes", "YES", "no", "No", "NO",
		"on", "On", "ON", "off", "Off", "OFF", NULL
	};

	for (int i = 0; words[i]; i++)
		if (strcmp(s, words[i]) == 0)
			return true;
	return false;
}

static bool
plain_is_number(const char *s)
{
	const char *p = s;
	bool		digits = false;

	if (*p == '+' || *p == '-')
		p++;
	if (strcmp(p, ".inf") == 0 || strcmp(p, ".Inf") == 0 || strcmp(p, ".INF") == 0)
		return true;
	if (strcmp(s, ".nan") == 0 || strcmp(s, ".NaN") == 0 || strcmp(s, ".NAN") == 0)
		return true;
	if (p[0] == '0' && (p[1] == 'x' || p[1] == 'o' || p[1] == 'b') && p[2])
	{
		for (p += 2; *p; p++)
			if (!isxdigit((unsigned char) *p) && *p != '_')
				return false;
		return true;
	}
	for (; isdigit((unsigned char) *p) || *p == '_'; p++)
		digits |= isdigit((unsigned char) *p) != 0;
	if (*p == '.')
		for (p++; isdigit((unsigned char) *p) || *p == '_'; p++)
			digits |= isdigit((unsigned char) *p) != 0;
	if (!digits)
		return false;
	if (*p == 'e' || *p == 'E')
	{
		p++;
		if (*p == '+' || *p == '-')
			p++;
		if (!isdigit((unsigned char) *p))
			return false;
		while (isdigit((unsigned char) *p))
			p++;
	}
	return *p == '\0';
}

/* ---------------------------------------------------------------------
 * YAML (libyaml document API)
 * ---------------------------------------------------------------------
 */
static ConfNode *
yaml_to_conf(yaml_document_t *doc, yaml_node_t *node, int depth)
{
	ConfNode   *cn = palloc0(sizeof(ConfNode));

	cn->line = (int) node->start_mark.line + 1;
	switch (node->type)
	{
		case YAML_SCALAR_NODE:
			{
				const char *value = (const char *) node->data.scalar.value;
				size_t		length = node->data.scalar.length;

				if (memchr(value, '\0', length) != NULL)
				{
					cn->kind = CK_OTHER;
					cn->what = "a string containing a NUL character";
					cn->text = to_server(value, strlen(value));
					break;
				}
				cn->text = to_server(value, length);
				cn->kind = CK_STRING;
				if (node->data.scalar.style == YAML_PLAIN_SCALAR_STYLE)
				{
					if (plain_is_null(cn->text))
						cn->kind = CK_NULL;
					else if (plain_is_bool(cn->text))
					{
						cn->kind = CK_OTHER;
						cn->what = "a boolean";
					}
					else if (plain_is_number(cn->text))
					{
						cn->kind = CK_OTHER;
						cn->what = "a number";
					}
				}
				break;
			}
		case YAML_SEQUENCE_NODE:
			cn->kind = CK_SEQ;
			if (depth <= CONF_MAX_PARENT_DEPTH)
			{
				yaml_node_item_t *item;
				int			i = 0;

				cn->n = node->data.sequence.items.top - node->data.sequence.items.start;
				cn->items = palloc0(sizeof(ConfNode *) * Max(cn->n, 1));
				for (item = node->data.sequence.items.start;
					 item < node->data.sequence.items.top; item++)
					cn->items[i++] = yaml_to_conf(doc, yaml_document_get_node(doc, *item),
												  depth + 1);
			}
			break;
		case YAML_MAPPING_NODE:
			cn->kind = CK_MAP;
			if (depth <= CONF_MAX_PARENT_DEPTH)
			{
				yaml_node_pair_t *pair;
				int			i = 0;

				cn->n = node->data.mapping.pairs.top - node->data.mapping.pairs.start;
				cn->keys = palloc0(sizeof(ConfNode *) * Max(cn->n, 1));
				cn->items = palloc0(sizeof(ConfNode *) * Max(cn->n, 1));
				for (pair = node->data.mapping.pairs.start;
					 pair < node->data.mapping.pairs.top; pair++)
				{
					cn->keys[i] = yaml_to_conf(doc, yaml_document_get_node(doc, pair->key),
											   depth + 1);
					cn->items[i] = yaml_to_conf(doc, yaml_document_get_node(doc, pair->value),
												depth + 1);
					i++;
				}
			}
			break;
		default:
			cn->kind = CK_NULL;
			break;
	}
	return cn;
}

static const char *
list_hint(const char *which)
{
	if (strcmp(which, "allowlist") == 0)
		return "The allowlist is the text of config/analytics.yml: a mapping of table names to lists of column names, optionally under \"shared:\".";
	return "The blocklist is the text of config/analytics_blocklist.yml: a mapping of table names to lists of column names, optionally under \"shared:\".";
}

static void
yaml_syntax_error(const char *which, yaml_parser_t *parser, const char *text)
{
	int			line;
	int			col;
	const char *problem = parser->problem ? parser->problem : "the text could not be parsed";

	if (parser->error == YAML_MEMORY_ERROR)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory while parsing the %s", which),
				 errhint("Load a smaller file, or raise the server's memory limits.")));

	if (parser->error == YAML_READER_ERROR)
		line_col_of(text, parser->problem_offset, &line, &col);
	else
	{
		line = (int) parser->problem_mark.line + 1;
		col = (int) parser->problem_mark.column + 1;
	}

	if (parser->context && strncmp(parser->context, "while ", 6) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("invalid YAML in the %s at line %d, column %d: %s",
						which, line, col, problem),
				 errdetail("The error was found %s that started at line %d.",
						   parser->context, (int) parser->context_mark.line + 1),
				 errhint("Check the indentation and quoting near that line. %s",
						 list_hint(which))));
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
			 errmsg("invalid YAML in the %s at line %d, column %d: %s",
					which, line, col, problem),
			 errhint("Check the indentation and quoting near that line. %s",
					 list_hint(which))));
}

/*
 * Parse YAML text (UTF-8) into a ConfNode tree; NULL for an empty stream.
 * libyaml's objects are malloc'd: they are freed on every path, ERROR
 * included.
 */
static ConfNode *
yaml_parse(const char *which, const char *text)
{
	yaml_parser_t *parser = palloc0(sizeof(yaml_parser_t));
	yaml_document_t *doc = palloc0(sizeof(yaml_document_t));
	volatile bool have_doc = false;
	ConfNode   *volatile result = NULL;

	if (!yaml_parser_initialize(parser))
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory while parsing the %s", which),
				 errhint("Retry when the server has more memory available.")));

	PG_TRY();
	{
		yaml_node_t *root;

		yaml_parser_set_input_string(parser, (const unsigned char *) text, strlen(text));
		yaml_parser_set_encoding(parser, YAML_UTF8_ENCODING);

		if (!yaml_parser_load(parser, doc))
			yaml_syntax_error(which, parser, text);
		have_doc = true;
		root = yaml_document_get_root_node(doc);
		if (root != NULL)
		{
			result = yaml_to_conf(doc, root, 0);

			/* a second document would be silently ignored: refuse it */
			yaml_document_delete(doc);
			have_doc = false;
			if (!yaml_parser_load(parser, doc))
				yaml_syntax_error(which, parser, text);
			have_doc = true;
			root = yaml_document_get_root_node(doc);
			if (root != NULL)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("invalid %s at line %d: a second YAML document starts here",
								which, (int) doc->start_mark.line + 1),
						 errdetail("Only one document (one file) can be loaded per list."),
						 errhint("Remove the \"---\" separator and merge the documents. %s",
								 list_hint(which))));
		}
	}
	PG_FINALLY();
	{
		if (have_doc)
			yaml_document_delete(doc);
		yaml_parser_delete(parser);
	}
	PG_END_TRY();

	pfree(parser);
	pfree(doc);
	return result;
}

/* ---------------------------------------------------------------------
 * JSON (cJSON, with our own scan of the text for line numbers)
 * ---------------------------------------------------------------------
 */
typedef struct JsonCursor
{
	const char *p;
	int			line;
} JsonCursor;

static void
jc_advance(JsonCursor *c)
{
	if (*c->p == '\0')
		return;
	if (*c->p == '\n')
		c->line++;
	c->p++;
}

/* cJSON treats every byte <= 32 as white space */
static void
jc_skip_ws(JsonCursor *c)
{
	while (*c->p != '\0' && (unsigned char) *c->p <= 32)
		jc_advance(c);
}

static void
jc_skip_string(JsonCursor *c)
{
	jc_advance(c);				/* opening quote */
	while (*c->p != '\0' && *c->p != '"')
	{
		if (*c->p == '\\')
			jc_advance(c);
		jc_advance(c);
	}
	jc_advance(c);				/* closing quote */
}

/* a number, true, false or null */
static void
jc_skip_token(JsonCursor *c)
{
	while (*c->p != '\0' && (unsigned char) *c->p > 32 &&
		   strchr(",:]}", *c->p) == NULL)
		jc_advance(c);
}

/* skip one complete (valid) value without recursion */
static void
jc_skip_value(JsonCursor *c)
{
	int			depth = 0;

	do
	{
		jc_skip_ws(c);
		switch (*c->p)
		{
			case '\0':
				return;
			case '"':
				jc_skip_string(c);
				break;
			case '{':
			case '[':
				depth++;
				jc_advance(c);
				break;
			case '}':
			case ']':
				depth--;
				jc_advance(c);
				break;
			case ',':
			case ':':
				jc_advance(c);
				break;
			default:
				jc_skip_token(c);
				break;
		}
	} while (depth > 0);
}

/*
 * Convert item, whose text starts at the cursor (after white space), and
 * move the cursor past it.  The text is known to be valid JSON (cJSON
 * accepted it), so the scan only has to follow the structure.
 */
static ConfNode *
json_to_conf(JsonCursor *c, cJSON *item, int depth)
{
	ConfNode   *cn = palloc0(sizeof(ConfNode));
	const char *start;

	jc_skip_ws(c);
	cn->line = c->line;

	if (cJSON_IsObject(item) || cJSON_IsArray(item))
	{
		bool		object = cJSON_IsObject(item);
		cJSON	   *child;
		int			i = 0;

		cn->kind = object ? CK_MAP : CK_SEQ;
		if (depth > CONF_MAX_PARENT_DEPTH)
		{
			jc_skip_value(c);
			return cn;
		}
		cn->n = cJSON_GetArraySize(item);
		cn->items = palloc0(sizeof(ConfNode *) * Max(cn->n, 1));
		if (object)
			cn->keys = palloc0(sizeof(ConfNode *) * Max(cn->n, 1));
		jc_advance(c);			/* { or [ */
		cJSON_ArrayForEach(child, item)
		{
			jc_skip_ws(c);
			if (object)
			{
				ConfNode   *key = palloc0(sizeof(ConfNode));

				key->kind = CK_STRING;
				key->line = c->line;
				key->text = to_server(child->string, strlen(child->string));
				cn->keys[i] = key;
				jc_skip_string(c);
				jc_skip_ws(c);
				jc_advance(c);	/* : */
			}
			cn->items[i++] = json_to_conf(c, child, depth + 1);
			jc_skip_ws(c);
			if (*c->p == ',')
				jc_advance(c);
		}
		jc_skip_ws(c);
		jc_advance(c);			/* } or ] */
		return cn;
	}

	if (cJSON_IsString(item))
	{
		cn->kind = CK_STRING;
		cn->text = to_server(item->valuestring, strlen(item->valuestring));
		jc_skip_string(c);
		return cn;
	}

	start = c->p;
	jc_skip_token(c);
	if (cJSON_IsNull(item))
		cn->kind = CK_NULL;
	else
	{
		cn->kind = CK_OTHER;
		cn->what = cJSON_IsBool(item) ? "a boolean" : "a number";
		cn->text = to_server(start, c->p - start);
	}
	return cn;
}

static ConfNode *
json_parse(const char *which, const char *text)
{
	const char *end = NULL;
	cJSON	   *root;
	JsonCursor	cur;
	ConfNode   *result;

	root = cJSON_ParseWithOpts(text, &end, true);
	if (root == NULL)
	{
		int			line;
		int			col;
		size_t		off = end ? (size_t) (end - text) : strlen(text);

		line_col_of(text, off, &line, &col);
		if (off >= strlen(text))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
					 errmsg("invalid JSON in the %s at line %d, column %d: unexpected end of the text",
							which, line, col),
					 errhint("Check for a missing closing bracket or quote. %s",
							 list_hint(which))));
		else
		{
			const char *p = text + off;
			int			n = 0;

			while (p[n] != '\0' && p[n] != '\n' && n < 20)
				n++;
			while (n > 0 && (((unsigned char) p[n]) & 0xC0) == 0x80)
				n--;			/* never cut a character in two */
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
					 errmsg("invalid JSON in the %s at line %d, column %d",
							which, line, col),
					 errdetail("The parser stopped here: %s",
							   to_server(p, n)),
					 errhint("Check for a missing comma, quote or bracket near that place. %s",
							 list_hint(which))));
		}
	}

	cur.p = text;
	cur.line = 1;
	if ((unsigned char) cur.p[0] == 0xEF && (unsigned char) cur.p[1] == 0xBB &&
		(unsigned char) cur.p[2] == 0xBF)
		cur.p += 3;				/* cJSON skips a UTF-8 byte order mark too */
	result = json_to_conf(&cur, root, 0);
	cJSON_Delete(root);
	return result;
}

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

static void
check_columns(const char *which, ConfNode *seq, ListTable *table)
{
	NamedLine  *names = palloc(sizeof(NamedLine) * Max(seq->n, 1));
	NamedLine	repeat;
	NamedLine	first;

	table->columns = palloc0(sizeof(ListColumn) * Max(seq->n, 1));
	for (int i = 0; i < seq->n; i++)
	{
		ConfNode   *col = seq->items[i];

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
			case CK_SEQ:
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("invalid %s at line %d: an entry of table \"%s\" is %s, not a column name",
								which, col->line, table->name, kind_phrase(col)),
						 errdetail("Each entry of a table's list must be a plain column name."),
						 errhint("Check the indentation: \"- name:\" (with a colon) makes a mapping; write \"- name\".")));
				break;
		}
		table->columns[i].name = col->text;
		table->columns[i].line = col->line;
		names[i].name = col->text;
		names[i].line = col->line;
		names[i].order = i;
	}
	table->ncolumns = seq->n;

	if (find_duplicate(names, seq->n, &repeat, &first))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid %s at line %d: column \"%s\" is listed twice for table \"%s\"",
						which, repeat.line, repeat.name, table->name),
				 errdetail("It is first listed at line %d.", first.line),
				 errhint("Remove one of the two entries.")));
	pfree(names);
}

static ParsedList *
validate(const char *which, ConfNode *root, bool allow_empty)
{
	ParsedList *list = palloc0(sizeof(ParsedList));
	ConfNode   *tables = root;
	NamedLine  *names;
	NamedLine	repeat;
	NamedLine	first;
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
						which, root->line, kind_phrase(root)),
				 errhint("%s", list_hint(which))));

	/*
	 * "shared:" holding a mapping (or nothing) wraps the tables, as in the
	 * gem's files.  A "shared" that holds a list is a table called shared.
	 */
	for (int i = 0; i < root->n; i++)
	{
		ConfNode   *key = root->keys[i];
		ConfNode   *value = root->items[i];

		if (key->kind == CK_STRING && strcmp(key->text, "shared") == 0 &&
			(value->kind == CK_MAP || value->kind == CK_NULL))
		{
			for (int j = 0; j < root->n; j++)
			{
				ConfNode   *other = root->keys[j];

				if (j == i)
					continue;
				if (other->kind == CK_STRING && strcmp(other->text, "shared") == 0)
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							 errmsg("invalid %s at line %d: \"shared\" appears twice",
									which, other->line),
							 errdetail("It is first listed at line %d.", root->keys[Min(i, j)]->line),
							 errhint("Merge the two sections into one.")));
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("invalid %s at line %d: unexpected top-level key \"%s\" next to \"shared\"",
								which, other->line,
								other->text ? other->text : kind_phrase(other)),
						 errdetail("Only the shared section is read; Rails environment sections (production:, test:, …) are not merged into it."),
						 errhint("Move its tables into the shared section, or remove it.")));
			}
			tables = value;
			break;
		}
	}

	if (tables->kind == CK_NULL)
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

		if (key->kind != CK_STRING)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid %s at line %d: a table name is %s, not a string",
							which, key->line, kind_phrase(key)),
					 errhint("Write the table's name followed by a colon, e.g. \"users:\"; quote a name that YAML reads as a number or boolean.")));
		if (key->text[0] == '\0')
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid %s at line %d: empty table name", which, key->line),
					 errhint("Write the table's name before the colon.")));
		names[i].name = key->text;
		names[i].line = key->line;
		names[i].order = i;

		switch (value->kind)
		{
			case CK_SEQ:
				break;
			case CK_NULL:
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("invalid %s at line %d: table \"%s\" has no list of columns",
								which, key->line, key->text),
						 errdetail("Its value is empty (null)."),
						 errhint("List its columns under it (\"- id\"), or write \"%s: []\" to list none.",
								 key->text)));
				break;
			case CK_MAP:
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("invalid %s at line %d: table \"%s\" must map to a list of column names, not a mapping",
								which, key->line, key->text),
						 errhint("Write each column as a list entry (\"- id\"); check the indentation and that no column has a colon after it.")));
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
	return list;
}

ParsedList *
lists_parse(const char *which, const char *text, bool allow_empty)
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
		root = json_parse(which, utf8);
	else
		root = yaml_parse(which, utf8);

	return validate(which, root, allow_empty);
}

/* ---------------------------------------------------------------------
 * Replacing a table's rows by difference
 * ---------------------------------------------------------------------
 */
static ArrayType *
text_array(Datum *elems, int n)
{
	return construct_array(elems, n, TEXTOID, -1, false, TYPALIGN_INT);
}

static void
replace_list(const char *relname, ParsedList *list, int *added, int *removed)
{
	Datum	   *tables = palloc(sizeof(Datum) * Max(list->ncolumns, 1));
	Datum	   *columns = palloc(sizeof(Datum) * Max(list->ncolumns, 1));
	Oid			argtypes[2] = {TEXTARRAYOID, TEXTARRAYOID};
	Datum		args[2];
	int			n = 0;
	char	   *sql;
	int			rc;

	for (int i = 0; i < list->ntables; i++)
		for (int j = 0; j < list->tables[i].ncolumns; j++)
		{
			tables[n] = CStringGetTextDatum(list->tables[i].name);
			columns[n] = CStringGetTextDatum(list->tables[i].columns[j].name);
			n++;
		}
	args[0] = PointerGetDatum(text_array(tables, n));
	args[1] = PointerGetDatum(text_array(columns, n));

	sql = psprintf("DELETE FROM dfe_airbyte.%s AS l "
				   "WHERE NOT EXISTS (SELECT 1 FROM unnest($1, $2) AS n(t, c) "
				   "WHERE n.t = l.table_name AND n.c = l.column_name)", relname);
	rc = SPI_execute_with_args(sql, 2, argtypes, args, NULL, false, 0);
	if (rc != SPI_OK_DELETE)
		elog(ERROR, "dfe_airbyte: deleting from %s failed: %s", relname,
			 SPI_result_code_string(rc));
	*removed = (int) SPI_processed;

	sql = psprintf("INSERT INTO dfe_airbyte.%s (table_name, column_name) "
				   "SELECT t, c FROM unnest($1, $2) AS n(t, c) "
				   "ON CONFLICT (table_name, column_name) DO NOTHING", relname);
	rc = SPI_execute_with_args(sql, 2, argtypes, args, NULL, false, 0);
	if (rc != SPI_OK_INSERT)
		elog(ERROR, "dfe_airbyte: inserting into %s failed: %s", relname,
			 SPI_result_code_string(rc));
	*added = (int) SPI_processed;
}

static void
lock_list(const char *relname)
{
	char	   *sql = psprintf("LOCK TABLE dfe_airbyte.%s IN SHARE ROW EXCLUSIVE MODE", relname);

	if (SPI_execute(sql, false, 0) != SPI_OK_UTILITY)
		elog(ERROR, "dfe_airbyte: could not lock dfe_airbyte.%s", relname);
}

static void
put_summary(ReturnSetInfo *rsinfo, ParsedList *list, int added, int removed)
{
	Datum		values[5];
	bool		nulls[5] = {false, false, false, false, false};

	values[0] = CStringGetTextDatum(list->which);
	values[1] = Int32GetDatum(list->ntables);
	values[2] = Int32GetDatum(list->ncolumns);
	values[3] = Int32GetDatum(added);
	values[4] = Int32GetDatum(removed);
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
}

PG_FUNCTION_INFO_V1(dfe_airbyte_load_config);

/*
 * dfe_airbyte_load_config(allowlist text, blocklist text DEFAULT NULL)
 *   → TABLE(list, tables, columns, added, removed)
 *
 * A NULL text leaves that list unchanged (and gives no row); blocklist ''
 * empties the blocklist; allowlist '' is an error.
 */
Datum
dfe_airbyte_load_config(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	ParsedList *allow = NULL;
	ParsedList *block = NULL;
	int			allow_added = 0,
				allow_removed = 0,
				block_added = 0,
				block_removed = 0;

	InitMaterializedSRF(fcinfo, 0);

	/* parse both completely before touching anything */
	if (!PG_ARGISNULL(0))
		allow = lists_parse("allowlist", text_to_cstring(PG_GETARG_TEXT_PP(0)), false);
	if (!PG_ARGISNULL(1))
		block = lists_parse("blocklist", text_to_cstring(PG_GETARG_TEXT_PP(1)), true);

	if (allow == NULL && block == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("no list to load: both the allowlist and the blocklist are null"),
				 errhint("Pass the text of config/analytics.yml, and optionally of config/analytics_blocklist.yml.")));

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "dfe_airbyte: SPI_connect failed");

	/* always in the same order, so two loaders cannot deadlock */
	if (allow)
		lock_list("allowlist");
	if (block)
		lock_list("blocklist");
	if (allow)
		replace_list("allowlist", allow, &allow_added, &allow_removed);
	if (block)
		replace_list("blocklist", block, &block_added, &block_removed);

	SPI_finish();

	if (allow)
		put_summary(rsinfo, allow, allow_added, allow_removed);
	if (block)
		put_summary(rsinfo, block, block_added, block_removed);
	return (Datum) 0;
}
