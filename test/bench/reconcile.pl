# The measuring half of test/bench/reconcile.sh (see there).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use File::Temp qw(tempdir);
use Time::HiRes qw(time);
use DfeTest;
use FakeServer;

my $out = Test::More->builder->output;
sub report { my $fmt = shift; print $out sprintf($fmt, @_) }

my $rows = $ENV{BENCH_ROWS} || 10_000_000;
my $fake = FakeServer->start;
my $dir = tempdir(CLEANUP => 1);
my $node = DfeTest::new_node('bench_reconcile', conf => DfeTest::bigquery_conf($fake, $dir,
		hidden_tag => 'projects/proj/locations/europe-west2/taxonomies/1/policyTags/2') . <<"CONF");
log_min_messages = warning
shared_buffers = '512MB'
work_mem = '64MB'
max_parallel_workers_per_gather = 0
dfe_airbyte.reconcile_interval = 0
shared_preload_libraries = 'dfe_airbyte,auto_explain'
CONF
# BigQuery's side lives in its own database, so that auto_explain (on for
# "postgres" only) times the extension's source-side queries and nothing else
$node->safe_psql('postgres', q{CREATE DATABASE bq;
  ALTER DATABASE postgres SET auto_explain.log_min_duration = 0;
  ALTER DATABASE postgres SET auto_explain.log_nested_statements = on;});
$fake->config(bq_sql_dsn => $node->connstr('bq'), bq_location => 'europe-west2');
sub sql { return $node->safe_psql('postgres', $_[0], timeout => 3600); }

# a Rails-like table: 10 columns of the usual types
sql(<<"SQL");
CREATE TABLE public.applications (id bigint PRIMARY KEY, status text, score numeric(10,2), ok boolean,
  doc jsonb, created_at timestamp(6), updated_at timestamp(6), seen_at timestamptz, born date, uid uuid);
INSERT INTO public.applications
SELECT g, 'status ' || (g % 17), g % 1000 * 1.25, g % 2 = 0, jsonb_build_object('n', g % 100),
       '2024-01-01'::timestamp + g * interval '1 second', '2024-06-01'::timestamp + g * interval '1 second',
       '2024-01-01 00:00:00+00'::timestamptz + g * interval '1 second', date '2020-01-01' + (g % 2000),
       md5(g::text)::uuid
  FROM generate_series(1, $rows) g;
INSERT INTO dfe_airbyte.allowlist (table_name, column_name)
SELECT 'applications', unnest(ARRAY['id', 'status', 'score', 'ok', 'doc', 'created_at', 'updated_at', 'seen_at',
                                    'born', 'uid']);
INSERT INTO dfe_airbyte.sync_jobs (job_id, status, started_at) VALUES (1, 'succeeded', now());
VACUUM ANALYZE public.applications;
SQL
# the final table: what Airbyte's destination writes for the same rows
$node->safe_psql('bq', <<"SQL", timeout => 3600);
CREATE SCHEMA svc_airbyte_test;
CREATE TABLE svc_airbyte_test.applications AS
SELECT gen_random_uuid()::text AS _airbyte_raw_id, now() AS _airbyte_extracted_at, '{}'::jsonb AS _airbyte_meta,
       0::bigint AS _airbyte_generation_id, g::bigint AS id, 'status ' || (g % 17) AS status,
       (g % 1000 * 1.25)::numeric(10,2)::numeric AS score, g % 2 = 0 AS ok,
       jsonb_build_object('n', g % 100)::text AS doc, '2024-01-01'::timestamp + g * interval '1 second' AS created_at,
       '2024-06-01'::timestamp + g * interval '1 second' AS updated_at,
       '2024-01-01 00:00:00+00'::timestamptz + g * interval '1 second' AS seen_at,
       date '2020-01-01' + (g % 2000) AS born, md5(g::text)::uuid::text AS uid, 1::numeric AS _ab_cdc_lsn,
       NULL::text AS _ab_cdc_updated_at, NULL::text AS _ab_cdc_deleted_at
  FROM generate_series(1, $rows) g;
VACUUM ANALYZE svc_airbyte_test.applications;
SQL

sub timed
{
	my ($q) = @_;
	sql($q);    # warm
	my $t0 = time;
	my $r = sql($q);
	return (time - $t0, $r);
}

# PostgreSQL-side durations of the extension's queries, from auto_explain
sub source_ms
{
	my ($from) = @_;
	my $log = slurp_file($node->logfile);
	$log = substr($log, $from);
	my $ms = 0;
	while ($log =~ /duration: ([\d.]+) ms\s+plan:\s+Query Text: (SELECT[^\n]*FROM "?public"?\.applications[^\n]*)/g)
	{
		$ms += $1;
	}
	return $ms;
}

my ($floor) = timed('SELECT count(*) FROM public.applications');
report("rows: %d\n", $rows);
report("count(*) (no parallel workers): %.2f s = %.0f k rows/s/core\n", $floor, $rows / $floor / 1000);
for my $mode (qw(count checksum))
{
	sql("SELECT * FROM dfe_airbyte_reconcile('applications', '$mode')");    # warm
	my $before = $fake->control(GET => '/bigquery/query_stats');
	my $pos = -s $node->logfile;
	my ($wall, $r) = timed("SELECT matched, bytes_billed FROM dfe_airbyte_reconcile('applications', '$mode')");
	my $after = $fake->control(GET => '/bigquery/query_stats');
	my $src = source_ms($pos) / 1000;
	# timed() ran it twice: halve the fake's counters and the source time
	report("%-8s matched=%s  source side %.2f s = %.0f k rows/s/core (%.1fx count(*));"
		  . " BigQuery: %d queries (+%d dry runs), %.1f MB billed; wall %.2f s\n",
		$mode, (split /\|/, $r)[0], $src / 2, $rows / ($src / 2) / 1000, ($src / 2) / $floor,
		($after->{queries} - $before->{queries}) / 2, ($after->{dry_runs} - $before->{dry_runs}) / 2,
		($after->{bytes_billed} - $before->{bytes_billed}) / 2 / 1048576, $wall);
}
# one wrong row: narrowed to its key
my $wrong = int($rows * 0.4321);
$node->safe_psql('bq', "UPDATE svc_airbyte_test.applications SET status = 'oops' WHERE id = $wrong");
my $before = $fake->control(GET => '/bigquery/query_stats');
my $t0 = time;
sql("SELECT * FROM dfe_airbyte_reconcile('applications', 'checksum')");
my $wall = time - $t0;
my $after = $fake->control(GET => '/bigquery/query_stats');
report("one wrong row (id %d): %s; BigQuery %d queries (+%d dry runs), %.1f MB billed; wall %.2f s\n", $wrong,
	sql("SELECT keys::text || ' ' || key_ranges::text FROM dfe_airbyte.reconciliation WHERE table_name = 'applications'"),
	$after->{queries} - $before->{queries}, $after->{dry_runs} - $before->{dry_runs},
	($after->{bytes_billed} - $before->{bytes_billed}) / 1048576, $wall);
$node->stop;
