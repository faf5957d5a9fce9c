# dfe_airbyte_repair(dry_run, cancel_stuck, target) on remote targets
# (src/repair.c, src/slot_remote_recreate.c) on real servers of two
# PostgreSQL majors (test/lib/DfeTarget.pm), the role having only Azure
# Flexible Server's grants:
#   - a dry run on a healthy target reports its slot ok;
#   - the slot dropped behind our back: a dry run says it would create it and
#     changes nothing; a real run creates it on the target, records the
#     re-sync with the target, and the network worker asks the fake Airbyte
#     for exactly one refresh with that target's connection id;
#   - a lost slot: dropped on the target, then created again;
#   - a creation waiting for a long transaction: bounded, an error naming it;
#   - an unreachable target: an error with a connection SQLSTATE, a
#     lower-case message and a hint, and nothing written.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use DfeTest;
use DfeTarget;
use FakeServer;

my @majors = DfeTarget::majors();
plan skip_all => 'no target server of PostgreSQL 15-18 here' unless @majors;
@majors = ($majors[0], $majors[-1]) if @majors > 2;
my @targets = map { DfeTarget->new("rep$_", major => $_) } @majors;
my $dir = PostgreSQL::Test::Utils::tempdir();
my $passfile = DfeTarget::write_passfile("$dir/pgpass", @targets);

my $fake = FakeServer->start;
$fake->config(job_pending_seconds => 0.1, job_running_seconds => 0.5);
my $conn_id = $fake->config->{connection_id};
my $url = $fake->url;

# the control database's own ("local") connection is another one: a
# request for it would not be the target's
my ($interval, $ttimeout, $wait) = DfeTest::target_timing();
my $node = DfeTest::new_node('control', conf => <<"CONF");
dfe_airbyte.passfile = '$passfile'
dfe_airbyte.check_interval = $interval
dfe_airbyte.target_timeout = $ttimeout
dfe_airbyte.airbyte_url = '$url'
dfe_airbyte.airbyte_client_id = 'test-client'
dfe_airbyte.airbyte_client_secret = 'test-secret-value'
dfe_airbyte.connection_id = '00000000-0000-0000-0000-00000000beef'
CONF

