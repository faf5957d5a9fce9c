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

my $rows = $ENV{BENCH_ROWS} || 10_000_000;         # source-side cost
my $bq_rows = $ENV{BENCH_BQ_ROWS} || 1_000_000;    # full runs on the fake
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
sub sql { return $node->safe_psql('postgres', $_[0], timeout => 7200); }
sub bq { return $node->safe_psql('bq', $_[0], timeout => 7200); }

# a Rails-like table of 10 columns; the final table holds what Airbyte's
# destination writes for the same rows (one version each)
my $cols = q{'status ' || (g % 17), (g % 1000 * 1.25)::numeric(10,2), g % 2 = 0, jsonb_build_object('n', g % 100),
  '2024-01-01'::timestamp + g * interval '1 second', '2024-06-01'::timestamp + g * interval '1 second',
  '2024-01-01 00:00:00+00'::timestamptz + g * interval '1 second', date '2020-01-01' + (g % 2000), md5(g::text)::uuid};
sub source_table
{
	my ($n) = @_;
	sql(<<"SQL");
DROP TABLE IF EXISTS public.applications;
CREATE TABLE public.applications (id bigint PRIMARY KEY, status text, score numeric(10,2), ok boolean,
  doc jsonb, created_at timestamp(6), updated_at timestamp(6), seen_at timestamptz, born date, uid uuid);
INSERT INTO public.applications SELECT g, $cols FROM generate_series(1, $n) g;
VACUUM ANALYZE public.applications;
SQL
}
sub final_table
{
	my ($n) = @_;
	bq(<<"SQL");
CREATE SCHEMA IF NOT EXISTS svc_airbyte_test;
DROP TABLE IF EXISTS svc_airbyte_test.applications;
CREATE TABLE svc_airbyte_test.applications AS
SELECT gen_random_uuid()::text AS _airbyte_raw_id, now() AS _airbyte_extracted_at, '{}'::jsonb AS _airbyte_meta,
       0::bigint AS _airbyte_generation_id, g::bigint AS id, s AS status, sc::numeric AS score, o AS ok,
       d::text AS doc, c AS created_at, u AS updated_at, se AS seen_at, b AS born, ui::text AS uid,
       1::numeric AS _ab_cdc_lsn, NULL::text AS _ab_cdc_updated_at, NULL::text AS _ab_cdc_deleted_at
  FROM (SELECT g, $cols FROM generate_series(1, $n) g) x(g, s, sc, o, d, c, u, se, b, ui);
VACUUM ANALYZE svc_airbyte_test.applications;
SQL
}
sql(q{INSERT INTO dfe_airbyte.allowlist (table_name, column_name)
SELECT 'applications', unnest(ARRAY['id', 'status', 'score', 'ok', 'doc', 'created_at', 'updated_at', 'seen_at',
                                    'born', 'uid']);
INSERT INTO dfe_airbyte.sync_jobs (job_id, status, started_at) VALUES (1, 'succeeded', now());});

# the extension's source-side queries since log offset $from, from auto_explain
sub source_s
{
	my ($from) = @_;
	my $log = substr(slurp_file($node->logfile), $from);
	my $ms = 0;
	$ms += $1 while $log =~ /duration: ([\d.]+) ms\s+plan:\s+Query Text: SELECT[^\n]*FROM public\.applications/g;
	return $ms / 1000;
}

# --- 1. source-side cost on BENCH_ROWS rows: BigQuery's side is refused after
# its dry run (a cap of 1 MB over a 100 000-row final table), so only the
# source side runs
source_table($rows);
final_table(100_000);
sql("ALTER SYSTEM SET dfe_airbyte.reconcile_max_bytes_billed = '1MB'; SELECT pg_reload_conf()");
DfeTest::poll_until($node, 'SHOW dfe_airbyte.reconcile_max_bytes_billed', '1MB');
sql('SELECT count(*) FROM public.applications');    # the OS cache
my $t0 = time;
sql('SELECT count(*) FROM public.applications');
my $floor = time - $t0;
report("source side, %d rows (one process; SPI plans no parallel query):\n", $rows);
report("  count(*) without parallel workers: %.2f s = %.0f k rows/s/core\n", $floor, $rows / $floor / 1000);
for my $mode (qw(count checksum))
{
	my $pos = -s $node->logfile;
	my $r = sql("SELECT detail FROM dfe_airbyte_reconcile('applications', '$mode')");
	my $s = source_s($pos);
	report("  %-8s %.2f s = %.0f k rows/s/core (%.1fx count(*)) [%s]\n", $mode, $s, $rows / $s / 1000,
		$s / $floor, substr($r, 0, 12));
}
sql("ALTER SYSTEM RESET dfe_airbyte.reconcile_max_bytes_billed; SELECT pg_reload_conf()");
DfeTest::poll_until($node, 'SHOW dfe_airbyte.reconcile_max_bytes_billed', '50GB');

# --- 2. whole runs on the fake with BENCH_BQ_ROWS rows: queries and bytes billed
source_table($bq_rows);
final_table($bq_rows);
report("BigQuery side on the fake, %d rows (bytes processed are linear in rows; billed adds the 10 MB minimum):\n",
	$bq_rows);
for my $mode (qw(count checksum))
{
	my $before = $fake->control(GET => '/bigquery/query_stats');
	$t0 = time;
	my $r = sql("SELECT matched FROM dfe_airbyte_reconcile('applications', '$mode')");
	my $wall = time - $t0;
	my $after = $fake->control(GET => '/bigquery/query_stats');
	my $b = $after->{bytes_billed} - $before->{bytes_billed};
	my $p = $after->{bytes_processed} - $before->{bytes_processed};
	report("  %-8s matched=%s: %d queries (+%d dry runs), %.1f MB processed, %.1f MB billed"
		  . " (%.0f MB processed at %d rows); wall %.1f s\n",
		$mode, $r, $after->{queries} - $before->{queries}, $after->{dry_runs} - $before->{dry_runs},
		$p / 1048576, $b / 1048576, $p / 1048576 * $rows / $bq_rows, $rows, $wall);
}
my $wrong = int($bq_rows * 0.4321);
bq("UPDATE svc_airbyte_test.applications SET status = 'oops' WHERE id = $wrong");
my $before = $fake->control(GET => '/bigquery/query_stats');
$t0 = time;
sql("SELECT * FROM dfe_airbyte_reconcile('applications', 'checksum')");
my $wall = time - $t0;
my $after = $fake->control(GET => '/bigquery/query_stats');
report("  one wrong row (id %d): %s; %d queries (+%d dry runs), %.1f MB billed; wall %.1f s\n", $wrong,
	sql("SELECT keys::text || ' ' || key_ranges::text FROM dfe_airbyte.reconciliation WHERE table_name = 'applications'"),
	$after->{queries} - $before->{queries}, $after->{dry_runs} - $before->{dry_runs},
	($after->{bytes_billed} - $before->{bytes_billed}) / 1048576, $wall);
$node->stop;
