/*
 * lists_conf.h — the neutral tree the list parsers build (internal to the
 * lists_*.c files): libyaml's document (lists_yaml.c) or cJSON's tree plus
 * a scan of the JSON text for line numbers (lists_json.c) become a ConfNode
 * tree; Rails' config_for sections are merged on it (lists_rails.c); one
 * validator then checks its shape (dfe_lists_parse.c).  Only the three levels
 * the format has (root, tables, columns) are converted, so YAML alias
 * cycles or deep nesting cannot make the conversion loop.
 */
#ifndef DFE_AIRBYTE_LISTS_CONF_H
#define DFE_AIRBYTE_LISTS_CONF_H

#include "postgres.h"

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

/* lists_tree.c */
extern const char *dfe_conf_kind_phrase(const ConfNode *node);
extern char *dfe_conf_to_server(const char *utf8, size_t len);
extern void dfe_conf_line_col_of(const char *text, size_t off, int *line, int *col);
extern const char *dfe_conf_list_hint(const char *which);

/* lists_yaml.c, lists_json.c: the tree of a text (UTF-8); ERROR on bad syntax */
extern ConfNode *dfe_conf_yaml_parse(const char *which, const char *text);
extern ConfNode *dfe_conf_json_parse(const char *which, const char *text);

/* lists_rails.c: the tables of a file as Rails' config_for reads it */
extern ConfNode *dfe_conf_rails_sections(const char *which, ConfNode *root);

#endif
