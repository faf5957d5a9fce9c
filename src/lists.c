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

#include "dfe_assert.h"
#include "lists.h"
#include "settings.h"
#include "shared.h"
#include "version.h"

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

/*
 * root = depth 0; children are converted for parents of depth <= 4: root,
 * shared: (or an environment), table, column entry given as a mapping
 * ({name: …, policy_tag: …}), and one more level for tables brought in by a
 * YAML merge key ("<<: *defaults"), whose mapping is converted one level
 * deeper.  The bound also ends alias cycles.
 */
#define CONF_MAX_PARENT_DEPTH 4

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
/* the plain key "<<" of a YAML 1.1 merge ("<<: *defaults") */
static bool
is_merge_key(yaml_node_t *key)
{
	return key->type == YAML_SCALAR_NODE &&
		key->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
		key->data.scalar.length == 2 &&
		memcmp(key->data.scalar.value, "<<", 2) == 0;
}

static ConfNode *yaml_to_conf(yaml_document_t *doc, yaml_node_t *node, int depth);

/* add the pairs of merged (a converted mapping) whose keys cn lacks */
static void
merge_pairs(ConfNode *cn, ConfNode *merged, int capacity)
{
	if (merged->kind != CK_MAP)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid YAML merge at line %d: \"<<\" must be followed by a mapping or a list of mappings, not %s",
						merged->line, kind_phrase(merged)),
				 errhint("Write \"<<: *name\" where &name anchors a mapping of tables.")));
	for (int i = 0; i < merged->n; i++)
	{
		bool		present = false;

		for (int j = 0; j < cn->n && !present; j++)
			present = cn->keys[j]->text && merged->keys[i]->text &&
				strcmp(cn->keys[j]->text, merged->keys[i]->text) == 0;
		if (present || cn->n >= capacity)
			continue;
		cn->keys[cn->n] = merged->keys[i];
		cn->items[cn->n] = merged->items[i];
		cn->n++;
	}
}

/*
 * A mapping: its own pairs first, then those of "<<" merges that it does
 * not override, as Ruby's YAML does (the explicit key wins).
 */
