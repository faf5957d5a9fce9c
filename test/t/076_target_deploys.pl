# Deploys of remote targets (test/lib/DfeTarget.pm: real servers with
# Azure's grants, nothing of dfe_airbyte installed): a migration committed
# in the service database queues exactly one deploy, recorded with its
# version, once ActiveRecord's advisory lock is free; the first sight of a
# target deploys nothing; dfe_airbyte_deploy(true, 'svc') from the control
# database waits for the target's deploy; two targets with different
# connection_ids reach Airbyte each with its own.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Compress::Zlib ();
use DfeTest;
use DfeTarget;
use FakeServer;

my $CONN_A = '11111111-1111-1111-1111-111111111111';
my $CONN_B = '22222222-2222-2222-2222-222222222222';

my @majors = DfeTarget::majors();
plan skip_all => 'no target server' unless @majors;
my $svc1 = DfeTarget->new('dsvc1', major => $majors[0]);
my $svc2 = DfeTarget->new('dsvc2', major => $majors[-1]);
my $dir = PostgreSQL::Test::Utils::tempdir();
my $passfile = DfeTarget::write_passfile("$dir/pgpass", $svc1, $svc2);

my $fake = FakeServer->start;
$fake->config(job_pending_seconds => 0.2, job_running_seconds => 0.5, connection_id => $CONN_A);
$fake->source_catalog({ users => [qw(id email first_name created_at updated_at)] });

my $node = DfeTest::new_node('control', conf => <<"CONF");
dfe_airbyte.passfile = '$passfile'
dfe_airbyte.airbyte_url = '@{[ $fake->url ]}'
dfe_airbyte.airbyte_client_id = 'test-client'
dfe_airbyte.airbyte_client_secret = 'test-secret-value'
dfe_airbyte.connection_id = '$CONN_A'
dfe_airbyte.job_poll_interval = 1
dfe_airbyte.migration_poll_interval = 1
dfe_airbyte.http_retry_base_delay = 50
dfe_airbyte.http_max_retries = 1
dfe_airbyte.deploy_retry_timeout = 5
dfe_airbyte.sync_poll_interval = 3600
CONF
DfeTest::wait_for_worker($node);

