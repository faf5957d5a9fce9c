# Exactly one full re-sync per slot recreation (src/resync.c),
# on the Airbyte profile of this run (DFE_AIRBYTE_PROFILE; test/check runs
# this file once per profile).  The fake counts the refresh requests it
# ACCEPTED (each one saves refresh rows) and the refresh JOBS that result;
# every case must end with one of each:
#   - a plain recreation;
#   - a job running when the worker asks ({"job":null} from 1.2, {"value":true}
#     before): the refresh is the next job Airbyte creates, asked once;
#   - the answer lost (the server accepts, then the connection hangs until
#     the client times out): never asked again;
#   - a request that did not land (connection reset before the server saw
#     it): asked again only once a later non-refresh job proves it;
#   - the worker terminated between "asked" and the answer;
#   - a destination without refresh support: a critical event, not asked
#     again every check.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use DfeTest;
use FakeServer;

my $profile = FakeServer::airbyte_profile();
note("Airbyte profile $profile");
my $job_null = FakeServer::profile_at_least('1.2');    # {"job":null} rather than {"value":true}

my $fake = FakeServer->start;
$fake->config(job_pending_seconds => 0.1, job_running_seconds => 0.5);
my $conn_id = $fake->config->{connection_id};
my $url = $fake->url;

my $node = DfeTest::new_node('resync', conf => <<"CONF");
dfe_airbyte.check_interval = 1s
# warn until the slot exists: under recreate the guard would create a
# missing slot itself if it looked first
dfe_airbyte.slot_limit_action = warn
# six recreations in a few minutes: above the daily cap's default
dfe_airbyte.max_slot_recreations_per_day = 100
dfe_airbyte.airbyte_url = '$url'
dfe_airbyte.airbyte_client_id = 'test-client'
dfe_airbyte.airbyte_client_secret = 'test-secret-value'
dfe_airbyte.connection_id = '$conn_id'
dfe_airbyte.http_max_retries = 3
dfe_airbyte.http_connect_timeout = 2s
dfe_airbyte.http_timeout = 4s
CONF
DfeTest::wait_for_worker($node);

sub sql { return $node->safe_psql('postgres', $_[0]); }
sub events { return sql("SELECT count(*) FROM dfe_airbyte.events WHERE kind = '$_[0]'"); }

