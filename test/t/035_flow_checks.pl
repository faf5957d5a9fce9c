# Does data really flow?
#  - config_problems: the heartbeat table outside the publication, without
#    its row (DfE's table: no primary key, one row with id = 1);
#  - after each successful sync: the slot's confirmed_flush_lsn did not move
#    (slot_not_advancing), 0 rows synced while the allowlisted tables changed
#    (sync_no_rows), last_heartbeat did not move (heartbeat_not_running) —
#    each an event when it appears, not at every sync while it lasts;
#  - a running job without progress for dfe_airbyte.job_stuck_after is stuck
#    in sync_health, and no longer once it progresses.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use DfeTest;
use FakeServer;

my $fake = FakeServer->start;
my $conn_id = $fake->config->{connection_id};
my $node = DfeTest::new_node('flow', conf => <<"CONF");
dfe_airbyte.airbyte_url = '@{[ $fake->url ]}'
dfe_airbyte.airbyte_client_id = 'test-client'
dfe_airbyte.airbyte_client_secret = 'test-secret-value'
dfe_airbyte.connection_id = '$conn_id'
dfe_airbyte.sync_poll_interval = 1
dfe_airbyte.job_stuck_after = 3s
dfe_airbyte.http_max_retries = 1
dfe_airbyte.http_retry_base_delay = 50
dfe_airbyte.http_timeout = 3
CONF
DfeTest::wait_for_worker($node);

sub sql { return $node->safe_psql('postgres', $_[0]); }
sub events { return sql("SELECT count(*) FROM dfe_airbyte.events WHERE kind = '$_[0]'"); }
sub heartbeat_problems
{
	return sql(q{SELECT string_agg(severity || ': ' || problem, E'\n' ORDER BY problem)
FROM dfe_airbyte.config_problems WHERE object = 'airbyte_heartbeat'});
}

sql(q{CREATE TABLE public.orders (id bigserial PRIMARY KEY, note text)});
# as DfE's Terraform creates it: no primary key, replica identity full
sql(q{CREATE TABLE public.airbyte_heartbeat (id integer, last_heartbeat timestamptz);
ALTER TABLE public.airbyte_heartbeat REPLICA IDENTITY FULL});
sql(q{CREATE PUBLICATION airbyte_publication FOR TABLE public.orders});
sql(q{SELECT pg_create_logical_replication_slot('airbyte_slot', 'pgoutput')});
sql(q{SELECT dfe_airbyte_load_config(E'shared:\n  orders:\n    - id\n    - note\n')});

# --- config_problems ------------------------------------------------------------
my $p = heartbeat_problems();
like($p, qr/^error: table airbyte_heartbeat has no row with id = 1/m, 'missing heartbeat row reported');
like($p, qr/^error: table airbyte_heartbeat is not in publication "airbyte_publication"/m,
	'heartbeat table outside the publication reported');
like(sql(q{SELECT hint FROM dfe_airbyte.config_problems WHERE problem LIKE '%not in publication "airbyte_publication": the heartbeat%'}),
	qr/^ALTER PUBLICATION airbyte_publication ADD TABLE public.airbyte_heartbeat;$/, 'hint: the ALTER PUBLICATION');
# pg_monitor sees the problems without being able to read the table
sql(q{CREATE ROLE watcher LOGIN IN ROLE pg_monitor});
like($node->safe_psql('postgres', q{SELECT count(*) FROM dfe_airbyte.config_problems WHERE object = 'airbyte_heartbeat'},
		extra_params => ['-U', 'watcher']), qr/^2$/, 'pg_monitor sees both heartbeat problems');
sql(q{ALTER PUBLICATION airbyte_publication ADD TABLE public.airbyte_heartbeat});
sql(q{INSERT INTO public.airbyte_heartbeat VALUES ('1', now())});
is(heartbeat_problems(), '', 'a heartbeat table in the publication with its row: no problem');

# --- after each successful sync ------------------------------------------------
# what Airbyte's sync does: confirm the slot, run the heartbeat query
sub consume_and_beat
{
	sql(q{SELECT pg_replication_slot_advance('airbyte_slot', pg_current_wal_lsn())});
	sql(q{UPDATE public.airbyte_heartbeat SET last_heartbeat = clock_timestamp() WHERE id = 1});
}
sub app_writes { sql(q{INSERT INTO public.orders (note) SELECT 'n' FROM generate_series(1, 20)}); }
sub sync_succeeds
{
	my ($rows) = @_;
	my $id = $fake->create_job(status => 'succeeded', rowsSynced => $rows, bytesSynced => $rows * 100)->{jobId};
	ok(DfeTest::poll_until($node, "SELECT count(*) FROM dfe_airbyte.flow_checks WHERE job_id = $id", '1'),
		"job $id: checked after its success");
	return $id;
}

