# A streaming standby of a primary that runs dfe_airbyte: the worker does not
# run there (it starts only once recovery has finished), nothing is written,
# nothing fails, the health view answers; after promotion the worker starts
# and, under slot_limit_action = recreate, creates the Airbyte slot again
# (PostgreSQL 15 does not copy slots to standbys) and requests the full
# re-sync Airbyte then needs.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use DfeTest;
use FakeServer;

my $fake = FakeServer->start;
$fake->config(job_pending_seconds => 0.1, job_running_seconds => 0.3);
my $conn_id = $fake->config->{connection_id};
my $url = $fake->url;

my $primary = DfeTest::new_node('primary', conf => <<"CONF");
dfe_airbyte.check_interval = 1s
dfe_airbyte.max_slot_wal_size = 64MB
dfe_airbyte.slot_limit_action = warn
dfe_airbyte.airbyte_url = '$url'
dfe_airbyte.airbyte_client_id = 'test-client'
dfe_airbyte.airbyte_client_secret = 'test-secret-value'
dfe_airbyte.connection_id = '$conn_id'
CONF
DfeTest::wait_for_worker($primary);
$primary->safe_psql('postgres', "SELECT pg_create_logical_replication_slot('airbyte_slot', 'pgoutput')");
ok($primary->poll_query_until('postgres',
	"SELECT count(*) > 0 FROM dfe_airbyte.slot_samples WHERE slot_name = 'airbyte_slot'"),
	'primary samples its slot');

$primary->backup('bk');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'bk', has_streaming => 1);
# recreate on the standby only (on the primary it would create the slot before we do)
$standby->append_conf('postgresql.conf', "dfe_airbyte.slot_limit_action = recreate\n");
$standby->start;
$primary->wait_for_catchup($standby);

is($standby->safe_psql('postgres', 'SELECT pg_is_in_recovery()'), 't', 'standby is in recovery');
is($standby->safe_psql('postgres', 'SELECT dfe_airbyte_worker_pid() IS NULL'), 't', 'no worker on the standby');
is($standby->safe_psql('postgres',
	"SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'dfe_airbyte%'"), '0',
	'no worker process on the standby');

# the primary's samples arrive by replication; the standby adds none
my $n = $primary->safe_psql('postgres', 'SELECT count(*) FROM dfe_airbyte.slot_samples');
ok($primary->poll_query_until('postgres', "SELECT count(*) > $n + 3 FROM dfe_airbyte.slot_samples"),
	'primary keeps sampling');
# the primary's worker keeps sampling meanwhile: compare up to a fixed point
my $upto = $primary->safe_psql('postgres', 'SELECT max(sampled_at) FROM dfe_airbyte.slot_samples');
my $primary_count = $primary->safe_psql('postgres',
	"SELECT count(*) FROM dfe_airbyte.slot_samples WHERE sampled_at <= '$upto'");
$primary->wait_for_catchup($standby);
is($standby->safe_psql('postgres',
	"SELECT count(*) FROM dfe_airbyte.slot_samples WHERE sampled_at <= '$upto'"),
	$primary_count, 'standby has exactly the primary\'s samples');
ok($standby->safe_psql('postgres', 'SELECT count(*) FROM dfe_airbyte.slot_samples')
	<= $primary->safe_psql('postgres', 'SELECT count(*) FROM dfe_airbyte.slot_samples'),
	'the standby adds no samples of its own');

# the view works on the standby: no slots there, and the Airbyte slot is not
# reported lost just because standbys have no slots
my ($ret, $out, $err) = $standby->psql('postgres', 'SELECT count(*) FROM dfe_airbyte.replication_slot_health');
is($ret, 0, 'health view runs on the standby');
is($out, '0', 'no slots on the standby, none reported missing');
($ret, $out, $err) = $standby->psql('postgres', 'SELECT * FROM dfe_airbyte_check_slots_now()');
like($err, qr/cannot sample replication slots during recovery/, 'manual sampling refused with a clear error');

