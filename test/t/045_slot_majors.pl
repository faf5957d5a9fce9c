# What the slots do differently on each PostgreSQL major, through the same
# SQL (dfe_airbyte_slot_details() is compiled per major):
#   all       replication_slot_health has inactive_since and
#             invalidation_reason (NULL where the server has no such field);
#   16 and on a logical slot on a standby shows in the health view there
#             (15 refuses to create one);
#   17 and on failover slots: the guard recreates a failover slot as one,
#             and any slot as one when sync_replication_slots is on;
#             inactive_since comes from the server;
#   18        a slot invalidated by idle_replication_slot_timeout has its own
#             status, idle_timeout, not lost.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use DfeTest;
use FakeServer;

my $MB = 1024 * 1024;
my $fake = FakeServer->start;
my $conn_id = $fake->config->{connection_id};
my $url = $fake->url;

my $node = DfeTest::new_node('majors',
	init => { extra => ['--wal-segsize=1'] },
	conf => <<"CONF");
dfe_airbyte.check_interval = 1s
dfe_airbyte.max_slot_wal_size = 4MB
dfe_airbyte.slot_limit_action = warn
dfe_airbyte.max_slot_recreations_per_day = 100
dfe_airbyte.airbyte_url = '$url'
dfe_airbyte.airbyte_client_id = 'test-client'
dfe_airbyte.airbyte_client_secret = 'test-secret-value'
dfe_airbyte.connection_id = '$conn_id'
min_wal_size = 2MB
max_wal_size = 64MB
CONF
DfeTest::wait_for_worker($node);
my $major = $node->pg_version->major;
note("PostgreSQL $major");

sub sql { return $node->safe_psql('postgres', $_[0]); }

sub health
{
	my ($n, $slot, $cols) = @_;
	return $n->safe_psql('postgres',
		"SELECT $cols FROM dfe_airbyte.replication_slot_health WHERE slot_name = '$slot'");
}

# 1. the columns exist on every major; the server fills what it has
sql("SELECT pg_create_logical_replication_slot('other_slot', 'pgoutput')");
is(health($node, 'other_slot', 'invalidation_reason IS NULL'), 't', 'a valid slot has no invalidation reason');
is(health($node, 'other_slot', 'inactive_since IS NOT NULL'), $major >= 17 ? 't' : 'f',
	$major >= 17 ? 'inactive_since from the server (17+)' : 'inactive_since is NULL before 17');
sql("SELECT pg_drop_replication_slot('other_slot')");

# 2. failover slots (17+)
SKIP:
{
	skip 'failover slots exist from PostgreSQL 17 on', 4 if $major < 17;

	# a failover slot over the limit is recreated as a failover slot
	sql("SELECT pg_create_logical_replication_slot('airbyte_slot', 'pgoutput', false, false, true)");
	ok(DfeTest::poll_until($node,
		"SELECT count(*) > 0 FROM dfe_airbyte.slot_state WHERE slot_name = 'airbyte_slot' AND first_seen_at IS NOT NULL",
		't', 60), 'the guard has seen the Airbyte slot');
	sql("ALTER SYSTEM SET dfe_airbyte.slot_limit_action = 'recreate'");
	$node->reload;
	sql(join ";\n", ("SELECT pg_logical_emit_message(false, 'pad', repeat('x', $MB))") x 6);
	ok(DfeTest::poll_until($node,
		"SELECT count(*) FROM dfe_airbyte.slot_recreations WHERE reason = 'over_limit' AND recreated_at IS NOT NULL",
		'1', 60), 'the slot over the limit was recreated');
	is(sql("SELECT failover FROM pg_replication_slots WHERE slot_name = 'airbyte_slot'"), 't',
		'... as a failover slot, as it was');

	# a plain slot is recreated as a failover slot where slots are synchronized
	sql("ALTER SYSTEM SET sync_replication_slots = on");
	$node->reload;
	sql("SELECT pg_drop_replication_slot('airbyte_slot')");
	ok(DfeTest::poll_until($node,
		"SELECT failover FROM pg_replication_slots WHERE slot_name = 'airbyte_slot'", 't', 60),
		'with sync_replication_slots on, the missing slot is recreated as a failover slot');
	sql("ALTER SYSTEM RESET sync_replication_slots");
	$node->reload;
}

# 3. a logical slot on a standby (16+)
$node->backup('bk');
my $standby = PostgreSQL::Test::Cluster->new('majors_standby');
$standby->init_from_backup($node, 'bk', has_streaming => 1);
$standby->append_conf('postgresql.conf', "hot_standby_feedback = on\n");
$standby->start;
$node->wait_for_catchup($standby);
if ($major >= 16)
{
	$standby->create_logical_slot_on_standby($node, 'standby_slot', 'postgres');
	is(health($standby, 'standby_slot', "status || ' ' || (retained_bytes >= 0)::text"), 'ok true',
		'a logical slot on the standby is in the health view there, its WAL measured from the replay position');
}
else
{
	my ($ret, $out, $err) = $standby->psql('postgres',
		"SELECT pg_create_logical_replication_slot('standby_slot', 'pgoutput')");
	like($err, qr/logical decoding cannot be used while in recovery/,
		'PostgreSQL 15 has no logical slots on a standby');
}
$standby->stop;

# 4. idle_replication_slot_timeout (18+): its own status
SKIP:
{
	skip 'idle_replication_slot_timeout exists from PostgreSQL 18 on', 3 if $major < 18;

	# the timeout would invalidate the idle Airbyte slot too: the guard
	# must not recreate it meanwhile
	sql("ALTER SYSTEM SET dfe_airbyte.slot_limit_action = 'warn'");
	$node->reload;
	sql("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = 'airbyte_slot'");
	sql("SELECT pg_create_logical_replication_slot('idle_slot', 'pgoutput')");
	sql("ALTER SYSTEM SET idle_replication_slot_timeout = '1s'");
	$node->reload;
	# the server invalidates idle slots at a checkpoint
	ok(DfeTest::poll_until($node,
		"CHECKPOINT; SELECT invalidation_reason FROM dfe_airbyte.replication_slot_health WHERE slot_name = 'idle_slot'",
		'idle_timeout', 60), 'the idle slot was invalidated by idle_replication_slot_timeout');
	is(health($node, 'idle_slot', 'status'), 'idle_timeout', 'its status is idle_timeout, not lost');
	like(health($node, 'idle_slot', 'hint'), qr/idle_replication_slot_timeout/, 'the hint names the setting');
	sql("ALTER SYSTEM RESET idle_replication_slot_timeout");
	$node->reload;
}

$node->stop;
$fake->stop;
done_testing();
