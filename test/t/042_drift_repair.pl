# The worker's policy tag drift repair, end to end: when Airbyte
# recreates a final table during a refresh it drops the table's policy tags;
# after the worker sees the next sync job succeed it puts the hidden tag back
# on exactly the blocklisted columns and records a policy_tags_repaired event
# naming the table and the job.  A success with nothing drifted sends no
# PATCH and records nothing; a failing BigQuery table becomes a
# policy_tags_failed warning while the other tables are repaired and the
# worker goes on (same pid, slot sampling and sync_health keep updating).
# The repair event says since when each column was exposed (a
# recreated table: since its creationTime; a replaced column: after it was
# last seen tagged, by the table's lastModifiedTime at the latest), and a
# column added to a final table behind the allowlist's back is hidden at
# the next repair, with an unlisted_column_hidden event saying where it
# came from.
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
my $sa = 'airbyte@proj.iam.gserviceaccount.com';
my $conn = $fake->config->{connection_id};

my $node = DfeTest::new_node('drift', conf => DfeTest::bigquery_conf($fake, $dir,
		project => $project, dataset => $dataset, hidden_tag => $hidden, service_account => $sa,
		assertion => 'federated-assertion-for-drift-repair') . <<"CONF");
dfe_airbyte.airbyte_url = '$url'
dfe_airbyte.airbyte_client_id = 'test-client'
dfe_airbyte.airbyte_client_secret = 'test-secret-value'
dfe_airbyte.connection_id = '$conn'
dfe_airbyte.sync_poll_interval = 1
dfe_airbyte.check_interval = 1
dfe_airbyte.http_retry_base_delay = 50
dfe_airbyte.http_max_retries = 2
dfe_airbyte.http_timeout = 10
CONF

sub sql { return $node->safe_psql('postgres', $_[0]) }

my $GET = 'GET /bigquery/v2/projects/*/datasets/*/tables/*';
my $PATCH = 'PATCH /bigquery/v2/projects/*/datasets/*/tables/*';

sub stat_of
{
	my ($stats, $key) = @_;
	return $stats->{$key} // 0;
}

sub fields_of
{
	my ($table) = @_;
	return $fake->bigquery_table($project, $dataset, $table)->{schema}{fields};
}

sub patches_of { return $fake->bigquery_table($project, $dataset, $_[0])->{patches} }

