# Sync health: the worker follows the connection's sync jobs, keeps a
# bounded history, reports staleness and failures once per transition,
# triggers the policy tag check after each newly seen success, and
# dfe_airbyte.sync_health shows it in one row.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;
use DfeTest;
use FakeServer;

my $CONN = '11111111-1111-1111-1111-111111111111';

# --- without Airbyte settings: the view says so ---------------------------------
my $bare = DfeTest::new_node('unconfigured', conf => "dfe_airbyte.sync_poll_interval = 1\n");
DfeTest::wait_for_worker($bare);
DfeTest::wait_for_worker_loops($bare, 'network', 2);
is($bare->safe_psql('postgres',
		"SELECT coalesce(checked_at::text, '-') || ' ' || coalesce(stale::text, '-') FROM dfe_airbyte.sync_health"),
	'- -', 'unconfigured: one row, never checked, staleness unknown');
like($bare->safe_psql('postgres', 'SELECT hint FROM dfe_airbyte.sync_health'),
	qr/the worker has not read Airbyte's jobs yet/, 'unconfigured: hint');
$bare->stop;

# --- configured ----------------------------------------------------------------------
my $fake = FakeServer->start;
my $node = DfeTest::new_node('health', conf => <<"CONF");
dfe_airbyte.airbyte_url = '@{[ $fake->url ]}'
dfe_airbyte.airbyte_client_id = 'test-client'
dfe_airbyte.airbyte_client_secret = 'test-secret-value'
dfe_airbyte.connection_id = '$CONN'
dfe_airbyte.sync_poll_interval = 1
dfe_airbyte.sync_stale_after = 1
dfe_airbyte.history_max_rows = 100
dfe_airbyte.http_retry_base_delay = 50
dfe_airbyte.http_max_retries = 1
dfe_airbyte.http_timeout = 3
log_min_messages = debug1
CONF
DfeTest::wait_for_worker($node);

sub sql { return $node->safe_psql('postgres', $_[0]) }

# the worker's sync health poll (every sync_poll_interval)
my $JOB_LIST = qr{^/api/public/v1/jobs$};

sub events
{
	my ($kind) = @_;
	return sql("SELECT count(*) FROM dfe_airbyte.events WHERE kind = '$kind'");
}

ok(DfeTest::poll_until($node, 'SELECT checked_at IS NOT NULL FROM dfe_airbyte.sync_health', 't'),
	'the worker checks Airbyte');
is(sql("SELECT coalesce(last_job_id::text, '-') || ' ' || stale || ' ' || coalesce(hint, '-') FROM dfe_airbyte.sync_health"),
	'- false -', 'no job yet, not stale yet');

# a successful job
my $j1 = $fake->create_job(status => 'succeeded')->{jobId};
ok(DfeTest::poll_until($node, 'SELECT last_job_id || last_job_status || last_success_job_id FROM dfe_airbyte.sync_health',
		"${j1}succeeded$j1"), 'success seen');
is(sql('SELECT stale FROM dfe_airbyte.sync_health'), 'f', 'fresh');
ok($node->wait_for_log(qr/sync job $j1 succeeded; BigQuery is not configured, so no policy tag check/),
	'policy tag check called after the success');

# a failed job: one event, however many polls
my $j2 = $fake->create_job(status => 'running', running_seconds => 1, final_status => 'failed')->{jobId};
ok(DfeTest::poll_until($node, 'SELECT last_job_status FROM dfe_airbyte.sync_health', 'failed'), 'failure seen');
$fake->wait_for_requests(since => $fake->mark, path => $JOB_LIST, count => 3);    # three polls later
is(events('sync_failed'), '1', 'a failed job is one event');
like(sql("SELECT detail FROM dfe_airbyte.events WHERE kind = 'sync_failed'"),
	qr/Airbyte sync job $j2 failed/, 'event names the job');
like(sql('SELECT hint FROM dfe_airbyte.sync_health'), qr/the last sync job failed/, 'hint on failure');
is(sql('SELECT last_success_job_id FROM dfe_airbyte.sync_health'), $j1, 'last success is still the first job');

# a job that ends between two polls while a newer one runs is still seen
my $j3 = $fake->create_job(status => 'running', frozen => 1)->{jobId};
ok(DfeTest::poll_until($node, "SELECT status FROM dfe_airbyte.sync_jobs WHERE job_id = $j3", 'running'), 'job 3 running');
my $j4 = $fake->create_job(status => 'running', frozen => 1)->{jobId};
ok(DfeTest::poll_until($node, 'SELECT last_job_id FROM dfe_airbyte.sync_health', $j4), 'job 4 is the last job');
$fake->control(POST => "/airbyte/jobs/$j3", { status => 'succeeded' });
ok(DfeTest::poll_until($node, 'SELECT last_success_job_id FROM dfe_airbyte.sync_health', $j3),
	'older job seen succeeding after a newer one started');
ok($node->wait_for_log(qr/sync job $j3 succeeded/), 'policy tag check after that success too');

# stale: one warning event; fresh again: one info event
sql("UPDATE dfe_airbyte.sync_jobs SET started_at = now() - interval '2 hours', last_updated_at = now() - interval '2 hours' WHERE job_id = $j3");
ok(DfeTest::poll_until($node, 'SELECT stale FROM dfe_airbyte.sync_health', 't'), 'stale once the last success is old');
ok(DfeTest::poll_until($node, "SELECT count(*) FROM dfe_airbyte.events WHERE kind = 'sync_stale'", '1'), 'stale event');
$fake->wait_for_requests(since => $fake->mark, path => $JOB_LIST, count => 3);
is(events('sync_stale'), '1', 'stale is one event, not one per poll');
is(sql("SELECT severity FROM dfe_airbyte.events WHERE kind = 'sync_stale'"), 'warning', 'stale event is a warning');
like(sql('SELECT hint FROM dfe_airbyte.sync_health'), qr/no successful sync since/, 'stale hint');
ok($node->log_contains(qr/WARNING:  dfe_airbyte: no successful Airbyte sync since/), 'stale warning in the log');
$fake->control(POST => "/airbyte/jobs/$j4", { status => 'succeeded' });
ok(DfeTest::poll_until($node, 'SELECT stale FROM dfe_airbyte.sync_health', 'f'), 'fresh again');
ok(DfeTest::poll_until($node, "SELECT count(*) FROM dfe_airbyte.events WHERE kind = 'sync_fresh'", '1'),
	'fresh event');

# Airbyte failing: check_error, one event, then recovery
$fake->faults({ method => 'GET', path => '^/api/public/v1/jobs$', status => 503, times => undef });
ok(DfeTest::poll_until($node, 'SELECT check_error IS NOT NULL FROM dfe_airbyte.sync_health', 't'),
	'a failing check is recorded');
like(sql('SELECT check_error FROM dfe_airbyte.sync_health'), qr/HTTP 503/, 'check_error says why');
like(sql('SELECT hint FROM dfe_airbyte.sync_health'), qr/the last check of Airbyte failed/, 'hint on a failing check');
$fake->wait_for_requests(since => $fake->mark, path => $JOB_LIST, count => 2);
is(events('sync_check_failed'), '1', 'a failing check is one event');
$fake->clear_faults;
ok(DfeTest::poll_until($node, 'SELECT check_error IS NULL FROM dfe_airbyte.sync_health', 't'), 'check works again');

# no success at all, watching for longer than sync_stale_after: stale
$fake->faults({ method => 'GET', path => '^/api/public/v1/jobs$', status => 200, body => { data => [] }, times => undef });
# two polls answered empty: the second began after the first was recorded
$fake->wait_for_requests(since => $fake->mark, path => $JOB_LIST, count => 2);
sql("DELETE FROM dfe_airbyte.sync_jobs; UPDATE dfe_airbyte.sync_watch SET watching_since = now() - interval '2 hours'");
is(sql("SELECT coalesce(last_success_job_id::text, '-') || ' ' || stale FROM dfe_airbyte.sync_health"), '- true',
	'no success while watching for longer than sync_stale_after: stale');
like(sql('SELECT hint FROM dfe_airbyte.sync_health'), qr/no successful sync seen since/, 'hint: none seen');
$fake->clear_faults;

# bounded history: row cap and retention, the newest success kept
sql("INSERT INTO dfe_airbyte.sync_jobs (job_id, status, last_seen) SELECT g, 'failed', now() FROM generate_series(1000, 1149) g");
sql("INSERT INTO dfe_airbyte.sync_jobs (job_id, status, last_seen) VALUES (900, 'succeeded', now()), (5000, 'failed', now() - interval '30 days')");
ok(DfeTest::poll_until($node, 'SELECT count(*) <= 101 FROM dfe_airbyte.sync_jobs', 't'), 'history pruned');
is(sql('SELECT count(*) FROM dfe_airbyte.sync_jobs WHERE job_id = 5000'), '0', 'rows past history_retention pruned');
is(sql('SELECT count(*) FROM dfe_airbyte.sync_jobs WHERE job_id = 900'), '1', 'the newest success is kept');
is(sql('SELECT count(*) FROM dfe_airbyte.sync_jobs WHERE job_id BETWEEN 1000 AND 1149'), '100',
	'at most history_max_rows other rows');

# permissions
sql('CREATE ROLE watcher LOGIN IN ROLE pg_monitor; CREATE ROLE plain LOGIN');
my ($ret, $out, $err) = $node->psql('postgres', 'SELECT count(*) FROM dfe_airbyte.sync_health',
	extra_params => [ '-U', 'watcher' ]);
is($out, '1', 'pg_monitor can read sync_health');
($ret, $out, $err) = $node->psql('postgres', 'SELECT count(*) FROM dfe_airbyte.sync_health',
	extra_params => [ '-U', 'plain' ]);
like($err, qr/permission denied/, 'others cannot');

$node->stop;
unlike(slurp_file($node->logfile), qr/test-secret-value/, 'secret not in the server log');
done_testing();