# the primary is unaffected
is($primary->safe_psql('postgres',
	"SELECT status FROM dfe_airbyte.replication_slot_health WHERE slot_name = 'airbyte_slot'"),
	'ok', 'primary slot ok');
is($primary->safe_psql('postgres', "SELECT count(*) FROM dfe_airbyte.events WHERE kind LIKE 'slot%'"), '0',
	'no slot events on the primary');

# during recovery the workers run no transaction a test could count: give
# them two check intervals to log anything that went wrong
sleep 2;
my $standby_log = slurp_file($standby->logfile);
unlike($standby_log, qr/(ERROR|WARNING|FATAL):.*dfe_airbyte|dfe_airbyte.*(ERROR|WARNING|FATAL)/,
	'nothing from dfe_airbyte went wrong on the standby');
unlike($standby_log, qr/cannot execute .* in a read-only transaction/, 'no write attempted on the standby');

# failover: the promoted standby has no Airbyte slot; the worker starts,
# recreates it and asks Airbyte for the full re-sync, exactly once
my $mark = $fake->mark;
$primary->stop;
$standby->promote;
ok(DfeTest::wait_for_worker($standby) > 0, 'worker starts after promotion');
ok($standby->poll_query_until('postgres',
	"SELECT reason || ' ' || resync_state FROM dfe_airbyte.slot_recreations ORDER BY id DESC LIMIT 1",
	'missing started'), 'Airbyte slot recreated after failover, full re-sync started');
is($standby->safe_psql('postgres', "SELECT plugin FROM pg_replication_slots WHERE slot_name = 'airbyte_slot'"),
	'pgoutput', 'slot exists on the new primary');
is($standby->safe_psql('postgres', "SELECT count(*) FROM dfe_airbyte.events WHERE kind = 'slot_recreated'"),
	'1', 'slot_recreated event');
# the gap: from where the old primary's last sample saw Airbyte to the new slot
# (the old primary's last sample of the slot, replicated: the last one before the recreation)
my $last = $standby->safe_psql('postgres',
	"SELECT confirmed_flush_lsn::text || ' ' || sampled_at FROM dfe_airbyte.slot_samples
	 WHERE slot_name = 'airbyte_slot'
	   AND sampled_at < (SELECT recreated_at FROM dfe_airbyte.slot_recreations ORDER BY id DESC LIMIT 1)
	 ORDER BY id DESC LIMIT 1");
is($standby->safe_psql('postgres',
	"SELECT gap_from_lsn::text || ' ' || gap_from_time FROM dfe_airbyte.slot_recreations ORDER BY id DESC LIMIT 1"),
	$last, 'the recreation records the gap from the last sample of the old primary');
is($standby->safe_psql('postgres',
	"SELECT new_lsn >= gap_from_lsn AND recreated_at > gap_from_time FROM dfe_airbyte.slot_recreations ORDER BY id DESC LIMIT 1"),
	't', '... to the new slot\'s LSN and time');
is($standby->safe_psql('postgres',
	"SELECT data->'gap'->>'from_lsn' = r.gap_from_lsn::text AND data->'gap'->>'to_lsn' = r.new_lsn::text
	        AND (data->'gap'->>'bytes')::bigint = (r.new_lsn - r.gap_from_lsn)::bigint
	 FROM dfe_airbyte.events e, dfe_airbyte.slot_recreations r WHERE e.kind = 'slot_recreated'"),
	't', 'the slot_recreated event carries the gap');
like($standby->safe_psql('postgres', "SELECT detail FROM dfe_airbyte.events WHERE kind = 'slot_recreated'"),
	qr/promoted from a standby.*the gap the re-sync must cover: Airbyte had confirmed up to/,
	'and its detail says so');
# (the fake records a request's status just after answering it)
my $refreshes;
for (1 .. 50)
{
	$refreshes = $fake->requests(since => $mark, method => 'POST', path => qr{^/api/v1/connections/refresh$});
	last unless grep { !defined $_->{status} } @$refreshes;
	usleep(100_000);
}
is(scalar(grep { ($_->{status} // 0) == 200 } @$refreshes), 1, 'one accepted refresh');

$standby->stop;
$fake->stop;
done_testing();
