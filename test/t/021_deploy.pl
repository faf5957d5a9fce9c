# Deploys: queued by a migration's transaction, run by the worker after the
# commit; the Rails migration lock; a sync that already runs; 409; token
# expiry and 401; a failed job; the fake server and the cluster restarted
# mid-deploy; coalescing; wait => true.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;
use Time::HiRes qw(usleep);
use DfeTest;
use FakeServer;

my $SECRET = 'test-secret-value';
my $CONN = '11111111-1111-1111-1111-111111111111';

my $fake = FakeServer->start;
# from 1.8.0 the public job list shows every job type; before, the config API's
my $new_job_list = FakeServer::profile_at_least('1.8');
$fake->config(job_pending_seconds => 0.2, job_running_seconds => 1);
$fake->source_catalog({ users => [qw(id name email)] });

my $node = DfeTest::new_node('deploy', conf => <<"CONF");
dfe_airbyte.airbyte_url = '@{[ $fake->url ]}'
dfe_airbyte.airbyte_client_id = 'test-client'
dfe_airbyte.airbyte_client_secret = '$SECRET'
dfe_airbyte.connection_id = '$CONN'
dfe_airbyte.job_poll_interval = 1
dfe_airbyte.http_retry_base_delay = 50
dfe_airbyte.http_timeout = 3
dfe_airbyte.http_max_retries = 2
dfe_airbyte.deploy_retry_timeout = 60
dfe_airbyte.sync_poll_interval = 3600
# a round of the network worker every second: the checks that nothing
# happens wait for rounds (DfeTest::wait_for_worker_loops)
dfe_airbyte.check_interval = 1
CONF
DfeTest::wait_for_worker($node);
DfeTest::poll_until($node, 'SELECT checked_at IS NOT NULL FROM dfe_airbyte.sync_watch', 't');

$node->safe_psql('postgres', <<'SQL');
CREATE TABLE users (id bigint PRIMARY KEY, name text, email text);
INSERT INTO dfe_airbyte.allowlist (table_name, column_name) VALUES ('users', 'id'), ('users', 'email');
CREATE ROLE app LOGIN IN ROLE dfe_airbyte_admin;
SQL

sub sql { return $node->safe_psql('postgres', $_[0]) }

# queue a deploy the way a migration does (as role app); returns its id
sub deploy
{
	return $node->safe_psql('postgres', 'BEGIN; SELECT dfe_airbyte_deploy(); COMMIT;',
		extra_params => [ '-U', 'app' ]);
}

