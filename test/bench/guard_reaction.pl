# The measuring half of test/bench/guard_reaction.sh (see there).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Time::HiRes qw(time sleep);
use DfeTest;
use FakeServer;

# PostgreSQL::Test::Utils sends STDOUT to its log file: report on the terminal
my $out = Test::More->builder->output;
sub report { my $fmt = shift; print $out sprintf($fmt, @_) }

my $trials = $ENV{BENCH_TRIALS} || 10;
my $interval = $ENV{BENCH_CHECK_INTERVAL} || 1;
my $MB = 1024 * 1024;

my $fake = FakeServer->start;
$fake->config(job_pending_seconds => 0.1, job_running_seconds => 0.3);
my $dead = FakeServer->start;
my $dead_url = $dead->url;
$dead->stop;

my $node = DfeTest::new_node('bench',
	init => { extra => ['--wal-segsize=1'] },
	conf => <<"CONF");
log_statement = none
log_min_messages = warning
dfe_airbyte.check_interval = ${interval}s
dfe_airbyte.max_slot_wal_size = 4MB
# warn until the slot exists: under recreate the guard would create a
# missing slot itself if it looked first
dfe_airbyte.slot_limit_action = warn
dfe_airbyte.max_slot_recreations_per_day = 100
dfe_airbyte.airbyte_url = '@{[ $fake->url ]}'
dfe_airbyte.airbyte_client_id = 'test-client'
dfe_airbyte.airbyte_client_secret = 'test-secret-value'
dfe_airbyte.connection_id = '@{[ $fake->config->{connection_id} ]}'
dfe_airbyte.http_max_retries = 0
dfe_airbyte.http_connect_timeout = 30s
dfe_airbyte.http_timeout = 600s
min_wal_size = 2MB
max_wal_size = 64MB
CONF
my $net = DfeTest::wait_for_worker($node);
DfeTest::wait_for_guard($node);
sub sql { return $node->safe_psql('postgres', $_[0]); }
sql("SELECT pg_create_logical_replication_slot('airbyte_slot', 'pgoutput')");
sql("ALTER SYSTEM SET dfe_airbyte.slot_limit_action = 'recreate'");
sql('SELECT pg_reload_conf()');
sleep 2;    # the guard reloads on SIGHUP, then checks every second
DfeTest::poll_until($node, "SELECT count(*) > 0 FROM dfe_airbyte.slot_samples", 't');

sub set_url
{
	sql("ALTER SYSTEM SET dfe_airbyte.airbyte_url = '$_[0]'");
	$node->reload;
}

# one crossing of the limit: seconds until the guard's slot_recreated event
sub trial
{
	# earlier recreations count as done re-syncs (the no-loop rule aside)
	sql(q{UPDATE dfe_airbyte.slot_recreations SET resync_state = 'started', resync_job_status = 'succeeded',
	          resync_finished_at = now() WHERE resync_finished_at IS NULL});
	my $ev = sql("SELECT coalesce(max(id), 0) FROM dfe_airbyte.events");
	# cross at a random point of the guard's cycle (else every trial starts
	# just after the previous recreation and measures the same phase)
	sleep(rand($interval));
	# 3 MB (under the 4 MB limit), then the crossing: 3 MB in one statement,
	# timed from just before it
	sql(join ";\n", ("SELECT pg_logical_emit_message(false, 'pad', repeat('x', $MB))") x 3);
	my $t0 = sql("SELECT clock_timestamp()");
	sql("SELECT pg_logical_emit_message(false, 'pad', repeat('x', 3 * $MB))");
	my $deadline = time + 120;
	while (time < $deadline)
	{
		my $s = sql("SELECT extract(epoch FROM at - '$t0'::timestamptz) FROM dfe_airbyte.events
		             WHERE id > $ev AND kind = 'slot_recreated' ORDER BY id LIMIT 1");
		return $s if $s ne '';
		sleep 0.05;
	}
	return undef;
}

my %results;
my @modes = ('no outage', 'Airbyte hangs', 'connection refused', 'DNS fails');
for my $mode (@modes)
{
	if ($mode eq 'Airbyte hangs')
	{
		$fake->faults({ path => '^/api/', kind => 'hang', times => 100000 });
		my $mark = $fake->mark;
		sql('SELECT dfe_airbyte_deploy()');
		for (1 .. 600)
		{
			last if grep { ($_->{fault} // '') eq 'hang' } @{ $fake->requests(since => $mark) };
			sleep 0.1;
		}
	}
	elsif ($mode eq 'connection refused')
	{
		set_url($dead_url);
		$fake->clear_faults;
		sql("SELECT pg_terminate_backend($net)");    # ends the hanging call
		$net = DfeTest::wait_for_worker($node, $net);
	}
	elsif ($mode eq 'DNS fails')
	{
		set_url('http://airbyte.invalid:8080');
	}
	$results{$mode} = [ map { trial() } 1 .. $trials ];
}

sub median { my @s = sort { $a <=> $b } @_; return $s[ int($#s / 2) ]; }
sub max { my $m = shift; for (@_) { $m = $_ if $_ > $m } return $m; }

report("slot guard reaction time (check_interval = %d s, %d trials each, slot_limit_action = recreate)\n",
	$interval, $trials);
report("%-20s %10s %10s %14s\n", 'Airbyte', 'median s', 'max s', 'max/interval');
for my $mode (@modes)
{
	my @r = grep { defined } @{ $results{$mode} };
	if (@r < $trials)
	{
		report("%-20s %d of %d trials saw no recreation within 120 s\n", $mode, $trials - @r, $trials);
		next;
	}
	report("%-20s %10.2f %10.2f %14.2f\n", $mode, median(@r), max(@r), max(@r) / $interval);
}
$node->stop;
$fake->stop;
