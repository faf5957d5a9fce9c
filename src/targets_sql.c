/*
 * targets_sql.c — dfe_airbyte_add_target() and dfe_airbyte_drop_target():
 * registering the service databases reached over libpq (README, "Targets").
 *
 * Both run as the extension's owner (SECURITY DEFINER): dfe_airbyte_admin
 * may read dfe_airbyte.targets and switch a target on or off, but rows are
 * only added here, where the connection string has been checked to hold no
 * secret and the role has been checked on the live server.
 */
#include "postgres.h"

#include "fmgr.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"

#include "compat.h"
#include "settings.h"
#include "target.h"
#include "target_conn.h"
#include "target_scope.h"

PG_FUNCTION_INFO_V1(dfe_airbyte_add_target);
PG_FUNCTION_INFO_V1(dfe_airbyte_drop_target);

typedef enum SettingKind
{
	SK_STRING,
	SK_INT,						/* parsed with the setting's own unit */
	SK_MB,						/* a size, MB when given without a unit */
	SK_FRACTION,
	SK_LIMIT_ACTION
} SettingKind;

/* The per-service settings a target may override (the rest are global). */
static const struct
{
	const char *key;
	SettingKind kind;
} target_settings[] = {
	{"connection_id", SK_STRING},
	{"source_id", SK_STRING},
	{"bigquery_project", SK_STRING},
	{"bigquery_dataset", SK_STRING},
	{"bigquery_internal_dataset", SK_STRING},
	{"hidden_policy_tag", SK_STRING},
	{"source_schema", SK_STRING},
	{"publication", SK_STRING},
	{"rails_env", SK_STRING},
	{"slot_name", SK_STRING},
	{"max_slot_wal_size", SK_INT},
	{"slot_limit_action", SK_LIMIT_ACTION},
	{"max_slot_recreations_per_day", SK_INT},
	{"slot_warning_fraction", SK_FRACTION},
	{"slot_inactive_intervals", SK_INT},
	{"sync_interval", SK_INT},
	{"sync_stale_after", SK_INT},
	{"migration_wait_timeout", SK_INT},
	{"migration_poll_interval", SK_INT},
	{"disk_size", SK_MB},
};

static void
bad_setting(const char *target, const char *key, const char *value, const char *why)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("setting \"%s\" of target \"%s\" is invalid: %s", key, target, why),
			 value ? errdetail("The value given is \"%s\".", value) : 0,
			 errhint("Give it as in postgresql.conf, e.g. {\"max_slot_wal_size\": \"8GB\", "
					 "\"slot_limit_action\": \"recreate\", \"disk_size\": \"256GB\"}.")));
}

/* why value is not usable for the setting key of that kind, or NULL */
static const char *
setting_value_problem(const char *key, SettingKind kind, const char *value)
{
	char		guc[128];
	int			ival;
	double		dval;
	const char *hint = NULL;

	snprintf(guc, sizeof(guc), "dfe_airbyte.%s", key);
	switch (kind)
	{
		case SK_STRING:
			if (*value == '\0')
				return "it is empty";
			break;
		case SK_INT:
			if (!parse_int(value, &ival, GetConfigOptionFlags(guc, true), &hint))
				return hint ? hint : "not a number (with its unit)";
			break;
		case SK_MB:
			if (!parse_int(value, &ival, GUC_UNIT_MB, &hint) || ival <= 0)
				return hint ? hint : "not a positive size such as \"256GB\"";
			break;
		case SK_FRACTION:
			if (!parse_real(value, &dval, 0, NULL) || dval <= 0 || dval >= 1)
				return "not a fraction between 0 and 1";
			break;
		case SK_LIMIT_ACTION:
			if (strcmp(value, "warn") != 0 && strcmp(value, "terminate") != 0 &&
				strcmp(value, "recreate") != 0)
				return "not one of warn, terminate, recreate";
			break;
	}
	return NULL;
}

/* the index of key in target_settings, -1 when a target may not set it */
static int
setting_index(const char *key)
{
	for (int k = 0; k < lengthof(target_settings); k++)
		if (strcmp(key, target_settings[k].key) == 0)
			return k;
	return -1;
}

static bool
json_scalar(const char *type)
{
	return strcmp(type, "string") == 0 || strcmp(type, "number") == 0 ||
		strcmp(type, "boolean") == 0;
}

/*
 * The check dfe_airbyte_add_target() makes of each setting, for a row
 * already stored (an UPDATE of dfe_airbyte.targets.settings is not checked):
 * dfe_airbyte_setting_problems() reports what it returns.
 */
const char *
dfe_target_setting_problem(const char *key, const char *json_type, const char *value)
{
	int			k = setting_index(key);

	if (k < 0)
		return "it is not a per-service setting (README \"Targets\" lists them)";
	if (!json_scalar(json_type))
		return "not a string or a number";
	return setting_value_problem(key, target_settings[k].kind, value);
}

