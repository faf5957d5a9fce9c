/*
 * lists_rails.c — the sections of a dfe-analytics file as Rails'
 * config_for reads it (shared: merged with the environment's section).
 */
#include "postgres.h"

#include <string.h>

#include "lib/stringinfo.h"

#include "lists_conf.h"
#include "settings.h"

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
 * The top-level keys of a file with sections other than the ones read (at
 * shared_at and env_at, -1 for none): another environment's section is
 * ignored, as Rails ignores it (said in a NOTICE when no environment is
 * set), anything else is refused.
 */
static void
check_other_sections(const char *which, ConfNode *root, int shared_at, int env_at,
					 const char *env)
{
	StringInfoData ignored;

	initStringInfo(&ignored);
	for (int i = 0; i < root->n; i++)
	{
		ConfNode   *key = root->keys[i];
		ConfNode   *value = root->items[i];

		if (i == shared_at || i == env_at)
			continue;
		if (value->kind == CK_MAP || value->kind == CK_NULL)
		{
			appendStringInfo(&ignored, "%s%s", ignored.len ? ", " : "",
							 key->text ? key->text : dfe_conf_kind_phrase(key));
			continue;
		}
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid %s at line %d: unexpected top-level key \"%s\" next to \"shared\"",
						which, key->line, key->text ? key->text : dfe_conf_kind_phrase(key)),
				 errdetail("Tables belong in the shared section or in an environment's section (production:, test:, …); Rails would ignore this one."),
				 errhint("Move its tables into the shared section, or remove it.")));
	}
	if (ignored.len > 0 && env == NULL)
		ereport(NOTICE,
				(errmsg("%s: only the shared section is read; the other top-level section(s) %s (Rails environments?) are not merged",
						which, ignored.data),
				 errdetail("dfe_airbyte.rails_env and RAILS_ENV are not set."),
				 errhint("Set dfe_airbyte.rails_env (e.g. SET dfe_airbyte.rails_env = 'production') to merge that environment's section over shared:, as Rails' config_for does.")));
	pfree(ignored.data);
}

/* whether two keys of a mapping name the same table */
static bool
same_key(const ConfNode *a, const ConfNode *b)
{
	return a->text && b->text && strcmp(a->text, b->text) == 0;
}

/* shared.deep_merge(section): the section's tables win, new ones are added */
static ConfNode *
deep_merge_sections(const ConfNode *shared, const ConfNode *section)
{
	ConfNode   *merged = palloc0(sizeof(ConfNode));

	merged->kind = CK_MAP;
	merged->line = shared->line;
	merged->keys = palloc0(sizeof(ConfNode *) * Max(shared->n + section->n, 1));
	merged->items = palloc0(sizeof(ConfNode *) * Max(shared->n + section->n, 1));
	for (int i = 0; i < shared->n; i++)
	{
		merged->keys[merged->n] = shared->keys[i];
		merged->items[merged->n] = shared->items[i];
		for (int j = 0; j < section->n; j++)
			if (same_key(shared->keys[i], section->keys[j]))
				merged->items[merged->n] = section->items[j];
		merged->n++;
	}
	for (int j = 0; j < section->n; j++)
	{
		bool		in_shared = false;

		for (int i = 0; i < shared->n && !in_shared; i++)
			in_shared = same_key(shared->keys[i], section->keys[j]);
		if (in_shared)
			continue;
		merged->keys[merged->n] = section->keys[j];
		merged->items[merged->n] = section->items[j];
		merged->n++;
	}
	return merged;
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
ConfNode *
dfe_conf_rails_sections(const char *which, ConfNode *root)
{
	const char *env = dfe_setting_rails_env();
	int			shared_at = -1;
	int			env_at = -1;
	ConfNode   *shared = root_section(which, root, "shared", &shared_at);
	ConfNode   *section = env && strcmp(env, "shared") != 0 ? root_section(which, root, env, &env_at) : NULL;

	/* a "shared" or environment that holds a list is a table of that name */
	if (shared && shared->kind != CK_MAP && shared->kind != CK_NULL)
		shared = NULL;
	if (section && section->kind != CK_MAP && section->kind != CK_NULL)
		section = NULL;
	if (shared == NULL && section == NULL)
		return root;

	check_other_sections(which, root, shared ? shared_at : -1, section ? env_at : -1, env);
	if (section == NULL || section->kind == CK_NULL)
		return shared;
	if (shared == NULL || shared->kind == CK_NULL)
		return section;
	return deep_merge_sections(shared, section);
}
