# search_path safety (CVE-2018-1058).  The database owner, a
# non-superuser like a Rails app's role, plants in public a function with
# the exact argument types of every built-in the extension's SQL could call
# (each name found in the SQL of src/*.c and of the install and upgrade
# scripts, released and generated, over every
# argument type the extension's queries use, and the operators), each of
# which records a marker when called — a row, a sequence step (which no
# rollback undoes) and a WARNING in the log.  Then CREATE EXTENSION and every
# feature runs: lists, stream config, config_problems, the health views,
# the slot guard, deploys with the worker (refresh, sync, policy tags on the
# fake BigQuery), sync health.  No marker may ever be written.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use DfeTest;
use FakeServer;

my $top = $ENV{DFE_TOP} // '.';
my $CONN = '11111111-1111-1111-1111-111111111111';
my $hidden = 'projects/proj/locations/europe-west2/taxonomies/111/policyTags/222';
my $dataset = 'svc_airbyte_test';

my $fake = FakeServer->start;
$fake->config(job_pending_seconds => 0.2, job_running_seconds => 1);
$fake->source_catalog({ users => [qw(id name email)] });
my $dir = PostgreSQL::Test::Utils::tempdir;

my $node = DfeTest::new_node('search_path', no_extension => 1,
	conf => DfeTest::bigquery_conf($fake, $dir, dataset => $dataset, hidden_tag => $hidden) . <<"CONF");
dfe_airbyte.airbyte_url = '@{[ $fake->url ]}'
dfe_airbyte.airbyte_client_id = 'test-client'
dfe_airbyte.airbyte_client_secret = 'test-secret-value'
dfe_airbyte.connection_id = '$CONN'
dfe_airbyte.job_poll_interval = 1
dfe_airbyte.http_retry_base_delay = 50
dfe_airbyte.check_interval = 1
dfe_airbyte.sync_poll_interval = 1
dfe_airbyte.max_slot_wal_size = '1GB'
CONF

# sql(): as a client would, with the default search_path ("$user", public);
# pq(): the test's own bookkeeping, resolving only built-ins
sub sql { my ($q, %o) = @_; return $node->safe_psql('postgres', $q, %o) }
sub pq { my ($q, %o) = @_; return $node->safe_psql('postgres', "SET search_path = pg_catalog, pg_temp;\n$q", %o) }

# ------------------------------------------------------------ the app role
# owns the database (so, as pg_database_owner, the public schema), as a
# Rails app's role does; it is no superuser.
sql(<<'SQL');
CREATE ROLE app_owner LOGIN;
ALTER DATABASE postgres OWNER TO app_owner;
CREATE ROLE app LOGIN;
SQL
my @as_owner = (extra_params => [ '-U', 'app_owner' ]);
my @as_app = (extra_params => [ '-U', 'app' ]);

sql(<<'SQL', @as_owner);
CREATE TABLE public.shadow_calls (what text, by_role name DEFAULT current_user, at timestamptz DEFAULT clock_timestamp());
CREATE SEQUENCE public.shadow_hits;
GRANT INSERT, SELECT ON public.shadow_calls TO PUBLIC;
GRANT USAGE, SELECT ON SEQUENCE public.shadow_hits TO PUBLIC;
CREATE FUNCTION public.shadow_hit(what text) RETURNS void LANGUAGE plpgsql
    SET search_path = pg_catalog AS $$
BEGIN
    -- the sequence survives the rollback of a query that then fails
    PERFORM pg_catalog.nextval('public.shadow_hits');
    INSERT INTO public.shadow_calls (what) VALUES (what);
    RAISE WARNING 'SHADOW CALLED: %', what;
END $$;
GRANT EXECUTE ON FUNCTION public.shadow_hit(text) TO PUBLIC;
SQL