static void
yaml_mapping_to_conf(yaml_document_t *doc, yaml_node_t *node, int depth, ConfNode *cn)
{
	yaml_node_pair_t *pair;
	int			capacity = 0;

	/* room for the merged pairs too */
	for (pair = node->data.mapping.pairs.start; pair < node->data.mapping.pairs.top; pair++)
	{
		yaml_node_t *key = yaml_document_get_node(doc, pair->key);
		yaml_node_t *value = yaml_document_get_node(doc, pair->value);

		capacity++;
		if (is_merge_key(key) && value->type == YAML_MAPPING_NODE)
			capacity += value->data.mapping.pairs.top - value->data.mapping.pairs.start;
		else if (is_merge_key(key) && value->type == YAML_SEQUENCE_NODE)
		{
			yaml_node_item_t *item;

			for (item = value->data.sequence.items.start; item < value->data.sequence.items.top; item++)
			{
				yaml_node_t *m = yaml_document_get_node(doc, *item);

				if (m->type == YAML_MAPPING_NODE)
					capacity += m->data.mapping.pairs.top - m->data.mapping.pairs.start;
			}
		}
	}
	cn->keys = palloc0(sizeof(ConfNode *) * Max(capacity, 1));
	cn->items = palloc0(sizeof(ConfNode *) * Max(capacity, 1));
	cn->n = 0;
	for (pair = node->data.mapping.pairs.start; pair < node->data.mapping.pairs.top; pair++)
	{
		yaml_node_t *key = yaml_document_get_node(doc, pair->key);

		if (is_merge_key(key))
			continue;
		cn->keys[cn->n] = yaml_to_conf(doc, key, depth + 1);
		cn->items[cn->n] = yaml_to_conf(doc, yaml_document_get_node(doc, pair->value), depth + 1);
		cn->n++;
	}
	for (pair = node->data.mapping.pairs.start; pair < node->data.mapping.pairs.top; pair++)
	{
		yaml_node_t *key = yaml_document_get_node(doc, pair->key);
		yaml_node_t *value = yaml_document_get_node(doc, pair->value);

		if (!is_merge_key(key))
			continue;
		/* converted one level deeper: the depth bound also ends merge cycles */
		if (value->type == YAML_SEQUENCE_NODE)
		{
			yaml_node_item_t *item;

			for (item = value->data.sequence.items.start; item < value->data.sequence.items.top; item++)
				merge_pairs(cn, yaml_to_conf(doc, yaml_document_get_node(doc, *item), depth + 1),
							capacity);
		}
		else
			merge_pairs(cn, yaml_to_conf(doc, value, depth + 1), capacity);
	}
}

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
					/*
					 * Ruby's YAML (Psych) reads a plain ":users" or
					 * ":\"first name\"" as a Symbol, and Rails' config_for
					 * symbolizes every key anyway: the name is what follows
					 * the colon.
					 */
					if (cn->text[0] == ':' && cn->text[1] != '\0')
					{
						char	   *name = cn->text + 1;
						size_t		len = strlen(name);

						if (len >= 2 && (name[0] == '"' || name[0] == '\'') && name[len - 1] == name[0])
							cn->text = pnstrdup(name + 1, len - 2);
						else
							cn->text = pstrdup(name);
						break;
					}
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
				yaml_mapping_to_conf(doc, node, depth, cn);
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
	if (strcmp(which, "blocklist") == 0)
		return "The blocklist is the text of config/analytics_hidden_pii.yml (the columns that get the hidden policy tag): a mapping of table names to lists of column names, optionally under \"shared:\".";
	return "The excluded list is the text of config/analytics_blocklist.yml (the columns deliberately not replicated): a mapping of table names to lists of column names, optionally under \"shared:\".";
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
						 errdetail("It is %s%s%s.", value->text ? "\"" : "", value->text ? value->text : kind_phrase(value),
								   value->text ? "\"" : ""),
						 errhint("Write the tag's full name, projects/P/locations/L/taxonomies/T/policyTags/ID, as the Data Catalog taxonomy shows it.")));
			*tag = value->text;
		}
		else
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid %s at line %d: unexpected key \"%s\" in an entry of table \"%s\"",
							which, key->line, key->text ? key->text : kind_phrase(key), table->name),
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
		bool		repeated = false;

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
				column_mapping(which, col, table, &tag);
				break;
			case CK_SEQ:
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("invalid %s at line %d: an entry of table \"%s\" is %s, not a column name",
								which, col->line, table->name, kind_phrase(col)),
						 errdetail("Each entry of a table's list must be a plain column name."),
						 errhint("Check the indentation: \"- name:\" (with a colon) makes a mapping; write \"- name\".")));
				break;
		}

		/*
		 * A column listed twice is kept once, as the gem does (it reads the
		 * list as a set); register-trainee-teachers' analytics.yml has one.
		 * Two different policy tags for one column cannot both be right.
		 */
		for (int j = 0; j < kept && !repeated; j++)
		{
			if (strcmp(names[j].name, col->text) != 0)
				continue;
			repeated = true;
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
		}
		if (repeated)
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

/* the value of the top-level key name, or NULL */
static ConfNode *
root_section(const char *which, ConfNode *root, const char *name, int *index)
{
	ConfNode   *found = NULL;

	for (int i = 0; i < root->n; i++)
	{
		ConfNode   *key = root->keys[i];

		if (key->kind != CK_STRING || strcmp(key->text, name) != 0)
			continue;
		if (found)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid %s at line %d: \"%s\" appears twice", which, key->line, name),
					 errdetail("It is first listed at line %d.", root->keys[*index]->line),
					 errhint("Merge the two sections into one.")));
		found = root->items[i];
		*index = i;
	}
	return found;
}

/*
 * The tables of a file, as Rails' config_for reads it (the gem reads every
 * list through Rails.application.config_for): when the top level has
 * "shared:" or the environment named by dfe_airbyte.rails_env (env
 * RAILS_ENV), the result is shared deep-merged with that environment's
 * section, where a table in both gets the environment's list (deep_merge
 * replaces arrays, it does not concatenate them); other environments'
 * sections are ignored, as Rails ignores them.  Otherwise the whole
 * document is the mapping of tables (a bare file).
 */
