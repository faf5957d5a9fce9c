/*
 * lists_json.c — JSON text → ConfNode tree (cJSON, with our own scan of the
 * text for line numbers).
 */
#include "postgres.h"

#include <string.h>

#include <cjson/cJSON.h>

#include "lists_conf.h"

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
				key->text = dfe_conf_to_server(child->string, strlen(child->string));
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
		cn->text = dfe_conf_to_server(item->valuestring, strlen(item->valuestring));
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
		cn->text = dfe_conf_to_server(start, c->p - start);
	}
	return cn;
}

ConfNode *
dfe_conf_json_parse(const char *which, const char *text)
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

		dfe_conf_line_col_of(text, off, &line, &col);
		if (off >= strlen(text))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
					 errmsg("invalid JSON in the %s at line %d, column %d: unexpected end of the text",
							which, line, col),
					 errhint("Check for a missing closing bracket or quote. %s",
							 dfe_conf_list_hint(which))));
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
							   dfe_conf_to_server(p, n)),
					 errhint("Check for a missing comma, quote or bracket near that place. %s",
							 dfe_conf_list_hint(which))));
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
