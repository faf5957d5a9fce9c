# The Airbyte client from SQL: token (public endpoint, the pre-0.63.10
# fallback with the JWT's exp, renewal, 401), connection refresh (discover
# before PATCH, the PATCH body is the stream config), retries, timeouts,
# cancellation, malformed answers, permissions, and the secret never shown.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use JSON::PP;
use Time::HiRes qw(usleep);
use DfeTest;
use FakeServer;

my $SECRET = 'test-secret-value';
my $CONN = '11111111-1111-1111-1111-111111111111';
my $SOURCE = '22222222-2222-2222-2222-222222222222';

my $fake = FakeServer->start;
$fake->config(job_pending_seconds => 0.2, job_running_seconds => 1);
$fake->source_catalog({ users => [qw(id name email)] });

my $node = DfeTest::new_node('airbyte', conf => <<"CONF");
dfe_airbyte.airbyte_url = '@{[ $fake->url ]}/'
dfe_airbyte.airbyte_client_id = 'test-client'
dfe_airbyte.airbyte_client_secret = '$SECRET'
dfe_airbyte.connection_id = '$CONN'
dfe_airbyte.job_poll_interval = 1
dfe_airbyte.http_retry_base_delay = 50
dfe_airbyte.http_timeout = 3
dfe_airbyte.http_max_retries = 3
dfe_airbyte.sync_poll_interval = 3600
log_min_messages = debug5
CONF
# the worker's sync health check reads the jobs once at start; let it be done
DfeTest::wait_for_worker($node);
DfeTest::poll_until($node, 'SELECT checked_at IS NOT NULL FROM dfe_airbyte.sync_watch', 't');

$node->safe_psql('postgres', <<'SQL');
CREATE TABLE users (id bigint PRIMARY KEY, name text, email text);
INSERT INTO dfe_airbyte.allowlist (table_name, column_name) VALUES ('users', 'id'), ('users', 'email');
SQL

my @errors;    # every error text psql showed, checked for the secret at the end

# psql with stderr; returns (ret, stdout, stderr)
sub run_sql
{
	my ($sql, %opts) = @_;
	my ($ret, $out, $err) = $node->psql('postgres', $sql, %opts);
	push @errors, $err;
	return ($ret, $out, $err);
}

sub reqs
{
	my ($mark, $path, $method) = @_;
	return $fake->requests(since => $mark, path => $path,
		defined $method ? (method => $method) : ());
}

my $token_path = qr{/applications/token$};
# before 0.63.7 the public token path answers 401 and the client falls back to
# the config API's once per session: one more token request per new session
my $public_token = FakeServer::profile_at_least('0.63.7');
my $per_session = $public_token ? 0 : 1;

# --- token and the first call ---------------------------------------------
my $job = $fake->create_job(status => 'succeeded');
my $mark = $fake->mark;
my ($ret, $out, $err) = run_sql("SELECT dfe_airbyte_job_status($job->{jobId})");
is($out, 'succeeded', 'job status read');
my $tok = reqs($mark, $token_path);
is(scalar @$tok, 1 + $per_session, 'one token request (public path, or 401 then the config API\'s)');
is($tok->[0]{path}, '/api/public/v1/applications/token', 'public token endpoint first');
is_deeply($tok->[0]{json},
	{ client_id => 'test-client', client_secret => $SECRET, 'grant-type' => 'client_credentials' },
	'token request body (grant-type with a hyphen)');
my $get = reqs($mark, qr{^/api/public/v1/jobs/\d+$})->[0];
like($get->{headers}{authorization}, $public_token ? qr/^Bearer airbyte-/ : qr/^Bearer [\w-]+\.[\w-]+\./,
	'call carries the bearer token');
like($get->{headers}{'content-type'}, qr{^application/json}, 'call carries the JSON content type');
is($get->{status}, 200, 'call answered');

