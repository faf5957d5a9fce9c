# slot_limit_action = recreate on remote targets (src/slot_remote_recreate.c)
# on real servers of two PostgreSQL majors (test/lib/DfeTarget.pm), the role
# having only Azure Flexible Server's grants:
#   - a slot over its limit is dropped and created again once, recorded in
#     slot_recreations with its target, and the network worker asks the fake
#     Airbyte for exactly one full re-sync with that target's connection id;
#   - a creation that has to wait for a long transaction on its target waits
#     a bounded time per check (slot_recreation_waiting, naming the blocker)
#     while the guard keeps sampling the other target, and completes once the
#     transaction ends.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use DfeTest;
use DfeTarget;
use FakeServer;

my @majors = DfeTarget::majors();
plan skip_all => 'no target server of PostgreSQL 15-18 here' unless @majors;
@majors = ($majors[0], $majors[-1]) if @majors > 2;
my ($ta, $tb) = map { DfeTarget->new("recr$_", major => $_) } @majors;
$tb //= $ta;
my $dir = PostgreSQL::Test::Utils::tempdir();
my $passfile = DfeTarget::write_passfile("$dir/pgpass", $ta, $tb == $ta ? () : $tb);

my $fake = FakeServer->start;
$fake->config(job_pending_seconds => 0.1, job_running_seconds => 0.5);
my $conn_id = $fake->config->{connection_id};
my $url = $fake->url;

# the control database's own ("local") connection is another one: a
# request for it would not be the target's
my $node = DfeTest::new_node('control', conf => <<"CONF");
dfe_airbyte.passfile = '$passfile'
dfe_airbyte.check_interval = 1s
dfe_airbyte.target_timeout = 2s
dfe_airbyte.airbyte_url = '$url'
dfe_airbyte.airbyte_client_id = 'test-client'
dfe_airbyte.airbyte_client_secret = 'test-secret-value'
dfe_airbyte.connection_id = '00000000-0000-0000-0000-00000000beef'
CONF

