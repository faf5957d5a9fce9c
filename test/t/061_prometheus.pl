# Prometheus for real: Debian's prometheus-postgres-exporter runs
# monitoring/postgres_exporter.yaml as a role that has only pg_monitor,
# against a cluster with data in every view; every metric of the file is
# scraped, no query fails, and series keep their identity when the slot's
# status changes.  A real remote target ("svc_a", test/lib/DfeTarget.pm)
# beside "local": every per-service series comes once per target, labelled
# with it.  Then promtool checks and unit-tests monitoring/alerts.yml.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use HTTP::Tiny;
use Time::HiRes qw(usleep);
use DfeTest;
use DfeTarget;

my $top = $ENV{DFE_TOP} // '.';
my $exporter_bin = '/usr/bin/prometheus-postgres-exporter';
my $promtool = '/usr/bin/promtool';
for my $bin ($exporter_bin, $promtool)
{
	next if -x $bin;
	# CI installs both (test/setup_debian.sh): there a missing one is a failure
	if ($ENV{CI}) { plan tests => 1; fail("$bin is missing: run test/setup_debian.sh as root"); exit 0; }
	plan skip_all => "$bin is missing (Debian packages prometheus-postgres-exporter, prometheus)";
}
my $queries = "$top/monitoring/postgres_exporter.yaml";

# --- the metrics the file defines (namespace_column of every non-LABEL column) --
my (@metrics, %label_columns, $ns, $col);
for my $line (split /\n/, slurp_file($queries))
{
	if ($line =~ /^(\w+):\s*$/) { $ns = $1; next; }
	if ($line =~ /^    - (\w+):\s*$/) { $col = $1; next; }
	if ($line =~ /^        usage: "(\w+)"/)
	{
		if ($1 eq 'LABEL') { $label_columns{$ns}{$col} = 1 }
		else { push @metrics, "${ns}_$col" }
	}
}
cmp_ok(scalar(@metrics), '>=', 30, 'the query file defines the metrics (' . scalar(@metrics) . ')');

