# Upgrades: from every released version (each frozen install script
# sql/dfe_airbyte--X.sql) CREATE EXTENSION dfe_airbyte VERSION 'X' with data in
# every table, ALTER EXTENSION dfe_airbyte UPDATE, then the extension's
# objects must equal a fresh install's in another database (relations with
# their columns, defaults, constraints, indexes, views, functions with their
# definitions and SET clauses, grants, comments, sequences, configuration
# tables), and every row must still be there.  The worker and config_problems
# say when the installed SQL is older than the library.  The version in
# development is default_version of dfe_airbyte.control.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use DfeTest;

my $top = $ENV{DFE_TOP} // '.';
my ($lib_version) = slurp_file("$top/dfe_airbyte.control") =~ /^default_version\s*=\s*'([^']+)'/m;
sub version_key { return join '.', map { sprintf '%06d', $_ } split /\./, $_[0] }
my @released = sort { version_key($a) cmp version_key($b) }
  grep { $_ ne $lib_version }
  map { m{/dfe_airbyte--(\d[\d.]*)\.sql$} ? $1 : () } glob("$top/sql/dfe_airbyte--*.sql");
cmp_ok(scalar @released, '>=', 2, "released versions to upgrade from: @released (to $lib_version)");

my $node = DfeTest::new_node('upgrade', no_extension => 1);

sub sql
{
	my ($db, $q) = @_;
	return $node->safe_psql($db, "SET search_path = pg_catalog, pg_temp;\n$q");
}

# Columns an update drops on purpose: the rows are compared without them.
# sync_watch's one-row key (id) gave way to a key per target.
my %dropped_columns = ('dfe_airbyte.sync_watch' => ['id']);

# Rows for the tables each version created, applied for that version and every
# later one: a release that adds a table adds its rows here, or the check that
# every table holds data fails.
my %rows_for = ('0.1.0' => <<'SQL', '0.2.0' => <<'SQL');
INSERT INTO dfe_airbyte.allowlist (table_name, column_name) VALUES ('users', 'id'), ('users', 'email');
INSERT INTO dfe_airbyte.blocklist (table_name, column_name) VALUES ('users', 'email');
INSERT INTO dfe_airbyte.events (severity, kind, object, detail, data)
     VALUES ('warning', 'slot_limit', 'airbyte_slot', 'over the limit', '{"retained_bytes": 5}'),
            ('info', 'tags_applied', NULL, 'tags re-applied', NULL);
INSERT INTO dfe_airbyte.deploys (state, step, requested_by, started_at, finished_at, job_id, error, log)
     VALUES ('succeeded', 'done', 'app', now() - interval '1 hour', now() - interval '50 minutes', 42, NULL,
             '[{"at": "2026-01-01T00:00:00Z", "step": "starting_sync", "message": "job 42"}]'),
            ('failed', 'waiting_for_sync', 'app', now() - interval '2 hours', now() - interval '100 minutes', 41,
             'job 41 failed', '[]'),
            ('coalesced', NULL, 'app', NULL, now() - interval '3 hours', NULL, NULL, '[]');
UPDATE dfe_airbyte.deploys SET coalesced_into = 1 WHERE state = 'coalesced';
INSERT INTO dfe_airbyte.deploys (requested_by) VALUES ('app');
INSERT INTO dfe_airbyte.slot_samples (sampled_at, slot_name, active, active_pid, wal_status, safe_wal_size,
                                      retained_bytes, flush_lag_bytes)
     SELECT now() - i * interval '1 minute', 'airbyte_slot', i % 2 = 0, NULL, 'reserved', NULL, i * 1000, i * 10
       FROM generate_series(1, 20) i;
INSERT INTO dfe_airbyte.slot_state (slot_name, first_seen_at, last_active_at, condition, condition_since)
     VALUES ('airbyte_slot', now() - interval '1 day', now(), 'over_limit', now() - interval '5 minutes');
INSERT INTO dfe_airbyte.slot_recreations (slot_name, reason, retained_bytes, limit_bytes, recreated_at, new_lsn,
                                          resync_state, resync_attempts, resync_job_id, resync_started_at)
     VALUES ('airbyte_slot', 'over_limit', 2000, 1000, now(), '0/16B3748', 'started', 1, 43, now()),
            ('airbyte_slot', 'lost', NULL, 1000, now(), '0/16B3750', 'pending', 2, NULL, NULL);
