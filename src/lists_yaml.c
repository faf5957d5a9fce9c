/*
 * lists_yaml.c — YAML text → ConfNode tree (libyaml's document API), with
 * YAML 1.1's resolution of plain scalars that Ruby's Psych applies.
 */
#include "postgres.h"

#include <ctype.h>
#include <string.h>

#include <yaml.h>

#include "lists_conf.h"

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
						merged->line, dfe_conf_kind_phrase(merged)),
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

/* cn for a scalar: a string, null, or a boolean or number (refused later) */
static void
scalar_to_conf(yaml_node_t *node, ConfNode *cn)
{
	const char *value = (const char *) node->data.scalar.value;
	size_t		length = node->data.scalar.length;

	if (memchr(value, '\0', length) != NULL)
	{
		cn->kind = CK_OTHER;
		cn->what = "a string containing a NUL character";
		cn->text = dfe_conf_to_server(value, strlen(value));
		return;
	}
	cn->text = dfe_conf_to_server(value, length);
	cn->kind = CK_STRING;
	if (node->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
		return;

	/*
	 * Ruby's YAML (Psych) reads a plain ":users" or ":\"first name\"" as a
	 * Symbol, and Rails' config_for symbolizes every key anyway: the name is
	 * what follows the colon.
	 */
	if (cn->text[0] == ':' && cn->text[1] != '\0')
	{
		char	   *name = cn->text + 1;
		size_t		len = strlen(name);

		if (len >= 2 && (name[0] == '"' || name[0] == '\'') && name[len - 1] == name[0])
			cn->text = pnstrdup(name + 1, len - 2);
		else
			cn->text = pstrdup(name);
		return;
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

static ConfNode *
yaml_to_conf(yaml_document_t *doc, yaml_node_t *node, int depth)
{
	ConfNode   *cn = palloc0(sizeof(ConfNode));

	cn->line = (int) node->start_mark.line + 1;
	switch (node->type)
	{
		case YAML_SCALAR_NODE:
			scalar_to_conf(node, cn);
			break;
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
		dfe_conf_line_col_of(text, parser->problem_offset, &line, &col);
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
						 dfe_conf_list_hint(which))));
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
			 errmsg("invalid YAML in the %s at line %d, column %d: %s",
					which, line, col, problem),
			 errhint("Check the indentation and quoting near that line. %s",
					 dfe_conf_list_hint(which))));
}

/*
 * Parse YAML text (UTF-8) into a ConfNode tree; NULL for an empty stream.
 * libyaml's objects are malloc'd: they are freed on every path, ERROR
 * included.
 */
ConfNode *
dfe_conf_yaml_parse(const char *which, const char *text)
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
								 dfe_conf_list_hint(which))));
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
