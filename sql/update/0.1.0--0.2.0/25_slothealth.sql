-- slothealth (issue 9, items 4-7): mirrors the slot health changes of sql/install/25_config_problems.sql
-- (generated from the install piece; keep the two in step).

-- The heartbeat's row and publication and the slot's bounds against the
-- disk (slot_limit_advice): checks that need the heartbeat table itself
-- (the caller, e.g. pg_monitor, may not read it: SECURITY DEFINER, which
-- shows only whether the row exists) or objects installed after this view.
CREATE FUNCTION @extschema@.dfe_airbyte_flow_problems()
    RETURNS TABLE (severity text, object text, problem text, hint text)
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $fn$
DECLARE
    v_src text := coalesce(nullif(current_setting('dfe_airbyte.source_schema', true), ''), 'public');
    v_pub text := coalesce(nullif(current_setting('dfe_airbyte.publication', true), ''), 'airbyte_publication');
    hb oid;
    has_row boolean;
    adv record;
BEGIN
    SELECT c.oid INTO hb FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = v_src AND c.relname = 'airbyte_heartbeat' AND c.relkind IN ('r', 'p');
    IF hb IS NOT NULL THEN
        IF EXISTS (SELECT 1 FROM pg_catalog.pg_publication p WHERE p.pubname = v_pub)
           AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_publication_tables pt
                            WHERE pt.pubname = v_pub AND pt.schemaname = v_src AND pt.tablename = 'airbyte_heartbeat') THEN
            RETURN QUERY SELECT 'error'::text, 'airbyte_heartbeat'::text,
                format('table airbyte_heartbeat is not in publication "%s": the heartbeat writes no change Airbyte reads, so on a quiet database the slot never advances and retains WAL', v_pub),
                format('ALTER PUBLICATION %I ADD TABLE %I.airbyte_heartbeat;', v_pub, v_src);
        END IF;
        IF (SELECT count(*) FROM pg_catalog.pg_attribute a
             WHERE a.attrelid = hb AND a.attname IN ('id', 'last_heartbeat') AND NOT a.attisdropped) < 2 THEN
            RETURN QUERY SELECT 'error'::text, 'airbyte_heartbeat'::text,
                'table airbyte_heartbeat lacks the column id or last_heartbeat that the heartbeat stream and the source''s heartbeat query use'::text,
                format('CREATE TABLE %I.airbyte_heartbeat (id integer, last_heartbeat timestamptz) as DfE''s Terraform does, with REPLICA IDENTITY FULL and one row with id = 1.', v_src);
        ELSE
            EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I.airbyte_heartbeat WHERE id = 1)', v_src) INTO has_row;
            IF NOT has_row THEN
                RETURN QUERY SELECT 'error'::text, 'airbyte_heartbeat'::text,
                    'table airbyte_heartbeat has no row with id = 1: the source''s heartbeat query (UPDATE airbyte_heartbeat SET last_heartbeat = now() WHERE id = 1) changes nothing, so a quiet database retains WAL'::text,
                    format('INSERT INTO %I.airbyte_heartbeat (id, last_heartbeat) VALUES (1, now());', v_src);
            END IF;
        END IF;
    END IF;

    SELECT * INTO adv FROM dfe_airbyte.slot_limit_advice;
    IF adv.verdict = 'unbounded' THEN
        -- only ever with max_slot_wal_keep_size = -1: that setting is the object
        RETURN QUERY SELECT 'warning'::text, 'max_slot_wal_keep_size'::text,
            'nothing bounds the WAL the Airbyte slot may retain: no dfe_airbyte.max_slot_wal_size with slot_limit_action terminate or recreate, and no max_slot_wal_keep_size; a stalled Airbyte fills the disk'::text,
            adv.hint;
    ELSIF adv.verdict = 'exceeds_headroom' THEN
        RETURN QUERY SELECT 'warning'::text, 'disk headroom'::text,
            format('the slot may retain %s before anything acts, more than the disk''s headroom (%s): the disk fills before the limit is reached',
                   pg_catalog.pg_size_pretty(least(CASE WHEN adv.limit_action IN ('terminate', 'recreate') THEN adv.current_limit_bytes END,
                                                   adv.server_limit_bytes)),
                   adv.headroom_pretty),
            adv.hint || ' See SELECT * FROM dfe_airbyte.slot_limit_advice;';
    END IF;
END
$fn$;
COMMENT ON FUNCTION @extschema@.dfe_airbyte_flow_problems() IS
    'the heartbeat (publication, row) and slot bound (disk headroom) part of dfe_airbyte.config_problems';
REVOKE ALL ON FUNCTION @extschema@.dfe_airbyte_flow_problems() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.dfe_airbyte_flow_problems() TO dfe_airbyte_admin, pg_monitor;

-- config_problems gains the rows of dfe_airbyte_flow_problems() (same columns)
-- (dfe_airbyte.config_problems is redefined in 90_views.sql)