sub counters
{
	my $s = $fake->stats;
	return ($s->{refresh_requests_accepted} // 0, $s->{refresh_jobs_created} // 0,
		$s->{'POST /api/v1/connections/refresh'} // 0);
}

# the newest recreation id so far; a recreation: drop the slot, the guard
# recreates it ("missing") and records a pending re-sync
sub rec_mark { return sql("SELECT coalesce(max(id), 0) FROM dfe_airbyte.slot_recreations"); }

sub recreate
{
	my $rec = rec_mark();
	sql("SELECT pg_drop_replication_slot('airbyte_slot')");
	ok(DfeTest::poll_until($node,
			"SELECT count(*) FROM dfe_airbyte.slot_recreations WHERE id > $rec AND recreated_at IS NOT NULL", '1'),
		'slot recreated');
	return $rec;
}

sub state_of
{
	my ($rec) = @_;
	return "SELECT resync_state || ' ' || coalesce(resync_answer, '-') FROM dfe_airbyte.slot_recreations WHERE id > $rec";
}

# (accepted, refresh jobs) grew by exactly one since @before, also a few checks later
sub exactly_one
{
	my ($what, @before) = @_;
	my @now = counters();
	is($now[0] - $before[0], 1, "$what: one refresh request accepted");
	is($now[1] - $before[1], 1, "$what: one refresh job");
	DfeTest::wait_for_worker_loops($node, 'network', 3);
	my @later = counters();
	is_deeply([ $later[0] - $before[0], $later[1] - $before[1] ], [ 1, 1 ],
		"$what: still one of each three checks later");
	return @later;
}

sub finish_running_jobs
{
	for my $j (@{ $fake->control(GET => '/airbyte/jobs')->{jobs} })
	{
		$fake->control(POST => "/airbyte/jobs/$j->{jobId}", { status => 'succeeded' })
		  if $j->{status} =~ /^(pending|running|queued|incomplete)$/;
	}
}

sql("SELECT pg_create_logical_replication_slot('airbyte_slot', 'pgoutput')");
sql("ALTER SYSTEM SET dfe_airbyte.slot_limit_action = 'recreate'");
sql('SELECT pg_reload_conf()');
# the guard reloads on SIGHUP at the start of its next round
DfeTest::wait_for_worker_loops($node, 'guard', 2);

# ---- 1. a plain recreation ------------------------------------------------
my @before = counters();
my $rec = recreate();
ok(DfeTest::poll_until($node, "SELECT resync_state FROM dfe_airbyte.slot_recreations WHERE id > $rec", 'started'),
	'plain: re-sync started');
my $job = sql("SELECT resync_job_id FROM dfe_airbyte.slot_recreations WHERE id > $rec");
my ($rjob) = grep { $_->{jobId} == $job } @{ $fake->control(GET => '/airbyte/jobs')->{jobs} };
is($rjob->{jobType} // '', 'refresh', 'plain: the recorded job is the refresh');
@before = exactly_one('plain', @before);
ok(sql("SELECT resync_asked_at <= resync_answered_at FROM dfe_airbyte.slot_recreations WHERE id > $rec"),
	'asked-at recorded before the answer');
finish_running_jobs();

# ---- 2. a job running when the worker asks -------------------------------
my $running = $fake->create_job(status => 'running', frozen => 1)->{jobId};
$rec = recreate();
my $answer = $job_null ? 'null_job' : 'accepted';
ok(DfeTest::poll_until($node, state_of($rec), "pending $answer"), "running job: answered $answer");
DfeTest::wait_for_worker_loops($node, 'network', 3);
my @mid = counters();
is($mid[2] - $before[2], 1, 'running job: asked once, not again every check');
is($mid[0] - $before[0], 1, 'running job: the request was accepted (rows saved)');
is($mid[1] - $before[1], 0, 'running job: no refresh job yet');
is(sql("SELECT resync_state FROM dfe_airbyte.slot_recreations WHERE id > $rec"), 'pending',
	'running job: still pending');
# the running job ends; the scheduler's next sync becomes the refresh
$fake->control(POST => "/airbyte/jobs/$running", { status => 'succeeded' });
my $next = $fake->create_job(status => 'pending')->{jobId};
ok(DfeTest::poll_until($node,
		"SELECT resync_state || ' ' || resync_job_id FROM dfe_airbyte.slot_recreations WHERE id > $rec",
		"started $next"), 'running job: the next job created is followed as the refresh');
@before = exactly_one('running job', @before);
finish_running_jobs();

# ---- 3. the answer lost after the server accepted (timeout) --------------
$fake->faults({ method => 'POST', path => '^/api/v1/connections/refresh$', kind => 'accept_hang' });
$rec = recreate();
ok(DfeTest::poll_until($node, "SELECT resync_state FROM dfe_airbyte.slot_recreations WHERE id > $rec", 'started'),
	'lost answer: the refresh job is found and followed');
is(sql("SELECT resync_answer FROM dfe_airbyte.slot_recreations WHERE id > $rec"), 'lost',
	'lost answer: recorded as lost');
is(events('full_resync_answer_lost'), '1', 'lost answer: an event says so');
my $posts = (counters())[2];
@before = exactly_one('lost answer', @before);
is((counters())[2], $posts, 'lost answer: no second POST (no HTTP retry, no re-ask)');
finish_running_jobs();
$fake->clear_faults;

# ---- 4. a request that did not land: asked again only with proof ---------
$fake->faults({ method => 'POST', path => '^/api/v1/connections/refresh$', kind => 'reset' });
$rec = recreate();
ok(DfeTest::poll_until($node, state_of($rec), 'pending lost'), 'not landed: answer lost');
DfeTest::wait_for_worker_loops($node, 'network', 3);
is((counters())[2] - $before[2], 1, 'not landed: not asked again without proof');
# a sync Airbyte creates after the attempt, well past the clock slack (5 s,
# resync.c), is not a refresh: the request cannot have landed (created 6 s
# from now on the fake's clock rather than waited for)
$fake->create_job(status => 'succeeded', created_in => 6);
ok(DfeTest::poll_until($node, "SELECT resync_state FROM dfe_airbyte.slot_recreations WHERE id > $rec", 'started'),
	'not landed: asked again after the proof, and started');
is(events('full_resync_not_received'), '1', 'not landed: an event says so');
is((counters())[2] - $before[2], 2, 'not landed: exactly two POSTs');
@before = exactly_one('not landed', @before);
finish_running_jobs();
$fake->clear_faults;

# ---- 5. the worker terminated between "asked" and the answer ------------
sql("ALTER SYSTEM SET dfe_airbyte.http_timeout = '60s'");
$node->reload;
DfeTest::wait_for_worker_loops($node, 'network', 1);    # it reloads at the start of a round
$fake->faults({ method => 'POST', path => '^/api/v1/connections/refresh$', kind => 'accept_hang' });
$rec = recreate();
ok(DfeTest::poll_until($node,
		"SELECT resync_asked_at IS NOT NULL AND resync_answer IS NULL FROM dfe_airbyte.slot_recreations WHERE id > $rec",
		't'), 'restart: asked, no answer yet');
my $pid = DfeTest::wait_for_worker($node);
sql("SELECT pg_terminate_backend($pid)");
DfeTest::wait_for_worker($node, $pid);
ok(DfeTest::poll_until($node, "SELECT resync_state FROM dfe_airbyte.slot_recreations WHERE id > $rec", 'started'),
	'restart: the new worker follows the refresh it finds');
is((counters())[2] - $before[2], 1, 'restart: not asked again');
@before = exactly_one('restart', @before);
finish_running_jobs();
$fake->clear_faults;
sql("ALTER SYSTEM SET dfe_airbyte.http_timeout = '4s'");
$node->reload;

# ---- 6. a destination without refresh support ----------------------------
$fake->config(supports_refreshes => JSON::PP::false);
$rec = recreate();
if (!$job_null)
{
	ok(DfeTest::poll_until($node, "SELECT count(*) FROM dfe_airbyte.events WHERE kind = 'full_resync_unsupported'", '1'),
		'unsupported: {"value":false} is a critical event');
}
else
{
	ok(DfeTest::poll_until($node, state_of($rec), 'pending null_job'), 'unsupported: {"job":null}');
	# the next job, past the clock slack (as above)
	$fake->create_job(status => 'succeeded', created_in => 6);
	ok(DfeTest::poll_until($node, "SELECT count(*) FROM dfe_airbyte.events WHERE kind = 'full_resync_unsupported'", '1'),
		'unsupported: the next job was no refresh: a critical event');
}
is(sql("SELECT severity FROM dfe_airbyte.events WHERE kind = 'full_resync_unsupported'"), 'critical',
	'unsupported: critical');
like(sql("SELECT detail FROM dfe_airbyte.events WHERE kind = 'full_resync_unsupported'"),
	qr/does not support refreshes.*Airbyte UI/, 'unsupported: says what to do');
$posts = (counters())[2];
DfeTest::wait_for_worker_loops($node, 'network', 3);
is((counters())[2], $posts, 'unsupported: not asked again every check');
is_deeply([ (counters())[0 .. 1] ], [ @before[0 .. 1] ], 'unsupported: nothing accepted, no refresh job');

# ---- the version was read and reported ------------------------------------
ok(DfeTest::poll_until($node, "SELECT count(*) > 0 FROM dfe_airbyte.events WHERE kind = 'airbyte_version'", 't'),
	'the Airbyte version is reported');
is(sql("SELECT data->>'version' FROM dfe_airbyte.events WHERE kind = 'airbyte_version' ORDER BY id DESC LIMIT 1"),
	FakeServer::airbyte_version(), 'with the server\'s version');
like(sql("SELECT severity || ' ' || problem FROM dfe_airbyte.config_problems WHERE object = 'Airbyte'"),
	qr/^(info|warning) Airbyte server version \Q${\ FakeServer::airbyte_version()}\E: /, 'config_problems shows it');

done_testing();