static ConfNode *
rails_sections(const char *which, ConfNode *root)
{
	const char *env = dfe_setting_rails_env();
	int			shared_at = -1;
	int			env_at = -1;
	ConfNode   *shared = root_section(which, root, "shared", &shared_at);
	ConfNode   *section = env && strcmp(env, "shared") != 0 ? root_section(which, root, env, &env_at) : NULL;
	ConfNode   *merged;
	StringInfoData ignored;

	/* a "shared" or environment that holds a list is a table of that name */
	if (shared && shared->kind != CK_MAP && shared->kind != CK_NULL)
		shared = NULL;
	if (section && section->kind != CK_MAP && section->kind != CK_NULL)
		section = NULL;
	if (shared == NULL && section == NULL)
		return root;

	initStringInfo(&ignored);
	for (int i = 0; i < root->n; i++)
	{
		ConfNode   *key = root->keys[i];
		ConfNode   *value = root->items[i];

		if ((shared && i == shared_at) || (section && i == env_at))
			continue;
		if (value->kind == CK_MAP || value->kind == CK_NULL)
		{
			appendStringInfo(&ignored, "%s%s", ignored.len ? ", " : "",
							 key->text ? key->text : kind_phrase(key));
			continue;
		}
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid %s at line %d: unexpected top-level key \"%s\" next to \"shared\"",
						which, key->line, key->text ? key->text : kind_phrase(key)),
				 errdetail("Tables belong in the shared section or in an environment's section (production:, test:, …); Rails would ignore this one."),
				 errhint("Move its tables into the shared section, or remove it.")));
	}
	if (ignored.len > 0 && env == NULL)
		ereport(NOTICE,
				(errmsg("%s: only the shared section is read; the other top-level section(s) %s (Rails environments?) are not merged",
						which, ignored.data),
				 errdetail("dfe_airbyte.rails_env and RAILS_ENV are not set."),
				 errhint("Set dfe_airbyte.rails_env (e.g. SET dfe_airbyte.rails_env = 'production') to merge that environment's section over shared:, as Rails' config_for does.")));

	if (section == NULL || section->kind == CK_NULL)
		return shared;
	if (shared == NULL || shared->kind == CK_NULL)
		return section;

	/* shared.deep_merge(section): the section's tables win, new ones are added */
	merged = palloc0(sizeof(ConfNode));
	merged->kind = CK_MAP;
	merged->line = shared->line;
	merged->keys = palloc0(sizeof(ConfNode *) * Max(shared->n + section->n, 1));
	merged->items = palloc0(sizeof(ConfNode *) * Max(shared->n + section->n, 1));
	for (int i = 0; i < shared->n; i++)
	{
		merged->keys[merged->n] = shared->keys[i];
		merged->items[merged->n] = shared->items[i];
		for (int j = 0; j < section->n; j++)
			if (shared->keys[i]->text && section->keys[j]->text &&
				strcmp(shared->keys[i]->text, section->keys[j]->text) == 0)
				merged->items[merged->n] = section->items[j];
		merged->n++;
	}
	for (int j = 0; j < section->n; j++)
	{
		bool		in_shared = false;

		for (int i = 0; i < shared->n && !in_shared; i++)
			in_shared = shared->keys[i]->text && section->keys[j]->text &&
				strcmp(shared->keys[i]->text, section->keys[j]->text) == 0;
		if (in_shared)
			continue;
		merged->keys[merged->n] = section->keys[j];
		merged->items[merged->n] = section->items[j];
		merged->n++;
	}
	return merged;
}

