# The slot guard: samples, the health view's status transitions,
# warn / terminate / recreate on the Airbyte slot, the full re-sync request
# (exactly one accepted per recreation, also when Airbyte answers 503 or is
# down at first), lost and missing slots, other slots never touched, the
# worker coming back after pg_terminate_backend.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use CPAN::Meta::YAML;
use Time::HiRes qw(usleep);
use DfeTest;
use FakeServer;

my $MB = 1024 * 1024;

my $fake = FakeServer->start;
$fake->config(job_pending_seconds => 0.1, job_running_seconds => 0.3);
my $conn_id = $fake->config->{connection_id};

# a URL where nobody answers (for as long as $dead lives)
my ($dead_url, $dead) = FakeServer::dead_url();

my $node = DfeTest::new_node('slots',
	init => { extra => ['--wal-segsize=1'] },
	conf => <<"CONF");
dfe_airbyte.check_interval = 1s
dfe_airbyte.max_slot_wal_size = 4MB
dfe_airbyte.slot_limit_action = warn
# this test recreates the slot five times (test/t/033_no_loop.pl tests the cap)
dfe_airbyte.max_slot_recreations_per_day = 100
dfe_airbyte.airbyte_url = '$dead_url'
dfe_airbyte.airbyte_client_id = 'test-client'
dfe_airbyte.airbyte_client_secret = 'test-secret-value'
dfe_airbyte.connection_id = '$conn_id'
dfe_airbyte.http_max_retries = 0
dfe_airbyte.http_connect_timeout = 2s
dfe_airbyte.http_timeout = 5s
min_wal_size = 2MB
max_wal_size = 64MB
CONF
DfeTest::wait_for_worker($node);

sub sql { return $node->safe_psql('postgres', $_[0]); }

sub set_conf
{
	my (%kv) = @_;
	sql("ALTER SYSTEM SET $_ = '$kv{$_}'") for sort keys %kv;
	$node->reload;
}

# about $mb MB of WAL that nobody consumes
sub grow_wal
{
	my ($mb) = @_;
	sql(join ";\n",
		("SELECT pg_logical_emit_message(false, 'pad', repeat('x', $MB))") x $mb);
}

sub health
{
	my ($slot, $cols) = @_;
	return sql("SELECT $cols FROM dfe_airbyte.replication_slot_health WHERE slot_name = '$slot'");
}

sub events { return sql("SELECT count(*) FROM dfe_airbyte.events WHERE kind = '$_[0]'"); }

sub wait_for
{
	my ($sql, $want, $what) = @_;
	ok(DfeTest::poll_until($node, $sql, $want, 60), $what);
}

# The previous recreation's refresh job must end before the next recreation
# asks: asked while a job runs, Airbyte only queues the refresh for the next
# job it creates ({"job":null}), and nothing creates one here.
sub jobs_ended
{
	my ($what) = @_;
	my $deadline = time + 60;
	my @running;
	while (time < $deadline)
	{
		@running = grep { $_->{status} !~ /^(succeeded|failed|cancelled)$/ }
		  @{ $fake->control(GET => '/airbyte/jobs')->{jobs} };
		last unless @running;
		usleep(100_000);
	}
	is(scalar(@running), 0, "$what has ended");
}

# newest recreation id so far: later waits look only at rows after it
sub rec_mark { return sql("SELECT coalesce(max(id), 0) FROM dfe_airbyte.slot_recreations"); }