sub sql { return $node->safe_psql('postgres', $_[0]); }
sub lit { my ($s) = @_; $s =~ s/'/''/g; return "'$s'" }

sql("SELECT dfe_airbyte_add_target('$ta->{name}', ${\ lit($ta->conninfo)},
	'{\"slot_name\": \"airbyte_slot\", \"max_slot_wal_size\": \"1MB\", \"slot_limit_action\": \"recreate\",
	  \"connection_id\": \"$conn_id\"}')");
sql("SELECT dfe_airbyte_add_target('$tb->{name}', ${\ lit($tb->conninfo)},
	'{\"slot_name\": \"airbyte_slot\", \"max_slot_wal_size\": \"8GB\", \"slot_limit_action\": \"recreate\",
	  \"connection_id\": \"$conn_id\"}')") if $tb != $ta;
ok(DfeTest::poll_until($node, "SELECT count(*) > 0 FROM dfe_airbyte.slot_samples WHERE target = '$ta->{name}'
	AND slot_name = 'airbyte_slot'", 't', 120), 'the target is sampled');

# 1. over the limit: dropped and created again, once; one re-sync for its connection
my $old_lsn = $ta->node->safe_psql('service', "SELECT restart_lsn FROM pg_replication_slots WHERE slot_name = 'airbyte_slot'");
my $mark = $fake->mark;
$ta->node->safe_psql('service', q{SELECT pg_logical_emit_message(false, 'dfe', repeat('x', 1000000)) FROM generate_series(1, 3)});
ok(DfeTest::poll_until($node, "SELECT count(*) FROM dfe_airbyte.slot_recreations
	WHERE target = '$ta->{name}' AND reason = 'over_limit' AND recreated_at IS NOT NULL", '1', 120),
	"PG$ta->{major}: the slot over its limit is recreated");
is($ta->node->safe_psql('service', "SELECT restart_lsn > '$old_lsn' FROM pg_replication_slots
	WHERE slot_name = 'airbyte_slot' AND database = 'service'"), 't', '... a new slot, past the retained WAL');
is(sql("SELECT count(*) FROM dfe_airbyte.events WHERE kind = 'slot_recreated' AND target = '$ta->{name}'"), '1',
	'... a slot_recreated event with the target');
ok(DfeTest::poll_until($node, "SELECT resync_state FROM dfe_airbyte.slot_recreations
	WHERE target = '$ta->{name}' AND reason = 'over_limit'", 'started', 120), '... its full re-sync is asked for and started');
ok(DfeTest::poll_until($node, "SELECT resync_job_status FROM dfe_airbyte.slot_recreations
	WHERE target = '$ta->{name}' AND reason = 'over_limit'", 'succeeded', 120), '... and followed to its end');
# a few more checks: no second recreation, no second request
my $rounds = "SELECT count(DISTINCT sampled_at) FROM dfe_airbyte.slot_samples WHERE target = '$ta->{name}'";
my $before = sql($rounds);
ok(DfeTest::poll_until($node, "SELECT ($rounds) >= $before + 3", 't', 120), '... the guard goes on');
my $refreshes = $fake->requests(since => $mark, method => 'POST', path => qr{/connections/refresh});
is(scalar @$refreshes, 1, 'exactly one refresh request');
like($refreshes->[0]{body} // '', qr/\Q$conn_id\E/, "... for the target's connection id");
is(sql("SELECT count(*) FROM dfe_airbyte.slot_recreations WHERE target = '$ta->{name}'"), '1', '... and one recreation');
is(sql("SELECT count(*) FROM dfe_airbyte.slot_recreations WHERE target = 'local'"), '0', 'nothing recreated locally');

# 2. a long transaction on the target: the creation waits, the guard goes on
SKIP:
{
	skip 'one target server only', 6 if $tb == $ta;
	my ($h, $pid) = $tb->start_long_transaction('long_xact');
	ok($pid, 'a long transaction holds an xid');
	# an HA pair's server synchronises slots (PostgreSQL 17): the new slot is a failover slot
	if ($tb->major >= 17)
	{
		$tb->node->safe_psql('postgres', 'ALTER SYSTEM SET sync_replication_slots = on');
		$tb->node->reload;
	}
	$tb->node->safe_psql('service', "SELECT pg_drop_replication_slot('airbyte_slot')");
	ok(DfeTest::poll_until($node, "SELECT count(*) > 0 FROM dfe_airbyte.events WHERE kind = 'slot_recreation_waiting'
		AND target = '$tb->{name}' AND detail LIKE '%process $pid %'", 't', 120),
		"PG$tb->{major}: the creation waits for the long transaction, named");
	my $arounds = sql($rounds);
	ok(DfeTest::poll_until($node, "SELECT ($rounds) >= $arounds + 3", 't', 120),
		'... while the other target is sampled check after check');
	is(sql("SELECT count(*) FROM dfe_airbyte.slot_recreations WHERE target = '$tb->{name}' AND recreated_at IS NULL"),
		'1', '... the recreation open meanwhile');
	# the transaction ends (the server would notice a killed psql only when it next writes to it)
	$tb->node->safe_psql('postgres', "SELECT pg_terminate_backend($pid)");
	$h->kill_kill;
	$h->finish;
	ok(DfeTest::poll_until($node, "SELECT count(*) FROM dfe_airbyte.slot_recreations
		WHERE target = '$tb->{name}' AND recreated_at IS NOT NULL", '1', 120), '... and completes after it ends');
	is($tb->node->safe_psql('service', "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'airbyte_slot'"),
		'1', '... the slot is there again');
	if ($tb->major >= 17)
	{
		is($tb->node->safe_psql('service', "SELECT failover FROM pg_replication_slots WHERE slot_name = 'airbyte_slot'"),
			't', '... a failover slot, as the server synchronises slots');
	}
}

unlike(slurp_file($node->logfile), qr/dfe_airbyte slot guard, target/, 'no target failed the guard with an error');
done_testing();
