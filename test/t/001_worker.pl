# The background worker: starts with the server, reloads on SIGHUP, comes
# back after being killed, stops cleanly with the server, and the SQL
# functions work (and say the worker is absent) without preloading.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use DfeTest;

my $node = DfeTest::new_node('worker');

my $pid = DfeTest::wait_for_worker($node);
ok($pid > 0, 'worker runs after start');
is($node->safe_psql('postgres',
	"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'dfe_airbyte worker' AND datname = 'postgres'"),
	'1', 'worker is connected to dfe_airbyte.database');

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
like($log, qr/dfe_airbyte worker started in database "postgres"/, 'worker logged its start');

# without shared_preload_libraries the SQL functions work, the worker does not
my $bare = PostgreSQL::Test::Cluster->new('bare');
$bare->init;
$bare->start;
$bare->safe_psql('postgres', 'CREATE EXTENSION dfe_airbyte');
is($bare->safe_psql('postgres', 'SELECT dfe_airbyte_worker_pid() IS NULL'), 't',
	'no worker without preloading');
$bare->stop;

# extension created after start: the worker waits for it, then runs
my $late = DfeTest::new_node('late', no_extension => 1);
ok($late->poll_query_until('postgres', 'SELECT 1', '1'), 'server up');
$late->safe_psql('postgres', 'CREATE EXTENSION dfe_airbyte');
ok(DfeTest::wait_for_worker($late) > 0, 'worker seen after CREATE EXTENSION');
ok($late->log_contains('dfe_airbyte worker is waiting for the extension'), 'worker said it waits for the extension');
$late->stop;

done_testing();
