# The slot guard acts whatever Airbyte does: with every
# outside call hanging (a deploy stuck in a hanging HTTP call), refused
# (closed port) or failing DNS (airbyte.invalid), the guard still reports the
# limit and recreates the slot, within generous deadlines; the guard process
# is never restarted and never calls out.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use DfeTest;
use FakeServer;

my $MB = 1024 * 1024;
# the fake server's hang lasts this long (HANG_SECONDS in test/fake/faults.py)
my $HANG_SECONDS = 120;
# generous: the requirement is two check_intervals (2 s here)
my $DEADLINE = 60;

my $fake = FakeServer->start;
my $conn_id = $fake->config->{connection_id};

# a port where nobody listens (for as long as $dead lives)
my ($dead_url, $dead) = FakeServer::dead_url();

my $node = DfeTest::new_node('guard',
	init => { extra => ['--wal-segsize=1'] },
	conf => <<"CONF");
dfe_airbyte.check_interval = 1s
dfe_airbyte.max_slot_wal_size = 4MB
# warn until the test has created the slot: under recreate the guard would
# create a missing slot itself if it looked first
dfe_airbyte.slot_limit_action = warn
dfe_airbyte.max_slot_recreations_per_day = 100
dfe_airbyte.airbyte_url = '@{[ $fake->url ]}'
dfe_airbyte.airbyte_client_id = 'test-client'
dfe_airbyte.airbyte_client_secret = 'test-secret-value'
dfe_airbyte.connection_id = '$conn_id'
dfe_airbyte.http_max_retries = 0
dfe_airbyte.http_connect_timeout = 30s
dfe_airbyte.http_timeout = 600s
min_wal_size = 2MB
max_wal_size = 64MB
CONF
my $net = DfeTest::wait_for_worker($node);
my $guard = DfeTest::wait_for_guard($node);

sub sql { return $node->safe_psql('postgres', $_[0]); }

sub set_conf
{
	my (%kv) = @_;
	sql("ALTER SYSTEM SET $_ = '$kv{$_}'") for sort keys %kv;
	$node->reload;
}

# about $mb MB of WAL nobody consumes
sub grow_wal
{
	my ($mb) = @_;
	sql(join ";\n",
		("SELECT pg_logical_emit_message(false, 'pad', repeat('x', $MB))") x $mb);
}

# from a fresh slot, past the 4 MB limit: 3 MB, then (the crossing) 3 MB in
# one statement; returns the server time just before that statement
sub cross_limit
{
	grow_wal(3);
	my $t0 = sql("SELECT clock_timestamp()");
	sql("SELECT pg_logical_emit_message(false, 'pad', repeat('x', 3 * $MB))");
	return $t0;
}

