# The measuring half of test/bench/deploy_latency.sh (see there).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use File::Temp qw(tempdir);
use POSIX qw(sysconf _SC_CLK_TCK);
use Time::HiRes qw(time sleep);
use DfeTest;
use FakeServer;

# PostgreSQL::Test::Utils sends STDOUT to its log file: report on the terminal
my $out = Test::More->builder->output;
sub report { my $fmt = shift; print $out sprintf($fmt, @_) }

my $iterations = $ENV{BENCH_ITERATIONS} || 2000;
my $clients = $ENV{BENCH_CLIENTS} || 1;
my $idle_s = $ENV{BENCH_IDLE_SECONDS} || 60;
my $tick = sysconf(_SC_CLK_TCK) || 100;

my $fake = FakeServer->start;
$fake->config(job_pending_seconds => 1, job_running_seconds => 20);
$fake->source_catalog({ users => [qw(id name email)] });

my $node = DfeTest::new_node('bench', conf => <<"CONF");
log_statement = none
log_min_messages = warning
dfe_airbyte.airbyte_url = '@{[ $fake->url ]}'
dfe_airbyte.airbyte_client_id = 'test-client'
dfe_airbyte.airbyte_client_secret = 'test-secret-value'
dfe_airbyte.connection_id = '11111111-1111-1111-1111-111111111111'
dfe_airbyte.job_poll_interval = 1
CONF
my $pid = DfeTest::wait_for_worker($node);
DfeTest::poll_until($node, 'SELECT checked_at IS NOT NULL FROM dfe_airbyte.sync_watch', 't');
$node->safe_psql('postgres', <<'SQL');
CREATE TABLE users (id bigint PRIMARY KEY, name text, email text);
INSERT INTO dfe_airbyte.allowlist (table_name, column_name) VALUES ('users', 'id'), ('users', 'email');
-- the baseline: a table of the same shape as dfe_airbyte.deploys
CREATE TABLE a_table (
    id bigserial PRIMARY KEY, state text NOT NULL DEFAULT 'queued', step text,
    requested_at timestamptz NOT NULL DEFAULT now(), requested_by name NOT NULL DEFAULT current_user,
    started_at timestamptz, finished_at timestamptz, job_id bigint, http_status integer, error text,
    coalesced_into bigint, log jsonb NOT NULL DEFAULT '[]', step_started_at timestamptz, retrying_since timestamptz);
SQL

sub cpu_ticks
{
	my $stat = slurp_file("/proc/$pid/stat");
	$stat =~ s/^.*\) //s;    # the command name may hold spaces
	my @f = split / /, $stat;
	return $f[11] + $f[12];    # utime, stime (fields 14 and 15)
}

# (VmRSS, RssAnon) in kB: RssAnon is the worker's private memory, VmRSS also
# counts the shared memory pages it has touched
sub rss_kb
{
	my $status = slurp_file("/proc/$pid/status");
	my $rss = $status =~ /^VmRSS:\s+(\d+) kB/m ? $1 : 0;
	my $anon = $status =~ /^RssAnon:\s+(\d+) kB/m ? $1 : 0;
	return ($rss, $anon);
}

# --- 1. the worker idle -------------------------------------------------------
my ($c0, $t0) = (cpu_ticks(), time);
my ($rss_idle_max, $anon_idle_max) = (0, 0);
while (time - $t0 < $idle_s)
{
	sleep 0.5;
	my ($r, $a) = rss_kb();
	$rss_idle_max = $r if $r > $rss_idle_max;
	$anon_idle_max = $a if $a > $anon_idle_max;
}
my ($c1, $t1) = (cpu_ticks(), time);
my $idle_cpu_s = ($c1 - $c0) / $tick;
report "worker idle:   %.2f s CPU in %.0f s (%.3f%% of a core), RSS max %d kB (private %d kB)\n",
  $idle_cpu_s, $t1 - $t0, 100 * $idle_cpu_s / ($t1 - $t0), $rss_idle_max, $anon_idle_max;

