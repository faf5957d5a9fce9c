# The rest of the review: secrets that came from the
# environment never reach the log, in any part of a line; an HTTP answer
# larger than dfe_airbyte.http_max_response_size fails clearly; finished
# deploys are pruned like the other histories, unfinished ones never.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use DfeTest;
use FakeServer;

my $SECRET = 'env-only-secret-7f3a9c';
my $CONN = '11111111-1111-1111-1111-111111111111';
my $fake = FakeServer->start;
$fake->config(airbyte_client_secret => $SECRET);

# the secret only in the postmaster's environment, as a Terraform pod has it
local $ENV{AIRBYTE_CLIENT_SECRET} = $SECRET;
my $node = DfeTest::new_node('review', conf => <<"CONF");
dfe_airbyte.airbyte_url = '@{[ $fake->url ]}'
dfe_airbyte.airbyte_client_id = 'test-client'
dfe_airbyte.connection_id = '$CONN'
dfe_airbyte.http_retry_base_delay = 50
dfe_airbyte.http_max_response_size = 64
dfe_airbyte.history_retention = 1
dfe_airbyte.history_max_rows = 100
dfe_airbyte.check_interval = 1
dfe_airbyte.test_prune_interval = 1s
dfe_airbyte.sync_poll_interval = 3600
log_statement = 'all'
CONF
delete $ENV{AIRBYTE_CLIENT_SECRET};

sub sql { return $node->safe_psql('postgres', $_[0]) }

# ------------------------------------------------------------ the log hook
my ($ret, $out, $err) = $node->psql('postgres', <<"SQL");
DO \$\$ BEGIN
  RAISE WARNING 'plain warning' USING DETAIL = 'detail $SECRET', HINT = 'hint $SECRET';
END \$\$;
DO \$\$ BEGIN PERFORM '$SECRET'::int; END \$\$;
SQL
ok(DfeTest::poll_log($node, qr/plain warning/), 'the warning was logged');
my $log = slurp_file($node->logfile);
unlike($log, qr/\Q$SECRET\E/,
	'a secret from AIRBYTE_CLIENT_SECRET appears nowhere in the log: message, detail, hint, query, statement');
like($log, qr/DETAIL:  detail \[redacted\]/, 'the detail keeps its text around [redacted]');
like($log, qr/HINT:  hint \[redacted\]/, 'so does the hint');
like($log, qr/a message that contained a dfe_airbyte secret was hidden/, 'a message holding it is replaced');

# ------------------------------------------------------------ the response size cap
$fake->source_catalog({ users => [ map { sprintf('a_column_with_a_rather_long_name_%04d', $_) } 1 .. 3000 ] });
($ret, $out, $err) = $node->psql('postgres', 'SELECT dfe_airbyte_connection_refresh()',
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
isnt($ret, 0, 'a discovered catalog over dfe_airbyte.http_max_response_size fails');
like($err, qr/ERROR:  54000: .*larger than dfe_airbyte\.http_max_response_size \(64 kB\)/,
	'with errcode 54000 (program_limit_exceeded) naming the setting and its value');
like($err, qr/HINT:  Raise dfe_airbyte\.http_max_response_size/, 'and a hint saying what to raise');
$node->append_conf('postgresql.conf', "dfe_airbyte.http_max_response_size = '64MB'\n");
$node->reload;
ok(DfeTest::poll_until($node, 'SHOW dfe_airbyte.http_max_response_size', '64MB'), 'setting raised');
($ret, $out, $err) = $node->psql('postgres', 'SELECT dfe_airbyte_connection_refresh()');
is($ret, 0, 'with the default cap the same catalog goes through') or diag($err);

# ------------------------------------------------------------ deploys are pruned
sql(<<'SQL');
INSERT INTO dfe_airbyte.deploys (state, requested_at, finished_at)
     SELECT 'failed', now() - interval '1 hour', now() - interval '1 hour' FROM generate_series(1, 5);
INSERT INTO dfe_airbyte.deploys (state, requested_at, finished_at)
     SELECT 'succeeded', now(), now() FROM generate_series(1, 150);
SQL
ok(DfeTest::poll_until($node,
	"SELECT count(*) FROM dfe_airbyte.deploys WHERE finished_at < now() - interval '30 minutes'", '0', 120),
	'finished deploys older than history_retention are pruned');
ok(DfeTest::poll_until($node, "SELECT count(*) <= 101 FROM dfe_airbyte.deploys", 't', 120),
	'at most history_max_rows finished deploys are kept');
# an unfinished deploy is never pruned: one waits for a Rails migration (its
# lock held here) while 150 newer ones finish
my $migration = $node->background_psql('postgres');
$migration->query_safe('SELECT pg_advisory_lock(dfe_airbyte_migration_lock_key())');
my $waiting = sql('SELECT dfe_airbyte_deploy()');
ok(DfeTest::poll_until($node, "SELECT step FROM dfe_airbyte.deploys WHERE id = $waiting",
	'waiting_for_migrations', 60), 'a deploy waits for the migration');
sql("UPDATE dfe_airbyte.deploys SET requested_at = now() - interval '1 day' WHERE id = $waiting");
sql(q{INSERT INTO dfe_airbyte.deploys (state, requested_at, finished_at) SELECT 'succeeded', now(), now() FROM generate_series(1, 150)});
ok(DfeTest::poll_until($node, 'SELECT count(*) <= 102 FROM dfe_airbyte.deploys', 't', 120), 'pruned again');
is(sql("SELECT state FROM dfe_airbyte.deploys WHERE id = $waiting"), 'running',
	'the running deploy, older than history_retention and beyond history_max_rows, was kept');
$migration->quit;

done_testing();
