# dfe_airbyte_reconcile() for remote targets: real service databases of two
# majors (test/lib/DfeTarget.pm: the remote role has pg_read_all_data and
# pg_monitor, never superuser) compared with the fake BigQuery
# (test/fake/bigquery_jobs.py), each target with its own dataset (its
# bigquery_dataset setting): equal tables, one changed row found and
# narrowed to its key, results per target; the worker reconciles each
# enabled target after that target's successful sync and never while that
# target's full re-sync is owed; dropping a target drops its results.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use DfeTest;
use DfeTarget;
use FakeServer;

my %have = map { $_ => 1 } DfeTarget::majors();
my @majors = grep { $have{$_} } (16, 18);
@majors = (DfeTarget::majors())[0 .. 1] if @majors < 2 && DfeTarget::majors() >= 2;
plan skip_all => 'needs two target majors (test/lib/target_servers.sh)' if @majors < 2 && !$ENV{CI};

my @targets = map { DfeTarget->new("rc$_", major => $_) } @majors;
my $fake = FakeServer->start;
my $dir = PostgreSQL::Test::Utils::tempdir;
my $passfile = DfeTarget::write_passfile("$dir/pgpass", @targets);
my $hidden = 'projects/proj/locations/europe-west2/taxonomies/111/policyTags/222';
my $node = DfeTest::new_node('control', conf => DfeTest::bigquery_conf($fake, $dir, hidden_tag => $hidden) . <<"CONF");
dfe_airbyte.passfile = '$passfile'
dfe_airbyte.target_timeout = '3s'
dfe_airbyte.check_interval = 1
# the worker's reconciliations are tested at the end
dfe_airbyte.reconcile_interval = 0
CONF
$fake->config(bq_sql_dsn => $node->connstr('postgres'), bq_location => 'europe-west2');

