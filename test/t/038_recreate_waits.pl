# A slot recreation that must wait does not stall the guard.
#
# pg_create_logical_replication_slot() waits until every transaction that
# holds a transaction id when it starts has ended (the snapshot builder's
# XactLockTableWait, src/backend/replication/logical/snapbuild.c), so one
# session idle in a transaction can hold it for hours.  With such a session
# open and slot_limit_action = recreate, the guard must keep sampling at its
# check_interval, say in an event which process it waits for, retry, and
# once that transaction ends create the slot and hand over exactly one
# full re-sync.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use JSON::PP;
use DfeTest;
use FakeServer;

my $MB = 1024 * 1024;
# generous: nothing here may depend on the machine's speed
my $DEADLINE = 90;

my $fake = FakeServer->start;
$fake->config(job_pending_seconds => 0.1, job_running_seconds => 0.3);
my $conn_id = $fake->config->{connection_id};

my $node = DfeTest::new_node('waits',
	init => { extra => ['--wal-segsize=1'] },
	conf => <<"CONF");
dfe_airbyte.check_interval = 1s
dfe_airbyte.max_slot_wal_size = 4MB
# warn until both slots exist: under recreate the guard would create the
# missing Airbyte slot itself
dfe_airbyte.slot_limit_action = warn
dfe_airbyte.max_slot_recreations_per_day = 100
dfe_airbyte.airbyte_url = '@{[ $fake->url ]}'
dfe_airbyte.airbyte_client_id = 'test-client'
dfe_airbyte.airbyte_client_secret = 'test-secret-value'
dfe_airbyte.connection_id = '$conn_id'
dfe_airbyte.http_max_retries = 0
min_wal_size = 2MB
max_wal_size = 64MB
CONF
DfeTest::wait_for_worker($node);
my $guard = DfeTest::wait_for_guard($node);

sub sql { return $node->safe_psql('postgres', $_[0]); }