# cached within a session, renewed shortly before expiry
$fake->config(token_expires_in => 2);
$mark = $fake->mark;
run_sql("SELECT dfe_airbyte_job_status($job->{jobId}); SELECT dfe_airbyte_job_status($job->{jobId});");
is(scalar @{ reqs($mark, $token_path) }, 1 + $per_session, 'token cached for the second call of a session');
$mark = $fake->mark;
# (a token's lifetime is whole seconds of the session's clock: nothing to poll)
($ret, $out) = run_sql("SELECT dfe_airbyte_job_status($job->{jobId}); SELECT pg_sleep(2.2); "
	  . "SELECT dfe_airbyte_job_status($job->{jobId});");
is(scalar @{ reqs($mark, $token_path) }, 2 + $per_session, 'token renewed after its lifetime');
is(scalar(grep { $_->{status} == 401 } @{ reqs($mark, qr{/jobs/}) }), 0,
	'renewed before expiry: no 401');

# 401 mid-session (token revoked): new token, call repeated once
$fake->config(token_expires_in => 180);
$mark = $fake->mark;
my $bg = $node->background_psql('postgres');
$bg->query_safe("SELECT dfe_airbyte_job_status($job->{jobId})");
$fake->revoke_tokens;
$out = $bg->query_safe("SELECT dfe_airbyte_job_status($job->{jobId})");
$bg->quit;
is($out, 'succeeded', 'call after a revoked token succeeds');
my @seq = map { "$_->{method} $_->{status}" } @{ reqs($mark, qr{^/api/(public/v1/jobs|public/v1/applications|v1/applications)}) };
is_deeply(\@seq, FakeServer::profile_at_least('0.63.7')
	? [ 'POST 200', 'GET 200', 'GET 401', 'POST 200', 'GET 200' ]
	  # before 0.63.7 the public token path answers 401: the config API's, remembered
	: [ 'POST 401', 'POST 200', 'GET 200', 'GET 401', 'POST 200', 'GET 200' ],
	'401 → new token → call repeated once');

# pre-0.63.10 Airbyte: the public token endpoint answers 404
$fake->config(legacy_airbyte => JSON::PP::true, token_expires_in => 2);
$mark = $fake->mark;
($ret, $out) = run_sql("SELECT dfe_airbyte_job_status($job->{jobId}); SELECT pg_sleep(2.2); "
	  . "SELECT dfe_airbyte_job_status($job->{jobId});");
is($ret, 0, 'calls work with the legacy token endpoint');
my @tp = map { "$_->{path} $_->{status}" } @{ reqs($mark, $token_path) };
is_deeply(\@tp, [
		'/api/public/v1/applications/token 404',
		'/api/v1/applications/token 200',
		'/api/v1/applications/token 200' ],
	'404 → legacy endpoint, remembered; token renewed from the JWT exp claim');
is_deeply([ sort keys %{ reqs($mark, qr{^/api/v1/applications/token$})->[0]{json} } ],
	[qw(client_id client_secret)], 'legacy token body');
$fake->config(legacy_airbyte => JSON::PP::false, token_expires_in => 180);

# wrong secret: clear error, no secret in it
$fake->config(airbyte_client_secret => 'other');
($ret, $out, $err) = run_sql("SELECT dfe_airbyte_job_status($job->{jobId})");
like($err, qr/Airbyte rejected the client credentials: HTTP 401/, 'bad credentials: clear error');
like($err, qr/HINT:.*airbyte_client_secret/, 'bad credentials: hint names the setting');
$fake->config(airbyte_client_secret => $SECRET);

# an error body that echoes the secret is redacted
$fake->faults({ path => '^/api/public/v1/applications/token$', status => 400,
		body => { message => "bad request from client test-client with secret $SECRET" } });
($ret, $out, $err) = run_sql("SELECT dfe_airbyte_job_status($job->{jobId})");
like($err, qr/\[redacted\]/, 'secret echoed by the server is redacted');

# --- connection refresh -----------------------------------------------------
$mark = $fake->mark;
($ret, $out, $err) = run_sql('SELECT dfe_airbyte_connection_refresh()');
is($ret, 0, 'connection refresh succeeds') or diag($err);
my $conn = decode_json($out);
is($conn->{connectionId}, $CONN, 'refresh returns the updated connection');
my @calls = map { "$_->{method} $_->{path}" }
  @{ reqs($mark, qr{^/api/(public/)?v1/(connections|sources)}) };
