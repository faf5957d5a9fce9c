# The Airbyte connection kept to the allowlist (drift removed after a sync,
# a disabled connection shown and reported), dfe_airbyte_deploy_plan() read
# live from the connection, and dfe_airbyte_repair() (dry run changes
# nothing; slot missing -> created + one re-sync; Airbyte's saved position
# behind the slot -> one re-sync; disabled connection re-enabled; a stuck
# job reported, cancelled and restarted only when asked).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;
use DfeTest;
use FakeServer;

my $CONN = '11111111-1111-1111-1111-111111111111';

my $fake = FakeServer->start;
$fake->config(job_pending_seconds => 0.2, job_running_seconds => 0.5);
$fake->source_catalog({ users => [qw(id name email)] });

my $node = DfeTest::new_node('connection', conf => <<"CONF");
dfe_airbyte.airbyte_url = '@{[ $fake->url ]}'
dfe_airbyte.airbyte_client_id = 'test-client'
dfe_airbyte.airbyte_client_secret = 'test-secret-value'
dfe_airbyte.connection_id = '$CONN'
dfe_airbyte.sync_poll_interval = 1
dfe_airbyte.check_interval = 1
dfe_airbyte.http_retry_base_delay = 50
dfe_airbyte.http_max_retries = 1
dfe_airbyte.http_timeout = 5
CONF
DfeTest::wait_for_worker($node);

sub sql { return $node->safe_psql('postgres', $_[0]) }
sub events { return sql("SELECT count(*) FROM dfe_airbyte.events WHERE kind = '$_[0]'") }

sub selected
{
	my ($conn, $name) = @_;
	for my $s (@{ $conn->{configurations}{streams} })
	{
		return join(',', map { $_->{fieldPath}[0] } @{ $s->{selectedFields} }) if $s->{name} eq $name;
	}
	return undef;
}

# requests that change something in Airbyte since $mark (the token and
# POST /api/v1/state/get are reads; the config API is all POSTs)
sub changes
{
	my ($mark) = @_;
	return [ map { "$_->{method} $_->{path}" }
		  grep { $_->{method} ne 'GET' && $_->{path} !~ m{/applications/token$|^/api/v1/state/get$} }
		  @{ $fake->requests(since => $mark) } ];
}

sql(<<'SQL');
CREATE TABLE users (id bigint PRIMARY KEY, name text, email text);
INSERT INTO dfe_airbyte.allowlist (table_name, column_name) VALUES ('users', 'id'), ('users', 'name');
INSERT INTO dfe_airbyte.blocklist (table_name, column_name) VALUES ('users', 'email');
CREATE ROLE app LOGIN IN ROLE dfe_airbyte_admin;
SQL

# ---- deploy plan before anything is in the connection ------------------------
is(sql("SELECT string_agg(coalesce(stream, '-') || ' ' || coalesce(field, '-') || ' ' || change, '; ' ORDER BY stream COLLATE \"C\" NULLS LAST, field COLLATE \"C\" NULLS FIRST) FROM dfe_airbyte_deploy_plan()"),
	'airbyte_heartbeat - add_stream; airbyte_heartbeat id add_field; airbyte_heartbeat last_heartbeat add_field; '
	  . 'users - add_stream; users _ab_cdc_deleted_at add_field; users _ab_cdc_lsn add_field; users _ab_cdc_updated_at add_field; '
	  . 'users id add_field; users name add_field; - - field_count',
	'plan on an empty connection: both streams and their fields are added, then the count');
