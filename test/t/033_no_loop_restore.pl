# No recreate loop and restores: while the full re-sync a
# recreation asked for runs, passing the limit again only warns; once it
# succeeds the guard acts again; recreations are capped per 24 hours (an
# event).  A database restored from another server's backup (another
# system identifier) is 'restored': nothing is recreated nor asked of
# Airbyte until dfe_airbyte_confirm_restore().
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use DfeTest;
use FakeServer;

my $MB = 1024 * 1024;

my $fake = FakeServer->start;
# a refresh job that runs until the test says otherwise
$fake->config(job_pending_seconds => 0.1, job_running_seconds => 3600);
my $conn_id = $fake->config->{connection_id};

my $node = DfeTest::new_node('noloop',
	init => { extra => ['--wal-segsize=1'] },
	conf => <<"CONF");
dfe_airbyte.check_interval = 1s
dfe_airbyte.sync_poll_interval = 1s
dfe_airbyte.max_slot_wal_size = 4MB
# warn until the test has created the slot: under recreate the guard would
# create a missing slot itself if it looked first
dfe_airbyte.slot_limit_action = warn
dfe_airbyte.max_slot_recreations_per_day = 2
dfe_airbyte.airbyte_url = '@{[ $fake->url ]}'
dfe_airbyte.airbyte_client_id = 'test-client'
dfe_airbyte.airbyte_client_secret = 'test-secret-value'
dfe_airbyte.connection_id = '$conn_id'
dfe_airbyte.http_max_retries = 0
min_wal_size = 2MB
max_wal_size = 64MB
CONF
DfeTest::wait_for_worker($node);
DfeTest::wait_for_guard($node);

sub sql { return $node->safe_psql('postgres', $_[0]); }

sub set_conf
{
	my (%kv) = @_;
	sql("ALTER SYSTEM SET $_ = '$kv{$_}'") for sort keys %kv;
	$node->reload;
}

sub grow_wal
{
	my ($mb) = @_;
	sql(join ";\n",
		("SELECT pg_logical_emit_message(false, 'pad', repeat('x', $MB))") x $mb);
}

sub wait_for
{
	my ($sql, $want, $what) = @_;
	ok(DfeTest::poll_until($node, $sql, $want, 90), $what);
}

sub recreations { return sql('SELECT count(*) FROM dfe_airbyte.slot_recreations'); }
sub newest { return sql("SELECT $_[0] FROM dfe_airbyte.slot_recreations ORDER BY id DESC LIMIT 1"); }
sub last_event_id { return sql("SELECT coalesce(max(id), 0) FROM dfe_airbyte.events"); }

sub refreshes
{
	my ($since) = @_;
	return scalar @{ $fake->requests(since => $since, method => 'POST',
		path => qr{^/api/v1/connections/refresh$}) };
}

sub job_done
{
	my ($job) = @_;
	$fake->control(POST => "/airbyte/jobs/$job", { status => 'succeeded' });
}

sql("SELECT pg_create_logical_replication_slot('airbyte_slot', 'pgoutput')");
sql("ALTER SYSTEM SET dfe_airbyte.slot_limit_action = 'recreate'");
sql('SELECT pg_reload_conf()');
# the guard reloads on SIGHUP at the start of its next round
DfeTest::wait_for_worker_loops($node, 'guard', 2);
wait_for("SELECT count(*) > 0 FROM dfe_airbyte.slot_samples WHERE slot_name = 'airbyte_slot'", 't',
	'the guard samples the slot');

# ---- a running re-sync: no second recreation
grow_wal(6);
wait_for("SELECT resync_state || ' ' || coalesce(resync_job_status, '?') FROM dfe_airbyte.slot_recreations",
	'started running', 'first recreation; its re-sync job runs and the network worker records it');
my $job1 = newest('resync_job_id');

my $ev = last_event_id();
grow_wal(6);
wait_for("SELECT count(*) FROM dfe_airbyte.events WHERE id > $ev AND kind = 'slot_limit_exceeded'
          AND data->>'recreate_held' = 'resync_running'", '1',
	'past the limit again during the re-sync: a warning naming the running re-sync');