INSERT INTO dfe_airbyte.sync_jobs (job_id, status, job_type, started_at, last_updated_at)
     VALUES (42, 'succeeded', 'sync', now() - interval '1 hour', now() - interval '50 minutes'),
            (43, 'running', 'sync', now() - interval '1 minute', now());
UPDATE dfe_airbyte.sync_watch SET watching_since = now() - interval '1 day', checked_at = now(), stale = true;
SQL
INSERT INTO dfe_airbyte.excluded (table_name, column_name) VALUES ('users', 'password_digest');
INSERT INTO dfe_airbyte.flow_checks (job_id, confirmed_flush_lsn, table_changes, rows_synced, findings)
     VALUES (42, '0/16B3748', 10, 10, '{}');
INSERT INTO dfe_airbyte.policy_tag_state (table_name, column_name, policy_tag)
     VALUES ('users', 'email', 'projects/p/locations/l/taxonomies/1/policyTags/2');
INSERT INTO dfe_airbyte.server_identity (system_identifier) VALUES (7000000000000000001)
    ON CONFLICT (one) DO NOTHING;
UPDATE dfe_airbyte.connection_watch SET checked_at = now(), status = 'active', streams = 1;
SQL

$node->safe_psql('postgres', 'CREATE DATABASE fresh');
sql('fresh', 'CREATE EXTENSION dfe_airbyte');
my $describe = <<'SQL';
WITH ext AS (SELECT oid, extconfig, extcondition FROM pg_extension WHERE extname = 'dfe_airbyte'),
m AS (SELECT d.classid, d.objid FROM pg_depend d, ext WHERE d.refobjid = ext.oid AND d.deptype = 'e'
       AND d.refclassid = 'pg_extension'::regclass),
rel AS (SELECT c.* FROM pg_class c JOIN m ON m.classid = 'pg_class'::regclass AND m.objid = c.oid),
lines AS (
    SELECT 'member ' || pg_describe_object(m.classid, m.objid, 0) AS l FROM m
    UNION ALL
    SELECT format('relation %s kind %s acl %s options %s comment %s', c.oid::regclass, c.relkind,
                  c.relacl::text, c.reloptions::text, obj_description(c.oid, 'pg_class'))
      FROM rel c
    UNION ALL
    SELECT format('column %s #%s %s %s notnull %s default %s identity %s generated %s collation %s acl %s comment %s',
                  c.oid::regclass, row_number() OVER (PARTITION BY c.oid ORDER BY a.attnum), a.attname,
                  format_type(a.atttypid, a.atttypmod), a.attnotnull, pg_get_expr(ad.adbin, ad.adrelid),
                  a.attidentity, a.attgenerated, a.attcollation, a.attacl::text, col_description(c.oid, a.attnum))
      FROM rel c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
      LEFT JOIN pg_attrdef ad ON ad.adrelid = c.oid AND ad.adnum = a.attnum
     WHERE c.relkind IN ('r', 'v', 'p')
    UNION ALL
    SELECT format('constraint %s %s %s', co.conrelid::regclass, co.conname, pg_get_constraintdef(co.oid))
      FROM pg_constraint co JOIN rel c ON c.oid = co.conrelid
    UNION ALL
    SELECT format('index %s', pg_get_indexdef(i.indexrelid))
      FROM pg_index i JOIN rel c ON c.oid = i.indrelid
    UNION ALL
    SELECT format('trigger %s', pg_get_triggerdef(t.oid))
      FROM pg_trigger t JOIN rel c ON c.oid = t.tgrelid WHERE NOT t.tgisinternal
    UNION ALL
    SELECT format('policy %s %s', p.polrelid::regclass, p.polname)
      FROM pg_policy p JOIN rel c ON c.oid = p.polrelid
    UNION ALL
    SELECT format('view %s: %s', c.oid::regclass, pg_get_viewdef(c.oid))
      FROM rel c WHERE c.relkind IN ('v', 'm')
    UNION ALL
    SELECT format('sequence %s %s start %s inc %s min %s max %s cache %s cycle %s owned by %s',
                  s.seqrelid::regclass, format_type(s.seqtypid, NULL), s.seqstart, s.seqincrement, s.seqmin,
                  s.seqmax, s.seqcache, s.seqcycle,
                  (SELECT pg_describe_object(d.refclassid, d.refobjid, d.refobjsubid) FROM pg_depend d
                    WHERE d.classid = 'pg_class'::regclass AND d.objid = s.seqrelid AND d.deptype IN ('a', 'i')))
      FROM pg_sequence s JOIN rel c ON c.oid = s.seqrelid
    UNION ALL
    SELECT format('function %s acl %s comment %s: %s', p.oid::regprocedure, p.proacl::text,
                  obj_description(p.oid, 'pg_proc'), pg_get_functiondef(p.oid))
      FROM pg_proc p JOIN m ON m.classid = 'pg_proc'::regclass AND m.objid = p.oid
    UNION ALL
    SELECT format('schema %s owner-is-superuser %s acl %s comment %s', n.nspname,
                  (SELECT rolsuper FROM pg_roles WHERE oid = n.nspowner), n.nspacl::text,
                  obj_description(n.oid, 'pg_namespace'))
      FROM pg_namespace n JOIN m ON m.classid = 'pg_namespace'::regclass AND m.objid = n.oid
    UNION ALL
    SELECT format('type %s', t.oid::regtype)
      FROM pg_type t JOIN m ON m.classid = 'pg_type'::regclass AND m.objid = t.oid
    UNION ALL
    SELECT format('config table %s where %L', cfg.tbl::regclass, cfg.cond)
      FROM ext, unnest(ext.extconfig, ext.extcondition) AS cfg(tbl, cond)
    UNION ALL
    SELECT format('init privileges %s', pg_describe_object(ip.classoid, ip.objoid, ip.objsubid))
          || ' ' || ip.initprivs::text
      FROM pg_init_privs ip JOIN m ON m.classid = ip.classoid AND m.objid = ip.objoid
    UNION ALL
    SELECT format('role %s', r.rolname) FROM pg_roles r WHERE r.rolname LIKE 'dfe_airbyte%'
)
SELECT l FROM lines ORDER BY l COLLATE "C";
SQL
my @fresh = split /\n/, sql('fresh', $describe);
cmp_ok(scalar @fresh, '>', 50, scalar(@fresh) . " lines describe a fresh install of $lib_version");