like(sql("SELECT detail FROM dfe_airbyte_deploy_plan() WHERE change = 'field_count'"),
	qr/^7 selected fields after the refresh \(now 0\), Airbyte's limit is 20000$/, 'field count against the limit');

sql('SELECT dfe_airbyte_connection_refresh()');
$fake->control(POST => '/airbyte/connection_model', { nonBreakingSchemaUpdatesBehavior => 'propagate_fully' });
ok(DfeTest::poll_until($node, 'SELECT schema_behavior || status FROM dfe_airbyte.connection_watch', 'propagate_fullyactive'),
	'the worker reads the connection: status and schema propagation setting');
like(sql("SELECT problem || ' ' || hint FROM dfe_airbyte.config_problems WHERE object = 'Airbyte connection'"),
	qr/nonBreakingSchemaUpdatesBehavior is propagate_fully.*every new table.*non_breaking_schema_updates_behavior = "ignore".*Terraform/s,
	'config_problems warns about Airbyte\'s own schema propagation');
is(sql("SELECT count(*) FROM dfe_airbyte_deploy_plan() WHERE change <> 'field_count'"), '0', 'plan after the refresh: no change');

# ---- a migration adds a column and a table behind the allowlist's back ------
my $patches = $fake->connection->{patch_count};
sql('ALTER TABLE users ADD COLUMN national_insurance_number text; CREATE TABLE secrets (id bigint PRIMARY KEY, pin text)');
$fake->source_catalog({ users => [qw(id name email national_insurance_number)], secrets => [qw(id pin)] });
# the next sync's schema check propagates them ...
my $job = $fake->create_job(status => 'running', frozen => 1)->{jobId};
my $conn = $fake->connection;
is(selected($conn, 'users'), '_ab_cdc_lsn,_ab_cdc_deleted_at,_ab_cdc_updated_at,id,name,national_insurance_number',
	'Airbyte added the new column on its own');
is(selected($conn, 'secrets'), '_ab_cdc_lsn,_ab_cdc_deleted_at,_ab_cdc_updated_at,id,pin', 'and the new table');

# ... which the plan shows as selected by Airbyte
ok(DfeTest::poll_until($node, "SELECT matched_at IS NOT NULL FROM dfe_airbyte.connection_watch", 't'), 'matched recorded');
is(sql("SELECT string_agg(stream || ' ' || coalesce(field, '-') || ' ' || change, '; ' ORDER BY stream COLLATE \"C\", field COLLATE \"C\" NULLS FIRST) FROM dfe_airbyte_deploy_plan() WHERE change <> 'field_count'"),
	'secrets - selected_by_airbyte; users national_insurance_number selected_by_airbyte',
	'plan: the column and table Airbyte selected on its own');
like(sql("SELECT detail FROM dfe_airbyte_deploy_plan() WHERE field = 'national_insurance_number'"),
	qr/selected by Airbyte's schema propagation \(nonBreakingSchemaUpdatesBehavior = propagate_fully\).*dropped from BigQuery/,
	'plan detail: why and what happens in BigQuery');
is($fake->connection->{patch_count}, $patches, 'the plan changed nothing');

# ... and once the sync succeeds, they are out of the connection again
my $mark = $fake->mark;
$fake->control(POST => "/airbyte/jobs/$job", { status => 'succeeded' });
ok(DfeTest::poll_until($node, "SELECT count(*) FROM dfe_airbyte.events WHERE kind = 'connection_drift_removed'", '2'),
	'two drift events after the sync');
is(sql("SELECT string_agg(object, ', ' ORDER BY object) FROM dfe_airbyte.events WHERE kind = 'connection_drift_removed'"),
	'secrets, users.national_insurance_number', 'each names the table and column');
like(sql("SELECT detail FROM dfe_airbyte.events WHERE kind = 'connection_drift_removed' AND object = 'users.national_insurance_number'"),
	qr/selected column users.national_insurance_number, which the allowlist does not list \(nonBreakingSchemaUpdatesBehavior = propagate_fully.*taken out of the connection again after sync job $job/,
	'event detail');
is(sql("SELECT data->>'column' FROM dfe_airbyte.events WHERE kind = 'connection_drift_removed' AND object = 'users.national_insurance_number'"),
	'national_insurance_number', 'event data names the column');
$conn = $fake->connection;
is(selected($conn, 'users'), '_ab_cdc_lsn,_ab_cdc_deleted_at,_ab_cdc_updated_at,id,name', 'the column is out of the connection');
is(selected($conn, 'secrets'), undef, 'the table is out of the connection');
is($conn->{patch_count}, $patches + 1, 'one PATCH');
is_deeply([ grep { m{discover|PATCH} } @{ changes($mark) } ],
	[ 'POST /api/v1/sources/discover_schema', "PATCH /api/public/v1/connections/$CONN" ], 'after a discover');
is($conn->{last_patch_raw}, sql('SELECT dfe_airbyte_stream_config_json()::text'), 'the PATCH is the allowlist\'s stream configuration');
is($conn->{nonBreakingSchemaUpdatesBehavior}, 'propagate_fully', 'the PATCH leaves Terraform\'s setting alone');

# the next sync adds nothing again (Airbyte now knows the columns)
my $next = $fake->create_job(status => 'succeeded')->{jobId};
ok(DfeTest::poll_until($node, 'SELECT last_success_job_id FROM dfe_airbyte.sync_health', $next), 'the next sync is seen');
DfeTest::wait_for_worker_loops($node, 'network', 2);
is(events('connection_drift_removed'), '2', 'no further drift at the next sync');

# ---- Airbyte's field limit --------------------------------------------------
sql('ALTER SYSTEM SET dfe_airbyte.airbyte_max_fields = 6');
sql('SELECT pg_reload_conf()');
ok(DfeTest::poll_until($node, "SELECT change FROM dfe_airbyte_deploy_plan() WHERE stream IS NULL", 'over_field_limit'),
	'plan: over the field limit');
like(sql("SELECT detail FROM dfe_airbyte_deploy_plan() WHERE stream IS NULL"),
	qr/^7 selected fields after the refresh \(now 7\): over Airbyte's limit of 6 .*Airbyte rejects the refresh/, 'plan detail');
$fake->config(max_fields_per_connection => 6);
my ($ret, $stdout, $stderr) = $node->psql('postgres', 'SELECT dfe_airbyte_connection_refresh()');
isnt($ret, 0, 'the refresh fails');
like($stderr, qr/Total number of selected fields \(7\) is greater than the limit \(6\)/, 'with Airbyte\'s message');
$fake->config(max_fields_per_connection => 20000);
sql('ALTER SYSTEM RESET dfe_airbyte.airbyte_max_fields');
sql('SELECT pg_reload_conf()');

# ---- Airbyte disables the connection ----------------------------------------
$fake->config(disable_after_failed_jobs => 2);
$fake->create_job(status => 'failed') for 1 .. 2;
ok(DfeTest::poll_until($node, 'SELECT connection_status FROM dfe_airbyte.sync_health', 'inactive'),
	'sync_health shows the disabled connection');
ok(DfeTest::poll_until($node, "SELECT count(*) FROM dfe_airbyte.events WHERE kind = 'connection_disabled'", '1'), 'one event');
like(sql('SELECT hint FROM dfe_airbyte.sync_health'), qr/connection is inactive.*dfe_airbyte_repair/, 'hint names the repair');
like(sql("SELECT severity || ' ' || problem FROM dfe_airbyte.config_problems WHERE problem LIKE '%is inactive%'"),
	qr/^error the Airbyte connection is inactive/, 'config_problems: error');
DfeTest::wait_for_worker_loops($node, 'network', 2);
is(events('connection_disabled'), '1', 'still one event');

# ---- repair, dry run: slot missing, connection disabled ----------------------
my $counts = "SELECT (SELECT count(*) FROM dfe_airbyte.events) || ' ' || (SELECT count(*) FROM dfe_airbyte.slot_recreations) || ' ' || (SELECT count(*) FROM pg_replication_slots)";
my $before = sql($counts);
$mark = $fake->mark;
my $dry = $node->safe_psql('postgres', "SELECT step || ' ' || action FROM dfe_airbyte_repair()", extra_params => [ '-U', 'app' ]);
is($dry, "slot would_create\nairbyte_state skipped\nconnection would_enable\njob ok", 'dry run: what it would do');
is_deeply(changes($mark), [], 'dry run: nothing changed in Airbyte (no PATCH, DELETE or POST but reads)');
is(sql($counts), $before, 'dry run: no row changed, no slot created');

# ---- repair: slot created, one full re-sync, connection enabled -------------
$mark = $fake->mark;
my $out = $node->safe_psql('postgres', "SELECT step || ' ' || action FROM dfe_airbyte_repair(dry_run => false)",
	extra_params => [ '-U', 'app' ]);
is($out, "slot created\nairbyte_state skipped\nconnection enabled\njob ok", 'repair: slot created, connection enabled');
is(sql("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'airbyte_slot' AND plugin = 'pgoutput' AND database = current_database()"),
	'1', 'the slot exists');
is(sql("SELECT reason || ' ' || (recreated_at IS NOT NULL) FROM dfe_airbyte.slot_recreations"), 'missing true',
	'the re-sync is handed over to the worker');
ok(DfeTest::poll_until($node, 'SELECT resync_state FROM dfe_airbyte.slot_recreations', 'started'), 'the worker asked for it');
is(scalar(@{ $fake->requests(since => $mark, method => 'POST', path => qr{^/api/v1/connections/refresh$}) }), 1,
	'exactly one full re-sync request');
is($fake->connection->{status}, 'active', 'connection re-enabled');
is(events('repair_slot_created') . events('repair_connection_enabled'), '11', 'each step is an event');
like(sql("SELECT data->>'by' FROM dfe_airbyte.events WHERE kind = 'repair_slot_created'"), qr/^app$/, 'event names who repaired');
ok(DfeTest::poll_until($node, 'SELECT connection_status FROM dfe_airbyte.sync_health', 'active'), 'sync_health: active again');

# ---- Airbyte's saved position behind the slot --------------------------------
# wait until the re-sync job has ended: while it runs, repair waits for it
my $rjob = sql('SELECT resync_job_id FROM dfe_airbyte.slot_recreations');
ok(DfeTest::poll_until($node, "SELECT 1 FROM dfe_airbyte.slot_recreations WHERE resync_job_id = $rjob", '1'), 'job id kept');
ok(DfeTest::poll_until($node, "SELECT resync_finished_at IS NOT NULL FROM dfe_airbyte.slot_recreations WHERE resync_job_id = $rjob", 't'),
	'the re-sync job ended');
$fake->control(POST => '/airbyte/saved_state', { lsn => 1 });
# the re-sync it asks for runs until this test ends it
$fake->config(job_running_seconds => 600);
$mark = $fake->mark;
$out = sql("SELECT step || ' ' || action || ' ' || detail FROM dfe_airbyte_repair() WHERE step = 'airbyte_state'");
like($out, qr/^airbyte_state would_resync the slot's confirmed_flush_lsn \S+ is ahead of the position Airbyte saved \(0\/1\)/,
	'dry run sees the slot ahead of Airbyte');
is_deeply(changes($mark), [], 'dry run: still nothing changed');
$out = sql("SELECT action FROM dfe_airbyte_repair(false) WHERE step = 'airbyte_state'");
is($out, 'resync_requested', 'repair requests one full re-sync');
like(sql("SELECT action FROM dfe_airbyte_repair(false) WHERE step = 'airbyte_state'"), qr/^resync_(pending|running)$/,
	'a second repair does not ask again while it is pending or running')
  or diag(sql('SELECT * FROM dfe_airbyte.slot_recreations'));
ok(DfeTest::poll_until($node, "SELECT count(*) FROM dfe_airbyte.slot_recreations WHERE reason = 'airbyte_state_behind' AND resync_state = 'started'", '1'),
	'the worker asked Airbyte');
is(scalar(@{ $fake->requests(since => $mark, method => 'POST', path => qr{^/api/v1/connections/refresh$}) }), 1,
	'one re-sync request for it');
is(events('repair_full_resync_requested'), '1', 'an event');
is(sql("SELECT action FROM dfe_airbyte_repair(false) WHERE step = 'airbyte_state'"), 'resync_running',
	'nor while the re-sync job runs');
$rjob = sql("SELECT resync_job_id FROM dfe_airbyte.slot_recreations WHERE reason = 'airbyte_state_behind'");
$fake->control(POST => "/airbyte/jobs/$rjob", { status => 'succeeded' });
$fake->config(job_running_seconds => 0.5);
my $flush = sql("SELECT (confirmed_flush_lsn - '0/0')::bigint FROM pg_replication_slots WHERE slot_name = 'airbyte_slot'");
$fake->control(POST => '/airbyte/saved_state', { lsn => $flush + 100, stateType => 'legacy' });
# once the worker has seen the re-sync job end
ok(DfeTest::poll_until($node, "SELECT action FROM dfe_airbyte_repair() WHERE step = 'airbyte_state'", 'ok'),
	'legacy state ahead of the slot: ok');

# ---- a stuck job ---------------------------------------------------------------
my $stuck = $fake->create_job(status => 'running', frozen => 1)->{jobId};
ok(DfeTest::poll_until($node, 'SELECT progress_job_id FROM dfe_airbyte.connection_watch', $stuck), 'the worker records the job\'s progress');
is(sql("SELECT action FROM dfe_airbyte_repair() WHERE step = 'job'"), 'running', 'not stuck yet');
sql("UPDATE dfe_airbyte.connection_watch SET progress_since = now() - interval '3 hours'");
like(sql("SELECT action || ' ' || detail FROM dfe_airbyte_repair(false) WHERE step = 'job'"),
	qr/^stuck sync job $stuck is running without progress since .*cancel_stuck => true/, 'reported, not cancelled');
is($fake->control(GET => "/airbyte/jobs")->{jobs}[-1]{status}, 'running', 'the job still runs');
is(sql("SELECT action FROM dfe_airbyte_repair(cancel_stuck => true) WHERE step = 'job'"), 'would_cancel', 'dry run with cancel_stuck');
$mark = $fake->mark;
is(sql("SELECT string_agg(action, ' ') FROM dfe_airbyte_repair(false, true) WHERE step = 'job'"), 'cancelled restarted',
	'cancelled and restarted when asked');
is_deeply(changes($mark), [ "DELETE /api/public/v1/jobs/$stuck", 'POST /api/public/v1/jobs' ], 'DELETE then a new sync');
is(events('repair_job_cancelled') . events('repair_sync_started'), '11', 'events');

# ---- drift removal off: reported only -----------------------------------------
$node->append_conf('postgresql.conf', "dfe_airbyte.remove_connection_drift = off\n");
$node->reload;
DfeTest::wait_for_worker_loops($node, 'network', 1);    # it reloads at the start of a round
$fake->source_catalog({ users => [qw(id name email national_insurance_number phone)], secrets => [qw(id pin)] });
$fake->create_job(status => 'succeeded');
ok(DfeTest::poll_until($node, "SELECT count(*) FROM dfe_airbyte.events WHERE kind = 'connection_drift_found' AND object = 'users.phone'", '1'),
	'with remove_connection_drift off the drift is an event');
like(selected($fake->connection, 'users'), qr/phone/, 'and stays in the connection');

$node->stop;
unlike(slurp_file($node->logfile), qr/test-secret-value/, 'secret not in the server log');
done_testing();
