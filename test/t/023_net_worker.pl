# The network worker keeps up with what changes around it:
# - a reload moves every task's next run to the new settings (a shortened
#   sync_poll_interval takes effect at once, not after the old interval);
# - a deploy committed while the worker sleeps inside another task (a
#   policy-tag update held back by the per-table limit) is not lost;
# - an Airbyte upgrade is noticed without restarting PostgreSQL (the version
#   event changes and the job list follows the new version);
# - a deploy queued in a transaction that gets prepared is refused clearly;
# - the workers' own queries are never JIT-compiled (no LLVM in the worker).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;
use DfeTest;
use FakeServer;

my $fake = FakeServer->start;
my $url = $fake->url;
my $dir = PostgreSQL::Test::Utils::tempdir;
my $json = JSON::PP->new->canonical;
my $project = 'proj';
my $dataset = 'svc_airbyte_test';
my $hidden = 'projects/proj/locations/europe-west2/taxonomies/111/policyTags/222';
my $conn = $fake->config->{connection_id};

# a short token lifetime: the worker fetches tokens often, as over hours
$fake->config(airbyte_version => '1.2.0', token_expires_in => 5, bq_table_update_limit => undef,
	job_pending_seconds => 0.2, job_running_seconds => 0.5);
$fake->source_catalog({ users => [qw(id name email)] });

my $node = DfeTest::new_node('netw', conf => DfeTest::bigquery_conf($fake, $dir,
		project => $project, dataset => $dataset, hidden_tag => $hidden) . <<"CONF");
dfe_airbyte.airbyte_url = '$url'
dfe_airbyte.airbyte_client_id = 'test-client'
dfe_airbyte.airbyte_client_secret = 'test-secret-value'
dfe_airbyte.connection_id = '$conn'
dfe_airbyte.sync_poll_interval = 3600
dfe_airbyte.check_interval = 1
dfe_airbyte.job_poll_interval = 1
dfe_airbyte.http_retry_base_delay = 50
dfe_airbyte.http_max_retries = 2
dfe_airbyte.http_timeout = 10
max_prepared_transactions = 2
CONF

sub sql { return $node->safe_psql('postgres', $_[0]) }

sub set_conf
{
	my (%kv) = @_;
	sql("ALTER SYSTEM SET dfe_airbyte.$_ = '$kv{$_}'") for sort keys %kv;
	sql('SELECT pg_reload_conf()');
}

my $pid = DfeTest::wait_for_worker($node);
ok(DfeTest::poll_until($node, 'SELECT checked_at IS NOT NULL AND check_error IS NULL FROM dfe_airbyte.sync_health', 't', 60),
	'the worker polled the sync jobs once at start');

# ------------------------------------------------------------------ a reload shortens the interval at once
my $seen = sql('SELECT checked_at FROM dfe_airbyte.sync_health');
set_conf(sync_poll_interval => 1);
ok(DfeTest::poll_until($node, 'SHOW dfe_airbyte.sync_poll_interval', '1s', 30), 'sync_poll_interval is 1 s');
ok(DfeTest::poll_until($node, "SELECT checked_at > '$seen' FROM dfe_airbyte.sync_health", 't', 30),
	'after the reload the next poll follows the new 1 s interval, not the old hour');

# ------------------------------------------------------------------ an Airbyte upgrade is noticed
sub version_event
{
	return sql("SELECT data->>'version' FROM dfe_airbyte.events WHERE kind = 'airbyte_version' ORDER BY id DESC LIMIT 1");
}
ok(DfeTest::poll_until($node, "SELECT data->>'version' FROM dfe_airbyte.events WHERE kind = 'airbyte_version' ORDER BY id DESC LIMIT 1",
		'1.2.0', 60), 'the worker reports Airbyte 1.2.0');
my $mark = $fake->mark;
$fake->config(airbyte_version => '2.0.0');
ok(DfeTest::poll_until($node, "SELECT data->>'version' FROM dfe_airbyte.events WHERE kind = 'airbyte_version' ORDER BY id DESC LIMIT 1",
		'2.0.0', 60), 'after the upgrade the worker reports Airbyte 2.0.0 without a restart');
my $public_list = 0;
for (1 .. 300)
{
	$public_list = grep { $_->{path} eq '/api/public/v1/jobs' } @{ $fake->requests(since => $mark, method => 'GET') };
	last if $public_list;
	select(undef, undef, undef, 0.1);
}
ok($public_list, 'and lists jobs the 1.8+ way (GET /api/public/v1/jobs)');
is(sql('SELECT dfe_airbyte_worker_pid()'), $pid, 'the same worker process');

# ------------------------------------------------------------------ a deploy committed while the worker sleeps
# One policy-tag update per table per 30 s: the second drift repair of users
# is held back in the worker (the sync-health task) while a deploy commits.
my $users = [
	{ name => 'id', type => 'INTEGER', mode => 'REQUIRED' },
	{ name => 'email', type => 'STRING' },
	{ name => 'name', type => 'STRING' },
];
$fake->bigquery_tables({ project => $project, dataset => $dataset, table => 'users', schema => { fields => $users } });
sql('CREATE TABLE users (id bigint PRIMARY KEY, name text, email text)');
sql("SELECT count(*) FROM dfe_airbyte_load_config('" . $json->encode({ users => [qw(id email name)] }) . "', '"
	  . $json->encode({ users => ['email'] }) . "')");