like(sql("SELECT detail FROM dfe_airbyte.events WHERE id > $ev AND kind = 'slot_limit_exceeded'"),
	qr/still pending or running/, 'the warning says why the slot is not recreated');
is(sql("SELECT status FROM dfe_airbyte.replication_slot_health WHERE slot_name = 'airbyte_slot'"), 'critical',
	'the slot is critical meanwhile');
DfeTest::wait_for_worker_loops($node, 'guard', 3);
is(recreations(), '1', 'no second recreation while the re-sync runs');
is(sql("SELECT count(*) FROM dfe_airbyte.events WHERE id > $ev AND kind = 'slot_limit_exceeded'"), '1',
	'warned once, not every check');

# ---- the re-sync succeeds: the guard acts normally again
job_done($job1);
wait_for("SELECT resync_job_status || ' ' || (resync_finished_at IS NOT NULL) FROM dfe_airbyte.slot_recreations WHERE resync_job_id = $job1",
	'succeeded true', 'the network worker records the success');
wait_for("SELECT count(*) FROM dfe_airbyte.events WHERE kind = 'full_resync_succeeded'", '1',
	'full_resync_succeeded event');
wait_for('SELECT count(*) FROM dfe_airbyte.slot_recreations', '2',
	'after the success the slot still over the limit is recreated');
wait_for("SELECT resync_state FROM dfe_airbyte.slot_recreations ORDER BY id DESC LIMIT 1", 'started',
	'with its re-sync');
job_done(newest('resync_job_id'));
wait_for("SELECT resync_job_status FROM dfe_airbyte.slot_recreations ORDER BY id DESC LIMIT 1", 'succeeded',
	'second re-sync succeeded');

# ---- the cap: two recreations in 24 hours, the third is refused (an event)
$ev = last_event_id();
my $mark = $fake->mark;
grow_wal(6);
wait_for("SELECT count(*) FROM dfe_airbyte.events WHERE id > $ev AND kind = 'slot_recreation_cap_reached'", '1',
	'the daily cap is an event');
is(sql("SELECT severity FROM dfe_airbyte.events WHERE id > $ev AND kind = 'slot_recreation_cap_reached'"), 'critical',
	'a critical one');
ok(sql("SELECT count(*) FROM dfe_airbyte.events WHERE id > $ev AND kind = 'slot_limit_exceeded' AND data->>'recreate_held' = 'daily_cap'") == 1,
	'and the limit warning says the cap holds the recreation back');
DfeTest::wait_for_worker_loops($node, 'guard', 3);
is(recreations(), '2', 'no third recreation');
is(refreshes($mark), 0, 'nothing asked of Airbyte');
# raising the cap lets the guard act at once
set_conf('dfe_airbyte.max_slot_recreations_per_day' => '100');
wait_for('SELECT count(*) FROM dfe_airbyte.slot_recreations', '3', 'a higher cap: recreated');
job_done(newest('resync_job_id')) if DfeTest::poll_until($node,
	"SELECT resync_job_id IS NOT NULL FROM dfe_airbyte.slot_recreations ORDER BY id DESC LIMIT 1", 't', 60);
wait_for("SELECT resync_job_status FROM dfe_airbyte.slot_recreations ORDER BY id DESC LIMIT 1", 'succeeded',
	'third re-sync succeeded');

# ---- a restore from another server's backup (simulated: another recorded identifier)
is(sql('SELECT system_identifier = dfe_airbyte_system_identifier() FROM dfe_airbyte.server_identity'), 't',
	'the guard recorded this server\'s identity');
is(sql('SELECT system_identifier FROM pg_control_system()'), sql('SELECT dfe_airbyte_system_identifier()'),
	'as pg_control_system() shows it');