static void
check_settings(const char *target, const char *settings_json)
{
	DfeTarget  *local = dfe_target_open(DFE_LOCAL_TARGET);
	const char *args[1] = {settings_json};
	DfeRows    *r;
	int			i;
	int			k;

	r = dfe_target_query(local, "read the settings",
						 "SELECT pg_catalog.jsonb_typeof($1::pg_catalog.jsonb), NULL, NULL "
						 "UNION ALL "
						 "SELECT e.key, pg_catalog.jsonb_typeof(e.value), e.value OPERATOR(pg_catalog.#>>) '{}' "
						 "FROM pg_catalog.jsonb_each(CASE WHEN pg_catalog.jsonb_typeof($1::pg_catalog.jsonb) OPERATOR(pg_catalog.=) 'object' "
						 "THEN $1::pg_catalog.jsonb ELSE '{}' END) e", 1, args);
	if (strcmp(dfe_rows_value(r, 0, 0), "object") != 0)
		bad_setting(target, "settings", NULL, "not a JSON object");
	for (i = 1; i < r->nrows; i++)
	{
		const char *key = dfe_rows_value(r, i, 0);
		const char *value = dfe_rows_value(r, i, 2);
		const char *why;

		k = setting_index(key);
		if (k < 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("target \"%s\" has an unknown setting \"%s\"", target, key),
					 errhint("A target's settings are the per-service settings without the \"dfe_airbyte.\" "
							 "prefix, e.g. connection_id, slot_name, max_slot_wal_size, slot_limit_action, "
							 "bigquery_dataset, disk_size; README \"Targets\" lists them.")));
		if (!json_scalar(dfe_rows_value(r, i, 1)))
			bad_setting(target, key, NULL, "not a string or a number");
		why = setting_value_problem(key, target_settings[k].kind, value);
		if (why)
			bad_setting(target, key, value, why);
	}
}

static void
check_name(const char *name)
{
	const char *p;
	bool		ok = strlen(name) > 0 && strlen(name) < NAMEDATALEN && name[0] >= 'a' && name[0] <= 'z';

	for (p = name; ok && *p; p++)
		ok = (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_';
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_NAME),
				 errmsg("invalid target name \"%s\"", name),
				 errhint("Use lower-case letters, digits and underscores, starting with a letter "
						 "(it labels events and metrics), e.g. 'register_production'.")));
	if (strcmp(name, DFE_LOCAL_TARGET) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_RESERVED_NAME),
				 errmsg("target \"local\" is the database dfe_airbyte is installed in"),
				 errhint("Choose another name for a remote service database.")));
}

/*
 * What the guard and the deploy trigger need on a target's server, in one
 * round trip; each line answers one privilege of README "Targets".
 * pg_has_role(..., 'USAGE') is "has the privileges of", which is what
 * pg_signal_backend and membership in Airbyte's role are checked for
 * (postgres src/backend/storage/ipc/signalfuncs.c).
 */
static const char *privileges_sql =
"SELECT r.rolsuper, r.rolreplication,"
" pg_catalog.pg_has_role(current_user, 'pg_monitor', 'USAGE'),"
" pg_catalog.pg_has_role(current_user, 'pg_read_all_data', 'USAGE'),"
" pg_catalog.pg_has_role(current_user, 'pg_signal_backend', 'USAGE'),"
" (SELECT pg_catalog.string_agg(a.rolname::text, ', ' ORDER BY a.rolname)"
"    FROM pg_catalog.pg_roles a WHERE a.rolreplication AND NOT a.rolsuper"
"     AND a.rolname OPERATOR(pg_catalog.<>) current_user"
"     AND pg_catalog.pg_has_role(current_user, a.oid, 'USAGE')),"
" pg_catalog.current_setting('wal_level'),"
" pg_catalog.current_setting('server_version'),"
" current_user"
" FROM pg_catalog.pg_roles r WHERE r.rolname OPERATOR(pg_catalog.=) current_user";

static bool
yes(DfeRows *r, int col)
{
	const char *v = dfe_rows_value(r, 0, col);

	return v && strcmp(v, "t") == 0;
}

