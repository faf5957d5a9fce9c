-- dfe_airbyte_stream_config(): the Airbyte stream configuration
-- built from the allowlist and the catalog.

-- one line per stream, keys in the gem's order, from the exact PATCH body
CREATE FUNCTION streams() RETURNS SETOF text LANGUAGE sql AS $$
    SELECT s::text FROM json_array_elements(dfe_airbyte_stream_config_json()->'configurations'->'streams') AS s
$$;

-- no tables allowlisted: only the heartbeat stream
SELECT dfe_airbyte_stream_config();
SELECT dfe_airbyte_stream_config_json();

-- the gem's first case: users: [id, name, email] -> primary key id
CREATE TABLE users (id bigint PRIMARY KEY, name text, email text, created_at timestamptz);
SELECT list, tables, columns FROM dfe_airbyte_load_config('users: [id, name, email]');
SELECT dfe_airbyte_stream_config();
SELECT dfe_airbyte_stream_config_json();
-- jsonb sorts the keys; the json text keeps the gem's order; both are the same value
SELECT dfe_airbyte_stream_config_json()::jsonb = dfe_airbyte_stream_config() AS same_value;

-- the gem's second case: users: [email, name] on a table without a primary key.
-- The gem guesses email as the key of an incremental stream, which makes
-- Airbyte reject the WHOLE PATCH (its Postgres source offers such a table
-- only in full refresh, without _ab_cdc_* fields): Airbyte's full_refresh_overwrite,
-- no cursor, no key, only the allowlisted columns
DROP TABLE users;
CREATE TABLE users (email text, name text, created_at timestamptz);
SELECT list, tables, columns FROM dfe_airbyte_load_config('users: [email, name]');
SELECT * FROM streams();
-- ... a table that does not exist keeps the CDC shape (allowlist order is name
-- order then; config_problems reports the table)
DROP TABLE users;
SELECT * FROM streams();

-- columns follow the table's column order, missing ones follow by name
-- (here a table without a primary key: full refresh)
CREATE TABLE schools (urn text, name text, id integer, opened_on date);
SELECT list, tables, columns FROM dfe_airbyte_load_config('schools: [opened_on, zeta, id, name, alpha]');
SELECT * FROM streams();

-- a duplicated column appears once: the _ab_cdc_* fields are always first, once
ALTER TABLE schools ADD PRIMARY KEY (id);
SELECT list, tables, columns FROM dfe_airbyte_load_config(
$yaml$shared:
  schools:
    - _ab_cdc_updated_at
    - name
    - _ab_cdc_lsn
    - id
$yaml$);
SELECT * FROM streams();
SELECT jsonb_path_query(dfe_airbyte_stream_config(), '$.configurations.streams[0].selectedFields.size()') AS fields;
ALTER TABLE schools DROP CONSTRAINT schools_pkey;

-- composite primary key: every key column in index order (not column order),
-- INCLUDE columns are not part of the key
CREATE TABLE memberships (school_id integer, user_id integer, role text, since date,
                          PRIMARY KEY (user_id, school_id) INCLUDE (role));
SELECT list, tables, columns FROM dfe_airbyte_load_config('memberships: [role, school_id, user_id, since]');
SELECT * FROM streams();
-- a primary key column that is not allowlisted: back to the gem's rule
SELECT list, tables, columns FROM dfe_airbyte_load_config('memberships: [since, school_id, role]');
SELECT * FROM streams();

-- several tables: ordered by name (byte order), heartbeat last; an
-- allowlisted airbyte_heartbeat does not replace the built-in stream;
-- tables outside dfe_airbyte.source_schema (public) count as missing
CREATE SCHEMA elsewhere;
CREATE TABLE elsewhere.trips (code text PRIMARY KEY, destination text);
CREATE TABLE "Zebras" (id integer PRIMARY KEY, stripes integer);
SELECT list, tables, columns FROM dfe_airbyte_load_config(
$yaml$shared:
  trips: [destination, code]
  schools: [id, name]
  Zebras: [stripes, id]
  airbyte_heartbeat: [id, text]
  memberships: [user_id, school_id]
$yaml$);
SELECT * FROM streams();

-- deterministic: the same lists give byte-identical JSON, whatever order
-- the file lists them in
SELECT md5(dfe_airbyte_stream_config_json()::text) AS json_md5,
       md5(dfe_airbyte_stream_config()::text) AS jsonb_md5 \gset
SELECT md5(dfe_airbyte_stream_config_json()::text) = :'json_md5' AS same_json,
       md5(dfe_airbyte_stream_config()::text) = :'jsonb_md5' AS same_jsonb;
SELECT list, tables, columns, added, removed FROM dfe_airbyte_load_config(
$yaml$memberships: [school_id, user_id]
airbyte_heartbeat: [text, id]
Zebras: [id, stripes]
schools: [name, id]
trips: [code, destination]
$yaml$);
SELECT md5(dfe_airbyte_stream_config_json()::text) = :'json_md5' AS same_json,
       md5(dfe_airbyte_stream_config()::text) = :'jsonb_md5' AS same_jsonb;

-- who may read it
CREATE ROLE regress_sc_plain;
CREATE ROLE regress_sc_admin IN ROLE dfe_airbyte_admin;
CREATE ROLE regress_sc_monitor IN ROLE pg_monitor;
SET ROLE regress_sc_plain;
SELECT dfe_airbyte_stream_config();
SELECT dfe_airbyte_stream_config_json();
SET ROLE regress_sc_admin;
SELECT md5(dfe_airbyte_stream_config()::text) = :'jsonb_md5' AS admin_reads;
SET ROLE regress_sc_monitor;
SELECT md5(dfe_airbyte_stream_config_json()::text) = :'json_md5' AS monitor_reads;
RESET ROLE;

DELETE FROM dfe_airbyte.allowlist;
DROP ROLE regress_sc_plain, regress_sc_admin, regress_sc_monitor;
DROP TABLE schools, memberships, "Zebras";
DROP SCHEMA elsewhere CASCADE;
DROP FUNCTION streams();