is_deeply(\@calls, [
		"GET /api/public/v1/connections/$CONN",
		'POST /api/v1/sources/discover_schema',
		"PATCH /api/public/v1/connections/$CONN" ],
	'connection read, discover, then PATCH');
is_deeply(reqs($mark, qr{discover_schema})->[0]{json},
	{ sourceId => $SOURCE, disable_cache => JSON::PP::true }, 'discover with the cache disabled');
my $patch = reqs($mark, qr{^/api/public/v1/connections/}, 'PATCH')->[0];
like($patch->{headers}{authorization}, qr/^Bearer /, 'PATCH carries the token');
is($patch->{body}, $node->safe_psql('postgres', 'SELECT dfe_airbyte_stream_config_json()::text'),
	'PATCH body is the stream configuration, byte for byte');
is_deeply(decode_json($patch->{body}),
	decode_json($node->safe_psql('postgres', 'SELECT dfe_airbyte_stream_config()::text')),
	'PATCH body is dfe_airbyte_stream_config()');
is_deeply([ map { $_->{name} } @{ $fake->connection->{configurations}{streams} } ],
	[ 'users', 'airbyte_heartbeat' ], 'Airbyte has the new streams');

# the source id from the setting: no connection read
$node->append_conf('postgresql.conf', "dfe_airbyte.source_id = '$SOURCE'\n");
$node->reload;
$mark = $fake->mark;
run_sql('SELECT dfe_airbyte_connection_refresh()');
is(scalar @{ reqs($mark, qr{^/api/public/v1/connections/}, 'GET') }, 0,
	'dfe_airbyte.source_id set: connection not read');

# 400 from the PATCH: Airbyte's validation message is shown
$node->safe_psql('postgres', "INSERT INTO dfe_airbyte.allowlist VALUES ('users', 'phone')");
$node->safe_psql('postgres', 'ALTER TABLE users ADD COLUMN phone text');
($ret, $out, $err) = run_sql('SELECT dfe_airbyte_connection_refresh()');
like($err, qr/ERROR:  the Airbyte connection update failed: HTTP 400/, 'PATCH 400: error names the call');
like($err, qr/DETAIL:.*answered: Invalid fields selected for stream users\. The list of valid field names includes/,
	'PATCH 400: Airbyte\'s validation message in the detail');
$node->safe_psql('postgres', "DELETE FROM dfe_airbyte.allowlist WHERE column_name = 'phone'");

# 429 and 5xx are retried, then the call succeeds
$fake->faults(
	{ method => 'PATCH', path => '^/api/public/v1/connections/', status => 503, times => 2 },
	{ method => 'PATCH', path => '^/api/public/v1/connections/', status => 429, retry_after => 0, times => 1 });
$mark = $fake->mark;
($ret, $out, $err) = run_sql('SELECT dfe_airbyte_connection_refresh()');
is($ret, 0, 'refresh succeeds after 503, 503, 429') or diag($err);
is_deeply([ map { $_->{status} } @{ reqs($mark, qr{^/api/public/v1/connections/}, 'PATCH') } ],
	[ 503, 503, 429, 200 ], 'PATCH retried after 5xx and 429');

# 5xx for good: error with the status and message after the retries
$fake->faults({ method => 'GET', path => '^/api/public/v1/jobs/', status => 502, times => undef,
		body => { message => 'bad gateway from the fake' } });
($ret, $out, $err) = run_sql("SELECT dfe_airbyte_job_status($job->{jobId})");
like($err, qr/the Airbyte job read failed: HTTP 502/, 'persistent 502: error after the retries');
like($err, qr/bad gateway from the fake/, 'persistent 502: server message shown');
$fake->clear_faults;