# wait for the first event of $kind after event id $since; returns (id, seconds after $t0)
sub wait_event
{
	my ($kind, $since, $t0, $extra) = @_;
	$extra //= 'true';
	my $deadline = time + $DEADLINE;
	while (time < $deadline)
	{
		my $got = sql(
			"SELECT id || ' ' || round(extract(epoch FROM at - '$t0'::timestamptz)::numeric, 2)
			 FROM dfe_airbyte.events WHERE kind = '$kind' AND id > $since AND $extra ORDER BY id LIMIT 1");
		return split / /, $got if $got ne '';
		usleep(100_000);
	}
	return (undef, undef);
}

sub last_event_id { return sql("SELECT coalesce(max(id), 0) FROM dfe_airbyte.events"); }

# the recreations so far stand for finished re-syncs (as if Airbyte had
# done them), so that the no-loop rule does not hold the next one back
sub finish_resyncs
{
	sql(q{UPDATE dfe_airbyte.slot_recreations SET resync_state = 'started', resync_job_status = 'succeeded',
	          resync_finished_at = now() WHERE resync_finished_at IS NULL});
}

sql("SELECT pg_create_logical_replication_slot('airbyte_slot', 'pgoutput')");
sql("ALTER SYSTEM SET dfe_airbyte.slot_limit_action = 'recreate'");
sql('SELECT pg_reload_conf()');
# the guard reloads on SIGHUP at the start of its next round
DfeTest::wait_for_worker_loops($node, 'guard', 2);
ok(DfeTest::poll_until($node,
	"SELECT count(*) > 0 FROM dfe_airbyte.slot_samples WHERE slot_name = 'airbyte_slot'", 't'),
	'the guard samples the slot');

# ---- 1. every Airbyte call hangs; a deploy is stuck in one
$fake->faults({ path => '^/api/', kind => 'hang', times => 1000 });
my $mark = $fake->mark;
my $deploy = sql('SELECT dfe_airbyte_deploy()');
my $hanging;
for (1 .. 600)
{
	($hanging) = grep { ($_->{fault} // '') eq 'hang' } @{ $fake->requests(since => $mark) };
	last if $hanging;
	usleep(100_000);
}
ok($hanging, "the network worker is stuck in a hanging call ($hanging->{method} $hanging->{path})");
is(sql("SELECT state FROM dfe_airbyte.deploys WHERE id = $deploy"), 'running', 'the deploy is running');

# the guard holds no socket at all (no connection, no DNS lookup), while the
# network worker holds the hanging connection
sub sockets
{
	my ($pid) = @_;
	opendir(my $dh, "/proc/$pid/fd") or return -1;
	my $n = grep { (readlink("/proc/$pid/fd/$_") // '') =~ /^socket:/ } readdir($dh);
	closedir($dh);
	return $n;
}
SKIP:
{
	skip 'no /proc', 2 unless -d "/proc/$guard/fd";
	is(sockets($guard), 0, 'the guard process has no socket open');
	ok(sockets($net) > 0, 'the network worker has its (hanging) connection open');
}

my $ev = last_event_id();
my $t0 = cross_limit();
my ($id, $secs) = wait_event('slot_recreated', $ev, $t0);
ok(defined $id, 'over the limit during the hang: the guard recreated the slot');
my $hang_age = time - $hanging->{time};
ok($hang_age < $HANG_SECONDS, sprintf('... while the call still hung (%.1f s into a %d s hang)', $hang_age, $HANG_SECONDS));
is(sql("SELECT state FROM dfe_airbyte.deploys WHERE id = $deploy"), 'running', '... and the deploy was still stuck');
ok(defined $secs && $secs < $DEADLINE, "reaction time during the hang: $secs s (check_interval 1 s)");
diag("guard reaction, every Airbyte call hanging: $secs s");
is(sql("SELECT resync_state FROM dfe_airbyte.slot_recreations ORDER BY id DESC LIMIT 1"), 'pending',
	'the re-sync waits for the network worker');
ok(sql("SELECT retained_bytes < 4 * $MB FROM dfe_airbyte.replication_slot_health WHERE slot_name = 'airbyte_slot'") eq 't',
	'the WAL was released');

# passing the limit again while that re-sync is pending: a warning, no second recreation
$ev = last_event_id();
$t0 = cross_limit();
($id, $secs) = wait_event('slot_limit_exceeded', $ev, $t0, "data->>'recreate_held' = 'resync_running'");
ok(defined $id, 'during the hang, with the re-sync pending: the limit is reported, the recreation held back');
ok(time - $hanging->{time} < $HANG_SECONDS, '... still during the hang');
is(sql('SELECT count(*) FROM dfe_airbyte.slot_recreations'), '1', '... and nothing recreated');

# ---- 2. connection refused
set_conf('dfe_airbyte.airbyte_url' => $dead_url);
$fake->clear_faults;
# the stuck call ends with the network worker; it comes back with the new URL
sql("SELECT pg_terminate_backend($net)");
$net = DfeTest::wait_for_worker($node, $net);
# the slot is still over the limit from the held-back crossing: once the
# re-sync counts as done, the guard recreates it
$ev = last_event_id();
finish_resyncs();
($id) = wait_event('slot_recreated', $ev, sql('SELECT now()'));
ok(defined $id, 'the held-back recreation happens once the re-sync has ended');
finish_resyncs();
$ev = last_event_id();
$t0 = cross_limit();
($id, $secs) = wait_event('slot_recreated', $ev, $t0);
ok(defined $id, 'Airbyte refusing connections: the guard recreated the slot');
ok(defined $secs && $secs < $DEADLINE, "reaction time, connection refused: $secs s");
diag("guard reaction, connection refused: $secs s");
ok(DfeTest::poll_until($node,
	"SELECT resync_attempts > 0 AND resync_last_error IS NOT NULL FROM dfe_airbyte.slot_recreations ORDER BY id DESC LIMIT 1",
	't', $DEADLINE), 'the network worker tried Airbyte and failed');

# ---- 3. DNS failure
set_conf('dfe_airbyte.airbyte_url' => 'http://airbyte.invalid:8080');
finish_resyncs();
$ev = last_event_id();
$t0 = cross_limit();
($id, $secs) = wait_event('slot_recreated', $ev, $t0);
ok(defined $id, 'Airbyte host name not resolving: the guard recreated the slot');
ok(defined $secs && $secs < $DEADLINE, "reaction time, DNS failure: $secs s");
diag("guard reaction, DNS failure: $secs s");
ok(DfeTest::poll_until($node,
	"SELECT resync_last_error ~* 'resolve|host' FROM dfe_airbyte.slot_recreations ORDER BY id DESC LIMIT 1",
	't', $DEADLINE), 'the network worker could not resolve the host') or
	diag(sql("SELECT resync_last_error FROM dfe_airbyte.slot_recreations ORDER BY id DESC LIMIT 1"));

# the guard was never restarted and never tried to call out
is(sql("SELECT pid FROM dfe_airbyte.workers WHERE worker = 'guard'"), $guard, 'the same guard process throughout');
my $log = slurp_file($node->logfile);
unlike($log, qr/the slot guard worker may not call out/, 'the guard never tried to call out');
unlike($log, qr/test-secret-value/, 'no secret in the server log');
unlike($log, qr/PANIC|terminated by signal/, 'no crash');

$node->stop;
$fake->stop;
done_testing();