app_writes();
consume_and_beat();
my $j1 = sync_succeeds(20);
app_writes();
consume_and_beat();
my $j2 = sync_succeeds(20);
is(sql("SELECT findings FROM dfe_airbyte.flow_checks WHERE job_id = $j2"), '{}', 'a healthy sync: no finding');
is(sql(q{SELECT count(*) FROM dfe_airbyte.events WHERE kind IN ('slot_not_advancing', 'sync_no_rows', 'heartbeat_not_running')}),
	'0', 'no event while data flows');
cmp_ok(sql("SELECT table_changes FROM dfe_airbyte.flow_checks WHERE job_id = $j2"), '>=', 40,
	'the allowlisted tables\' change counters are kept');

# Airbyte "succeeds" but reads nothing: slot not confirmed, heartbeat not run
app_writes();
my $j3 = sync_succeeds(0);
is(sql("SELECT findings FROM dfe_airbyte.flow_checks WHERE job_id = $j3"),
	'{slot_not_advancing,sync_no_rows,heartbeat_not_running}', 'all three findings');
is(events('slot_not_advancing'), '1', 'slot_not_advancing event');
is(events('sync_no_rows'), '1', 'sync_no_rows event');
is(events('heartbeat_not_running'), '1', 'heartbeat_not_running event');
like(sql("SELECT detail FROM dfe_airbyte.events WHERE kind = 'sync_no_rows'"),
	qr/job $j3 succeeded with 0 rows, although the allowlisted tables saw 20 inserts, updates and deletes/,
	'sync_no_rows says what changed');
like(sql("SELECT detail FROM dfe_airbyte.events WHERE kind = 'heartbeat_not_running'"),
	qr/last_heartbeat did not move since the previous successful sync/, 'heartbeat_not_running says why');
like(sql("SELECT object || ' ' || severity FROM dfe_airbyte.events WHERE kind = 'slot_not_advancing'"),
	qr/^job $j3 warning$/, 'the event names the job');

# it lasts: recorded, not raised again
app_writes();
my $j4 = sync_succeeds(0);
is(sql("SELECT findings FROM dfe_airbyte.flow_checks WHERE job_id = $j4"),
	'{slot_not_advancing,sync_no_rows,heartbeat_not_running}', 'findings recorded again');
is(sql(q{SELECT count(*) FROM dfe_airbyte.events WHERE kind IN ('slot_not_advancing', 'sync_no_rows', 'heartbeat_not_running')}),
	'3', 'but no new events while it lasts');

# the heartbeat row disappears (a sanitised copy, a truncate)
sql(q{DELETE FROM public.airbyte_heartbeat});
consume_and_beat();
my $j5 = sync_succeeds(20);
is(sql("SELECT findings FROM dfe_airbyte.flow_checks WHERE job_id = $j5"), '{heartbeat_not_running}',
	'no heartbeat row: heartbeat not running');
like(heartbeat_problems(), qr/has no row with id = 1/, 'and config_problems says so');

# --- a stuck job -----------------------------------------------------------------
my $j6 = $fake->create_job(status => 'running', frozen => 1, rowsSynced => 100, bytesSynced => 1000)->{jobId};
ok(DfeTest::poll_until($node, 'SELECT last_job_id || last_job_status || last_job_rows_synced || stuck FROM dfe_airbyte.sync_health',
		"${j6}running100false"), 'a running job with its progress, not stuck');
ok(DfeTest::poll_until($node, 'SELECT stuck FROM dfe_airbyte.sync_health', 't', 60),
	'without progress for job_stuck_after: stuck');
like(sql('SELECT hint FROM dfe_airbyte.sync_health'), qr/sync job $j6 has been running without progress/, 'hint on a stuck job');
$fake->control(POST => "/airbyte/jobs/$j6", { rowsSynced => 250, bytesSynced => 2500 });
ok(DfeTest::poll_until($node, 'SELECT last_job_rows_synced::text || stuck FROM dfe_airbyte.sync_health', '250false'),
	'it progresses: not stuck');
is(sql('SELECT stuck_after FROM dfe_airbyte.sync_health'), '00:00:03', 'stuck_after shows the setting');

$node->stop;
done_testing();