sub lit { my ($s) = @_; $s =~ s/'/''/g; return "'$s'" }
sub sql { return $node->safe_psql('postgres', $_[0]) }

sql('CREATE ROLE ops LOGIN IN ROLE dfe_airbyte_admin');

# each target with its own connection and lists (the stream configuration
# reads the target's catalog)
for ([ $svc1, $CONN_A ], [ $svc2, $CONN_B ])
{
	my ($t, $conn) = @$_;
	sql("SELECT dfe_airbyte_add_target('$t->{name}', ${\ lit($t->conninfo)}, '{\"connection_id\": \"$conn\"}')");
	sql("SELECT count(*) FROM dfe_airbyte_load_config('users: [id, email]', target => '$t->{name}')");
}

# --- the first sight records the version, deploys nothing ------------------------
for my $t ($svc1, $svc2)
{
	ok(DfeTest::poll_until($node,
			"SELECT version FROM dfe_airbyte.migration_watch WHERE target = '$t->{name}'",
			'20240201000000', 60), "PG$t->{major}: the watch saw the target's version");
}
is(sql('SELECT count(*) FROM dfe_airbyte.deploys'), '0', 'no deploy for what a target held before');

# the watch has looked again (checked_at moved) since $since
sub looked_again
{
	my ($t, $since) = @_;
	return DfeTest::poll_until($node,
		"SELECT checked_at > '$since' FROM dfe_airbyte.migration_watch WHERE target = '$t->{name}'", 't', 60);
}

# the connection ids of the calls that change something (the deploy's: the
# refresh, the PATCH, the sync), from their path or their body
sub changed_connections
{
	my ($since, $with_reads) = @_;
	my @ids;
	for my $r (@{ $fake->requests(since => $since) })
	{
		next if $r->{method} eq 'GET' && !$with_reads;
		push @ids, $1 if $r->{path} =~ m{/connections/([0-9a-f-]{36})};
		push @ids, $1 if ($r->{body} // '') =~ /"connectionId"\s*:\s*"([0-9a-f-]{36})"/;
	}
	return @ids;
}

sub deploys_of
{
	my ($t) = @_;
	return sql("SELECT string_agg(coalesce(migration_version, '-') || ':' || state, ',' ORDER BY id)
		FROM dfe_airbyte.deploys WHERE target = '$t->{name}'");
}

# --- a migration committed without the lock: one deploy with its version ----------
my $mark = $fake->mark;
$svc1->node->safe_psql('service', "INSERT INTO public.schema_migrations VALUES ('20240301000000')");
ok(DfeTest::poll_until($node, "SELECT count(*) FROM dfe_airbyte.deploys WHERE target = 'dsvc1'", '1', 60),
	'the migration watch queued a deploy');
# the watch's commit wakes the worker: the deploy starts within a few rounds,
# not at the idle deploy task's once-a-minute look
ok(DfeTest::wait_for_worker_loops($node, 'network', 3), 'the network worker went round three times');
isnt(sql("SELECT state FROM dfe_airbyte.deploys WHERE target = 'dsvc1'"), 'queued', '... and started the deploy');
ok(DfeTest::poll_until($node,
		"SELECT state FROM dfe_airbyte.deploys WHERE target = 'dsvc1' AND migration_version = '20240301000000'",
		'succeeded', 120), 'the new version was deployed');
my $since = sql('SELECT now()');
looked_again($svc1, $since);
looked_again($svc1, sql('SELECT now()'));
is(deploys_of($svc1), '20240301000000:succeeded', 'exactly one deploy, recorded with the version');
is(deploys_of($svc2), '', 'the other target has none');
like(sql("SELECT log::text FROM dfe_airbyte.deploys WHERE target = 'dsvc1'"),
	qr/schema_migrations of target \\"dsvc1\\" gained version 20240301000000/, 'its log says why');
my @ids = changed_connections($mark);
ok(@ids > 0, 'the deploy called Airbyte for the connection');
is_deeply([ grep { $_ ne $CONN_A } @ids ], [], "... with dsvc1's connection_id only");

# --- a migration under ActiveRecord's lock: the deploy waits for the lock ---------
my $key = 2053462845 * Compress::Zlib::crc32('service');
my $migrate = $svc1->node->background_psql('service');
$migrate->query_safe("SELECT pg_advisory_lock($key)");
$migrate->query_safe("INSERT INTO public.schema_migrations VALUES ('20240302000000')");
$migrate->query_safe("INSERT INTO public.schema_migrations VALUES ('20240303000000')");
$since = sql('SELECT now()');
looked_again($svc1, $since);
looked_again($svc1, sql('SELECT now()'));
is(deploys_of($svc1), '20240301000000:succeeded', 'no deploy while a migration holds the lock');
$migrate->query_safe("SELECT pg_advisory_unlock($key)");
ok(DfeTest::poll_until($node,
		"SELECT state FROM dfe_airbyte.deploys WHERE target = 'dsvc1' AND migration_version = '20240303000000'",
		'succeeded', 120), 'once the lock is free, the migrations are deployed');
looked_again($svc1, sql('SELECT now()'));
is(deploys_of($svc1), '20240301000000:succeeded,20240303000000:succeeded',
	'one deploy for the two migrations of one db:migrate');

# --- the deploy's own wait for migrations reads the target's pg_locks -------------
$migrate->query_safe("SELECT pg_advisory_lock($key)");
my $id = $node->safe_psql('postgres', "SELECT dfe_airbyte_deploy(false, 'dsvc1')", extra_params => [ '-U', 'ops' ]);
ok(DfeTest::poll_until($node,
		"SELECT log::text LIKE '%waiting for the Rails migration in process%' FROM dfe_airbyte.deploys WHERE id = $id",
		't', 60), "the deploy waits for the migration in the target's database");
is(sql("SELECT state || ' ' || step FROM dfe_airbyte.deploys WHERE id = $id"), 'running waiting_for_migrations',
	'... and does not go on while it runs');
$migrate->query_safe("SELECT pg_advisory_unlock($key)");
ok(DfeTest::poll_until($node, "SELECT state FROM dfe_airbyte.deploys WHERE id = $id", 'succeeded', 120),
	'... then runs');
$migrate->quit;

# --- deploy(true, 'svc') from the control database: the other connection_id -------
$mark = $fake->mark;
my ($ret, $out, $err) = $node->psql('postgres', "SELECT dfe_airbyte_deploy(true, 'dsvc2')",
	extra_params => [ '-U', 'ops' ]);
isnt($ret, 0, "dsvc2's connection is unknown to Airbyte: the deploy fails");
like($err, qr/failed at step refreshing_connection/, '... at the refresh');
like($err, qr/\Q$CONN_B\E/, "... naming dsvc2's connection");
ok((grep { $_ eq $CONN_B } changed_connections($mark, 1)), "dsvc2's deploy asked Airbyte for its connection");
is_deeply([ grep { $_ ne $CONN_B } changed_connections($mark) ], [], '... and changed no other');

$fake->config(connection_id => $CONN_B);
($ret, $out, $err) = $node->psql('postgres', "SELECT dfe_airbyte_deploy(true, 'dsvc2')",
	extra_params => [ '-U', 'ops' ]);
is($ret, 0, "deploy(true, 'dsvc2') waits and succeeds") or diag($err);
like($err, qr/NOTICE:  deploy \d+: waiting_for_sync: started sync job \d+/, '... reporting its progress');
is(sql("SELECT target || ' ' || state || ' ' || requested_by FROM dfe_airbyte.deploys WHERE id = $out"),
	'dsvc2 succeeded ops', 'the row names the target and who asked');
# --- the SQL functions acting on one target's connection ---------------------------
sub as_ops { return $node->psql('postgres', $_[0], extra_params => [ '-U', 'ops' ]) }
($ret, $out, $err) = as_ops("SELECT jsonb_typeof(dfe_airbyte_connection_refresh('dsvc2'))");
is($out, 'object', "connection_refresh('dsvc2') patches dsvc2's connection") or diag($err);
($ret, $out, $err) = as_ops("SELECT count(*) > 0 FROM dfe_airbyte_deploy_plan('dsvc2')");
is($ret, 0, "deploy_plan('dsvc2') reads dsvc2's connection") or diag($err);
($ret, $out, $err) = as_ops("SELECT dfe_airbyte_start_sync('dsvc1')");
like($err, qr/\Q$CONN_A\E/, "start_sync('dsvc1') asks for dsvc1's connection (unknown to Airbyte now)");
($ret, $out, $err) = as_ops("SELECT * FROM dfe_airbyte_repair(true, false, 'dsvc1')");
is($ret, 0, "repair(true, false, 'dsvc1') diagnoses dsvc1") or diag($err);
like($out, qr/^slot\|ok\|replication slot "airbyte_slot" exists/m, "... its slot read on dsvc1's server");
like($out, qr/^connection\|failed\|.*\Q$CONN_A\E/m, "... and dsvc1's connection asked for (unknown to Airbyte now)");
is(sql("SELECT string_agg(target, ',' ORDER BY target) FROM dfe_airbyte.connection_watch"), 'local',
	'the connection watch has no row for a target whose connection it has not read');

unlike(slurp_file($node->logfile), qr/test-secret-value/, 'no secret in the server log');

done_testing();