set_conf(bigquery_table_update_limit => 1, bigquery_table_update_window => '30s');
ok(DfeTest::poll_until($node, 'SHOW dfe_airbyte.bigquery_table_update_window', '30s', 30), 'pacing: 1 update per 30 s');

sub email_tagged
{
	my ($f) = grep { $_->{name} eq 'email' } @{ $fake->bigquery_table($project, $dataset, 'users')->{schema}{fields} };
	return (grep { $_ eq $hidden } @{ ($f->{policyTags} // {})->{names} // [] }) ? 1 : 0;
}

sub wait_for
{
	my ($cond, $timeout) = @_;
	for (1 .. $timeout * 10)
	{
		return 1 if $cond->();
		select(undef, undef, undef, 0.1);
	}
	return 0;
}

my $j1 = $fake->create_job(status => 'succeeded')->{jobId};
ok(wait_for(\&email_tagged, 60), "after job $j1 the worker tags users.email (first update in the window)");

# users recreated without its tag; the repair after the next job must wait for the window
$fake->bigquery_tables({ project => $project, dataset => $dataset, table => 'users', schema => { fields => $users } });
$mark = $fake->mark;
my $j2 = $fake->create_job(status => 'succeeded')->{jobId};
my $users_path = "/bigquery/v2/projects/$project/datasets/$dataset/tables/users";
ok(wait_for(sub { grep { $_->{path} eq $users_path } @{ $fake->requests(since => $mark, method => 'GET') } }, 60),
	"after job $j2 the worker reads users again");
ok(!email_tagged(), 'and holds its update back (per-table limit)');
my $deploy = $node->safe_psql('postgres', 'BEGIN; SELECT dfe_airbyte_deploy(); COMMIT;');
ok(wait_for(\&email_tagged, 90), 'the held-back update is made when the window allows');
ok(DfeTest::poll_until($node, "SELECT state <> 'queued' FROM dfe_airbyte.deploys WHERE id = $deploy", 't', 30),
	'the deploy committed during that wait starts as soon as the worker is free (its wake-up was not lost)');
ok(DfeTest::poll_until($node, "SELECT state FROM dfe_airbyte.deploys WHERE id = $deploy", 'succeeded', 90),
	'and succeeds');

# ------------------------------------------------------------------ PREPARE TRANSACTION
my ($ret, $out, $err) = $node->psql('postgres',
	"BEGIN; SELECT dfe_airbyte_deploy(); PREPARE TRANSACTION 'dfe_deploy';", on_error_stop => 1);
isnt($ret, 0, 'a deploy queued in a transaction that gets prepared is refused');
like($err, qr/ERROR:  cannot prepare a transaction that queued a dfe_airbyte deploy/, 'with a clear message');
like($err, qr/HINT:  .*COMMIT/, 'and a hint saying what to do');
is(sql('SELECT count(*) FROM pg_prepared_xacts'), '0', 'nothing is left prepared');
sql("ROLLBACK PREPARED 'dfe_deploy'") if sql('SELECT count(*) FROM pg_prepared_xacts') ne '0';
is(sql("SELECT count(*) FROM dfe_airbyte.deploys WHERE state = 'queued'"), '0', 'and no deploy is left queued');
# a prepared transaction that queued nothing is not affected
($ret, $out, $err) = $node->psql('postgres', "BEGIN; SELECT 1; PREPARE TRANSACTION 'other'; COMMIT PREPARED 'other';");
is($ret, 0, 'other prepared transactions still work');

# ------------------------------------------------------------------ no JIT in the workers
# jit_above_cost = 0 would JIT every query that has a plan, the workers' too
$node->append_conf('postgresql.conf', "jit = on\njit_above_cost = 0\njit_inline_above_cost = 0\njit_optimize_above_cost = 0\n");
$node->reload;
ok(DfeTest::poll_until($node, 'SHOW jit_above_cost', '0', 30), 'jit_above_cost is 0');
SKIP:
{
	skip 'the server has no JIT provider', 5
	  unless $node->safe_psql('postgres', 'SELECT pg_jit_available()') eq 't';
	for my $n (1 .. 3)
	{
		my $s = sql('SELECT checked_at FROM dfe_airbyte.sync_health');
		ok(DfeTest::poll_until($node, "SELECT checked_at > '$s' FROM dfe_airbyte.sync_health", 't', 30),
			"the worker polled with JIT on ($n)");
	}
	my $guard = sql("SELECT pid FROM dfe_airbyte_workers() WHERE worker = 'guard'");
	for my $w ([ network => $pid ], [ guard => $guard ])
	{
		my $maps = slurp_file("/proc/$w->[1]/maps");
		unlike($maps, qr/llvmjit/, "the $w->[0] worker never loaded the JIT provider");
	}
}

done_testing();