# refresh requests since $since (with answer $status); the fake records a
# request's status just after answering it, so wait until all are recorded
sub refreshes
{
	my ($since, $status) = @_;
	my $reqs;
	for (1 .. 50)
	{
		$reqs = $fake->requests(since => $since, method => 'POST',
			path => qr{^/api/v1/connections/refresh$});
		last unless grep { !defined $_->{status} } @$reqs;
		usleep(100_000);
	}
	return scalar grep { !defined $status || ($_->{status} // 0) == $status } @$reqs;
}

sql("CREATE TABLE hold (x int); CREATE PUBLICATION pub FOR TABLE hold");
# other_slot first: it retains everything from here on and must never be touched
sql("SELECT pg_create_logical_replication_slot('other_slot', 'pgoutput')");
my $other_restart = sql("SELECT restart_lsn FROM pg_replication_slots WHERE slot_name = 'other_slot'");
sql("SELECT pg_create_logical_replication_slot('airbyte_slot', 'pgoutput')");

# A transaction that has written and stays open keeps the slot's restart_lsn
# behind it even while a consumer is attached (needed for terminate below).
my $holder = $node->background_psql('postgres');
$holder->query_safe("BEGIN; INSERT INTO hold VALUES (1)");

# ---- samples and ok -> warning -> critical under warn
wait_for("SELECT count(DISTINCT slot_name) FROM dfe_airbyte.slot_samples", '2',
	'the worker samples both slots');
is(health('airbyte_slot', 'status'), 'ok', 'fresh slot is ok');
is(health('airbyte_slot', 'limit_bytes'), 4 * $MB, 'limit shown for the Airbyte slot');
is(health('other_slot', 'limit_bytes'), '', 'no limit for other slots');

grow_wal(3);
sql("SELECT pg_switch_wal()");
wait_for(q{SELECT status FROM dfe_airbyte.replication_slot_health WHERE slot_name = 'airbyte_slot'},
	'warning', 'status warning past 80% of the limit');
like(health('airbyte_slot', 'hint'), qr/of dfe_airbyte.max_slot_wal_size/, 'warning hint');
is(events('slot_limit_exceeded'), '0', 'no event below the limit');

grow_wal(2);
wait_for(q{SELECT status FROM dfe_airbyte.replication_slot_health WHERE slot_name = 'airbyte_slot'},
	'critical', 'status critical past the limit');
wait_for("SELECT count(*) FROM dfe_airbyte.events WHERE kind = 'slot_limit_exceeded'", '1',
	'one slot_limit_exceeded event');
ok(health('airbyte_slot', 'fraction_used') > 1, 'fraction_used above 1');
like(health('airbyte_slot', 'hint'), qr/more than dfe_airbyte.max_slot_wal_size/, 'critical hint');
my $samples = sql("SELECT count(*) FROM dfe_airbyte.slot_samples");
wait_for("SELECT count(*) > $samples + 6 FROM dfe_airbyte.slot_samples", 't', 'sampling goes on');
is(events('slot_limit_exceeded'), '1', 'warned once per crossing, not every check');
ok($node->log_contains('WARNING:  dfe_airbyte: replication slot "airbyte_slot" retains'),
	'the warning is in the server log');
is(sql("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'airbyte_slot'"), '1',
	'warn does not touch the slot');

# ---- inactive, growth and time to limit from (backdated) samples
sql(q{UPDATE dfe_airbyte.slot_state SET first_seen_at = now() - interval '2 hours'
      WHERE slot_name = 'other_slot'});
sql(q{INSERT INTO dfe_airbyte.slot_samples (sampled_at, slot_name, active, retained_bytes)
      SELECT now() - make_interval(mins => m), 'other_slot', false, (50 - m) * 10000
      FROM generate_series(10, 50, 10) m});
is(health('other_slot', 'status'), 'inactive', 'a slot nobody used for long is inactive');
like(health('other_slot', 'hint'), qr/pg_drop_replication_slot\('other_slot'\)/, 'inactive hint');
ok(health('other_slot', 'growth_bytes_per_hour') > 0, 'growth estimated from the samples');
is(health('other_slot', 'time_to_limit'), '', 'no time to limit without a limit');

# ---- terminate: the consumer attached to the slot is ended
my ($rl_out, $rl_err) = ('', '');
my $recvlogical = IPC::Run::start(
	[ 'pg_recvlogical', '-d', $node->connstr('postgres'), '--slot', 'airbyte_slot',
	  '--start', '--no-loop', '-f', '/dev/null', '-o', 'proto_version=1',
	  '-o', 'publication_names=pub' ],
	'>', \$rl_out, '2>', \$rl_err);
wait_for(q{SELECT active FROM pg_replication_slots WHERE slot_name = 'airbyte_slot'}, 't',
	'pg_recvlogical uses the slot');
my $consumer_pid = sql(q{SELECT active_pid FROM pg_replication_slots WHERE slot_name = 'airbyte_slot'});
wait_for(q{SELECT last_active_at IS NOT NULL FROM dfe_airbyte.replication_slot_health WHERE slot_name = 'airbyte_slot'},
	't', 'last_active_at while active');
is(health('airbyte_slot', 'status'), 'critical', 'still over the limit with a consumer attached');

set_conf('dfe_airbyte.slot_limit_action' => 'terminate');
wait_for("SELECT count(*) FROM dfe_airbyte.events WHERE kind = 'slot_walsender_terminated'", '1',
	'terminate event');
is(sql(q{SELECT (data->>'active_pid')::int FROM dfe_airbyte.events WHERE kind = 'slot_walsender_terminated'}),
	$consumer_pid, 'the event names the walsender');
for (1 .. 300)
{
	last unless $recvlogical->pumpable;
	$recvlogical->pump_nb;
	usleep(100_000);
}
ok(!$recvlogical->pumpable, 'pg_recvlogical exited');
$recvlogical->finish;
like($rl_err, qr/terminat|unexpected|closed/i, 'pg_recvlogical saw its connection end');
is(sql("SELECT count(*) FROM pg_stat_activity WHERE pid = $consumer_pid"), '0',
	'walsender gone');
is(sql("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'airbyte_slot'"), '1',
	'terminate keeps the slot');
is(events('slot_limit_exceeded'), '2', 'a new action is a new notice');

# other slots: never touched, even far over the limit
is(sql("SELECT restart_lsn FROM pg_replication_slots WHERE slot_name = 'other_slot'"), $other_restart,
	'other_slot untouched');
ok(sql("SELECT retained_bytes FROM dfe_airbyte.replication_slot_health WHERE slot_name = 'other_slot'") > 4 * $MB,
	'other_slot is over the limit too');

# slot creation waits for transactions that have written: let it go now
$holder->query_safe('COMMIT');
$holder->quit;

# ---- recreate, Airbyte answering 503 three times first
set_conf('dfe_airbyte.airbyte_url' => $fake->url);
$fake->faults({ method => 'POST', path => '^/api/v1/connections/refresh$', status => 503, times => 3 });
my $mark = $fake->mark;
my $retained_before = health('airbyte_slot', 'retained_bytes');
set_conf('dfe_airbyte.slot_limit_action' => 'recreate');
wait_for(q{SELECT string_agg(resync_state, ',') FROM dfe_airbyte.slot_recreations}, 'started',
	'full re-sync started after the 503s');
ok(health('airbyte_slot', 'retained_bytes') < $retained_before / 4, 'recreate released the WAL');
is(health('airbyte_slot', 'status'), 'ok', 'recreated slot is ok');
is(health('airbyte_slot', 'plugin'), 'pgoutput', 'same plugin');
is(sql("SELECT reason || ' ' || resync_attempts FROM dfe_airbyte.slot_recreations"), 'over_limit 4',
	'one recreation, four attempts');
is(refreshes($mark), 4, 'four refresh requests');
is(refreshes($mark, 200), 1, 'exactly one accepted refresh');
my ($req) = grep { ($_->{status} // 0) == 200 } @{ $fake->requests(since => $mark, path => qr{/connections/refresh$}) };
is($req->{json}{refreshMode}, 'Merge', 'refresh keeps the data (Merge)');
is($req->{json}{connectionId}, $conn_id, 'refresh of our connection');
is(sql("SELECT resync_job_id IS NOT NULL FROM dfe_airbyte.slot_recreations"), 't', 'job id recorded');
is(events('slot_recreated'), '1', 'slot_recreated event');
is(events('full_resync_failed'), '1', 'one failure event, not one per attempt');
is(events('full_resync_started'), '1', 'full_resync_started event');
DfeTest::wait_for_worker_loops($node, 'network', 2);
is(refreshes($mark, 200), 1, 'still exactly one accepted refresh a few checks later');

# growth and time to limit for the Airbyte slot (backdated samples of this incarnation)
grow_wal(1);
wait_for(q{SELECT count(*) > 0 FROM dfe_airbyte.slot_samples WHERE slot_name = 'airbyte_slot' AND retained_bytes > 900000},
	't', 'sampled after 1 MB more');
sql(q{DELETE FROM dfe_airbyte.slot_samples WHERE slot_name = 'airbyte_slot' AND retained_bytes < 900000});
sql(q{UPDATE dfe_airbyte.slot_state SET first_seen_at = now() - interval '2 hours'
      WHERE slot_name = 'airbyte_slot'});
sql(q{INSERT INTO dfe_airbyte.slot_samples (sampled_at, slot_name, active, retained_bytes)
      SELECT now() - make_interval(mins => m), 'airbyte_slot', false, (50 - m) * 20000
      FROM generate_series(10, 50, 10) m});
ok(health('airbyte_slot', 'growth_bytes_per_hour') > 0, 'Airbyte slot growth estimated');
like(health('airbyte_slot', 'time_to_limit'), qr/^\d+:\d\d:\d\d$/, 'time to limit estimated');

# ---- recreate while Airbyte is down: pending, retried, accepted once when it is back
# (the first re-sync followed to its end first: while the network worker
# cannot read its job, the guard rightly holds any new recreation)
wait_for(q{SELECT bool_and(resync_finished_at IS NOT NULL) FROM dfe_airbyte.slot_recreations}, 't',
	'the first re-sync is followed to its end');
set_conf('dfe_airbyte.airbyte_url' => $dead_url);
$mark = $fake->mark;
my $rec = rec_mark();
grow_wal(5);
wait_for("SELECT resync_attempts >= 3 FROM dfe_airbyte.slot_recreations WHERE id > $rec", 't',
	'Airbyte down: re-sync retried every check');
is(sql("SELECT resync_state FROM dfe_airbyte.slot_recreations WHERE id > $rec"), 'pending',
	'still pending while Airbyte is down');
like(health('airbyte_slot', 'hint'), qr/has not yet accepted the full re-sync/, 'the view says a re-sync is pending');
is(events('full_resync_failed'), '2', 'one failure event for this recreation');
set_conf('dfe_airbyte.airbyte_url' => $fake->url);
wait_for("SELECT resync_state FROM dfe_airbyte.slot_recreations WHERE id > $rec", 'started',
	'full re-sync started once Airbyte is back');
DfeTest::wait_for_worker_loops($node, 'network', 2);
is(refreshes($mark), 1, 'Airbyte got exactly one refresh');
is(refreshes($mark, 200), 1, 'and accepted it');
is(events('slot_recreated'), '2', 'second recreation recorded');

# ---- an invalidated slot: lost, reported under warn, recreated under recreate
set_conf('dfe_airbyte.slot_limit_action' => 'warn', 'dfe_airbyte.max_slot_wal_size' => '-1',
	'max_slot_wal_keep_size' => '2MB');
wait_for(q{SELECT server_limit_bytes FROM dfe_airbyte.replication_slot_health WHERE slot_name = 'airbyte_slot'},
	2 * $MB, 'max_slot_wal_keep_size shown as the server backstop');
grow_wal(4);
sql('CHECKPOINT');
wait_for(q{SELECT status FROM dfe_airbyte.replication_slot_health WHERE slot_name = 'airbyte_slot'},
	'lost', 'invalidated slot is lost');
wait_for("SELECT count(*) FROM dfe_airbyte.events WHERE kind = 'slot_lost'", '1', 'slot_lost event');
like(health('airbyte_slot', 'hint'), qr/invalidated by max_slot_wal_keep_size/, 'lost hint');
$mark = $fake->mark;
$rec = rec_mark();
set_conf('dfe_airbyte.slot_limit_action' => 'recreate');
wait_for("SELECT reason || ' ' || resync_state FROM dfe_airbyte.slot_recreations WHERE id > $rec",
	'lost started', 'lost slot recreated and re-sync started');
is(health('airbyte_slot', 'wal_status'), 'reserved', 'new slot is usable');
is(refreshes($mark, 200), 1, 'one accepted refresh for the lost slot');
is(sql("SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'other_slot'"), 'lost',
	'other_slot was invalidated by the server ...');
is(health('other_slot', 'status'), 'lost', '... and is reported lost ...');
is(sql("SELECT count(*) FROM dfe_airbyte.slot_recreations WHERE slot_name <> 'airbyte_slot'"), '0',
	'... but never recreated');
set_conf('max_slot_wal_keep_size' => '-1');

# ---- a dropped Airbyte slot is recreated; a slot that never existed is created
jobs_ended('the lost slot\'s refresh job');
$mark = $fake->mark;
$rec = rec_mark();
sql("SELECT pg_drop_replication_slot('airbyte_slot')");
wait_for("SELECT reason || ' ' || resync_state FROM dfe_airbyte.slot_recreations WHERE id > $rec",
	'missing started', 'dropped slot recreated');
$rec = rec_mark();
is(sql("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'airbyte_slot'"), '1', 'it exists again');
jobs_ended('the dropped slot\'s refresh job');
set_conf('dfe_airbyte.slot_name' => 'fresh_slot');
wait_for("SELECT count(*) FROM dfe_airbyte.events WHERE kind = 'slot_created'", '1',
	'never-seen slot created under recreate');
wait_for("SELECT slot_name || ' ' || resync_state FROM dfe_airbyte.slot_recreations WHERE id > $rec",
	'fresh_slot started', 'with its re-sync');
is(refreshes($mark, 200), 2, 'one accepted refresh per recreation');
set_conf('dfe_airbyte.slot_name' => 'airbyte_slot', 'dfe_airbyte.slot_limit_action' => 'warn');

# ---- the guard terminated: it comes back and sampling goes on
my $pid = DfeTest::wait_for_guard($node);
sql("SELECT pg_terminate_backend($pid)");
my $new_pid = DfeTest::wait_for_guard($node, $pid);
isnt($new_pid, $pid, 'guard restarted');
my $last = sql("SELECT max(sampled_at) FROM dfe_airbyte.slot_samples");
wait_for("SELECT max(sampled_at) > '$last' FROM dfe_airbyte.slot_samples", 't',
	'sampling continues after the restart');

# ---- bounded history
set_conf('dfe_airbyte.history_max_rows' => '100');
sql("SELECT pg_terminate_backend($new_pid)");    # prunes at its first check
DfeTest::wait_for_guard($node, $new_pid);
wait_for("SELECT count(*) <= 100 + 10 FROM dfe_airbyte.slot_samples", 't', 'samples pruned to history_max_rows');

# ---- the postgres_exporter queries run and return the columns they declare
my $yaml = CPAN::Meta::YAML->read("$ENV{DFE_TOP}/monitoring/postgres_exporter.yaml")
  or die CPAN::Meta::YAML->errstr;
for my $ns (sort keys %{ $yaml->[0] })
{
	my $q = $yaml->[0]{$ns};
	my @declared = map { keys %$_ } @{ $q->{metrics} };
	is($q->{master}, 'true', "exporter query $ns runs on the extension's database only");
	my ($ret, $out, $err) = $node->psql('postgres',
		"CREATE TEMP VIEW exporter_q AS $q->{query};\n"
		  . "SELECT string_agg(attname, ',' ORDER BY attname) FROM pg_attribute "
		  . "WHERE attrelid = 'exporter_q'::regclass AND attnum > 0;\n"
		  . "SELECT count(*) FROM exporter_q;");
	# every view a query reads is part of the extension: a missing one fails
	is($ret, 0, "exporter query $ns runs") or diag($err);
	my ($cols) = split /\n/, $out;
	is($cols, join(',', sort @declared), "exporter query $ns returns the declared columns");
}
is(sql(q{SELECT count(*) FROM dfe_airbyte.replication_slot_health}) > 0 ? 1 : 0, 1, 'slot metrics have rows');

# nothing secret in the log or the tables
my $log = slurp_file($node->logfile);
unlike($log, qr/test-secret-value/, 'no secret in the server log');
# (spelled in two parts: with log_statement = all the query itself is logged)
is(sql("SELECT count(*) FROM dfe_airbyte.slot_recreations WHERE resync_last_error LIKE '%test-secret' || '-value%'"),
	'0', 'no secret in the recorded errors');
unlike($log, qr/PANIC|terminated by signal/, 'no crash');

$node->stop;
$fake->stop;
done_testing();