/*
 * What replace_list() relies on (it diffs the list against a table's rows
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
						which, root->line, kind_phrase(root)),
				 errhint("%s", list_hint(which))));

	tables = rails_sections(which, root);
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
	Datum	   *tags = palloc(sizeof(Datum) * Max(list->ncolumns, 1));
	bool	   *tag_nulls = palloc(sizeof(bool) * Max(list->ncolumns, 1));
	bool		blocklist = strcmp(relname, "blocklist") == 0;
	Oid			argtypes[3] = {TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID};
	Datum		args[3];
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
	dims[0] = n;
	args[2] = PointerGetDatum(n > 0
							  ? construct_md_array(tags, tag_nulls, 1, dims, lbs, TEXTOID, -1, false, TYPALIGN_INT)
							  : construct_empty_array(TEXTOID));

	sql = psprintf("DELETE FROM dfe_airbyte.%s AS l "
				   "WHERE NOT EXISTS (SELECT 1 FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2)) AS n(t, c) "
				   "WHERE n.t OPERATOR(pg_catalog.=) l.table_name AND n.c OPERATOR(pg_catalog.=) l.column_name)", relname);
	rc = SPI_execute_with_args(sql, 2, argtypes, args, NULL, false, 0);
	if (rc != SPI_OK_DELETE)
		dfe_internal_error("dfe_airbyte: deleting from %s failed: %s", relname,
			 SPI_result_code_string(rc));
	*removed = (int) SPI_processed;

	/* a blocklist row whose policy tag changed counts as added */
	if (blocklist)
		sql = "INSERT INTO dfe_airbyte.blocklist AS b (table_name, column_name, policy_tag) "
			"SELECT t, c, g FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2), pg_catalog.unnest($3)) AS n(t, c, g) "
			"ON CONFLICT (table_name, column_name) DO UPDATE SET policy_tag = EXCLUDED.policy_tag "
			"WHERE b.policy_tag IS DISTINCT FROM EXCLUDED.policy_tag";
	else
		sql = psprintf("INSERT INTO dfe_airbyte.%s (table_name, column_name) "
					   "SELECT t, c FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2)) AS n(t, c) "
					   "ON CONFLICT (table_name, column_name) DO NOTHING", relname);
	rc = SPI_execute_with_args(sql, blocklist ? 3 : 2, argtypes, args, NULL, false, 0);
	if (rc != SPI_OK_INSERT)
		dfe_internal_error("dfe_airbyte: inserting into %s failed: %s", relname,
			 SPI_result_code_string(rc));
	*added = (int) SPI_processed;
}

static void
lock_list(const char *relname)
{
	char	   *sql = psprintf("LOCK TABLE dfe_airbyte.%s IN SHARE ROW EXCLUSIVE MODE", relname);

	if (SPI_execute(sql, false, 0) != SPI_OK_UTILITY)
		dfe_internal_error("dfe_airbyte: could not lock dfe_airbyte.%s", relname);
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
 * dfe_airbyte_load_config(allowlist text, blocklist text DEFAULT NULL,
 *                         excluded text DEFAULT NULL)
 *   → TABLE(list, tables, columns, added, removed)
 *
 * allowlist = analytics.yml, blocklist = analytics_hidden_pii.yml (tagged
 * hidden), excluded = analytics_blocklist.yml (not replicated).  A NULL
 * text leaves that list unchanged (and gives no row); blocklist or
 * excluded '' empties the list; allowlist '' is an error.
 */
Datum
dfe_airbyte_load_config(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	static const char *const names[3] = {"allowlist", "blocklist", "excluded"};
	ParsedList *lists[3] = {NULL, NULL, NULL};
	int			added[3] = {0, 0, 0};
	int			removed[3] = {0, 0, 0};
	bool		any = false;

	DFE_REQUIRE_MATCHING_SQL();
	InitMaterializedSRF(fcinfo, 0);

	/* parse all completely before touching anything */
	for (int i = 0; i < 3 && i < PG_NARGS(); i++)
	{
		char	   *body;

		if (PG_ARGISNULL(i))
			continue;
		body = text_to_cstring(PG_GETARG_TEXT_PP(i));
		/* Rails' config_for renders ERB first; we cannot, so say so */
		if (strstr(body, "<%") != NULL)
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("the %s contains ERB (\"<%%\"), which dfe_airbyte_load_config does not evaluate", names[i]),
					 errdetail("Rails renders ERB in config files before reading the YAML."),
					 errhint("Pass the rendered text, e.g. Rails.application.config_for(:analytics).to_json, or remove the ERB from the file.")));
		lists[i] = lists_parse(names[i], body, i > 0);
		any = true;
	}

	if (!any)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("no list to load: the allowlist, the blocklist and the excluded list are all null"),
				 errhint("Pass the text of config/analytics.yml, and optionally of config/analytics_hidden_pii.yml (blocklist) and config/analytics_blocklist.yml (excluded).")));

	if (SPI_connect() != SPI_OK_CONNECT)
		dfe_internal_error("dfe_airbyte: SPI_connect failed");

	/* always in the same order, so two loaders cannot deadlock */
	for (int i = 0; i < 3; i++)
		if (lists[i])
			lock_list(names[i]);
	for (int i = 0; i < 3; i++)
		if (lists[i])
			replace_list(names[i], lists[i], &added[i], &removed[i]);

	SPI_finish();

	for (int i = 0; i < 3; i++)
		if (lists[i])
			put_summary(rsinfo, lists[i], added[i], removed[i]);
	return (Datum) 0;
}