sub refreshes
{
	my ($since, $status) = @_;
	my $reqs = $fake->requests(since => $since, method => 'POST',
		path => qr{^/api/v1/connections/refresh$});
	return scalar grep { !defined $status || ($_->{status} // 0) == $status } @$reqs;
}

# the Airbyte slot, and a bystander whose samples show the guard is alive
# while the Airbyte slot is gone
sql("SELECT pg_create_logical_replication_slot('airbyte_slot', 'pgoutput')");
sql("SELECT pg_create_logical_replication_slot('bystander_slot', 'pgoutput')");
sql("ALTER SYSTEM SET dfe_airbyte.slot_limit_action = 'recreate'");
$node->reload;
ok(DfeTest::poll_until($node,
	"SELECT count(*) > 0 FROM dfe_airbyte.slot_samples WHERE slot_name = 'bystander_slot'", 't'),
	'the guard samples the slots');

# a session idle in a transaction that holds a transaction id
my $blocker = $node->background_psql('postgres');
$blocker->query_safe('BEGIN');
my $blocker_pid = $blocker->query_safe('SELECT pg_backend_pid()');
$blocker->query_safe('SELECT pg_current_xact_id()');

my $mark = $fake->mark;
my $ev = sql('SELECT coalesce(max(id), 0) FROM dfe_airbyte.events');
sql(join ";\n", ("SELECT pg_logical_emit_message(false, 'pad', repeat('x', $MB))") x 6);

# the event names the session the creation waits for
ok(DfeTest::poll_until($node,
	"SELECT count(*) > 0 FROM dfe_airbyte.events WHERE id > $ev AND kind = 'slot_recreation_waiting'",
	't', $DEADLINE), 'a slot_recreation_waiting event');
my $json = sql(
	"SELECT data FROM dfe_airbyte.events WHERE id > $ev AND kind = 'slot_recreation_waiting' ORDER BY id LIMIT 1");
my $data = $json ne '' ? decode_json($json) : {};
my ($named) = grep { $_->{pid} == $blocker_pid } @{ $data->{blockers} // [] };
ok($named, "the event names the blocking session (pid $blocker_pid)")
  or diag(explain($data));
ok(defined $named->{xact_start} && defined $named->{xid_age} && defined $named->{state},
	'... with its transaction start, xid age and state');
ok(!exists $named->{query}, '... and not its query text');
like(sql("SELECT detail FROM dfe_airbyte.events WHERE id > $ev AND kind = 'slot_recreation_waiting' ORDER BY id LIMIT 1"),
	qr/process $blocker_pid\b/, 'the detail names the process');

# the guard goes on sampling at its check_interval meanwhile
my $samples = sql("SELECT coalesce(max(id), 0) FROM dfe_airbyte.slot_samples");
ok(DfeTest::poll_until($node,
	"SELECT count(*) >= 5 FROM dfe_airbyte.slot_samples WHERE id > $samples AND slot_name = 'bystander_slot'",
	't', $DEADLINE), 'the guard keeps sampling while the recreation waits');
diag('longest gap between two samples while the recreation waited: '
	. sql("SELECT round(extract(epoch FROM max(d))::numeric, 2) FROM (SELECT sampled_at - lag(sampled_at) OVER (ORDER BY id) AS d
	       FROM dfe_airbyte.slot_samples WHERE id > $samples AND slot_name = 'bystander_slot') x") . ' s (check_interval 1 s)');
ok(DfeTest::poll_until($node,
	"SELECT substring(note FROM 'attempt ([0-9]+)')::int >= 3 FROM dfe_airbyte.slot_recreations",
	't', $DEADLINE), 'the creation is retried, each attempt noted on the recreation');
is(sql("SELECT count(*) FROM dfe_airbyte.events WHERE id > $ev AND kind = 'slot_recreation_waiting'"), '1',
	'one event while the same session blocks, not one per attempt');
diag('the recreation meanwhile: ' . sql("SELECT round(extract(epoch FROM clock_timestamp() - decided_at)::numeric, 1) || ' s after it was decided: ' || note FROM dfe_airbyte.slot_recreations"));
is(sql("SELECT count(*) || ' ' || bool_and(recreated_at IS NULL) FROM dfe_airbyte.slot_recreations"), '1 true',
	'one recreation, not done yet');
# (during an attempt the guard itself holds the half-made slot)
is(sql("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'airbyte_slot' AND active_pid IS DISTINCT FROM $guard"), '0',
	'the slot was dropped first (an HA server keeps few spare slots)');
is(refreshes($mark), 0, 'no re-sync asked for a slot that does not exist yet');
is(sql("SELECT pid FROM dfe_airbyte.workers WHERE worker = 'guard'"), $guard, 'the same guard process');

# the transaction ends: the slot is created, one re-sync is asked for
$blocker->query_safe('COMMIT');
$blocker->quit;
ok(DfeTest::poll_until($node,
	"SELECT count(*) FROM dfe_airbyte.events WHERE id > $ev AND kind = 'slot_recreated'", '1', $DEADLINE),
	'the slot is recreated once the transaction ended');
is(sql("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'airbyte_slot'"), '1', 'the slot exists');
ok(DfeTest::poll_until($node,
	"SELECT string_agg(resync_state, ',') FROM dfe_airbyte.slot_recreations", 'started', $DEADLINE),
	'the full re-sync started');
sleep 3;    # a few more checks: nothing is asked for twice
is(refreshes($mark), 1, 'exactly one re-sync asked for');
is(refreshes($mark, 200), 1, '... and accepted');
is(sql('SELECT count(*) FROM dfe_airbyte.slot_recreations'), '1', 'still one recreation');
is(sql("SELECT count(*) FROM dfe_airbyte.events WHERE id > $ev AND kind = 'slot_recreated'"), '1',
	'one slot_recreated event');

my $log = slurp_file($node->logfile);
unlike($log, qr/PANIC|terminated by signal/, 'no crash');

$node->stop;
$fake->stop;
done_testing();
