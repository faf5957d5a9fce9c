-- config_problems per target: the checks of a target's lists against its
-- catalog run on that target (dfe_airbyte_config_problems(target), src/
-- config_targets.c, through the seam for a remote one); the rows about the
-- installation as a whole (settings, the worker, the Airbyte server) have
-- no target; the heartbeat and the slot bound against the local disk
-- (dfe_airbyte_flow_problems()) are the local database's.

-- The settings part per target: a target's settings (dfe_airbyte.targets.
-- settings, which an UPDATE may set to anything) are checked as
-- dfe_airbyte_add_target() checks them, and the per-service settings are
-- checked in the target's scope, its own over the global ones (src/
-- config_check.c).  Rows about the installation as a whole have no target.
-- A new last column keeps 0.2.0's columns where they were.
DROP FUNCTION @extschema@.dfe_airbyte_setting_problems();
CREATE FUNCTION @extschema@.dfe_airbyte_setting_problems(target text DEFAULT 'local')
    RETURNS TABLE (severity text, object text, problem text, hint text, target_name text)
    AS 'MODULE_PATHNAME', 'dfe_airbyte_setting_problems'
    LANGUAGE C VOLATILE
    SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION @extschema@.dfe_airbyte_setting_problems(text) IS
    'the settings part of dfe_airbyte.config_problems: the installation''s rows (target_name NULL: the worker, the Airbyte server and credentials, the Google credentials), then the rows of the target (default local; none when NULL): its settings as dfe_airbyte_add_target checks them, and in its scope the missing or malformed per-service settings and its Airbyte connection (for local also wal_level and WAL limits)';
REVOKE ALL ON FUNCTION @extschema@.dfe_airbyte_setting_problems(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.dfe_airbyte_setting_problems(text) TO dfe_airbyte_admin, pg_monitor;
CREATE FUNCTION @extschema@.dfe_airbyte_config_problems(target text)
    RETURNS TABLE (severity text, object text, problem text, hint text)
    AS 'MODULE_PATHNAME', 'dfe_airbyte_config_problems'
    LANGUAGE C VOLATILE STRICT
    SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION @extschema@.dfe_airbyte_config_problems(text) IS
    'the part of dfe_airbyte.config_problems about one target: its lists against its catalog (tables, columns, primary keys, publication, slot) and, for a remote target, its disk_size against Azure''s read-only point; a target that cannot be checked is one row saying so';
REVOKE ALL ON FUNCTION @extschema@.dfe_airbyte_config_problems(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.dfe_airbyte_config_problems(text) TO dfe_airbyte_admin, pg_monitor;

CREATE VIEW dfe_airbyte.config_problems AS
WITH problems (target, severity, object, problem, hint) AS (
    SELECT t.name, cp.severity, cp.object, cp.problem, cp.hint
      FROM dfe_airbyte.targets t
     CROSS JOIN LATERAL @extschema@.dfe_airbyte_config_problems(t.name) AS cp
     WHERE t.enabled
    UNION ALL
    -- the Airbyte server's version as the worker last reported it (event
    -- airbyte_version, from GET /api/v1/instance_configuration; src/resync.c)
    -- and what that version lacks
    -- (README, "Supported Airbyte versions"; shared/background/api_conformance.md)
    SELECT NULL::text, CASE WHEN v.num < '{0,60,1}' THEN 'error'
                WHEN v.num < '{1,2,0}' THEN 'warning' ELSE 'info' END,
           'Airbyte',
           format('Airbyte server version %s%s', v.version,
                  CASE WHEN v.num < '{0,60,1}'
                       THEN ': it ignores selectedFields, so dfe_airbyte refuses to update the connection (every column would be replicated)'
                       WHEN v.num < '{0,63,7}'
                       THEN ': no public token endpoint (the config-API token is used); full re-sync answers {"value": ...} without a job; the public job list hides refresh jobs (the config API''s is used)'
                       WHEN v.num < '{1,2,0}'
                       THEN ': full re-sync answers {"value": ...} without a job; the public job list hides refresh jobs (the config API''s is used)'
                       WHEN v.num < '{1,8,0}'
                       THEN ': the public job list hides refresh jobs (the config API''s is used)'
                       ELSE ': everything dfe_airbyte uses is available' END),
           CASE WHEN v.num < '{0,60,1}' THEN 'Upgrade Airbyte to 0.60.1 or later (1.8 or later recommended).'
                WHEN v.num < '{1,2,0}' THEN 'Works; upgrading Airbyte to 1.2 or later (1.8 or later recommended) makes full re-syncs easier to follow.'
                ELSE 'Nothing to do.' END
      FROM (SELECT e.data->>'version' AS version,
                   pg_catalog.string_to_array(pg_catalog.substring(e.data->>'version', '^[vV]?([0-9]+\.[0-9]+\.[0-9]+)'), '.')::int[] AS num
              FROM dfe_airbyte.events e
             WHERE e.kind = 'airbyte_version'
             ORDER BY e.id DESC LIMIT 1) AS v
     WHERE v.num IS NOT NULL
    UNION ALL
    SELECT sp.target_name, sp.severity, sp.object, sp.problem, sp.hint
      FROM @extschema@.dfe_airbyte_setting_problems(NULL) AS sp
    UNION ALL
    SELECT sp.target_name, sp.severity, sp.object, sp.problem, sp.hint
      FROM dfe_airbyte.targets t
     CROSS JOIN LATERAL @extschema@.dfe_airbyte_setting_problems(t.name) AS sp
     WHERE t.enabled AND sp.target_name IS NOT NULL
    UNION ALL
    SELECT 'local', fp.severity, fp.object, fp.problem, fp.hint
      FROM @extschema@.dfe_airbyte_flow_problems() AS fp
     WHERE EXISTS (SELECT 1 FROM dfe_airbyte.targets t WHERE t.name = 'local' AND t.enabled)
)
SELECT target, severity, object, problem, hint
  FROM problems
 ORDER BY CASE severity WHEN 'error' THEN 1 WHEN 'warning' THEN 2 ELSE 3 END,
          object COLLATE "C", problem COLLATE "C", target COLLATE "C" NULLS FIRST;

COMMENT ON VIEW dfe_airbyte.config_problems IS
    'what is wrong with the dfe_airbyte configuration now (each target''s lists against its catalog, publication, slot and disk; each target''s settings; the installation''s settings), each with a hint; target is NULL for rows about the installation as a whole';
REVOKE ALL ON dfe_airbyte.config_problems FROM PUBLIC;
GRANT SELECT ON dfe_airbyte.config_problems TO pg_monitor, dfe_airbyte_admin;