# --- 2. the worker during a deploy (20 s sync, job_poll_interval = 1 s) ----------
my $id = $node->safe_psql('postgres', 'SELECT dfe_airbyte_deploy()');
($c0, $t0) = (cpu_ticks(), time);
my ($rss_deploy_max, $anon_deploy_max) = (0, 0);
for (;;)
{
	my $state = $node->safe_psql('postgres', "SELECT state FROM dfe_airbyte.deploys WHERE id = $id");
	my ($r, $a) = rss_kb();
	$rss_deploy_max = $r if $r > $rss_deploy_max;
	$anon_deploy_max = $a if $a > $anon_deploy_max;
	last if $state eq 'succeeded' || $state eq 'failed';
	die "deploy did not end" if time - $t0 > 300;
	sleep 0.2;
}
($c1, $t1) = (cpu_ticks(), time);
my $deploy_cpu_s = ($c1 - $c0) / $tick;
report "worker deploy: %.2f s CPU in %.1f s (%.3f%% of a core), RSS max %d kB (private %d kB), deploy %s\n",
  $deploy_cpu_s, $t1 - $t0, 100 * $deploy_cpu_s / ($t1 - $t0), $rss_deploy_max, $anon_deploy_max,
  $node->safe_psql('postgres', "SELECT state FROM dfe_airbyte.deploys WHERE id = $id");

# --- 3. latency: deploy() against a plain insert, interleaved ----------------------
$fake->config(job_running_seconds => 2);
my $dir = tempdir(CLEANUP => 1);
open my $fh, '>', "$dir/deploy.sql" or die;
print $fh "BEGIN;\nSELECT dfe_airbyte_deploy();\nCOMMIT;\n";
close $fh;
open $fh, '>', "$dir/insert.sql" or die;
print $fh "BEGIN;\nINSERT INTO a_table (requested_by) VALUES (current_user) RETURNING id;\nCOMMIT;\n";
close $fh;

my $c_before = cpu_ticks();
my $w0 = time;
my $per_client = int(2 * $iterations / $clients);
my @cmd = ('pgbench', '-n', '-c', $clients, '-j', $clients, '-t', $per_client,
	'-f', "$dir/deploy.sql\@1", '-f', "$dir/insert.sql\@1",
	'--log', "--log-prefix=$dir/log", $node->connstr('postgres'));
system(@cmd) == 0 or die "pgbench failed";
my $wall = time - $w0;
my $c_after = cpu_ticks();

my %lat = (0 => [], 1 => []);
for my $f (glob "$dir/log*")
{
	open my $lh, '<', $f or die;
	while (<$lh>)
	{
		# client_id transaction_no time_us script_no time_epoch time_us
		my @f = split;
		push @{ $lat{ $f[3] } }, $f[2] / 1000.0;
	}
}

sub pct
{
	my ($list, $p) = @_;
	my @s = sort { $a <=> $b } @$list;
	return $s[ int($p / 100 * $#s + 0.5) ];
}

report "\n%d clients, %d + %d transactions interleaved in %.1f s\n", $clients,
  scalar @{ $lat{0} }, scalar @{ $lat{1} }, $wall;
report "%-44s %8s %8s %8s\n", 'ms', 'p50', 'p95', 'p99';
report "%-44s %8.3f %8.3f %8.3f\n", 'BEGIN; SELECT dfe_airbyte_deploy(); COMMIT;', map { pct($lat{0}, $_) } 50, 95, 99;
report "%-44s %8.3f %8.3f %8.3f\n", 'BEGIN; INSERT INTO a_table ...; COMMIT;', map { pct($lat{1}, $_) } 50, 95, 99;
report "%-44s %8.2f %8.2f %8.2f\n", 'ratio', map { pct($lat{0}, $_) / pct($lat{1}, $_) } 50, 95, 99;
DfeTest::poll_until($node, "SELECT count(*) FROM dfe_airbyte.deploys WHERE state IN ('queued', 'running')", '0', 120);
report "worker CPU during the run: %.2f s; afterwards, deploys that ran: %s, coalesced into them: %s\n",
  ($c_after - $c_before) / $tick,
  $node->safe_psql('postgres', "SELECT count(*) FROM dfe_airbyte.deploys WHERE state <> 'coalesced' AND id > $id"),
  $node->safe_psql('postgres', "SELECT count(*) FROM dfe_airbyte.deploys WHERE state = 'coalesced'");

$node->stop;
$fake->stop;