sub wait_state
{
	my ($id, $state, $timeout) = @_;
	return DfeTest::poll_until($node, "SELECT state FROM dfe_airbyte.deploys WHERE id = $id",
		$state, $timeout // 60);
}

sub deploy_log
{
	my ($id) = @_;
	return sql("SELECT string_agg(coalesce(e->>'step', '-') || ': ' || (e->>'message'), E'\\n' ORDER BY i) "
		  . "FROM dfe_airbyte.deploys, jsonb_array_elements(log) WITH ORDINALITY l(e, i) WHERE id = $id");
}

sub calls
{
	my ($mark, $re) = @_;
	return [ map { "$_->{method} $_->{path}" }
		  @{ $fake->requests(since => $mark, path => $re // qr{^/api/(public/)?v1/(?!applications)}) } ];
}

# --- the Rails migration lock key ---------------------------------------------
my $rails_key = `python3 -c 'import zlib; print(2053462845 * zlib.crc32(b"postgres"))'`;
chomp $rails_key;
is(sql('SELECT dfe_airbyte_migration_lock_key()'), $rails_key,
	'lock key = 2053462845 * zlib.crc32(database name), as ActiveRecord computes it');
sql(q{CREATE DATABASE "café_app_development"});
$node->safe_psql('café_app_development', 'CREATE EXTENSION dfe_airbyte');
my $key2 = `python3 -c 'import zlib; print(2053462845 * zlib.crc32("café_app_development".encode()))'`;
chomp $key2;
is($node->safe_psql('café_app_development', 'SELECT dfe_airbyte_migration_lock_key()'), $key2,
	'lock key for a non-ASCII database name');

# --- a migration holds the lock: the deploy waits, then runs --------------------
my $migration = $node->background_psql('postgres');
$migration->query_safe("SELECT pg_advisory_lock($rails_key)");
my $mark = $fake->mark;
my $id = deploy();
like($id, qr/^\d+$/, 'dfe_airbyte_deploy() returns the id at once');
ok(DfeTest::poll_until($node, "SELECT state || ' ' || step FROM dfe_airbyte.deploys WHERE id = $id",
		'running waiting_for_migrations'), 'deploy waits for the migration');
ok(DfeTest::poll_until($node,
		"SELECT log::text LIKE '%waiting for the Rails migration in process%' FROM dfe_airbyte.deploys WHERE id = $id",
		't'), 'log says it waits for the migration');
DfeTest::wait_for_worker_loops($node, 'network', 2);
is(sql("SELECT step FROM dfe_airbyte.deploys WHERE id = $id"), 'waiting_for_migrations',
	'still waiting while the lock is held');
is_deeply(calls($mark), [], 'no Airbyte call while the migration runs');
is(sql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = dfe_airbyte_worker_pid()"), '0',
	'the worker never takes the migration lock');
is(sql('SELECT requested_by FROM dfe_airbyte.deploys WHERE id = ' . $id), 'app', 'requested_by is the caller');
$migration->query_safe("SELECT pg_advisory_unlock($rails_key)");
ok(wait_state($id, 'succeeded'), 'deploy succeeds once the migration ends');
is_deeply(calls($mark, qr{^/api/(public/)?v1/(connections|sources)}), [
		"GET /api/public/v1/connections/$CONN",
		'POST /api/v1/sources/discover_schema',
		"PATCH /api/public/v1/connections/$CONN" ], 'discover before PATCH');
my $log = deploy_log($id);
like($log, qr/refreshing_connection: the Rails migration has finished/, 'log: migration finished');
like($log, qr/waiting_for_sync: started sync job (\d+)/, 'log: sync started');
like($log, qr/applying_policy_tags: sync job \d+ succeeded/, 'log: sync succeeded');
like($log, qr/applying_policy_tags: skipped: BigQuery not configured/, 'log: policy tags skipped without BigQuery');
is(sql("SELECT step || ' ' || (job_id IS NOT NULL) || ' ' || (finished_at >= started_at) FROM dfe_airbyte.deploys WHERE id = $id"),
	'done true true', 'row: step done, job id and times');
is($fake->connection->{last_patch_raw}, sql('SELECT dfe_airbyte_stream_config_json()::text'),
	'PATCH body is the stream configuration');
$migration->quit;

# --- rollback: no row, no call -------------------------------------------------
my $count = sql('SELECT count(*) FROM dfe_airbyte.deploys');
$mark = $fake->mark;
$node->safe_psql('postgres', 'BEGIN; SELECT dfe_airbyte_deploy(); ROLLBACK;');
DfeTest::wait_for_worker_loops($node, 'network', 2);
is(sql('SELECT count(*) FROM dfe_airbyte.deploys'), $count, 'rollback: no deploy row');
is_deeply(calls($mark, qr{^/api/}), [], 'rollback: no HTTP call');

# --- a sync already runs: no POST /jobs, the deploy waits on it ---------------
my $running = $fake->create_job(status => 'running', frozen => 1)->{jobId};
$mark = $fake->mark;
$id = deploy();
ok(DfeTest::poll_until($node, "SELECT step || ' ' || job_id FROM dfe_airbyte.deploys WHERE id = $id",
		"waiting_for_sync $running"), 'deploy waits on the running job');
$fake->control(POST => "/airbyte/jobs/$running", { status => 'succeeded' });
ok(wait_state($id, 'succeeded'), 'deploy succeeds when that job does');
is(scalar(grep { $_ eq 'POST /api/public/v1/jobs' } @{ calls($mark) }), 0, 'no sync started');
like(deploy_log($id), qr/a sync job is already running: waiting for job $running instead of starting one/,
	'log says why');

# --- 409 on start: the last job read missed it ---------------------------------
$running = $fake->create_job(status => 'running', running_seconds => 5)->{jobId};
# the list that misses it: the public one from 1.8, the config API's before
if ($new_job_list)
{
	$fake->faults({ method => 'GET', path => '^/api/public/v1/jobs$', status => 200, body => { data => [] } });
}
else
{
	$fake->faults({ method => 'POST', path => '^/api/v1/jobs/list$', status => 200,
			body => { jobs => [], totalJobCount => 0 } });
}
$mark = $fake->mark;
$id = deploy();
ok(wait_state($id, 'succeeded'), '409 on start: deploy succeeds');
is(sql("SELECT job_id FROM dfe_airbyte.deploys WHERE id = $id"), $running, '409: waited on the running job');
is_deeply([ map { $_->{status} } @{ $fake->requests(since => $mark, path => qr{^/api/public/v1/jobs$}, method => 'POST') } ],
	[409], 'the start answered 409');
like(deploy_log($id), qr/Airbyte answered that a job is already running: waiting for job $running/, 'log: 409');

# --- a running REFRESH (e.g. the re-sync after a slot recreation): the deploy
# follows it, not the last finished sync; before 1.8 the public list hides it
my $done_sync = $fake->create_job(status => 'succeeded')->{jobId};
my $refresh = $fake->create_job(jobType => 'refresh', status => 'running', frozen => 1)->{jobId};
$mark = $fake->mark;
$id = deploy();
ok(DfeTest::poll_until($node, "SELECT step || ' ' || job_id FROM dfe_airbyte.deploys WHERE id = $id",
		"waiting_for_sync $refresh"), 'running refresh: the deploy waits on it');
isnt(sql("SELECT job_id FROM dfe_airbyte.deploys WHERE id = $id"), $done_sync,
	'running refresh: not on the finished sync');
# the deploy has read the running refresh twice more
$fake->wait_for_requests(since => $fake->mark, path => qr{^/api/public/v1/jobs/$refresh$}, count => 2);
is(sql("SELECT state FROM dfe_airbyte.deploys WHERE id = $id"), 'running',
	'running refresh: no tags while it runs');
$fake->control(POST => "/airbyte/jobs/$refresh", { status => 'succeeded' });
ok(wait_state($id, 'succeeded'), 'running refresh: the deploy goes on when it ends');
like(deploy_log($id), qr/a refresh job is already running: waiting for job $refresh instead of starting one/,
	'running refresh: log names the refresh');
like(deploy_log($id), qr/refresh job $refresh succeeded/, 'running refresh: log says it ended');

# --- the same refresh seen only through a 409 (start before the list shows it)
$refresh = $fake->create_job(jobType => 'refresh', status => 'running', running_seconds => 4)->{jobId};
if ($new_job_list)
{
	$fake->faults({ method => 'GET', path => '^/api/public/v1/jobs$', status => 200, body => { data => [] } });
}
else
{
	$fake->faults({ method => 'POST', path => '^/api/v1/jobs/list$', status => 200,
			body => { jobs => [], totalJobCount => 0 } });
}
$mark = $fake->mark;
$id = deploy();
ok(wait_state($id, 'succeeded'), '409 for a refresh: deploy succeeds');
is(sql("SELECT job_id FROM dfe_airbyte.deploys WHERE id = $id"), $refresh, '409 for a refresh: waited on the refresh');
is_deeply([ map { $_->{status} } @{ $fake->requests(since => $mark, path => qr{^/api/public/v1/jobs$}, method => 'POST') } ],
	[409], '409 for a refresh: the start answered 409');

# --- a table without a primary key (a Rails join table): full refresh, and the
# deploy succeeds (Airbyte would reject the whole PATCH for the gem's stream)
sql("CREATE TABLE roles_users (role_id bigint, user_id bigint);
     INSERT INTO dfe_airbyte.allowlist VALUES ('roles_users', 'role_id'), ('roles_users', 'user_id');");
$fake->source_catalog({ users => [qw(id name email)], roles_users => [qw(role_id user_id)] },
	no_primary_key => ['roles_users']);
$id = deploy();
ok(wait_state($id, 'succeeded'), 'table without a primary key: the deploy succeeds');
my ($ru) = grep { $_->{name} eq 'roles_users' } @{ $fake->connection->{last_patch}{configurations}{streams} };
is_deeply($ru, { name => 'roles_users', syncMode => 'full_refresh_overwrite',
		selectedFields => [ { fieldPath => ['role_id'] }, { fieldPath => ['user_id'] } ] },
	'table without a primary key: full_refresh_overwrite, no cursor, no key, no _ab_cdc_* fields');
like(sql("SELECT problem FROM dfe_airbyte.config_problems WHERE object = 'roles_users'"),
	qr/no primary key: Airbyte copies it whole at each sync/, 'config_problems says what it means');
sql("DELETE FROM dfe_airbyte.allowlist WHERE table_name = 'roles_users'");
$fake->source_catalog({ users => [qw(id name email)] });

# --- token expiry and a 401 mid-deploy -------------------------------------------
# the sync runs until the fake has handed out three tokens (the one after the
# revocation and two renewals of a 2-second token), not for a fixed time that
# a slow machine might use up before the tokens expire
$fake->config(token_expires_in => 2, job_running_seconds => 600);
$mark = $fake->mark;
$id = deploy();
ok(DfeTest::poll_until($node, "SELECT step FROM dfe_airbyte.deploys WHERE id = $id", 'waiting_for_sync'),
	'deploy waits for its sync');
$fake->revoke_tokens;
$fake->wait_for_requests(since => $mark, path => qr{/applications/token$}, count => 3);
$fake->control(POST => '/airbyte/jobs/' . sql("SELECT job_id FROM dfe_airbyte.deploys WHERE id = $id"),
	{ status => 'succeeded' });
ok(wait_state($id, 'succeeded'), 'deploy succeeds across token expiry and revocation');
my $jobreads = $fake->requests(since => $mark, path => qr{^/api/public/v1/jobs/\d+$});
ok((grep { $_->{status} == 401 } @$jobreads), 'a job read got 401');
ok(scalar(@{ $fake->requests(since => $mark, path => qr{/applications/token$}) }) >= 3,
	'tokens renewed during the deploy');
$fake->config(token_expires_in => 180, job_running_seconds => 1);

# --- the sync job fails --------------------------------------------------------------
$fake->config(job_final_status => 'failed');
$id = deploy();
ok(wait_state($id, 'failed'), 'failed job: deploy failed');
is(sql("SELECT step FROM dfe_airbyte.deploys WHERE id = $id"), 'waiting_for_sync', 'failed: step kept');
like(sql("SELECT error FROM dfe_airbyte.deploys WHERE id = $id"),
	qr/Airbyte sync job \d+ ended with status failed/, 'failed: reason recorded');
is(sql("SELECT count(*) FROM dfe_airbyte.events WHERE kind = 'deploy_failed' AND object = 'deploy $id'"), '1',
	'failed: event recorded');
$fake->config(job_final_status => 'succeeded');

# --- a 400 from the PATCH: failed at once, with Airbyte's message and status -----
sql("INSERT INTO dfe_airbyte.allowlist VALUES ('users', 'phone'); ALTER TABLE users ADD COLUMN phone text;");
$id = deploy();
ok(wait_state($id, 'failed'), 'PATCH 400: deploy failed');
is(sql("SELECT step || ' ' || http_status FROM dfe_airbyte.deploys WHERE id = $id"),
	'refreshing_connection 400', 'PATCH 400: step and HTTP status');
like(sql("SELECT error FROM dfe_airbyte.deploys WHERE id = $id"),
	qr/the Airbyte connection update failed: HTTP 400: .*Invalid fields selected for stream users\./,
	'PATCH 400: Airbyte\'s message');
sql("DELETE FROM dfe_airbyte.allowlist WHERE column_name = 'phone'");

# --- the fake server dies mid-deploy and comes back ------------------------------
$fake->config(job_running_seconds => 600);
$id = deploy();
ok(DfeTest::poll_until($node, "SELECT step FROM dfe_airbyte.deploys WHERE id = $id", 'waiting_for_sync'),
	'deploy waiting for its sync');
my $job = sql("SELECT job_id FROM dfe_airbyte.deploys WHERE id = $id");
my $port = $fake->port;
kill 'KILL', $fake->pid;
$fake->stop;
ok(DfeTest::poll_until($node,
		"SELECT retrying_since IS NOT NULL AND log::text LIKE '%trying again every%' FROM dfe_airbyte.deploys WHERE id = $id",
		't'), 'server down: the deploy retries, it does not fail');
is(sql("SELECT state FROM dfe_airbyte.deploys WHERE id = $id"), 'running', 'server down: still running');
# Airbyte keeps its jobs across a restart; the fake does not: it comes back
# with them already made (made after it listens, the worker could read the
# job in between, get a 404 and fail the deploy)
$fake = FakeServer->start(port => $port, jobs => [ map { { status => 'succeeded' } } 1 .. $job ]);
ok(wait_state($id, 'succeeded'), 'server back: the deploy resumes and succeeds');
like(deploy_log($id), qr/Airbyte answers again/, 'log: server back');
is(sql("SELECT count(*) FROM dfe_airbyte.deploys WHERE state = 'running'"), '0', 'no row stuck in running');

# --- the fake server never comes back: failed with the reason ----------------------
$node->append_conf('postgresql.conf', "dfe_airbyte.deploy_retry_timeout = 2\n");
$node->reload;
$fake->source_catalog({ users => [qw(id name email)] });
$fake->faults({ path => '^/api/v1/sources/discover_schema$', status => 503, times => undef });
$id = deploy();
ok(wait_state($id, 'failed'), 'server failing for good: deploy failed');
is(sql("SELECT step || ' ' || http_status FROM dfe_airbyte.deploys WHERE id = $id"),
	'refreshing_connection 503', 'failing for good: step and status');
like(sql("SELECT error FROM dfe_airbyte.deploys WHERE id = $id"), qr/HTTP 503.*still failing after 2s of retries/,
	'failing for good: reason');
$fake->clear_faults;
$node->append_conf('postgresql.conf', "dfe_airbyte.deploy_retry_timeout = 60\n");
$node->reload;

# --- the cluster restarts mid-deploy: resumed ---------------------------------------
$fake->config(job_running_seconds => 1);
$running = $fake->create_job(status => 'running', frozen => 1)->{jobId};
$id = deploy();
ok(DfeTest::poll_until($node, "SELECT step FROM dfe_airbyte.deploys WHERE id = $id", 'waiting_for_sync'),
	'deploy waiting for the sync');
$node->stop('immediate');
$node->start;
DfeTest::wait_for_worker($node);
ok(DfeTest::poll_until($node,
		"SELECT log::text LIKE '%resuming at step waiting_for_sync%' FROM dfe_airbyte.deploys WHERE id = $id", 't'),
	'after the restart the deploy is resumed at its step');
$fake->control(POST => "/airbyte/jobs/$running", { status => 'succeeded' });
ok(wait_state($id, 'succeeded'), 'resumed deploy succeeds');
is(sql("SELECT job_id FROM dfe_airbyte.deploys WHERE id = $id"), $running, 'resumed with the same job');

# --- coalescing ---------------------------------------------------------------------
$migration = $node->background_psql('postgres');
$migration->query_safe("SELECT pg_advisory_lock($rails_key)");
$mark = $fake->mark;
my $first = deploy();
ok(DfeTest::poll_until($node, "SELECT state FROM dfe_airbyte.deploys WHERE id = $first", 'running'),
	'first deploy running');
my @queued = map { deploy() } 1 .. 3;
DfeTest::wait_for_worker_loops($node, 'network', 1);
is(sql("SELECT string_agg(state, ',' ORDER BY id) FROM dfe_airbyte.deploys WHERE id >= $first"),
	'running,queued,queued,queued', 'deploys queued behind the running one');
$migration->query_safe("SELECT pg_advisory_unlock($rails_key)");
ok(wait_state($queued[2], 'succeeded'), 'the newest queued deploy runs after the first');
is(sql("SELECT string_agg(state || ':' || coalesce(coalesced_into::text, '-'), ',' ORDER BY id) FROM dfe_airbyte.deploys WHERE id >= $first"),
	"succeeded:-,coalesced:$queued[2],coalesced:$queued[2],succeeded:-", 'older queued deploys coalesced into it');
is(scalar(grep { $_ =~ /^PATCH/ } @{ calls($mark) }), 2, 'two deploys ran, not four');
$migration->quit;

# --- wait => true ---------------------------------------------------------------------
my ($ret, $out, $err) = $node->psql('postgres', 'SELECT dfe_airbyte_deploy(wait => true)',
	extra_params => [ '-U', 'app' ]);
is($ret, 0, 'wait => true returns');
like($out, qr/^\d+$/, 'wait => true returns the id');
is(sql("SELECT state FROM dfe_airbyte.deploys WHERE id = $out"), 'succeeded', 'wait => true: deploy succeeded');
like($err, qr/NOTICE:  deploy $out: started\n/, 'wait => true: start NOTICE');
like($err, qr/NOTICE:  deploy $out: starting_sync: Airbyte \d+\.\d+\.\d+: source schema rediscovered/, 'wait => true: step NOTICE');
like($err, qr/NOTICE:  deploy $out: waiting_for_sync: started sync job/, 'wait => true: sync NOTICE');
like($err, qr/NOTICE:  deploy $out: applying_policy_tags: skipped: BigQuery not configured/, 'wait => true: end NOTICE');

$fake->config(job_final_status => 'failed');
($ret, $out, $err) = $node->psql('postgres', 'SELECT dfe_airbyte_deploy(wait => true)');
like($err, qr/ERROR:  deploy \d+ failed at step waiting_for_sync/, 'wait => true: failure is an error');
like($err, qr/DETAIL:  Airbyte sync job \d+ ended with status failed/, 'wait => true: with the reason');
$fake->config(job_final_status => 'succeeded');

($ret, $out, $err) = $node->psql('postgres', 'BEGIN; SELECT dfe_airbyte_deploy(wait => true); COMMIT;');
like($err, qr/cannot run inside a transaction block/, 'wait => true in a transaction block: error');
like($err, qr/HINT:  In a migration use SELECT dfe_airbyte_deploy\(\)/, 'wait => true in a transaction: hint');

# --- with BigQuery: the deploy applies the policy tags ----------------------------
{
	my $dir = PostgreSQL::Test::Utils::tempdir;
	my $url = $fake->url;
	my $sa = 'airbyte@proj.iam.gserviceaccount.com';
	my $hidden = 'projects/proj/locations/europe-west2/taxonomies/111/policyTags/222';
	open my $fh, '>', "$dir/federated" or die;
	print $fh "federated-assertion\n";
	close $fh;
	open $fh, '>', "$dir/credentials.json" or die;
	print $fh encode_json({
			type => 'external_account',
			audience => '//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/q',
			subject_token_type => 'urn:ietf:params:oauth:token-type:jwt',
			token_url => "$url/v1/token",
			credential_source => { url => "$url/tenant/oauth2/v2.0/token" },
			service_account_impersonation_url => "$url/v1/projects/-/serviceAccounts/$sa:generateAccessToken" });
	close $fh;
	$node->append_conf('postgresql.conf', <<"BQ");
dfe_airbyte.bigquery_project = 'proj'
dfe_airbyte.bigquery_dataset = 'svc_airbyte_test'
dfe_airbyte.hidden_policy_tag = '$hidden'
dfe_airbyte.bigquery_url = '$url'
dfe_airbyte.google_credentials = '$dir/credentials.json'
dfe_airbyte.azure_client_id = 'azure-client'
dfe_airbyte.azure_federated_token_file = '$dir/federated'
BQ
	$node->reload;
	sql("INSERT INTO dfe_airbyte.blocklist (table_name, column_name) VALUES ('users', 'email')");
	$fake->bigquery_tables({ project => 'proj', dataset => 'svc_airbyte_test', table => 'users',
			schema => { fields => [ { name => 'id', type => 'INTEGER' }, { name => 'email', type => 'STRING' } ] } });
	$id = deploy();
	ok(wait_state($id, 'succeeded'), 'BigQuery: deploy succeeds');
	like(deploy_log($id), qr/applying_policy_tags: policy tags: 1 tagged, 0 already tagged/, 'BigQuery: log counts the tags');
	my ($email) = grep { $_->{name} eq 'email' }
	  @{ $fake->bigquery_table('proj', 'svc_airbyte_test', 'users')->{schema}{fields} };
	is_deeply($email->{policyTags}, { names => [$hidden] }, 'BigQuery: the blocklisted column got the hidden tag');

	$fake->faults({ method => 'GET', path => '^/bigquery/v2/projects/proj/datasets/svc_airbyte_test/tables/users$',
			status => 403, times => undef, body => { error => { code => 403, message => 'Access Denied: Table users', status => 'PERMISSION_DENIED' } } });
	$id = deploy();
	ok(wait_state($id, 'failed'), 'BigQuery table failing: deploy failed');
	is(sql("SELECT step FROM dfe_airbyte.deploys WHERE id = $id"), 'applying_policy_tags', 'failed at applying_policy_tags');
	like(sql("SELECT error FROM dfe_airbyte.deploys WHERE id = $id"),
		qr/policy tags could not be applied to users.*Access Denied/, 'the error names the table and the reason');
	$fake->clear_faults;
}

# --- Airbyte not configured: failed at once, naming the setting ------------------------
$node->append_conf('postgresql.conf', "dfe_airbyte.airbyte_url = ''\n");
$node->reload;
$id = deploy();
ok(wait_state($id, 'failed'), 'unconfigured: deploy failed');
like(sql("SELECT step || ': ' || error FROM dfe_airbyte.deploys WHERE id = $id"),
	qr/^refreshing_connection: dfe_airbyte.airbyte_url is not set\. Set it with ALTER SYSTEM/,
	'unconfigured: the error names the setting and says how to set it');

# --- permissions, secrets -------------------------------------------------------------
sql('CREATE ROLE plain LOGIN');
($ret, $out, $err) = $node->psql('postgres', 'SELECT dfe_airbyte_deploy()', extra_params => [ '-U', 'plain' ]);
like($err, qr/permission denied for function dfe_airbyte_deploy/, 'non-admin: permission denied');
($ret, $out, $err) = $node->psql('postgres', "INSERT INTO dfe_airbyte.deploys (state) VALUES ('running')",
	extra_params => [ '-U', 'app' ]);
like($err, qr/permission denied/, 'admin cannot insert running deploys by hand');
unlike(sql('SELECT d::text FROM dfe_airbyte.deploys d UNION ALL SELECT e::text FROM dfe_airbyte.events e'),
	qr/\Q$SECRET\E/, 'secret in no deploy or event row');
unlike(slurp_file($node->logfile), qr/\Q$SECRET\E/, 'secret not in the server log');

$node->stop;
done_testing();