sub sql { return $node->safe_psql('postgres', $_[0]); }
sub lit { my ($s) = @_; $s =~ s/'/''/g; return "'$s'" }

# sync_jobs and slot_recreations get their target column in 0.3.0's sync and
# guard steps; until those are merged the test adds it as they do
sql(<<'SQL');
ALTER TABLE dfe_airbyte.sync_jobs ADD COLUMN IF NOT EXISTS target text NOT NULL DEFAULT 'local';
ALTER TABLE dfe_airbyte.slot_recreations ADD COLUMN IF NOT EXISTS target text NOT NULL DEFAULT 'local';
SQL

# the same 400 rows at the source and, as Airbyte writes them, in the final table
my $rows = q{SELECT g AS id, CASE WHEN g % 7 = 0 THEN NULL ELSE 'status ' || g END AS status,
	g * 1.25 AS amount, '2024-01-01'::timestamp + g * interval '1 hour' AS updated_at FROM generate_series(1, 400) g};
my $job = 1;
for my $t (@targets)
{
	my $name = $t->name;
	$t->node->safe_psql('service', "CREATE TABLE public.orders (id bigint PRIMARY KEY, status text, amount numeric,"
		  . " updated_at timestamp); INSERT INTO public.orders $rows");
	sql("SELECT dfe_airbyte_add_target('$name', ${\ lit($t->conninfo)}, '{\"bigquery_dataset\": \"${name}_airbyte\"}')");
	sql(<<"SQL");
CREATE SCHEMA ${name}_airbyte;
CREATE TABLE ${name}_airbyte.orders (_airbyte_raw_id text NOT NULL DEFAULT gen_random_uuid()::text,
  _airbyte_extracted_at timestamptz NOT NULL DEFAULT clock_timestamp(), _airbyte_meta jsonb NOT NULL DEFAULT '{}',
  _airbyte_generation_id bigint DEFAULT 0, id bigint, status text, amount numeric, updated_at timestamp,
  _ab_cdc_lsn numeric, _ab_cdc_updated_at text, _ab_cdc_deleted_at text);
INSERT INTO ${name}_airbyte.orders (id, status, amount, updated_at, _ab_cdc_lsn) SELECT *, 1 FROM ($rows) r;
INSERT INTO dfe_airbyte.allowlist (target, table_name, column_name)
  SELECT '$name', 'orders', unnest(ARRAY['id', 'status', 'amount', 'updated_at']);
INSERT INTO dfe_airbyte.sync_jobs (job_id, status, started_at, target) VALUES (${\ ++$job}, 'succeeded', now(), '$name');
SQL
}

sub reconcile
{
	my ($target, $mode) = @_;
	my $out = sql("SELECT matched, source_rows, bigquery_rows, mismatches, detail"
		  . " FROM dfe_airbyte_reconcile('orders', '$mode', target => '$target')");
	return [ split /\|/, $out, 5 ];
}

for my $t (@targets)
{
	my $name = $t->name;
	my $mark = $fake->mark;
	my $r = reconcile($name, 'count');
	is_deeply([ @$r[0 .. 3] ], [ 't', 400, 400, 0 ], "PG$t->{major}: count: equal tables match") or diag($r->[4]);
	$r = reconcile($name, 'checksum');
	is($r->[0], 't', "PG$t->{major}: checksum: equal tables match") or diag($r->[4]);
	my @bodies = map { $_->{body} // '' } @{ $fake->requests(method => 'POST', path => qr{/queries$}, since => $mark) };
	ok(@bodies && !grep({ !/`proj\.${name}_airbyte\.orders`/ } @bodies),
		"PG$t->{major}: every BigQuery query reads the target's own dataset");

	sql("INSERT INTO ${name}_airbyte.orders (id, status, amount, updated_at, _ab_cdc_lsn)"
		  . " SELECT id, 'wrong', amount, updated_at, 2 FROM ($rows) r WHERE id = 42");
	is(reconcile($name, 'count')->[0], 't', "PG$t->{major}: count mode does not see a changed value");
	$r = reconcile($name, 'checksum');
	is_deeply([ @$r[0 .. 3] ], [ 'f', 400, 400, 1 ], "PG$t->{major}: checksum mode finds one changed row");
	is(sql("SELECT status, keys, key_ranges FROM dfe_airbyte.reconciliation WHERE target = '$name' AND table_name = 'orders'"),
		'mismatch_candidate|{"changed 42"}|{"[42, 43)"}', "PG$t->{major}: narrowed to the key, recorded for the target");
}
is(sql("SELECT count(*) FROM dfe_airbyte.reconciliation WHERE target = 'local'"), '0', 'nothing recorded for local');

# a source-side query longer than dfe_airbyte.target_timeout (3 s): a row
# security policy makes every scan by the remote role (pg_read_all_data does
# not bypass it) sleep 20 ms per row, 6 s per scan of 300 rows
{
	my $t = $targets[0];
	my $name = $t->name;
	$t->node->safe_psql('service', <<'SQL');
CREATE TABLE public.slow (id bigint PRIMARY KEY, v text);
INSERT INTO public.slow SELECT g, 'v' || g FROM generate_series(1, 300) g;
ALTER TABLE public.slow ENABLE ROW LEVEL SECURITY;
CREATE POLICY slow_read ON public.slow FOR SELECT USING (pg_catalog.pg_sleep(0.02) IS NOT NULL);
SQL
	sql(<<"SQL");
CREATE TABLE ${name}_airbyte.slow (_airbyte_raw_id text NOT NULL DEFAULT gen_random_uuid()::text,
  _airbyte_extracted_at timestamptz NOT NULL DEFAULT clock_timestamp(), _airbyte_meta jsonb NOT NULL DEFAULT '{}',
  _airbyte_generation_id bigint DEFAULT 0, id bigint, v text, _ab_cdc_lsn numeric, _ab_cdc_updated_at text,
  _ab_cdc_deleted_at text);
INSERT INTO ${name}_airbyte.slow (id, v, _ab_cdc_lsn) SELECT g, 'v' || g, 1 FROM generate_series(1, 300) g;
INSERT INTO dfe_airbyte.allowlist (target, table_name, column_name) VALUES ('$name', 'slow', 'id'), ('$name', 'slow', 'v');
SQL
	my $out = sql("SELECT matched, source_rows, detail FROM dfe_airbyte_reconcile('slow', 'checksum', target => '$name')");
	like($out, qr/^t\|300\|match/, "PG$t->{major}: a source-side query longer than target_timeout completes");
	is($t->node->safe_psql('service', "SELECT count(*) FROM pg_catalog.pg_stat_activity"
		  . " WHERE application_name = 'dfe_airbyte' AND state = 'active' AND query LIKE '%slow%'"), '0',
		'... and leaves nothing running');
	sql("DELETE FROM dfe_airbyte.allowlist WHERE table_name = 'slow'");
}

my ($ret, $out, $err) = $node->psql('postgres', "SELECT * FROM dfe_airbyte_reconcile('nope', target => '$targets[0]{name}')");
like($err, qr/table "nope" is not allowlisted for target "$targets[0]{name}"/, 'the target\'s allowlist');
sql("UPDATE dfe_airbyte.targets SET enabled = false WHERE name = '$targets[0]{name}'");
($ret, $out, $err) = $node->psql('postgres', "SELECT * FROM dfe_airbyte_reconcile(target => '$targets[0]{name}')");
like($err, qr/target "$targets[0]{name}" is disabled/, 'a disabled target is refused');
sql("UPDATE dfe_airbyte.targets SET enabled = true WHERE name = '$targets[0]{name}'");

# ------------------------------------------------------------ the worker
# the first target's full re-sync is owed: the worker leaves it alone and
# reconciles the second after its further sync (targets take turns by name)
my ($first, $second) = map { $_->name } @targets;
# a row that never reached BigQuery: a candidate in count mode, the worker's mode
for my $name ($first, $second)
{
	sql("DELETE FROM ${name}_airbyte.orders WHERE id = 100");
	is(reconcile($name, 'count')->[0], 'f', "$name: a missing row is a candidate");
}
sql("INSERT INTO dfe_airbyte.slot_recreations (slot_name, reason, recreated_at, target)"
	  . " VALUES ('airbyte_slot', 'lost', now(), '$first')");
my $before = sql("SELECT run_id FROM dfe_airbyte.reconciliation WHERE target = '$first' AND table_name = 'orders'");
my ($job1, $job2) = ($job + 1, $job + 2);
$job += 2;
sql("INSERT INTO dfe_airbyte.sync_jobs (job_id, status, started_at, target) VALUES"
	  . " ($job1, 'succeeded', now(), '$first'), ($job2, 'succeeded', now(), '$second')");
sql("ALTER SYSTEM SET dfe_airbyte.reconcile_interval = '1h'; SELECT pg_reload_conf()");
DfeTest::poll_until($node, 'SHOW dfe_airbyte.reconcile_interval', '1h');
ok(DfeTest::poll_until($node, "SELECT status FROM dfe_airbyte.reconciliation WHERE target = '$second'",
	'mismatch', 60), "the worker re-checks ${second}'s candidate after its next sync: a mismatch");
is(sql("SELECT mode, sync_job_id FROM dfe_airbyte.reconcile_runs WHERE target = '$second' ORDER BY id DESC LIMIT 1"),
	"count|$job", '... in count mode, against that target\'s sync');
like(sql("SELECT target || ' ' || object || ' ' || detail FROM dfe_airbyte.events WHERE kind = 'reconcile_mismatch'"),
	qr/^$second orders .*missing 100/, 'reconcile_mismatch names the target, the table and the key');
is(sql("SELECT run_id FROM dfe_airbyte.reconciliation WHERE target = '$first' AND table_name = 'orders'"), $before,
	"$first is left alone while its full re-sync is owed");
sql("UPDATE dfe_airbyte.slot_recreations SET resync_state = 'started', resync_finished_at = now()");
ok(DfeTest::poll_until($node, "SELECT status FROM dfe_airbyte.reconciliation WHERE target = '$first' AND table_name = 'orders'",
	'mismatch', 60), "... and reconciled once it finished");

# ------------------------------------------------------------ the checksum rota
# every second run of a table is in checksum mode: two count runs followed
# $first's last checksum run, so the next is checksum, then count, then
# checksum.  The sync is recorded before the reload: the worker cannot run
# $first again (a mismatch, within the hour) before it reads the new
# settings, which one reload brings together.
my @modes;
for my $i (1 .. 3)
{
	my $last = sql("SELECT max(id) FROM dfe_airbyte.reconcile_runs WHERE target = '$first'");
	$job++;
	sql("INSERT INTO dfe_airbyte.sync_jobs (job_id, status, started_at, target) VALUES ($job, 'succeeded', now(), '$first')");
	if ($i == 1)
	{
		sql("ALTER SYSTEM SET dfe_airbyte.reconcile_checksum_every = 2;"
			  . " ALTER SYSTEM SET dfe_airbyte.reconcile_interval = '1s'; SELECT pg_reload_conf()");
	}
	my $q = "SELECT count(*) FROM dfe_airbyte.reconcile_runs WHERE target = '$first' AND id > $last";
	DfeTest::poll_until($node, $q, '1', 60);
	push @modes, sql("SELECT mode || ' ' || array_to_string(keys, ',') FROM dfe_airbyte.reconcile_runs"
		  . " WHERE target = '$first' AND id > $last ORDER BY id LIMIT 1");
}
is_deeply(\@modes, [ 'checksum changed 42,missing 100', 'count missing 100', 'checksum changed 42,missing 100' ],
	'reconcile_checksum_every = 2: every second run is a checksum run, which sees the changed value');

sql("SELECT dfe_airbyte_drop_target('$second')");
is(sql("SELECT count(*) FROM dfe_airbyte.reconciliation r JOIN dfe_airbyte.reconcile_runs u USING (target)"
	  . " WHERE target = '$second'"), '0', 'dropping a target drops its results');

done_testing();