# the columns of a table that carry the hidden tag, sorted
sub tagged_columns
{
	my ($table) = @_;
	return [ sort map { $_->{name} }
		  grep { grep { $_ eq $hidden } @{ ($_->{policyTags} // {})->{names} // [] } } @{ fields_of($table) } ];
}

sub events
{
	my ($kind) = @_;
	return sql("SELECT count(*) FROM dfe_airbyte.events WHERE kind = '$kind'");
}

# wait until a worker poll that started after the one which saw $job_id
# succeed has finished: the drift repair of $job_id then ran to its end
sub wait_for_repair_of
{
	my ($job_id, $what) = @_;
	ok(DfeTest::poll_until($node, 'SELECT last_success_job_id FROM dfe_airbyte.sync_health', $job_id, 30),
		"$what: the worker saw job $job_id succeed");
	my $seen = sql('SELECT checked_at FROM dfe_airbyte.sync_health');
	ok(DfeTest::poll_until($node, "SELECT checked_at > '$seen' FROM dfe_airbyte.sync_health", 't', 30),
		"$what: the worker polled again after the repair");
}

my $users = [
	{ name => 'id', type => 'INTEGER', mode => 'REQUIRED' },
	{ name => 'email', type => 'STRING', description => 'e-mail address' },
	{ name => 'name', type => 'STRING' },
	{ name => 'dob', type => 'DATE' },
	{ name => '_ab_cdc_lsn', type => 'NUMERIC' },
];
my $orders = [
	{ name => 'id', type => 'INTEGER', mode => 'REQUIRED' },
	{ name => 'total', type => 'NUMERIC' },
	{ name => 'card_number', type => 'STRING' },
];
$fake->bigquery_tables(
	{ project => $project, dataset => $dataset, table => 'users', schema => { fields => $users } },
	{ project => $project, dataset => $dataset, table => 'orders', schema => { fields => $orders } });

sub load_lists
{
	my ($allow, $block) = @_;
	sql("SELECT count(*) FROM dfe_airbyte_load_config('" . $json->encode($allow) . "', '"
		  . $json->encode($block) . "')");
}
load_lists({ users => [qw(id email name dob)], orders => [qw(id total card_number)] },
	{ users => [qw(email dob)], orders => ['card_number'] });

DfeTest::wait_for_worker($node);
my $pid = sql('SELECT dfe_airbyte_worker_pid()');
ok(DfeTest::poll_until($node, 'SELECT checked_at IS NOT NULL AND check_error IS NULL FROM dfe_airbyte.sync_health', 't', 30),
	'the worker reads the sync jobs');

# a slot for the slot guard to sample
sql("SELECT pg_create_logical_replication_slot('airbyte_slot', 'pgoutput')");

# ------------------------------------------------------------------ the tags are applied once
is(sql("SELECT string_agg(table_name || '.' || column_name || '=' || action, ' ' ORDER BY 1) FROM dfe_airbyte_apply_policy_tags()"),
	'orders.card_number=tagged users.dob=tagged users.email=tagged', 'dfe_airbyte_apply_policy_tags() tags the blocklisted columns');
is_deeply(tagged_columns('users'), [qw(dob email)], 'users: email and dob carry the hidden tag');
is_deeply(tagged_columns('orders'), ['card_number'], 'orders: card_number carries the hidden tag');
is(events('policy_tags_repaired'), '0', 'a manual run records no repair event');

# ------------------------------------------------------------------ Airbyte recreates users during a refresh
# the refresh also brings a new column, phone, that a migration added and blocklisted
load_lists({ users => [qw(id email name dob phone)], orders => [qw(id total card_number)] },
	{ users => [qw(email dob phone)], orders => ['card_number'] });
my $recreated = [ @$users, { name => 'phone', type => 'STRING' } ];
$fake->bigquery_tables({ project => $project, dataset => $dataset, table => 'users', schema => { fields => $recreated } });
is_deeply(tagged_columns('users'), [], 'the recreated users table has no tags');
my $orders_patches = patches_of('orders');

my $mark = $fake->mark;
my $j1 = $fake->create_job(status => 'succeeded')->{jobId};
ok(DfeTest::poll_until($node, "SELECT count(*) FROM dfe_airbyte.events WHERE kind = 'policy_tags_repaired'", '1', 30),
	'after the sync succeeds the worker records a repair');
is_deeply(tagged_columns('users'), [qw(dob email phone)], 'users: the tag is back on exactly the blocklisted columns');
my %by_name = map { $_->{name} => $_ } @{ fields_of('users') };
is($by_name{email}{description}, 'e-mail address', 'users: the rest of the schema is kept');
is($by_name{id}{mode}, 'REQUIRED', 'users: modes kept');
ok(!exists $by_name{name}{policyTags} && !exists $by_name{id}{policyTags}, 'users: other columns untouched');
is_deeply(tagged_columns('orders'), ['card_number'], 'orders: still tagged');
is(patches_of('orders'), $orders_patches, 'orders: not patched (nothing had drifted)');
my @patched = map { $_->{path} } @{ $fake->requests(since => $mark, method => 'PATCH') };
is_deeply(\@patched, ["/bigquery/v2/projects/$project/datasets/$dataset/tables/users"], 'exactly one PATCH: users');

my ($severity, $object, $detail, $data) = split /\|/,
  sql("SELECT severity, object, detail, data FROM dfe_airbyte.events WHERE kind = 'policy_tags_repaired'");
is($severity, 'warning', 'the repair event is a warning');
is($object, 'users', 'it names the table');
like($detail, qr/re-applied the hidden policy tag to 3 column\(s\) of users after sync job $j1: dob, email, phone/,
	'its detail names the table, the job and the columns');
my $d = decode_json($data);
is($d->{job_id}, $j1, 'data.job_id is the job');
is($d->{table}, 'users', 'data.table is the table');
is_deeply([ sort @{ $d->{tagged} } ], [qw(dob email phone)], 'data.tagged lists the columns');
is_deeply($d->{untagged}, [], 'data.untagged is empty');
is_deeply([ sort map { $_->{column} } @{ $d->{exposed} } ], [qw(dob email)],
	'data.exposed: the columns seen tagged before (phone is new)');
ok((grep { $_->{table_recreated} } @{ $d->{exposed} }) == 2, 'data.exposed: the table was recreated');
like($detail, qr/users\.email was readable without its policy tag since \S+ \S+, when the table was recreated \(last seen tagged /,
	'the detail says since when email was exposed');
ok($node->log_contains(qr/WARNING:  .*re-applied the hidden policy tag to 3 column\(s\) of users after sync job $j1/),
	'the repair is a WARNING in the server log');
wait_for_repair_of($j1, 'job 1');

# ------------------------------------------------------------------ a success with nothing drifted
my $before = $fake->stats;
$mark = $fake->mark;
my $j2 = $fake->create_job(status => 'succeeded')->{jobId};
wait_for_repair_of($j2, 'job 2');
my $after = $fake->stats;
ok(stat_of($after, $GET) - stat_of($before, $GET) >= 2, 'the tables were checked after job 2');
is(stat_of($after, $PATCH) - stat_of($before, $PATCH), 0, 'nothing drifted: zero PATCH calls');
is(events('policy_tags_repaired'), '1', 'nothing drifted: no new repaired event');
is(events('policy_tags_failed'), '0', 'and no failure');

# ------------------------------------------------------------------ BigQuery failing on one table
# orders is recreated without its tag too; users answers 500 to everything
$fake->bigquery_tables({ project => $project, dataset => $dataset, table => 'orders', schema => { fields => $orders } });
$fake->faults({ path => '/datasets/[^/]+/tables/users$', status => 500, times => undef,
		body => { error => { code => 500, message => 'Backend error in the fake', status => 'INTERNAL' } } });
my $samples = sql('SELECT max(id) FROM dfe_airbyte.slot_samples');
ok($samples ne '', 'the slot guard samples the slot');
my $j3 = $fake->create_job(status => 'succeeded')->{jobId};
ok(DfeTest::poll_until($node, "SELECT count(*) FROM dfe_airbyte.events WHERE kind = 'policy_tags_failed'", '1', 30),
	'a failing table is a policy_tags_failed event');
($severity, $object, $detail, $data) = split /\|/,
  sql("SELECT severity, coalesce(object, '-'), detail, data FROM dfe_airbyte.events WHERE kind = 'policy_tags_failed'");
is($severity, 'warning', 'it is a warning');
like($detail, qr/could not check the BigQuery policy tags of 1 table\(s\) after sync job $j3: users \(.*HTTP 500.*\)/,
	'it names the job, the table and the status');
like($detail, qr/checked again after the next sync/, 'and says what happens next');
$d = decode_json($data);
is($d->{job_id}, $j3, 'data.job_id is the job');
is_deeply([ map { $_->{table} } @{ $d->{tables} } ], ['users'], 'data.tables names the failed table');
like($d->{tables}[0]{error}, qr/500/, 'with its error');
ok(DfeTest::poll_until($node, "SELECT count(*) FROM dfe_airbyte.events WHERE kind = 'policy_tags_repaired' AND object = 'orders'", '1', 30),
	'the other table was repaired all the same');
is_deeply(tagged_columns('orders'), ['card_number'], 'orders: tag back');
like(sql("SELECT detail FROM dfe_airbyte.events WHERE kind = 'policy_tags_repaired' AND object = 'orders'"),
	qr/after sync job $j3: card_number/, 'orders event names job 3');
ok($node->log_contains(qr/WARNING:  .*could not check the BigQuery policy tags of 1 table\(s\) after sync job $j3/),
	'the failure is a WARNING in the server log');

# the worker goes on
wait_for_repair_of($j3, 'job 3');
is(sql('SELECT dfe_airbyte_worker_pid()'), $pid, 'the worker was not restarted');
ok(DfeTest::poll_until($node, "SELECT max(id) > $samples FROM dfe_airbyte.slot_samples", 't', 30),
	'slot sampling goes on');
is(sql('SELECT check_error IS NULL FROM dfe_airbyte.sync_health'), 't', 'sync_health is healthy');
is(events('policy_tags_repair_failed'), '0', 'the repair itself did not fail');

# once BigQuery works again the next success repairs nothing (users kept its tags)
$fake->clear_faults;
$before = $fake->stats;
my $j4 = $fake->create_job(status => 'succeeded')->{jobId};
wait_for_repair_of($j4, 'job 4');
is(stat_of($fake->stats, $PATCH) - stat_of($before, $PATCH), 0, 'job 4: zero PATCH calls');
is(events('policy_tags_failed'), '1', 'job 4: no new failure');
is(events('policy_tags_repaired'), '2', 'job 4: no new repair');
is(sql('SELECT dfe_airbyte_worker_pid()'), $pid, 'still the same worker');

# ------------------------------------------------------------------ the whole run failing (no Google token)
# BigQuery refuses the cached token, and a new one cannot be had
$fake->faults(
	{ method => 'GET', path => '/tables/users$', status => 401, times => 1,
		body => { error => { code => 401, message => 'Request had invalid authentication credentials.' } } },
	{ method => 'POST', path => ':generateAccessToken$', status => 503, times => undef,
		body => { error => { code => 503, message => 'IAM is down in the fake', status => 'UNAVAILABLE' } } });
my $j5 = $fake->create_job(status => 'succeeded')->{jobId};
ok(DfeTest::poll_until($node, "SELECT count(*) FROM dfe_airbyte.events WHERE kind = 'policy_tags_failed'", '2', 30),
	'a run that cannot get a Google token is a policy_tags_failed event');
like(sql("SELECT detail FROM dfe_airbyte.events WHERE kind = 'policy_tags_failed' ORDER BY id DESC LIMIT 1"),
	qr/could not check the BigQuery policy tags after sync job $j5: .*503/, 'it names the job and the cause');
wait_for_repair_of($j5, 'job 5');
is(sql('SELECT dfe_airbyte_worker_pid()'), $pid, 'the worker was not restarted');
$fake->clear_faults;
$before = $fake->stats;
my $j6 = $fake->create_job(status => 'succeeded')->{jobId};
wait_for_repair_of($j6, 'job 6');
ok(stat_of($fake->stats, $GET) - stat_of($before, $GET) >= 2, 'job 6: the tables were checked with a new token');
is(events('policy_tags_failed'), '2', 'job 6: no new failure');
is(sql('SELECT dfe_airbyte_worker_pid()'), $pid, 'still the same worker');


# ------------------------------------------------------------------ exposure after a type change
# Airbyte's destination replaces dob (a type change): same table, the new column untagged
my $ts = $fake->bigquery_table($project, $dataset, 'users');
my @changed = map { my %f = %$_; if ($f{name} eq 'dob') { delete $f{policyTags}; $f{type} = 'TIMESTAMP' } \%f } @{ $ts->{schema}{fields} };
$fake->bigquery_update($project, $dataset, 'users', \@changed);
my $repaired = events('policy_tags_repaired');
my $j7 = $fake->create_job(status => 'succeeded')->{jobId};
ok(DfeTest::poll_until($node, "SELECT count(*) FROM dfe_airbyte.events WHERE kind = 'policy_tags_repaired'", $repaired + 1, 30),
	'a replaced column is repaired after the next sync');
($detail, $data) = split /\|/, sql("SELECT detail, data FROM dfe_airbyte.events WHERE kind = 'policy_tags_repaired' ORDER BY id DESC LIMIT 1");
like($detail, qr/users\.dob lost its policy tag after \S+ \S+, when it was last seen tagged, and \S+ \S+ at the latest \(the table's last change\)/,
	'the detail gives the exposure window of a replaced column');
$d = decode_json($data);
is_deeply([ map { $_->{column} } @{ $d->{exposed} } ], ['dob'], 'data.exposed names dob');
ok(!$d->{exposed}[0]{table_recreated}, 'the table was not recreated');
ok($d->{exposed}[0]{last_seen_tagged} && $d->{exposed}[0]{table_modified}, 'the window: last seen tagged, table last modified');
is_deeply(tagged_columns('users'), [qw(dob email phone)], 'dob tagged again');
wait_for_repair_of($j7, 'job 7');

# ------------------------------------------------------------------ a column behind the allowlist's back
sql('CREATE TABLE users (id int PRIMARY KEY, email text, name text, dob date, phone text, ni_number text)');
$ts = $fake->bigquery_table($project, $dataset, 'users');
$fake->bigquery_update($project, $dataset, 'users',
	[ @{ $ts->{schema}{fields} }, { name => 'ni_number', type => 'STRING' }, { name => '_airbyte_meta', type => 'JSON' } ]);
my $j8 = $fake->create_job(status => 'succeeded')->{jobId};
ok(DfeTest::poll_until($node, "SELECT count(*) FROM dfe_airbyte.events WHERE kind = 'unlisted_column_hidden'", '1', 30),
	'a column added behind the allowlist is an unlisted_column_hidden event');
($object, $detail, $data) = split /\|/, sql("SELECT object, detail, data FROM dfe_airbyte.events WHERE kind = 'unlisted_column_hidden'");
is($object, 'users.ni_number', 'the event names the column');
like($detail, qr/column ni_number of BigQuery table users is not in the allowlist: it is a column of the source table that is not allowlisted: Airbyte's schema propagation/,
	'and says where it came from');
is(decode_json($data)->{origin} =~ /schema propagation/ ? 1 : 0, 1, 'data.origin');
is_deeply(tagged_columns('users'), [qw(dob email ni_number phone)], 'ni_number carries the hidden tag; _airbyte_meta does not');
wait_for_repair_of($j8, 'job 8');
$before = $fake->stats;
my $j9 = $fake->create_job(status => 'succeeded')->{jobId};
wait_for_repair_of($j9, 'job 9');
is(stat_of($fake->stats, $PATCH) - stat_of($before, $PATCH), 0, 'converged: the next repair sends no PATCH');
is(events('unlisted_column_hidden'), '1', 'and records no new unlisted event');

# ------------------------------------------------------------------ no secret in the server log
my %secrets = ('federated-assertion-for-drift-repair' => 1, 'test-secret-value' => 1);
for my $r (@{ $fake->requests })
{
	$secrets{$1} = 1 if ($r->{headers}{authorization} // '') =~ /^Bearer (\S+)/;
}
$node->stop;
my $log = slurp_file($node->logfile);
my @leaked = grep { index($log, $_) >= 0 } sort keys %secrets;
is_deeply(\@leaked, [], 'no secret or token in the server log (' . scalar(keys %secrets) . ' checked)');
done_testing();