# the extension's tables, for the data checks
my $tables_q = <<'SQL';
SELECT c.oid::regclass FROM pg_depend d JOIN pg_class c ON c.oid = d.objid
 WHERE d.classid = 'pg_class'::regclass AND d.deptype = 'e' AND c.relkind = 'r'
   AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'dfe_airbyte')
 ORDER BY 1::text
SQL

# Install $from with data in every table, update it, and compare with the
# fresh install; the rows must all still be there.
sub upgrade_from
{
	my ($from) = @_;
	my $db = "from_$from" =~ s/\./_/gr;
	$node->safe_psql('postgres', "CREATE DATABASE $db");
	sql($db, "CREATE EXTENSION dfe_airbyte VERSION '$from'");
	is(sql($db, "SELECT extversion FROM pg_extension WHERE extname = 'dfe_airbyte'"), $from, "$from installed");
	sql($db, $rows_for{$_})
	  for grep { version_key($_) le version_key($from) } sort { version_key($a) cmp version_key($b) } keys %rows_for;

	my @empty = grep { sql($db, "SELECT count(*) FROM $_") eq '0' } split /\n/, sql($db, $tables_q);
	is("@empty", '', "$from: every table holds data before the update");

	# snapshot of every row (as jsonb) of every table, kept outside the extension
	sql($db, 'CREATE SCHEMA snap; CREATE TABLE snap.rows (tbl text, j jsonb)');
	sql($db, "INSERT INTO snap.rows SELECT '$_', to_jsonb(x) FROM $_ x") for split /\n/, sql($db, $tables_q);
	my $snap_rows = sql($db, 'SELECT count(*) FROM snap.rows');

	my $path = $node->safe_psql($db, <<'SQL');
SET search_path = "$user", public;
ALTER EXTENSION dfe_airbyte UPDATE;
SHOW search_path;
SQL
	is($path, '"$user", public', "$from: ALTER EXTENSION UPDATE leaves the session's search_path as it was");
	is(sql($db, "SELECT extversion FROM pg_extension WHERE extname = 'dfe_airbyte'"), $lib_version,
		"$from: updated to $lib_version");

	my @upgraded = split /\n/, sql($db, $describe);
	my %in_fresh = map { $_ => 1 } @fresh;
	my %in_upgraded = map { $_ => 1 } @upgraded;
	my @only_fresh = grep { !$in_upgraded{$_} } @fresh;
	my @only_upgraded = grep { !$in_fresh{$_} } @upgraded;
	ok(!@only_fresh && !@only_upgraded, "$from: an upgraded install has exactly the objects of a fresh one")
	  or diag(join("\n", 'only in a fresh install:', map({ "  + $_" } @only_fresh),
			'only in the upgraded one:', map({ "  - $_" } @only_upgraded)));

	for my $tbl (split /\n/, sql($db, 'SELECT DISTINCT tbl FROM snap.rows ORDER BY 1'))
	{
		my $dropped = join ', ', map { "'$_'" } @{ $dropped_columns{$tbl} // [] };
		my $gone = sql($db, <<"SQL");
SELECT count(*) FROM snap.rows s
 WHERE s.tbl = '$tbl'
   AND NOT EXISTS (SELECT 1 FROM $tbl t WHERE to_jsonb(t) \@> (s.j - ARRAY[$dropped]::text[]))
SQL
		is($gone, '0', "$from: $tbl: every row kept with its values");
	}
	cmp_ok($snap_rows, '>', 30, "$from: $snap_rows rows were compared");
	cmp_ok(sql($db, "SELECT nextval('dfe_airbyte.deploys_id_seq')"), '>', 4,
		"$from: the deploys sequence continues after the rows it had given out");
	is(sql($db, 'SELECT count(*) FROM dfe_airbyte.connection_watch'), '1', "$from: the connection watch has its one row");
	is(sql($db, "SELECT count(*) FROM public.dfe_airbyte_repair() WHERE step = 'slot'"), '1',
		"$from: dfe_airbyte_repair() works after the update");
}

upgrade_from($_) for @released;

# ------------------------------------------------------------ the worker's warning
# ------------------------------------------------------------ the new library under older SQL
# Between installing a new package (and restarting) and ALTER EXTENSION
# UPDATE, every function of every older release's SQL either works (those
# that read only settings, shared memory or the operating system) or stops
# with one clear error, never a raw catalog error from a missing column.
my %works_with_any_sql = map { $_ => 1 } qw(
  dfe_airbyte_worker_pid dfe_airbyte_workers dfe_airbyte_setting_problems
  dfe_airbyte_migration_lock_key dfe_airbyte_system_identifier
  dfe_airbyte_slot_guard_settings dfe_airbyte_slot_rhythm dfe_airbyte_disk_space);
my @older = split /\n/, sql('postgres',
	"SELECT version FROM pg_available_extension_versions WHERE name = 'dfe_airbyte' AND version <> '$lib_version' ORDER BY 1");
ok(scalar(grep { $_ eq '0.1.0' } @older), 'older releases to install: ' . join(', ', @older));
for my $old (@older)
{
	(my $db = "old_$old") =~ s/\./_/g;
	$node->safe_psql('postgres', "CREATE DATABASE $db");
	sql($db, "CREATE EXTENSION dfe_airbyte VERSION '$old'");
	# every C function of that release, called with arguments of its types
	# (never NULL: a strict function would not be called at all)
	my $calls = sql($db, <<'SQL');
CREATE TEMP TABLE outcome (fn text, sqlstate text, message text, hint text);
DO $$
DECLARE p regprocedure; fn text; args text; st text; msg text; hnt text;
BEGIN
    FOR p, fn, args IN
        SELECT pr.oid, pr.proname,
               coalesce(string_agg(CASE t.typname WHEN 'bool' THEN 'false' WHEN 'interval' THEN '''1 second'''
                                   WHEN 'jsonb' THEN '''{}''' WHEN 'text' THEN '''''' ELSE '1' END
                                   || '::' || format_type(t.oid, NULL), ', ' ORDER BY a.n), '')
          FROM pg_depend d JOIN pg_proc pr ON d.classid = 'pg_proc'::regclass AND pr.oid = d.objid
          JOIN pg_language l ON l.oid = pr.prolang AND l.lanname = 'c'
          LEFT JOIN LATERAL unnest(pr.proargtypes) WITH ORDINALITY AS a(typ, n) ON true
          LEFT JOIN pg_type t ON t.oid = a.typ
         WHERE d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'dfe_airbyte') AND d.deptype = 'e'
         GROUP BY pr.oid, pr.proname
    LOOP
        BEGIN
            -- every row evaluated, its value discarded (a subquery's unused
            -- stable function could be optimised away)
            EXECUTE format('SELECT %s(%s)', p::oid::regproc, args);
            INSERT INTO outcome VALUES (fn, '00000', NULL, NULL);
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, hnt = PG_EXCEPTION_HINT;
            INSERT INTO outcome VALUES (fn, st, msg, hnt);
        END;
    END LOOP;
END $$;
SELECT fn || '|' || sqlstate || '|' || coalesce(message, '') || '|' || coalesce(hint, '') FROM outcome ORDER BY fn;
SQL
	my @rows = map { [ split /\|/, $_, 4 ] } split /\n/, $calls;
	cmp_ok(scalar @rows, '>=', 10, "$old: " . scalar(@rows) . ' C functions called');
	for my $r (@rows)
	{
		my ($fn, $state, $msg, $hint) = @$r;
		if ($works_with_any_sql{$fn})
		{
			is($state, '00000', "$old: $fn() works with this release's SQL") or diag($msg);
			next;
		}
		ok($state eq '55000'
			  && $msg =~ /^\Q$fn\E\(\) cannot run: the installed dfe_airbyte SQL objects are version \Q$old\E but the loaded library is version \Q$lib_version\E$/
			  && $hint =~ /Run ALTER EXTENSION dfe_airbyte UPDATE/,
			"$old: $fn() stops with the clear error (55000, both versions, ALTER EXTENSION hint)")
		  or diag("got $state: $msg / $hint");
	}
	sql($db, 'ALTER EXTENSION dfe_airbyte UPDATE');
	is($node->safe_psql($db, "SELECT dfe_airbyte_migration_lock_key() IS NOT NULL AND dfe_airbyte_stream_config() IS NOT NULL"), 't',
		"$old: after ALTER EXTENSION UPDATE the functions run");
}