# ------------------------------------------- the names the extension's SQL uses
my $text = '';
for my $f (glob("$top/src/*.c"))
{
	my $c = slurp_file($f);
	$c =~ s{/\*.*?\*/}{}gs;
	# the string literals, where the SQL is
	$text .= "$1\n" while $c =~ /"((?:[^"\\\n]|\\.)*)"/g;
}
$text .= slurp_file($_) for glob("$top/sql/dfe_airbyte--*.sql $top/build/dfe_airbyte--*.sql");
my %used = map { lc($_) => 1 } ($text =~ /\b([A-Za-z_][A-Za-z0-9_]*)\s*\(/g);
my $names = join ',', map { "'$_'" } sort keys %used;

# Argument types of the extension's queries (columns, literals, parameters,
# catalog columns): a shadow with exactly these beats a pg_catalog function
# that needs a cast or takes "any"/anyarray.
my @types = ('text', 'name', 'integer', 'bigint', 'smallint', 'numeric', 'double precision',
	'boolean', 'jsonb', 'json', 'timestamptz', 'interval', 'pg_lsn', 'oid', 'int2vector',
	'"char"', 'text[]', 'regclass');
my $type_array = 'ARRAY[' . join(',', map { "'$_'" } @types) . ']::text[]';

my $planted = pq(<<"SQL", @as_owner);
DO \$do\$
DECLARE
    fn record;
    sig text;
    n integer := 0;
    types text[] := $type_array;
    small text[] := ARRAY['text', 'name', 'bigint', 'integer', 'jsonb'];
    combos text[];
    c text;
    ret text;
BEGIN
    FOR fn IN
        SELECT p.proname::text AS name, p.pronargs AS nargs, p.prokind AS kind,
               p.provariadic <> 0 AS variadic,
               bool_or(p.proretset) AS retset,
               min(CASE WHEN t.typtype = 'p' THEN 'text' ELSE pg_catalog.format_type(p.prorettype, NULL) END) AS ret
          FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_type t ON t.oid = p.prorettype
         WHERE p.pronamespace = 'pg_catalog'::regnamespace
           AND p.proname = ANY (ARRAY[$names]::name[])
           AND p.prokind IN ('f', 'a')
         GROUP BY 1, 2, 3, 4
    LOOP
        -- argument lists: every type for one argument, every pair for two,
        -- the common ones for three, and up to five for variadic ones (format)
        combos := CASE
            WHEN fn.nargs = 0 AND fn.kind = 'f' THEN ARRAY['']
            WHEN fn.nargs = 1 OR (fn.variadic AND fn.nargs <= 2) THEN types
            ELSE '{}'::text[] END;
        IF fn.nargs = 2 OR (fn.variadic AND fn.nargs <= 2) THEN
            combos := combos || ARRAY(SELECT a || ', ' || b FROM unnest(types) a, unnest(types) b);
        END IF;
        IF fn.nargs = 3 OR fn.variadic THEN
            combos := combos || ARRAY(SELECT a || ', ' || b || ', ' || c3
                                        FROM unnest(types) a, unnest(small) b, unnest(small) c3);
        END IF;
        IF fn.variadic THEN
            combos := combos || ARRAY(SELECT 'text, ' || b || ', ' || c3 || ', ' || d
                                        FROM unnest(small) b, unnest(small) c3, unnest(small) d)
                             || ARRAY(SELECT 'text, ' || b || ', ' || c3 || ', ' || d || ', ' || e
                                        FROM unnest(ARRAY['text','name','bigint']) b, unnest(ARRAY['text','name','bigint']) c3,
                                             unnest(ARRAY['text','name','bigint']) d, unnest(ARRAY['text','name','bigint']) e);
        END IF;
        ret := fn.ret;
        FOREACH c IN ARRAY combos LOOP
            sig := format('public.%I(%s)', fn.name, c);
            BEGIN
                IF fn.kind = 'a' THEN
                    EXECUTE format('CREATE FUNCTION public.shadow_sfunc(text, %s) RETURNS text LANGUAGE plpgsql AS %L',
                                   c, format('BEGIN PERFORM public.shadow_hit(%L); RETURN $1; END', sig));
                    EXECUTE format('CREATE AGGREGATE %s (sfunc = public.shadow_sfunc, stype = text)', sig);
                    EXECUTE format('ALTER FUNCTION public.shadow_sfunc(text, %s) RENAME TO shadow_sfunc_%s', c, n);
                ELSE
                    EXECUTE format('CREATE FUNCTION %s RETURNS %s%s LANGUAGE plpgsql AS %L',
                                   sig, CASE WHEN fn.retset THEN 'SETOF ' ELSE '' END, ret,
                                   format('BEGIN PERFORM public.shadow_hit(%L); RETURN%s; END', sig,
                                          CASE WHEN fn.retset THEN '' ELSE ' NULL' END));
                END IF;
                n := n + 1;
            EXCEPTION WHEN duplicate_function OR invalid_function_definition OR datatype_mismatch
                           OR invalid_parameter_value OR feature_not_supported OR wrong_object_type THEN
                NULL;
            END;
        END LOOP;
    END LOOP;
    RAISE NOTICE 'planted %', n;
    PERFORM pg_catalog.set_config('dfe.planted', n::text, false);
END
\$do\$;
SELECT count(*) FROM pg_catalog.pg_proc WHERE pronamespace = 'public'::regnamespace AND proname NOT LIKE 'shadow%';
SQL
cmp_ok($planted, '>', 2000, "planted $planted shadow functions and aggregates in public as the database owner");
for my $must ('format(text, name)', 'jsonb_build_object(text, text)', 'unnest(int2vector)',
	'string_agg(text, text)', 'pg_size_pretty(bigint)', 'now()', 'pg_current_wal_lsn()',
	'pg_wal_lsn_diff(pg_lsn, pg_lsn)', 'quote_ident(text)', 'lower(text)', 'array_agg(text)',
	'jsonb_agg(jsonb)', 'to_jsonb(text)', 'coalesce(text)')
{
	my $ok = pq("SELECT to_regprocedure('public.$must') IS NOT NULL");
	if ($must =~ /^(coalesce|to_jsonb|jsonb_agg|pg_wal_lsn_diff|quote_ident|lower)\(/ && $ok ne 't')
	{
		note("not used by the extension's SQL, so not planted: $must");
		next;
	}
	is($ok, 't', "a shadow public.$must exists");
}

# operators: each of these, on every pair of the types, in public
my @ops = ('=', '<>', '<', '<=', '>', '>=', '||', '->', '->>', '+', '-', '*', '/', '~~', '@>', '#>>');
my $op_array = 'ARRAY[' . join(',', map { "'$_'" } @ops) . ']';
my $ops = pq(<<"SQL", @as_owner);
DO \$do\$
DECLARE
    types text[] := $type_array;
    a text; b text; o text; i integer := 0;
BEGIN
    FOREACH a IN ARRAY types LOOP
        FOREACH b IN ARRAY types LOOP
            i := i + 1;
            EXECUTE format('CREATE FUNCTION public.shadow_op_%s(%s, %s) RETURNS boolean LANGUAGE plpgsql AS %L',
                           i, a, b, format('BEGIN PERFORM public.shadow_hit(%L); RETURN NULL; END',
                                           format('operator(%s, %s)', a, b)));
            FOREACH o IN ARRAY $op_array LOOP
                BEGIN
                    EXECUTE format('CREATE OPERATOR public.%s (LEFTARG = %s, RIGHTARG = %s, FUNCTION = public.shadow_op_%s)',
                                   o, a, b, i);
                EXCEPTION WHEN duplicate_function OR duplicate_object THEN NULL;
                END;
            END LOOP;
        END LOOP;
    END LOOP;
END
\$do\$;
SELECT count(*) FROM pg_catalog.pg_operator WHERE oprnamespace = 'public'::regnamespace;
SQL
cmp_ok($ops, '>', 3000, "planted $ops shadow operators in public");

sub hits
{
	my $seq = pq('SELECT last_value - 1 + (CASE WHEN is_called THEN 1 ELSE 0 END) FROM public.shadow_hits');
	my $rows = pq("SELECT coalesce(string_agg(DISTINCT what || ' by ' || by_role, '; '), '') FROM public.shadow_calls");
	my @log = (slurp_file($node->logfile) =~ /WARNING:\s+SHADOW CALLED: ([^\n]*)/g);
	return "$seq calls; rows: $rows; log: " . join('; ', @log[0 .. ($#log < 9 ? $#log : 9)]);
}
my $none = '0 calls; rows: ; log: ';
is(hits(), $none, 'no marker before anything ran');

# --------------------------------------------------- install, as a Rails app's admin would
my $path_after = sql(<<'SQL');
SET search_path = "$user", public;
CREATE EXTENSION dfe_airbyte;
SHOW search_path;
SQL
is($path_after, '"$user", public',
	'CREATE EXTENSION leaves the session\'s search_path as it was (the script pins it with SET LOCAL)');
is(hits(), $none, 'CREATE EXTENSION called no planted function');

is(pq(<<'SQL'), '', 'every function of the extension is in public and pins search_path');
SELECT string_agg(p.oid::regprocedure::text || ' ' || coalesce(array_to_string(p.proconfig, ','), '(no SET)'), '; ')
  FROM pg_depend d JOIN pg_proc p ON p.oid = d.objid
 WHERE d.classid = 'pg_proc'::regclass AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'dfe_airbyte')
   AND d.deptype = 'e'
   AND (p.pronamespace <> 'public'::regnamespace
        OR NOT coalesce('search_path=pg_catalog, pg_temp' = ANY (p.proconfig), false))
SQL

# the views bound only built-ins and the extension's own functions, and
# every built-in function they bound was shadowed
is(pq(<<'SQL'), '', 'the views depend on nothing in public but the extension\'s functions');
WITH ext AS (SELECT oid FROM pg_extension WHERE extname = 'dfe_airbyte'),
members AS (SELECT classid, objid FROM pg_depend, ext WHERE refobjid = ext.oid AND deptype = 'e')
SELECT string_agg(DISTINCT v.oid::regclass || ' -> ' ||
       CASE WHEN d.refclassid = 'pg_proc'::regclass THEN d.refobjid::regprocedure::text
            ELSE d.refobjid::regoperator::text END, '; ')
  FROM members m
  JOIN pg_class v ON m.classid = 'pg_class'::regclass AND v.oid = m.objid AND v.relkind = 'v'
  JOIN pg_rewrite r ON r.ev_class = v.oid
  JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
 WHERE d.refclassid IN ('pg_proc'::regclass, 'pg_operator'::regclass)
   AND coalesce((SELECT pronamespace FROM pg_proc WHERE oid = d.refobjid AND d.refclassid = 'pg_proc'::regclass),
                (SELECT oprnamespace FROM pg_operator WHERE oid = d.refobjid AND d.refclassid = 'pg_operator'::regclass))
       <> 'pg_catalog'::regnamespace
   AND (d.refclassid, d.refobjid) NOT IN (SELECT classid, objid FROM members)
SQL
is(pq(<<'SQL'), '', 'every built-in function the views call has a planted namesake');
SELECT string_agg(DISTINCT p.proname, ', ')
  FROM pg_depend e
  JOIN pg_class v ON e.classid = 'pg_class'::regclass AND v.oid = e.objid AND v.relkind = 'v'
  JOIN pg_rewrite r ON r.ev_class = v.oid
  JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid AND d.refclassid = 'pg_proc'::regclass
  JOIN pg_proc p ON p.oid = d.refobjid AND p.pronamespace = 'pg_catalog'::regnamespace
 WHERE e.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'dfe_airbyte') AND e.deptype = 'e'
   AND NOT EXISTS (SELECT 1 FROM pg_proc s WHERE s.pronamespace = 'public'::regnamespace AND s.proname = p.proname)
   AND p.proname NOT IN ('int8', 'int4', 'numeric', 'float8', 'text', 'interval', 'timestamptz', 'name')
SQL

# ------------------------------------------------------------ every feature
sql(<<'SQL');
GRANT dfe_airbyte_admin TO app;
GRANT pg_monitor TO app;
CREATE TABLE public.users (id bigint PRIMARY KEY, name text, email text);
CREATE TABLE public.airbyte_heartbeat (id bigint PRIMARY KEY, last_heartbeat timestamptz);
CREATE PUBLICATION airbyte_publication FOR TABLE public.users, public.airbyte_heartbeat;
SELECT pg_create_logical_replication_slot('airbyte_slot', 'pgoutput');
SQL
DfeTest::wait_for_worker($node);

my $yaml = "shared:\n  users:\n    - id\n    - email\n";
like(sql("SELECT * FROM dfe_airbyte_load_config(\$y\$$yaml\$y\$, \$y\$shared:\n  users:\n    - email\n\$y\$)", @as_app),
	qr/allowlist\|1\|2/, 'dfe_airbyte_load_config() as the app');
like(sql('SELECT dfe_airbyte_stream_config()', @as_app), qr/"users"/, 'dfe_airbyte_stream_config()');
like(sql('SELECT dfe_airbyte_stream_config_json()', @as_app), qr/"users"/, 'dfe_airbyte_stream_config_json()');
like(sql('SELECT count(*) FROM dfe_airbyte.config_problems', @as_app), qr/^\d+$/, 'config_problems');
ok(DfeTest::poll_until($node, "SET search_path = pg_catalog; SELECT count(*) > 0 FROM dfe_airbyte.slot_samples WHERE slot_name = 'airbyte_slot'", 't', 60),
	'the worker\'s slot guard sampled the slot');
like(sql('SELECT slots FROM dfe_airbyte_check_slots_now()', @as_app), qr/^1$/, 'dfe_airbyte_check_slots_now() as the app');
# a role with nothing but membership in dfe_airbyte_admin, to which the
# function is granted: it writes the samples as the extension's owner
sql('CREATE ROLE checker LOGIN IN ROLE dfe_airbyte_admin');
like(sql('SELECT slots FROM dfe_airbyte_check_slots_now()', extra_params => [ '-U', 'checker' ]), qr/^1$/,
	'dfe_airbyte_check_slots_now() works for a role that only has dfe_airbyte_admin');
like(sql('SELECT status FROM dfe_airbyte.replication_slot_health', @as_app), qr/^ok$/, 'replication_slot_health');
like(sql('SELECT * FROM dfe_airbyte_slot_guard_settings()', @as_app), qr/airbyte_slot/, 'slot guard settings');
like(sql('SELECT dfe_airbyte_migration_lock_key()', @as_app), qr/^-?\d+$/, 'migration lock key');
sql('SELECT * FROM dfe_airbyte_setting_problems()', @as_app);

$fake->bigquery_tables({ project => 'proj', dataset => $dataset, table => 'users',
		schema => { fields => [ { name => 'id', type => 'INTEGER' }, { name => 'email', type => 'STRING' } ] } });
like(sql('SELECT * FROM dfe_airbyte_apply_policy_tags()', @as_app), qr/users\|email\|tagged/,
	'dfe_airbyte_apply_policy_tags() against the fake BigQuery');
like(sql('SELECT credential_source FROM dfe_airbyte_google_auth_check()', @as_app), qr/./, 'google auth check');
like(sql('SELECT dfe_airbyte_connection_refresh()', @as_app), qr/users/, 'dfe_airbyte_connection_refresh()');
my $job = sql('SELECT dfe_airbyte_start_sync()', @as_app);
like($job, qr/^\d+$/, 'dfe_airbyte_start_sync()');
like(sql("SELECT dfe_airbyte_job_status($job)", @as_app), qr/^\w+$/, 'dfe_airbyte_job_status()');
is(sql("SELECT dfe_airbyte_wait_for_job($job, '2 minutes')", @as_app), 'succeeded', 'dfe_airbyte_wait_for_job()');

# a deploy as a migration queues it, run by the worker: refresh, sync, tags
my $id = sql('BEGIN; SELECT dfe_airbyte_deploy(); COMMIT;', @as_app);
ok(DfeTest::poll_until($node, "SET search_path = pg_catalog; SELECT state FROM dfe_airbyte.deploys WHERE id = $id", 'succeeded', 180),
	'a deploy ran to its end in the worker');
is(sql('SELECT dfe_airbyte_deploy(wait => true) > 0', @as_app), 't', 'dfe_airbyte_deploy(wait => true)');
ok(DfeTest::poll_until($node, 'SET search_path = pg_catalog; SELECT last_job_status IS NOT NULL FROM dfe_airbyte.sync_health', 't', 60),
	'sync health read the jobs');
sql('SELECT * FROM dfe_airbyte.sync_health', @as_app);
sql('SELECT * FROM dfe_airbyte.events', @as_app);
is(sql('SELECT dfe_airbyte_worker_pid() IS NOT NULL', @as_app), 't', 'worker pid');

# a few more checks of the slot guard and sync health go by
my $checks = pq('SELECT count(*) FROM dfe_airbyte.slot_samples');
ok(DfeTest::poll_until($node, "SET search_path = pg_catalog; SELECT count(*) > $checks + 2 FROM dfe_airbyte.slot_samples", 't', 60),
	'the slot guard kept checking');

is(hits(), $none, 'no planted function or operator was ever called, by the worker or by any function');
unlike(slurp_file($node->logfile), qr/WARNING:\s+SHADOW CALLED/, 'and the log says so too');

# the test itself can fail: a query with public on its path calls the shadows
sql("SET search_path = public, pg_catalog; SELECT format('%s', 'x'::name)", @as_app);
isnt(hits(), $none, 'self-check: a query resolving through public does call a shadow');

done_testing();