sub sql { return $node->safe_psql('postgres', $_[0]); }
sub lit { my ($s) = @_; $s =~ s/'/''/g; return "'$s'" }
sub repair
{
	my ($target, $dry) = @_;
	return sql("SELECT string_agg(step || ' ' || action, ', ' ORDER BY ord)
		FROM dfe_airbyte_repair(dry_run => $dry, target => '$target') WITH ORDINALITY AS r(step, action, detail, ord)");
}
sub changes
{
	my ($mark) = @_;
	return [ map { "$_->{method} $_->{path}" }
		  grep { $_->{method} ne 'GET' && $_->{path} !~ m{/applications/token$|^/api/v1/state/get$|^/api/v1/jobs/list$} }
		  @{ $fake->requests(since => $mark) } ];
}
my $written = "SELECT (SELECT count(*) FROM dfe_airbyte.slot_recreations) || ' '
	|| (SELECT count(*) FROM dfe_airbyte.events WHERE kind LIKE 'repair%')";

for my $t (@targets)
{
	sql("SELECT dfe_airbyte_add_target('$t->{name}', ${\ lit($t->conninfo)},
		'{\"slot_name\": \"airbyte_slot\", \"connection_id\": \"$conn_id\"}')");
}
my $slot_on = sub {
	my ($t) = @_;
	return $t->node->safe_psql('service', "SELECT plugin || ' ' || database || ' ' || failover
		FROM (SELECT s.plugin, s.database, coalesce(to_jsonb(s)->>'failover', 'false') AS failover
		      FROM pg_replication_slots s WHERE slot_name = 'airbyte_slot') x");
};

for my $t (@targets)
{
	my $n = $t->{name};
	my $pg = "PG$t->{major}";

	# 1. healthy: the slot is read on the target's server
	is(repair($n, 'true'), 'slot ok, airbyte_state no_state, connection ok, job ok',
		"$pg: dry run on a healthy target: every step ok, the Airbyte ones with the target's connection");
	like(sql("SELECT detail FROM dfe_airbyte_repair(target => '$n') WHERE step = 'slot'"),
		qr/^replication slot "airbyte_slot" exists \(confirmed_flush_lsn \d/, '... with its confirmed_flush_lsn');

	# 2. dropped behind our back (an HA server on 17+ synchronises slots: a failover slot)
	if ($t->major >= 17)
	{
		$t->node->safe_psql('postgres', 'ALTER SYSTEM SET sync_replication_slots = on');
		$t->node->reload;
	}
	$t->node->safe_psql('service', "SELECT pg_drop_replication_slot('airbyte_slot')");
	my $before = sql($written);
	my $mark = $fake->mark;
	is(repair($n, 'true'), 'slot would_create, airbyte_state skipped, connection ok, job ok',
		"$pg: dry run: the slot would be created");
	is(sql($written), $before, '... nothing written');
	is($slot_on->($t), '', '... no slot made');
	is_deeply(changes($mark), [], '... nothing changed in Airbyte');

	is(repair($n, 'false'), 'slot created, airbyte_state skipped, connection ok, job ok', "$pg: real run: the slot is created");
	is($slot_on->($t), 'pgoutput service ' . ($t->major >= 17 ? 'true' : 'false'),
		'... on the target, pgoutput' . ($t->major >= 17 ? ', a failover slot as the server synchronises slots' : ''));
	is(sql("SELECT reason || ' ' || (recreated_at IS NOT NULL) || ' ' || (new_lsn IS NOT NULL)
		FROM dfe_airbyte.slot_recreations WHERE target = '$n'"), 'missing true true', '... the re-sync recorded with the target');
	is(sql("SELECT count(*) FROM dfe_airbyte.events WHERE kind = 'repair_slot_created' AND target = '$n'"), '1',
		'... an event with the target');
	ok(DfeTest::poll_until($node, "SELECT resync_state FROM dfe_airbyte.slot_recreations WHERE target = '$n'", 'started', $wait),
		'... the worker asked for the full re-sync');
	my $refreshes = $fake->requests(since => $mark, method => 'POST', path => qr{/connections/refresh});
	is(scalar @$refreshes, 1, '... exactly one refresh request');
	like($refreshes->[0]{body} // '', qr/\Q$conn_id\E/, "... for the target's connection id");
	like(repair($n, 'true'), qr/^slot ok, /, '... and the next dry run finds the slot ok');
	ok(DfeTest::poll_until($node, "SELECT resync_finished_at IS NOT NULL FROM dfe_airbyte.slot_recreations WHERE target = '$n'",
		't', $wait), '... the re-sync ends');
}
is(sql("SELECT count(*) FROM dfe_airbyte.slot_recreations WHERE target = 'local'"), '0', 'nothing recorded for local');

# 3. lost (max_slot_wal_keep_size): dropped on the target before it is created again
my $t = $targets[0];
$t->node->append_conf('postgresql.conf', 'max_slot_wal_keep_size = 1MB');
$t->node->reload;
my $lost = "SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'airbyte_slot'";
for (1 .. 30)
{
	last if $t->node->safe_psql('service', $lost) eq 'lost';
	$t->node->safe_psql('service', "SELECT pg_logical_emit_message(false, 'dfe', repeat('x', 1000000)) FROM generate_series(1, 3);
		SELECT pg_switch_wal(); CHECKPOINT;");
}
is($t->node->safe_psql('service', $lost), 'lost', "PG$t->{major}: the slot is lost");
my $mark = $fake->mark;
is(repair($t->{name}, 'true'), 'slot would_recreate, airbyte_state skipped, connection ok, job ok', '... a dry run would recreate it');
is(repair($t->{name}, 'false'), 'slot recreated, airbyte_state skipped, connection ok, job ok', '... a real run recreates it');
is($t->node->safe_psql('service', "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'airbyte_slot' AND wal_status <> 'lost'"),
	'1', '... one slot on the target, not lost');
ok(DfeTest::poll_until($node, "SELECT resync_state FROM dfe_airbyte.slot_recreations WHERE target = '$t->{name}' AND reason = 'lost'",
	'started', $wait), '... its full re-sync asked for');
is(scalar @{ $fake->requests(since => $mark, method => 'POST', path => qr{/connections/refresh}) }, 1, '... once');

# 4. the creation would wait for a long transaction on the target: an error naming it, nothing recorded
my $tl = $targets[-1];
my ($h, $pid) = $tl->start_long_transaction('long_xact');
$tl->node->safe_psql('service', "SELECT pg_drop_replication_slot('airbyte_slot')");
my $before = sql($written);
my ($ret, $out, $err) = $node->psql('postgres',
	"\\set VERBOSITY verbose\nSELECT * FROM dfe_airbyte_repair(dry_run => false, target => '$tl->{name}')");
like($err, qr/ERROR:  55P03: could not create replication slot "airbyte_slot" on target "\Q$tl->{name}\E": .*process $pid /,
	"PG$tl->{major}: the creation is bounded: an error naming the transaction it waits for");
like($err, qr/HINT:  Fix the cause, then run/, '... with a hint');
is(sql($written), $before, '... nothing recorded');
$tl->node->safe_psql('postgres', "SELECT pg_terminate_backend($pid)");
$h->kill_kill;
$h->finish;
like(repair($tl->{name}, 'false'), qr/^slot created, /, '... once it ended, the slot is created');
# its re-sync is asked for by the network worker, later: wait, so that it is
# not counted against the next step
ok(DfeTest::poll_until($node, "SELECT resync_state FROM dfe_airbyte.slot_recreations
	WHERE target = '$tl->{name}' ORDER BY id DESC LIMIT 1", 'started', $wait), '... and its full re-sync is asked for');

# 5. a target nobody listens for
sql(q{INSERT INTO dfe_airbyte.targets (name, conninfo, settings)
	VALUES ('gone', 'host=127.0.0.1 port=1 dbname=service user=nobody', '{"slot_name": "airbyte_slot"}')});
$before = sql($written);
$mark = $fake->mark;
for my $dry ('true', 'false')
{
	($ret, $out, $err) = $node->psql('postgres',
		"\\set VERBOSITY verbose\nSELECT * FROM dfe_airbyte_repair(dry_run => $dry, target => 'gone')");
	isnt($ret, 0, "an unreachable target (dry_run $dry): an error");
	like($err, qr/ERROR:  08\w{3}: could not read the Airbyte slot on target "gone": /, '... a connection SQLSTATE, lower case');
	like($err, qr/HINT:  Check that the target's server is up and reachable/, '... and a hint');
}
is(sql($written), $before, '... nothing written');
is_deeply(changes($mark), [], '... nothing asked of Airbyte');

done_testing();