# The workers watch database postgres: install the old SQL there.  They
# wait, each with one warning, until ALTER EXTENSION UPDATE.
$node->safe_psql('postgres', "SELECT pg_create_logical_replication_slot('airbyte_slot', 'pgoutput')");
my $log_pos = -s $node->logfile;
sql('postgres', "CREATE EXTENSION dfe_airbyte VERSION '$released[0]'");
my $warning = qr/WARNING:  dfe_airbyte: the installed SQL objects are version \Q$released[0]\E but the loaded library is version \Q$lib_version\E\n(?:.*\n)*?.*HINT:  Run ALTER EXTENSION dfe_airbyte UPDATE/;
ok(DfeTest::poll_log($node, qr/$warning(?:.*\n)*.*$warning/, 60),
	'both workers warn, naming both versions, with the ALTER EXTENSION hint');
is(sql('postgres', 'SELECT count(*) FROM dfe_airbyte.slot_samples'), '0',
	'... and wait: the guard samples nothing under the older SQL');
like(sql('postgres', "SELECT severity || ' ' || problem || ' / ' || hint FROM dfe_airbyte.config_problems WHERE object = 'dfe_airbyte'"),
	qr/^error the installed SQL objects are version \Q$released[0]\E but the loaded library is version \Q$lib_version\E.* \/ ALTER EXTENSION dfe_airbyte UPDATE/,
	'config_problems has a row naming both versions and the fix');

sql('postgres', 'ALTER EXTENSION dfe_airbyte UPDATE');
is(sql('postgres', "SELECT count(*) FROM dfe_airbyte.config_problems WHERE object = 'dfe_airbyte'"), '0',
	'after the update config_problems no longer mentions the version');
my $warnings = () = substr(slurp_file($node->logfile), $log_pos) =~ /installed SQL objects are version/g;
is($warnings, 2, "each worker warned once for version $released[0], not at every loop");
ok(DfeTest::poll_until($node, "SELECT count(*) > 0 FROM dfe_airbyte.slot_samples WHERE slot_name = 'airbyte_slot'",
	't', 60), 'after the update the guard samples the slot again');

done_testing();