# malformed JSON
$fake->faults({ method => 'GET', path => '^/api/public/v1/jobs/', kind => 'malformed' });
($ret, $out, $err) = run_sql("SELECT dfe_airbyte_job_status($job->{jobId})");
like($err, qr/ERROR:  Airbyte answered the job read with invalid JSON/, 'malformed JSON: clear error');
like($err, qr/DETAIL:.*beginning: \{"data": \[/, 'malformed JSON: detail quotes the start');
like($err, qr/HINT:  Check that dfe_airbyte.airbyte_url/, 'malformed JSON: hint');

# a hanging server: the call times out and the session goes on
$node->append_conf('postgresql.conf', "dfe_airbyte.http_max_retries = 0\n");
$node->reload;
$fake->faults({ method => 'GET', path => '^/api/public/v1/jobs/', kind => 'hang' });
$bg = $node->background_psql('postgres', on_error_stop => 0);
$bg->query("SELECT dfe_airbyte_job_status($job->{jobId})");
like($bg->{stderr}, qr/the Airbyte job read failed: .*[Tt]imeout|timed out/, 'hang: timeout error');
push @errors, $bg->{stderr};
$bg->{stderr} = '';
is($bg->query_safe('SELECT 42'), '42', 'hang: the backend is still usable');
is($bg->query_safe("SELECT dfe_airbyte_job_status($job->{jobId})"), 'succeeded',
	'hang: the next call works');
$bg->quit;
$node->append_conf('postgresql.conf', "dfe_airbyte.http_max_retries = 3\n");
$node->reload;
$fake->clear_faults;

# --- start sync, wait for a job ---------------------------------------------
$mark = $fake->mark;
($ret, $out, $err) = run_sql('SELECT dfe_airbyte_start_sync()');
my $sync = $out;
like($sync, qr/^\d+$/, 'sync started');
is_deeply(reqs($mark, qr{^/api/public/v1/jobs$}, 'POST')->[0]{json},
	{ connectionId => $CONN, jobType => 'sync' }, 'start sync body');
($ret, $out, $err) = run_sql('SELECT dfe_airbyte_start_sync()');
is($out, $sync, 'second start while it runs: the running job (409)');
like($err, qr/NOTICE:  a job is already running: job $sync/, 'second start: NOTICE');
$fake->control(POST => "/airbyte/jobs/$sync", { status => 'succeeded' });
# a running refresh blocks a sync too (409): that job is returned, not the
# finished sync (before 1.8 only the config API lists it)
my $refresh = $fake->create_job(jobType => 'refresh', status => 'running', frozen => 1)->{jobId};
$mark = $fake->mark;
($ret, $out, $err) = run_sql('SELECT dfe_airbyte_start_sync()');
is($out, $refresh, 'start while a refresh runs: the refresh job');
like($err, qr/NOTICE:  a job is already running: job $refresh/, 'start while a refresh runs: NOTICE');
is(scalar @{ reqs($mark, qr{^/api/v1/jobs/list$}, 'POST') }, FakeServer::profile_at_least('1.8') ? 0 : 1,
	'the running job is looked up where this version lists refresh jobs');
$fake->control(POST => "/airbyte/jobs/$refresh", { status => 'succeeded' });
my $slow = $fake->create_job(status => 'running', running_seconds => 5)->{jobId};
($ret, $out, $err) = run_sql("SELECT dfe_airbyte_wait_for_job($slow)");
is($out, 'succeeded', 'wait_for_job returns succeeded');
like($err, qr/NOTICE:  job $slow: running \(\d+s elapsed\)/, 'wait_for_job: progress NOTICE');

my $failed = $fake->create_job(status => 'running', final_status => 'failed')->{jobId};
($ret, $out, $err) = run_sql("SELECT dfe_airbyte_wait_for_job($failed)");
like($err, qr/ERROR:  Airbyte job $failed failed/, 'failed job: error');
like($err, qr/HINT:  See the job's logs in the Airbyte UI/, 'failed job: hint');

my $frozen = $fake->create_job(status => 'running', frozen => 1)->{jobId};
($ret, $out, $err) = run_sql("SELECT dfe_airbyte_wait_for_job($frozen, '2 seconds')");
like($err, qr/ERROR:  Airbyte job $frozen did not finish within 2s/, 'timeout: error');
like($err, qr/HINT:  The job goes on in Airbyte/, 'timeout: hint');

($ret, $out, $err) = run_sql("SET statement_timeout = '1500ms'; SELECT dfe_airbyte_wait_for_job($frozen)");
like($err, qr/canceling statement due to statement timeout/, 'statement_timeout cuts the wait');

# pg_cancel_backend of a waiting session
my ($bout, $berr) = ('', '');
my $h = IPC::Run::start(
	[ 'psql', '-X', '-d', $node->connstr('postgres'), '-c', "SELECT dfe_airbyte_wait_for_job($frozen)" ],
	'>', \$bout, '2>', \$berr);
ok(DfeTest::poll_until($node,
		"SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT dfe_airbyte_wait_for_job%' AND state = 'active'",
		'1'), 'waiting session is active');
$node->safe_psql('postgres',
	"SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query LIKE 'SELECT dfe_airbyte_wait_for_job%'");
$h->finish;
like($berr, qr/canceling statement due to user request/, 'pg_cancel_backend ends the wait');
push @errors, $berr;

# --- permissions ------------------------------------------------------------
$node->safe_psql('postgres', 'CREATE ROLE plain LOGIN; CREATE ROLE admin LOGIN IN ROLE dfe_airbyte_admin;');
for my $f ('dfe_airbyte_connection_refresh()', 'dfe_airbyte_start_sync()',
	"dfe_airbyte_job_status($job->{jobId})", "dfe_airbyte_wait_for_job($job->{jobId})")
{
	($ret, $out, $err) = run_sql("SELECT $f", extra_params => [ '-U', 'plain' ]);
	like($err, qr/permission denied for function/, "non-admin: permission denied for $f");
}
($ret, $out, $err) = run_sql("SELECT dfe_airbyte_job_status($job->{jobId})", extra_params => [ '-U', 'admin' ]);
is($out, 'succeeded', 'dfe_airbyte_admin may call');

# --- the secret never shows -------------------------------------------------
my %tokens;
for my $r (@{ $fake->requests })
{
	$tokens{$1} = 1 if ($r->{headers}{authorization} // '') =~ /^Bearer (.+)$/;
}
ok(scalar(keys %tokens) >= 3, 'several tokens were used');
my $log = slurp_file($node->logfile);
like($log, qr/DEBUG:/, 'server log ran at debug level');
unlike($log, qr/\Q$SECRET\E/, 'secret not in the server log (debug5)');
is(scalar(grep { index($log, $_) >= 0 } keys %tokens), 0, 'no token in the server log');
my $all_errors = join "\n", @errors;
unlike($all_errors, qr/\Q$SECRET\E/, 'secret in no error');
is(scalar(grep { index($all_errors, $_) >= 0 } keys %tokens), 0, 'no token in any error');
my $tables = $node->safe_psql('postgres',
	"SELECT string_agg(t::text, ' ') FROM (SELECT e::text AS t FROM dfe_airbyte.events e "
	  . "UNION ALL SELECT d::text FROM dfe_airbyte.deploys d) s");
unlike($tables, qr/\Q$SECRET\E/, 'secret in no table');

# --- Airbyte older than 0.60.1: no PATCH that would replicate every column
$fake->config(airbyte_version => '0.59.0');
$mark = $fake->mark;
($ret, $out, $err) = run_sql('SELECT dfe_airbyte_connection_refresh()');
like($err, qr/ERROR:  Airbyte 0\.59\.0 is too old for dfe_airbyte: the connection was not changed/,
	'Airbyte 0.59: a clear error');
like($err, qr/HINT:  Upgrade Airbyte to 0\.60\.1 or later/, 'Airbyte 0.59: hint says upgrade');
is(scalar @{ reqs($mark, qr{^/api/public/v1/connections/}, 'PATCH') }, 0, 'Airbyte 0.59: no PATCH');
$fake->config(airbyte_version => FakeServer::airbyte_version());
($ret, $out, $err) = run_sql('SELECT dfe_airbyte_connection_refresh()');
is($ret, 0, 'the current version: the refresh works again (version read per session)');

$node->stop;
done_testing();
