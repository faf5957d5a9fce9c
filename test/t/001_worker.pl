# The two background workers (guard, network): start with the server, reload
# on SIGHUP, come back after being killed, each restarted on its own, stop
# cleanly with the server; the SQL functions work (and say the workers are
# absent) without preloading; wait => true refuses in another database.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use DfeTest;

my $node = DfeTest::new_node('worker');

my $pid = DfeTest::wait_for_worker($node);
ok($pid > 0, 'worker runs after start');
my $guard = DfeTest::wait_for_guard($node);
ok($guard > 0 && $guard != $pid, 'the guard is a process of its own');
is($node->safe_psql('postgres',
	"SELECT string_agg(backend_type, ',' ORDER BY backend_type) FROM pg_stat_activity WHERE backend_type LIKE 'dfe_airbyte%' AND datname = 'postgres'"),
	'dfe_airbyte guard,dfe_airbyte network worker', 'both workers are connected to dfe_airbyte.database');
is($node->safe_psql('postgres',
	"SELECT string_agg(worker || ':' || (pid IS NOT NULL) || ':' || database, ',' ORDER BY worker) FROM dfe_airbyte.workers"),
	'guard:true:postgres,network:true:postgres', 'dfe_airbyte.workers shows both and the database they serve');
is($node->safe_psql('postgres', "SELECT pid FROM dfe_airbyte.workers WHERE worker = 'network'"), $pid,
	'dfe_airbyte_worker_pid() is the network worker');

# each worker is restarted on its own
$node->safe_psql('postgres', "SELECT pg_terminate_backend($guard)");
my $guard2 = DfeTest::wait_for_guard($node, $guard);
isnt($guard2, $guard, 'the guard comes back after pg_terminate_backend');
is(DfeTest::wait_for_worker($node), $pid, '... and the network worker was not restarted');
$node->safe_psql('postgres', "SELECT pg_terminate_backend($pid)");
$pid = DfeTest::wait_for_worker($node, $pid);
is(DfeTest::wait_for_guard($node), $guard2, 'a restart of the network worker leaves the guard alone');

# wait => true in a database the workers do not serve: a clear error
$node->safe_psql('postgres', 'CREATE DATABASE other');
$node->safe_psql('other', 'CREATE EXTENSION dfe_airbyte');
my ($ret, $out, $err) = $node->psql('other', 'SELECT dfe_airbyte_deploy(wait => true)');
isnt($ret, 0, 'wait => true refused in another database');
like($err, qr/the dfe_airbyte workers serve database "postgres", not this one \("other"\)/, 'the error names both databases');
like($err, qr/HINT:  Call dfe_airbyte_deploy\(\) in database "postgres"/, 'with a hint');
($ret, $out, $err) = $node->psql('other', 'SELECT dfe_airbyte_deploy() > 0');
is($out, 't', 'a plain deploy is still queued there ...');
like($err, qr/WARNING:  the dfe_airbyte workers serve database "postgres"/, '... with a warning');

# reload: the worker picks up a changed setting without restarting
$node->safe_psql('postgres', "ALTER SYSTEM SET dfe_airbyte.check_interval = '3s'");
$node->reload;
ok($node->poll_query_until('postgres',
	"SELECT setting = '3' FROM pg_settings WHERE name = 'dfe_airbyte.check_interval'"), 'setting reloaded');
is(DfeTest::wait_for_worker($node), $pid, 'reload does not restart the worker');

# a reload that changes a secret: PostgreSQL logs changed settings with their
# value, the extension hides it
$node->safe_psql('postgres', "ALTER SYSTEM SET dfe_airbyte.airbyte_client_secret = 'rotated-secret-4711'");
$node->reload;
ok($node->poll_query_until('postgres', "SELECT 1", '1'), 'server up after reload');
ok(DfeTest::poll_log($node, qr/parameter "dfe_airbyte.airbyte_client_secret" changed \(value hidden\)/),
	'the secret change is logged without its value');
unlike(slurp_file($node->logfile), qr/rotated-secret-4711/, 'the new secret is not in the server log');

# killed with SIGKILL: the postmaster restarts everything, the worker comes back
kill 'KILL', $pid;
my $new_pid = DfeTest::wait_for_worker($node, $pid);
isnt($new_pid, $pid, 'worker restarted after SIGKILL');

# terminated: it exits with an error and the postmaster starts it again
$node->safe_psql('postgres', "SELECT pg_terminate_backend($new_pid)");
my $third = DfeTest::wait_for_worker($node, $new_pid);
isnt($third, $new_pid, 'worker restarted after pg_terminate_backend');

# clean stop
$node->stop('fast');
my $log = slurp_file($node->logfile);
unlike($log, qr/server process .* was terminated by signal 11|PANIC/, 'no crash in the log');
like($log, qr/dfe_airbyte network worker started in database "postgres"/, 'network worker logged its start');
like($log, qr/dfe_airbyte guard started in database "postgres"/, 'guard logged its start');

# without shared_preload_libraries the SQL functions work, the worker does not
my $bare = PostgreSQL::Test::Cluster->new('bare');
$bare->init(extra => [ DfeTest::initdb_utf8() ]);
$bare->start;
($ret, $out, $err) = $bare->psql('postgres', 'CREATE EXTENSION dfe_airbyte');
like($err, qr/WARNING:  the dfe_airbyte background workers are not running \(guard and network\)/,
	'CREATE EXTENSION says both workers are absent');
is($bare->safe_psql('postgres', 'SELECT dfe_airbyte_worker_pid() IS NULL'), 't',
	'no worker without preloading');
is($bare->safe_psql('postgres', 'SELECT count(*) FROM dfe_airbyte.workers WHERE pid IS NULL'), '2',
	'dfe_airbyte.workers shows both as not running');
$bare->stop;

# extension created after start: the worker waits for it, then runs
my $late = DfeTest::new_node('late', no_extension => 1);
ok($late->poll_query_until('postgres', 'SELECT 1', '1'), 'server up');
$late->safe_psql('postgres', 'CREATE EXTENSION dfe_airbyte');
ok(DfeTest::wait_for_worker($late) > 0, 'worker seen after CREATE EXTENSION');
ok($late->log_contains('dfe_airbyte network worker is waiting for the extension'), 'network worker said it waits for the extension');
ok($late->log_contains('dfe_airbyte guard is waiting for the extension'), 'guard said it waits for the extension');
$late->stop;

done_testing();