$ev = last_event_id();
$mark = $fake->mark;
my $recs = recreations();
sql('UPDATE dfe_airbyte.server_identity SET system_identifier = system_identifier + 1');
sql("SELECT pg_drop_replication_slot('airbyte_slot')");
wait_for("SELECT count(*) FROM dfe_airbyte.events WHERE id > $ev AND kind = 'database_restored'", '1',
	'database_restored event');
is(sql("SELECT status FROM dfe_airbyte.replication_slot_health WHERE slot_name = 'airbyte_slot'"), 'restored',
	'the missing slot is reported restored, not lost');
like(sql("SELECT hint FROM dfe_airbyte.replication_slot_health WHERE slot_name = 'airbyte_slot'"),
	qr/dfe_airbyte_confirm_restore\(\)/, 'the hint names the confirmation');
is(sql("SELECT severity FROM dfe_airbyte.config_problems WHERE object = 'restored'"), 'error',
	'config_problems reports the restore');
DfeTest::wait_for_worker_loops($node, 'guard', 3);
is(recreations(), $recs, 'nothing recreated');
is(sql("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'airbyte_slot'"), '0', 'no slot created');
is(refreshes($mark), 0, 'nothing asked of Airbyte');
is(sql("SELECT count(*) FROM dfe_airbyte.events WHERE id > $ev AND kind = 'database_restored'"), '1',
	'reported once, not every check');

# confirmation by a DBA (a member of dfe_airbyte_admin)
sql('CREATE ROLE dba LOGIN IN ROLE dfe_airbyte_admin');
my ($ret, $out, $err) = $node->psql('postgres', 'SELECT dfe_airbyte_confirm_restore()');
is($ret, 0, 'confirmed (as superuser here)') or diag($err);
# and the function is the admin role's: an ordinary role cannot
sql('CREATE ROLE nobody LOGIN');
($ret, $out, $err) = $node->psql('postgres', 'SET ROLE nobody; SELECT dfe_airbyte_confirm_restore()');
like($err, qr/permission denied for function dfe_airbyte_confirm_restore/, 'PUBLIC may not confirm');
($ret, $out, $err) = $node->psql('postgres', 'SET ROLE dba; SELECT dfe_airbyte_confirm_restore()');
like($out, qr/nothing to confirm/, 'the admin role may call it; nothing left to confirm');
is(sql('SELECT confirmed_by IS NOT NULL AND previous_system_identifier IS NOT NULL FROM dfe_airbyte.server_identity'),
	't', 'the confirmation is recorded');
wait_for("SELECT count(*) FROM dfe_airbyte.events WHERE id > $ev AND kind = 'slot_created'", '1',
	'after the confirmation the guard creates the slot');
wait_for("SELECT resync_state FROM dfe_airbyte.slot_recreations ORDER BY id DESC LIMIT 1", 'started',
	'and Airbyte is asked for the full re-sync');
is(sql("SELECT count(*) FROM dfe_airbyte.events WHERE kind = 'restore_confirmed'"), '1', 'restore_confirmed event');

# an Airbyte before 1.2 accepts the refresh without a job id: the first job
# that started after the request and succeeded ends the re-sync
my $rid = sql(q{INSERT INTO dfe_airbyte.slot_recreations (slot_name, reason, recreated_at, resync_state, resync_started_at)
                VALUES ('airbyte_slot', 'over_limit', now(), 'started', now()) RETURNING id});
DfeTest::wait_for_worker_loops($node, 'network', 3);
is(sql("SELECT resync_finished_at IS NULL FROM dfe_airbyte.slot_recreations WHERE id = $rid"), 't',
	'a re-sync without a job id counts as running');
sql(q{INSERT INTO dfe_airbyte.sync_jobs (job_id, status, job_type, started_at)
      VALUES (999999, 'succeeded', 'sync', now() + interval '1 second')});
wait_for("SELECT resync_job_status FROM dfe_airbyte.slot_recreations WHERE id = $rid", 'succeeded',
	'until a job that started after it succeeded');

unlike(slurp_file($node->logfile), qr/PANIC|terminated by signal/, 'no crash');
$node->stop;
$fake->stop;
done_testing();