/* ERROR naming every privilege the role lacks; a WARNING for what the server lacks. */
static void
check_privileges(const char *name, DfeRows *r)
{
	StringInfoData missing;
	const char *role = dfe_rows_value(r, 0, 8);

	if (yes(r, 0))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("the role \"%s\" of target \"%s\" is a superuser", role, name),
				 errhint("Connect as a role of its own with only the grants README \"Targets\" lists; "
						 "Azure's servers have no superuser to give anyway.")));
	initStringInfo(&missing);
	if (!yes(r, 1))
		appendStringInfo(&missing, "\nthe REPLICATION attribute (to drop and create the slot): ALTER ROLE %s WITH REPLICATION;",
						 quote_identifier(role));
	if (!yes(r, 2))
		appendStringInfo(&missing, "\npg_monitor (slots, WAL, replication): GRANT pg_monitor TO %s;",
						 quote_identifier(role));
	if (!yes(r, 3))
		appendStringInfo(&missing, "\npg_read_all_data (schema_migrations, the heartbeat table): GRANT pg_read_all_data TO %s;",
						 quote_identifier(role));
	if (!yes(r, 4) && dfe_rows_value(r, 0, 5) == NULL)
		appendStringInfo(&missing, "\npg_signal_backend or membership in Airbyte's replication role (to end Airbyte's walsender): "
						 "GRANT airbyte_replication TO %s;", quote_identifier(role));
	if (missing.len > 0)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("the role \"%s\" of target \"%s\" lacks privileges the guard needs", role, name),
				 errdetail("Missing:%s", missing.data),
				 errhint("Run the statements above as the server's admin, then add the target again.")));
	if (strcmp(dfe_rows_value(r, 0, 6), "logical") != 0)
		ereport(WARNING,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("target \"%s\" has wal_level = %s, so it has no logical replication slot to guard",
						name, dfe_rows_value(r, 0, 6)),
				 errhint("Set wal_level = logical on that server (on Azure: the server parameter "
						 "wal_level) and restart it.")));
}

static bool
target_exists(DfeTarget *local, const char *name)
{
	const char *args[1] = {name};

	return dfe_target_query(local, "look up the target",
							"SELECT 1 FROM dfe_airbyte.targets WHERE name OPERATOR(pg_catalog.=) $1",
							1, args)->nrows > 0;
}

Datum
dfe_airbyte_add_target(PG_FUNCTION_ARGS)
{
	char	   *name;
	char	   *conninfo;
	char	   *settings;
	DfeTarget  *local;
	DfeTarget  *t;
	DfeRows    *r;
	const char *problem;
	const char *args[5];

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("a target needs a name and a connection string"),
				 errhint("SELECT dfe_airbyte_add_target('register_production', "
						 "'host=db.example.com dbname=register user=dfe_airbyte_remote').")));
	name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	conninfo = text_to_cstring(PG_GETARG_TEXT_PP(1));
	settings = PG_ARGISNULL(2) ? pstrdup("{}")
		: DatumGetCString(DirectFunctionCall1(jsonb_out, PG_GETARG_DATUM(2)));
	local = dfe_target_open(DFE_LOCAL_TARGET);
	check_name(name);
	if (target_exists(local, name))
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("target \"%s\" already exists", name),
				 errhint("SELECT dfe_airbyte_drop_target('%s') first to register it anew, or "
						 "UPDATE dfe_airbyte.targets to change its settings.", name)));
	check_settings(name, settings);
	if ((problem = dfe_tc_passfile_problem()) != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("%s", problem),
				 errhint("chmod 0600 the file (a Kubernetes secret: defaultMode: 0600) and make the "
						 "server's OS user its owner.")));
	t = dfe_target_open_conninfo(name, conninfo);
	r = dfe_target_query(t, "check the role's privileges", privileges_sql, 0, NULL);
	if (r->nrows != 1)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("the role of target \"%s\" cannot see itself in pg_roles", name),
				 errhint("Connect as an ordinary login role of that server.")));
	check_privileges(name, r);
	dfe_target_close(t);

	args[0] = name;
	args[1] = conninfo;
	args[2] = settings;
	args[3] = GetUserNameFromId(GetSessionUserId(), false);
	args[4] = dfe_rows_value(r, 0, 7);
	(void) dfe_target_query(local, "register the target",
							"INSERT INTO dfe_airbyte.targets (name, conninfo, settings, created_by, server_version, checked_at) "
							"VALUES ($1, $2, $3::pg_catalog.jsonb, $4, $5, pg_catalog.now())", 5, args);
	ereport(NOTICE,
			(errmsg("target \"%s\" added: PostgreSQL %s, role \"%s\"", name,
					dfe_rows_value(r, 0, 7), dfe_rows_value(r, 0, 8)),
			 errhint("UPDATE dfe_airbyte.targets SET enabled = false WHERE name = '%s' switches it off.", name)));
	PG_RETURN_VOID();
}

Datum
dfe_airbyte_drop_target(PG_FUNCTION_ARGS)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	DfeTarget  *local = dfe_target_open(DFE_LOCAL_TARGET);
	const char *args[1] = {name};

	if (strcmp(name, DFE_LOCAL_TARGET) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("target \"local\" cannot be dropped"),
				 errhint("It is the database dfe_airbyte is installed in; DROP EXTENSION removes it.")));
	if (dfe_target_query(local, "drop the target",
						 "DELETE FROM dfe_airbyte.targets WHERE name OPERATOR(pg_catalog.=) $1 RETURNING name",
						 1, args)->nrows == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("target \"%s\" does not exist", name),
				 errhint("SELECT name FROM dfe_airbyte.targets lists the targets.")));
	PG_RETURN_VOID();
}
