# Benchmark driver for test/bench/policy_tags.sh (run that, not this).
#
# N allowlisted tables, each with a blocklisted column, in BigQuery both as a
# final table and as a legacy raw table, so that a cold run must GET and
# PATCH 2N tables.  Every BigQuery request gets BENCH_LATENCY_MS of latency
# at the fake.  The same cold run is timed at policy_tag_concurrency = 1
# (the gem's sequential way) and = BENCH_CONCURRENCY, then a warm run
# (nothing to change) at BENCH_CONCURRENCY.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;
use Time::HiRes qw(time);
use DfeTest;
use FakeServer;

my $tables = $ENV{BENCH_TABLES} || 500;
my $latency_ms = $ENV{BENCH_LATENCY_MS} || 50;
my $concurrency = $ENV{BENCH_CONCURRENCY} || 16;

my $fake = FakeServer->start;
my $url = $fake->url;
my $dir = PostgreSQL::Test::Utils::tempdir;
my $project = 'proj';
my $dataset = 'svc_airbyte_bench';
my $hidden = 'projects/proj/locations/europe-west2/taxonomies/1/policyTags/2';
my $sa = 'airbyte@proj.iam.gserviceaccount.com';

open my $fh, '>', "$dir/credentials.json" or die $!;
print $fh encode_json({
		type => 'external_account', audience => '//iam.googleapis.com/bench',
		subject_token_type => 'urn:ietf:params:oauth:token-type:jwt',
		token_url => "$url/v1/token", credential_source => { url => "$url/azure-token-proxy" },
		service_account_impersonation_url => "$url/v1/projects/-/serviceAccounts/$sa:generateAccessToken" });
close $fh;

my $node = DfeTest::new_node('bench', conf => <<"CONF");
dfe_airbyte.bigquery_project = '$project'
dfe_airbyte.bigquery_dataset = '$dataset'
dfe_airbyte.hidden_policy_tag = '$hidden'
dfe_airbyte.bigquery_url = '$url'
dfe_airbyte.google_credentials = '$dir/credentials.json'
log_min_messages = warning
CONF

my (@final, $sql);
for my $i (1 .. $tables)
{
	my $t = sprintf('table_%04d', $i);
	push @final, $t;
	$sql .= "INSERT INTO dfe_airbyte.allowlist VALUES ('$t', 'id'), ('$t', 'email'), ('$t', 'name'), ('$t', 'address');\n";
	$sql .= "INSERT INTO dfe_airbyte.blocklist VALUES ('$t', 'email');\n";
}
$node->safe_psql('postgres', $sql);

sub reset_tables
{
	my @specs;
	for my $t (@final)
	{
		push @specs, { project => $project, dataset => $dataset, table => $t, schema => { fields => [
					{ name => 'id', type => 'INTEGER', mode => 'REQUIRED' },
					{ name => 'email', type => 'STRING', description => 'e-mail' },
					{ name => 'name', type => 'STRING' },
					{ name => 'address', type => 'RECORD', fields => [ { name => 'street', type => 'STRING' } ] } ] } },
		  { project => $project, dataset => 'airbyte_internal', table => "${dataset}_raw__stream_$t",
			schema => { fields => [
					{ name => '_airbyte_raw_id', type => 'STRING', mode => 'REQUIRED' },
					{ name => '_airbyte_data', type => 'STRING' } ] } };
	}
	$fake->bigquery_tables(@specs);
}

sub set_concurrency
{
	my ($c) = @_;
	$node->safe_psql('postgres', "ALTER SYSTEM SET dfe_airbyte.policy_tag_concurrency = $c");
	$node->reload;
	$node->poll_query_until('postgres', "SELECT current_setting('dfe_airbyte.policy_tag_concurrency') = '$c'")
	  or die 'setting not reloaded';
}

my $GET = 'GET /bigquery/v2/projects/*/datasets/*/tables/*';
my $PATCH = 'PATCH /bigquery/v2/projects/*/datasets/*/tables/*';

sub run
{
	my ($c, $cold) = @_;
	reset_tables() if $cold;
	set_concurrency($c);
	my $before = $fake->stats;
	my $t0 = time;
	my $out = $node->safe_psql('postgres',
		"SELECT action, count(*) FROM dfe_airbyte_apply_policy_tags() GROUP BY 1 ORDER BY 1");
	my $secs = time - $t0;
	my $after = $fake->stats;
	my %r = (secs => $secs, rows => $out, concurrency => $c,
		get => ($after->{$GET} // 0) - ($before->{$GET} // 0),
		patch => ($after->{$PATCH} // 0) - ($before->{$PATCH} // 0));
	diag sprintf "%-26s concurrency %3d: %8.2f s   GET %5d   PATCH %5d   (%s)\n",
	  ($cold ? 'cold (all need the tag)' : 'warm (nothing to change)'), $c, $secs,
	  $r{get}, $r{patch}, join(', ', split /\n/, $out);
	return \%r;
}

$fake->faults({ kind => 'latency', path => '^/bigquery/', latency_ms => $latency_ms, times => undef });
diag sprintf "%d allowlisted tables, each with 1 blocklisted column: %d final + %d raw BigQuery tables; %d ms latency per BigQuery request\n",
  $tables, $tables, $tables, $latency_ms;

my $seq = run(1, 1);
my $par = run($concurrency, 1);
my $warm = run($concurrency, 0);

diag sprintf "speed-up at concurrency %d vs 1 (cold run): %.1fx\n", $concurrency, $seq->{secs} / $par->{secs};

my $n = 2 * $tables;
is($seq->{get}, $n, 'sequential: one GET per table');
is($seq->{patch}, $n, 'sequential: one PATCH per changed table');
is($par->{get}, $n, 'concurrent: one GET per table');
is($par->{patch}, $n, 'concurrent: one PATCH per changed table');
is($warm->{patch}, 0, 'warm run: no PATCH');
is($par->{rows}, "tagged|$n", 'every table tagged');

$node->stop;
done_testing();