# --- a cluster with data in every view, and a remote target -------------------
# the newest major present (15, Debian's, always is): a server of its own
my $remote = DfeTarget->new('svc_a', major => (DfeTarget::majors())[-1] // 15);
my $passfile = DfeTarget::write_passfile(PostgreSQL::Test::Utils::tempdir() . '/pgpass', $remote);
my $node = DfeTest::new_node('prom', conf => <<"CONF");
dfe_airbyte.check_interval = 1
dfe_airbyte.max_slot_wal_size = 64
dfe_airbyte.passfile = '$passfile'
CONF
DfeTest::wait_for_worker($node);
# its own limit, so that lowering the global one below leaves its slot alone
$node->safe_psql('postgres', "SELECT dfe_airbyte_add_target('svc_a', '" . $remote->conninfo
	  . q{', '{"slot_name": "airbyte_slot", "max_slot_wal_size": "8GB"}')});
$node->safe_psql('postgres', <<'SQL');
CREATE TABLE users (id bigint PRIMARY KEY, email text);
CREATE PUBLICATION airbyte_publication FOR TABLE users;
SELECT pg_create_logical_replication_slot('airbyte_slot', 'pgoutput');
SELECT pg_create_logical_replication_slot('other_slot', 'pgoutput');
INSERT INTO dfe_airbyte.sync_jobs (job_id, status, job_type, started_at, last_updated_at)
VALUES (1, 'succeeded', 'sync', now() - interval '20 min', now() - interval '19 min'),
       (2, 'failed', 'sync', now() - interval '5 min', now() - interval '4 min');
UPDATE dfe_airbyte.sync_watch SET watching_since = now() - interval '1 day', checked_at = now();
INSERT INTO dfe_airbyte.deploys (state, step, requested_at, started_at, finished_at, error)
VALUES ('succeeded', 'done', now() - interval '2 hours', now() - interval '2 hours', now() - interval '1 hour', NULL),
       ('failed', 'refreshing_connection', now() - interval '10 min', now() - interval '10 min', now() - interval '9 min',
        'Airbyte answered 400');
INSERT INTO dfe_airbyte.events (severity, kind, detail)
VALUES ('warning', 'policy_tags_failed', 'could not check the BigQuery policy tags (test)');
INSERT INTO dfe_airbyte.reconciliation (table_name, run_id, mode, status, matched, mismatches, started_at, finished_at)
VALUES ('users', 1, 'count', 'mismatch', false, 2, now(), now()),
       ('orders', 2, 'count', 'match', true, 0, now(), now());
CREATE ROLE exporter LOGIN IN ROLE pg_monitor;
-- svc_a: a recent success, a deploy that succeeded, a matching table
INSERT INTO dfe_airbyte.sync_jobs (target, job_id, status, job_type, started_at, last_updated_at)
VALUES ('svc_a', 7, 'succeeded', 'sync', now() - interval '3 min', now() - interval '2 min');
INSERT INTO dfe_airbyte.deploys (target, state, step, requested_at, started_at, finished_at)
VALUES ('svc_a', 'succeeded', 'done', now() - interval '1 hour', now() - interval '1 hour', now() - interval '50 min');
INSERT INTO dfe_airbyte.reconciliation (target, table_name, run_id, mode, status, matched, mismatches, started_at, finished_at)
VALUES ('svc_a', 'users', 3, 'count', 'match', true, 0, now(), now());
SQL
ok(DfeTest::poll_until($node,
		"SELECT count(*) > 0 FROM dfe_airbyte.slot_samples WHERE target = 'local' AND slot_name = 'airbyte_slot'", 't'),
	'the worker samples the slot');
ok(DfeTest::poll_until($node, q{SELECT string_agg(target || ':' || status, ',' ORDER BY target)
		FROM dfe_airbyte.replication_slot_health WHERE slot_name = 'airbyte_slot'}, 'local:ok,svc_a:ok', 120),
	"the guard samples svc_a's slot");

# --- the exporter, as the pg_monitor-only role, on loopback ---------------------
my $port = PostgreSQL::Test::Cluster::get_free_port();
my $exporter_log = "$PostgreSQL::Test::Utils::tmp_check/exporter.log";
my $dsn = 'host=' . $node->host . ' port=' . $node->port . ' user=exporter dbname=postgres sslmode=disable';
my $pid = fork // die "fork: $!";
if ($pid == 0)
{
	open(STDOUT, '>>', $exporter_log) or die;
	open(STDERR, '>&', \*STDOUT) or die;
	$ENV{DATA_SOURCE_NAME} = $dsn;
	exec($exporter_bin, "--web.listen-address=127.0.0.1:$port",
		"--extend.query-path=$queries", '--log.level=info')
	  or die "exec: $!";
}
END { kill 'TERM', $pid if $pid; }

my $http = HTTP::Tiny->new(timeout => 30);

# scrape: { 'name{labels}' => value }, plus the raw text
sub scrape
{
	my ($res, %series);
	for (1 .. 150)
	{
		$res = $http->get("http://127.0.0.1:$port/metrics");
		last if $res->{success};
		usleep(200_000);
	}
	die "no answer from the exporter: $res->{status} $res->{content}\n" . slurp_file($exporter_log)
	  unless $res->{success};
	for my $line (split /\n/, $res->{content})
	{
		next if $line =~ /^#/ || $line !~ /\S/;
		next unless $line =~ /^(\w+)(?:\{(.*)\})?\s+(\S+)$/;
		# the exporter labels its own queries' series with server="host:port": leave it out
		# and sorts the labels, so that a key does not depend on the exporter's order
		my ($name, $labels, $v) = ($1, $2 // '', $3);
		$labels = join(',', sort grep { !/^server=/ } split /,(?=\w+=")/, $labels);
		$series{ $labels eq '' ? $name : "$name\{$labels\}" } = $v;
	}
	return (\%series, $res->{content});
}

sub value
{
	my ($s, $name) = @_;
	return $s->{$name};
}

sub dfe_series
{
	my ($s) = @_;
	return [ sort grep { /^dfe_airbyte_/ && !/^dfe_airbyte_(events_last_hour|worker_)/ } keys %$s ];
}

my ($s, $text) = scrape();
is(value($s, 'pg_up'), '1', 'pg_up 1: the exporter connects as the pg_monitor role');
is(value($s, 'pg_exporter_last_scrape_error'), '0', 'pg_exporter_last_scrape_error 0');
for my $m (@metrics)
{
	ok(scalar(grep { /^\Q$m\E(\{|$)/ } keys %$s), "metric $m is exported");
}
my @load_errors = grep { /^pg_exporter_user_queries_load_error/ && $s->{$_} ne '0' } keys %$s;
is_deeply(\@load_errors, [], 'the query file loads (pg_exporter_user_queries_load_error 0)');
unlike(slurp_file($exporter_log), qr/error running query|level=error/i, 'no query error in the exporter log');

# the values say what the views say
is(value($s, 'dfe_airbyte_slot_status_code{slot_name="airbyte_slot",target="local"}'), '0', 'airbyte_slot: status code 0 (ok)');
is(value($s, 'dfe_airbyte_slot_status_is{slot_name="airbyte_slot",status="ok",target="local"}'), '1', 'one-hot: ok is 1');
is(value($s, 'dfe_airbyte_slot_status_is{slot_name="airbyte_slot",status="critical",target="local"}'), '0', 'one-hot: critical is 0');
cmp_ok(value($s, 'dfe_airbyte_slot_limit_bytes{slot_name="airbyte_slot",target="local"}'), '==', 64 * 1024 * 1024, 'limit in bytes');
is(value($s, 'dfe_airbyte_slot_limit_bytes{slot_name="other_slot",target="local"}'), '-1', 'other slot: no limit');
is(value($s, 'dfe_airbyte_last_deploy_failed{target="local"}'), '1', 'the newest deploy failed');
is(value($s, 'dfe_airbyte_last_deploy_state_is{state="failed",target="local"}'), '1', 'deploy state one-hot: failed');
is(value($s, 'dfe_airbyte_last_deploy_state_is{state="succeeded",target="local"}'), '0', 'deploy state one-hot: succeeded 0');
is(value($s, 'dfe_airbyte_sync_last_job_failed{target="local"}'), '1', 'the newest sync job failed');
is(value($s, 'dfe_airbyte_sync_stale{target="local"}'), '0', 'the last success is fresh');
is(value($s, 'dfe_airbyte_sync_connection_disabled{target="local"}'), '0', 'connection not disabled');
is(value($s, 'dfe_airbyte_policy_tags_failures_last_hour{target="local"}'), '1', 'one policy tag failure in the last hour');
is(value($s, 'dfe_airbyte_reconcile_mismatch{table_name="users",target="local"}'), '1', 'users: a reconciliation mismatch');
is(value($s, 'dfe_airbyte_reconcile_mismatch{table_name="orders",target="local"}'), '0', 'orders: none');
is(value($s, 'dfe_airbyte_reconcile_mismatches{table_name="users",target="local"}'), '2', 'users: two keys differ');

# the remote target: the same per-service series, labelled target="svc_a",
# with its own values (not local's)
for my $m ('dfe_airbyte_slot_status_code{slot_name="airbyte_slot",%s}',
	'dfe_airbyte_slot_retained_bytes{slot_name="airbyte_slot",%s}',
	'dfe_airbyte_slot_status_is{slot_name="airbyte_slot",status="ok",%s}',
	'dfe_airbyte_sync_stale{%s}', 'dfe_airbyte_sync_last_job_failed{%s}',
	'dfe_airbyte_sync_seconds_since_last_success{%s}', 'dfe_airbyte_resync_pending{%s}',
	'dfe_airbyte_last_deploy_failed{%s}', 'dfe_airbyte_policy_tags_failures_last_hour{%s}',
	'dfe_airbyte_target_reachable{%s}')
{
	my @both = map { sprintf($m, "target=\"$_\"") } qw(local svc_a);
	is(scalar(grep { defined $s->{$_} } @both), 2, "a series per target: @both");
}
# svc_a's own values, beside local's above
for my $e (
	[ 'slot_status_code{slot_name="airbyte_slot",target="svc_a"}', '0', "svc_a's slot: ok" ],
	[ 'slot_limit_bytes{slot_name="airbyte_slot",target="svc_a"}', '-1', "svc_a's slot: no live limit (remote rows have none)" ],
	[ 'sync_last_job_failed{target="svc_a"}', '0', "svc_a's newest sync succeeded" ],
	[ 'last_deploy_failed{target="svc_a"}', '0', "svc_a's newest deploy succeeded" ],
	[ 'last_deploy_state_is{state="succeeded",target="svc_a"}', '1', 'svc_a: deploy one-hot: succeeded' ],
	[ 'policy_tags_failures_last_hour{target="svc_a"}', '0', 'svc_a: no policy tag failure' ],
	[ 'reconcile_mismatch{table_name="users",target="svc_a"}', '0', 'svc_a: users match' ],
	[ 'target_reachable{target="svc_a"}', '1', 'svc_a: reached by the guard' ],
	[ 'target_reachable{target="local"}', '1', 'local: reachable' ],
	[ 'events_last_hour{kind="policy_tags_failed",severity="warning",target="local"}', '1', 'events carry their target' ])
{
	is(value($s, "dfe_airbyte_$e->[0]"), $e->[1], $e->[2]);
}
cmp_ok(value($s, 'dfe_airbyte_sync_seconds_since_last_success{target="svc_a"}') // -1, '>', 0,
	"svc_a: seconds since its own last success");
ok(!grep({ /^dfe_airbyte_workers?_/ && /target=/ } keys %$s), "the workers' series have no target");

my @workers = grep { /^dfe_airbyte_worker_running\{backend_type="dfe_airbyte[^"]*"\}$/ } keys %$s;
cmp_ok(scalar(@workers), '>=', 1, 'each worker type is a series: ' . join(' ', @workers));
is(value($s, 'dfe_airbyte_workers_running'), $node->safe_psql('postgres',
		q{SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'dfe\_airbyte%'}),
	'workers_running counts the dfe_airbyte workers');
like($text, qr/^dfe_airbyte_slot_retained_bytes\{(server="[^"]*",)?slot_name="airbyte_slot",target="local"\} /m,
	'byte gauges carry the slot name and no status label');

# --- the slot passes its limit: the same series, the status gauges move ---------
my $before = dfe_series($s);
$node->safe_psql('postgres', q{ALTER SYSTEM SET dfe_airbyte.max_slot_wal_size = 1; SELECT pg_reload_conf();});
$node->safe_psql('postgres', q{CREATE TABLE filler AS SELECT g, repeat('x', 500) AS pad FROM generate_series(1, 20000) g});
ok(DfeTest::poll_until($node,
		"SELECT status FROM dfe_airbyte.replication_slot_health WHERE target = 'local' AND slot_name = 'airbyte_slot'", 'critical'),
	'the slot is critical');
for (1 .. 100)
{
	($s) = scrape();
	last if (value($s, 'dfe_airbyte_slot_status_code{slot_name="airbyte_slot",target="local"}') // '') eq '3';
	usleep(200_000);
}
is(value($s, 'dfe_airbyte_slot_status_code{slot_name="airbyte_slot",target="local"}'), '3', 'status code 3 (critical)');
is(value($s, 'dfe_airbyte_slot_status_is{slot_name="airbyte_slot",status="critical",target="local"}'), '1', 'one-hot: critical 1');
is(value($s, 'dfe_airbyte_slot_status_is{slot_name="airbyte_slot",status="ok",target="local"}'), '0', 'one-hot: ok 0');
is_deeply(dfe_series($s), $before, 'every series keeps its labels when the status changes');
is(value($s, 'pg_exporter_last_scrape_error'), '0', 'still no scrape error');

# --- the slot is dropped (lost): most of its columns are NULL now; the same series -
$node->safe_psql('postgres', q{SELECT pg_drop_replication_slot('airbyte_slot')});
for (1 .. 100)
{
	($s) = scrape();
	last if (value($s, 'dfe_airbyte_slot_status_code{slot_name="airbyte_slot",target="local"}') // '') eq '4';
	usleep(200_000);
}
is(value($s, 'dfe_airbyte_slot_status_code{slot_name="airbyte_slot",target="local"}'), '4', 'status code 4 (lost)');
is(value($s, 'dfe_airbyte_slot_status_is{slot_name="airbyte_slot",status="lost",target="local"}'), '1', 'one-hot: lost 1');
is(value($s, 'dfe_airbyte_slot_status_is{slot_name="airbyte_slot",status="critical",target="local"}'), '0', 'one-hot: critical 0');
is_deeply(dfe_series($s), $before, 'every series keeps its labels when the slot is lost');
unlike(slurp_file($exporter_log), qr/error running query|level=error/i, 'still no query error in the log');

kill 'TERM', $pid;
waitpid($pid, 0);
$pid = undef;

# --- promtool: the alert rules are valid and their unit tests pass ------------
for my $cmd ([ 'check', 'rules', "$top/monitoring/alerts.yml" ],
	[ 'test', 'rules', "$top/monitoring/alerts_test.yml" ])
{
	my ($stdout, $stderr) = ('', '');
	my $ok = IPC::Run::run([ $promtool, @$cmd ], '>', \$stdout, '2>', \$stderr);
	ok($ok, "promtool @$cmd[0..1] " . ($cmd->[2] =~ s{.*/}{}r)) or diag("$stdout\n$stderr");
}

done_testing();
