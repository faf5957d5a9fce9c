# dfe_airbyte_apply_policy_tags() against the fake BigQuery:
# exactly the blocklisted columns get the hidden tag, everything else in the
# schema stays as it was, a second run changes nothing, un-blocklisting
# removes the tag, etag conflicts and 5xx are retried, a failing table is
# reported at the end while the others are applied.  A missing
# table gives one row per blocklisted column; columns that are not
# allowlisted are hidden too (and the setting that turns it off); a
# blocklisted column may carry its own policy tag, and only tags the
# extension manages are ever removed; BigQuery's rate limits (403
# rateLimitExceeded, per table) are paced and retried, quotaExceeded is not.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;
use Storable qw(dclone);
use DfeTest;
use FakeServer;

my $fake = FakeServer->start;
my $url = $fake->url;
my $dir = PostgreSQL::Test::Utils::tempdir;
my $project = 'proj';
my $dataset = 'svc_airbyte_test';
my $internal = 'airbyte_internal';
my $hidden = 'projects/proj/locations/europe-west2/taxonomies/111/policyTags/222';
my $other = 'projects/proj/locations/europe-west2/taxonomies/111/policyTags/333';
my $sa = 'airbyte@proj.iam.gserviceaccount.com';

my $node = DfeTest::new_node('policy_tags', conf => DfeTest::bigquery_conf($fake, $dir,
		project => $project, dataset => $dataset, hidden_tag => $hidden, service_account => $sa,
		assertion => 'federated-assertion-for-policy-tags') . <<"CONF");
dfe_airbyte.http_retry_base_delay = '50ms'
dfe_airbyte.http_max_retries = 3
CONF

my $GET = 'GET /bigquery/v2/projects/*/datasets/*/tables/*';
my $PATCH = 'PATCH /bigquery/v2/projects/*/datasets/*/tables/*';
my $IAM = 'POST /v1/projects/-/serviceAccounts/*:generateAccessToken';
my $apply = 'SELECT * FROM dfe_airbyte_apply_policy_tags()';

# counts of GET and PATCH (and IAM) calls made by $code
sub calls
{
	my ($code) = @_;
	my $before = $fake->stats;
	my @out = $code->();
	my $after = $fake->stats;
	my %d = map { $_ => ($after->{$_} // 0) - ($before->{$_} // 0) } $GET, $PATCH, $IAM;
	return ({ get => $d{$GET}, patch => $d{$PATCH}, iam => $d{$IAM} }, @out);
}

sub lists
{
	my (%opts) = @_;
	my $sql = "DELETE FROM dfe_airbyte.allowlist; DELETE FROM dfe_airbyte.blocklist;\n";
	for my $t (sort keys %{ $opts{allow} })
	{
		$sql .= "INSERT INTO dfe_airbyte.allowlist (table_name, column_name) VALUES ('$t', '$_');\n"
		  for @{ $opts{allow}{$t} };
	}
	for my $t (sort keys %{ $opts{block} })
	{
		$sql .= "INSERT INTO dfe_airbyte.blocklist (table_name, column_name) VALUES ('$t', '$_');\n"
		  for @{ $opts{block}{$t} };
	}
	$node->safe_psql('postgres', $sql);
}

sub schema_of
{
	my ($ds, $table) = @_;
	return $fake->bigquery_table($project, $ds, $table)->{schema}{fields};
}

sub field
{
	my ($fields, $name) = @_;
	my ($f) = grep { $_->{name} eq $name } @$fields;
	return $f;
}

# ------------------------------------------------------------------ tables
my $users = [
	{ name => 'id', type => 'INTEGER', mode => 'REQUIRED' },
	{ name => 'email', type => 'STRING', mode => 'NULLABLE', description => 'e-mail address' },
	{ name => 'name', type => 'STRING', description => 'full name', policyTags => { names => [$other] } },
	{ name => 'address', type => 'RECORD', mode => 'NULLABLE', fields => [
			{ name => 'street', type => 'STRING' },
			{ name => 'postcode', type => 'STRING', policyTags => { names => [$other] } },
			{ name => 'email', type => 'STRING' } ] },
	{ name => 'DOB', type => 'DATE', mode => 'REQUIRED', description => 'date of birth' },
	{ name => '_ab_cdc_lsn', type => 'NUMERIC', precision => '38', scale => '9' },
];
my $orders = [
	{ name => 'id', type => 'INTEGER', mode => 'REQUIRED' },
	# carries the hidden tag although nothing of orders is blocklisted
	{ name => 'total', type => 'NUMERIC', policyTags => { names => [$hidden] } },
	{ name => 'note', type => 'STRING', policyTags => { names => [$other] } },
];
my $raw_users = [
	{ name => '_airbyte_raw_id', type => 'STRING', mode => 'REQUIRED' },
	{ name => '_airbyte_extracted_at', type => 'TIMESTAMP', mode => 'REQUIRED' },
	{ name => '_airbyte_loaded_at', type => 'TIMESTAMP' },
	{ name => '_airbyte_data', type => 'STRING' },
];
my $raw_name = "${dataset}_raw__stream_users";
$fake->bigquery_tables(
	{ project => $project, dataset => $dataset, table => 'users', schema => { fields => $users } },
	{ project => $project, dataset => $dataset, table => 'orders', schema => { fields => $orders } },
	{ project => $project, dataset => $internal, table => $raw_name, schema => { fields => $raw_users } });

lists(
	allow => { users => [qw(id email name address dob)], orders => [qw(id total note)], ghosts => ['id'] },
	block => { users => [qw(email dob phone)], ghosts => ['secret'], not_replicated => ['x'] });

# ------------------------------------------------------------------ first run
my ($n, $rows) = calls(sub { $node->safe_psql('postgres', $apply) });
is($rows, join("\n",
		"$internal.$raw_name|_airbyte_data|tagged",
		'ghosts|secret|missing_table',
		'orders|total|untagged',
		'users|dob|tagged',
		'users|email|tagged',
		'users|phone|missing_column'),
	'first run: blocklisted columns tagged, stray tag removed, raw _airbyte_data tagged, missing table and column reported');
is_deeply($n, { get => 5, patch => 3, iam => 1 },
	'one GET per table (users, orders, ghosts, 2 raw), one PATCH per changed table, one token chain');

my $want_users = dclone($users);
$want_users->[1]{policyTags} = { names => [$hidden] };
$want_users->[4]{policyTags} = { names => [$hidden] };
is_deeply(schema_of($dataset, 'users'), $want_users,
	'users: exactly email and DOB tagged; other tags, descriptions, modes and nested fields intact');
my $want_orders = dclone($orders);
$want_orders->[1]{policyTags} = { names => [] };
is_deeply(schema_of($dataset, 'orders'), $want_orders, 'orders: hidden tag removed, the other tag kept');
my $want_raw = dclone($raw_users);
$want_raw->[3]{policyTags} = { names => [$hidden] };
is_deeply(schema_of($internal, $raw_name), $want_raw, 'raw table: _airbyte_data tagged, nothing else');

my $patches = $fake->requests(method => 'PATCH', path => qr{/tables/users$});
is(scalar @$patches, 1, 'one PATCH of users');
is_deeply([ sort keys %{ $patches->[0]{json} } ], ['schema'], 'PATCH body holds only the schema');
is(scalar @{ $patches->[0]{json}{schema}{fields} }, scalar @$users, 'PATCH carries the complete field list');
ok(defined $patches->[0]{headers}{'if-match'} && $patches->[0]{headers}{'if-match'} ne '', 'PATCH carries If-Match');
like($patches->[0]{headers}{authorization}, qr/^Bearer ya29\./, 'BigQuery calls carry the impersonated token');

# ------------------------------------------------------------------ second run: nothing to do
($n, $rows) = calls(sub { $node->safe_psql('postgres', $apply) });
is($rows, join("\n",
		"$internal.$raw_name|_airbyte_data|already_tagged",
		'ghosts|secret|missing_table',
		'users|dob|already_tagged',
		'users|email|already_tagged',
		'users|phone|missing_column'),
	'second run: everything already tagged');
is($n->{patch}, 0, 'second run: zero PATCH calls');
is($n->{get}, 5, 'second run: one GET per table');

# one token chain for many calls in a session
($n) = calls(sub { $node->safe_psql('postgres', join(';', ($apply) x 3)) });
is($n->{iam}, 1, 'three runs in one session: one impersonation');

# ------------------------------------------------------------------ un-blocklisting
$node->safe_psql('postgres', "DELETE FROM dfe_airbyte.blocklist WHERE table_name = 'users' AND column_name = 'dob'");
($n, $rows) = calls(sub { $node->safe_psql('postgres', $apply) });
like($rows, qr/^users\|DOB\|untagged$/m, 'un-blocklisted column untagged');
like($rows, qr/^users\|email\|already_tagged$/m, 'still blocklisted column stays tagged');
like($rows, qr/^\Q$internal.$raw_name\E\|_airbyte_data\|already_tagged$/m, 'raw table keeps its tag');
is_deeply(field(schema_of($dataset, 'users'), 'DOB')->{policyTags}, { names => [] }, 'DOB: names = []');
is($n->{patch}, 1, 'one PATCH for the un-tagging');
unlike($node->safe_psql('postgres', $apply), qr/DOB|dob/, 'next run: DOB no longer mentioned');

# ------------------------------------------------------------------ a blocklisted column with another tag
$node->safe_psql('postgres', "INSERT INTO dfe_airbyte.blocklist (table_name, column_name) VALUES ('users', 'name')");
my ($ret, $out, $err) = $node->psql('postgres', $apply);
like($out, qr/^users\|name\|tagged$/m, 'blocklisted column with another tag: tagged');
like($err, qr/NOTICE:  replaced policy tag \Q$other\E on users\.name with the hidden tag/, 'the replaced tag is reported');
is_deeply(field(schema_of($dataset, 'users'), 'name')->{policyTags}, { names => [$hidden] }, 'name: only the hidden tag');
is(field(schema_of($dataset, 'users'), 'name')->{description}, 'full name', 'name: description kept');
$node->safe_psql('postgres', "DELETE FROM dfe_airbyte.blocklist WHERE column_name = 'name'");
$node->safe_psql('postgres', $apply);

# ------------------------------------------------------------------ etag conflict
$node->safe_psql('postgres', "INSERT INTO dfe_airbyte.blocklist (table_name, column_name) VALUES ('users', 'dob')");
$fake->faults({ method => 'PATCH', path => '/tables/users$', status => 412, times => 1,
		body => { error => { code => 412, message => 'Precondition check failed.', status => 'FAILED_PRECONDITION' } } });
my $mark = $fake->mark;
($n, $rows) = calls(sub { $node->safe_psql('postgres', $apply) });
like($rows, qr/^users\|dob\|tagged$/m, 'after a 412 the table is re-read and tagged');
my @users_calls = map { $_->{method} } @{ $fake->requests(since => $mark, path => qr{/tables/users$}) };
is_deeply(\@users_calls, [qw(GET PATCH GET PATCH)], 'users: GET, PATCH (412), GET again, PATCH');
is_deeply(field(schema_of($dataset, 'users'), 'DOB')->{policyTags}, { names => [$hidden] }, 'DOB tagged again');

# ------------------------------------------------------------------ an expired or revoked token: one new chain
$fake->faults({ method => 'GET', path => '/tables/orders$', status => 401, times => 1,
		body => { error => { code => 401, message => 'Request had invalid authentication credentials.' } } });
($n, $rows) = calls(sub { $node->safe_psql('postgres', $apply) });
unlike($rows, qr/failed/, '401: run succeeds');
is($n->{iam}, 2, '401: a new token was fetched (one chain at the start, one after the 401)');

# ------------------------------------------------------------------ an admin, a non-admin
$node->safe_psql('postgres', 'CREATE ROLE app LOGIN IN ROLE dfe_airbyte_admin; CREATE ROLE plain LOGIN');
($ret, $out, $err) = $node->psql('postgres', $apply, extra_params => [ '-U', 'plain' ]);
like($err, qr/permission denied for function dfe_airbyte_apply_policy_tags/, 'non-admin: permission denied');
($ret, $out, $err) = $node->psql('postgres', $apply, extra_params => [ '-U', 'app' ]);
is($ret, 0, 'a member of dfe_airbyte_admin may run it');

# ------------------------------------------------------------------ 500 tables, transient faults, one missing
my (@tables, %allow, %block);
for my $i (1 .. 500)
{
	my $t = sprintf('t%03d', $i);
	$allow{$t} = [qw(id email name)];
	$block{$t} = ['email'];
	next if $i == 250;			# not in BigQuery
	push @tables, { project => $project, dataset => $dataset, table => $t, schema => { fields => [
				{ name => 'id', type => 'INTEGER', mode => 'REQUIRED' },
				{ name => 'email', type => 'STRING' },
				{ name => 'name', type => 'STRING', description => "name $i" } ] } };
}
$fake->bigquery_tables(@tables);
lists(allow => \%allow, block => \%block);
$fake->faults(
	{ method => 'GET', path => '/tables/t010$', status => 503, times => 2 },
	{ method => 'GET', path => '/tables/t020$', status => 500, times => 1 },
	{ method => 'GET', path => '/tables/t030$', status => 429, times => 1, retry_after => 0 },
	{ method => 'PATCH', path => '/tables/t040$', status => 502, times => 1 },
	{ method => 'PATCH', path => '/tables/t050$', kind => 'reset', times => 1 });
($n, $rows) = calls(sub {
		$node->safe_psql('postgres',
			"SELECT action, count(*) FROM dfe_airbyte_apply_policy_tags() GROUP BY 1 ORDER BY 1") });
is($rows, "missing_table|1\ntagged|499", '500 tables: 499 tagged, 1 missing, transient faults retried');
is($n->{get}, 1000 + 4, 'one GET per final and raw table, plus the 4 retried');
is($n->{patch}, 499 + 2, 'one PATCH per changed table, plus the 2 retried');
my $tagged_ok = grep {
	my $f = field(schema_of($dataset, $_->{table}), 'email');
	$f->{policyTags} && $f->{policyTags}{names}[0] eq $hidden
} @tables[0 .. 59];
is($tagged_ok, 60, 'tags really set (first 60 checked, the faulted ones among them)');

# ------------------------------------------------------------------ a permanently failing table
$block{$_} = [qw(email name)] for keys %block;
lists(allow => \%allow, block => \%block);
$fake->faults(
	{ method => 'PATCH', path => '/tables/t100$', status => 500, times => undef },
	{ method => 'GET', path => '/tables/t200$', status => 403, times => undef,
		body => { error => { code => 403, message => 'Access Denied: Table proj:svc.t200: Permission bigquery.tables.get denied' } } });
($ret, $out, $err) = $node->psql('postgres', $apply);
isnt($ret, 0, 'a permanently failing table makes the call fail');
like($err, qr/ERROR:  could not apply BigQuery policy tags to 2 table\(s\): t100, t200/, 'the error names every failed table');
like($err, qr/t100: PATCH answered HTTP 500/, 'detail: t100 with its status');
like($err, qr/t200: GET answered HTTP 403: Access Denied/, 'detail: t200 with the server message');
like($err, qr/HINT:  Changes made to the other tables stay applied/, 'hint: what was applied stays');
like($err, qr/NOTICE:  the other tables were converged: 497 column\(s\) tagged/, 'notice: what was done');
unlike($err, qr/t200: GET answered HTTP 403: Access Denied.*attempts/, 'a plain 403 (permissions) is not retried');
is(field(schema_of($dataset, 't101'), 'name')->{policyTags}{names}[0], $hidden, 'other tables were applied');
ok(!field(schema_of($dataset, 't100'), 'name')->{policyTags}, 'the failing table was not changed');
$fake->clear_faults;
($ret, $out, $err) = $node->psql('postgres',
	"SELECT action, count(*) FROM dfe_airbyte_apply_policy_tags() GROUP BY 1 ORDER BY 1");
is($out, "already_tagged|996\nmissing_table|2\ntagged|2",
	'once the faults are gone the next run converges (the missing table: one row per blocklisted column)');


# ------------------------------------------------------------------ settings helper
sub set_conf
{
	my (%kv) = @_;
	$node->safe_psql('postgres', join('', map { "ALTER SYSTEM SET dfe_airbyte.$_ = '$kv{$_}';" } sort keys %kv));
	$node->reload;
}

# ------------------------------------------------------------------ unlisted columns, own tags, managed tags only
# many quick runs from separate sessions follow, with this test's 50 ms
# backoff: the fake's per-table rate limit is tested on its own below
$fake->config(bq_table_update_limit => undef);
my $pii2 = 'projects/proj/locations/europe-west2/taxonomies/111/policyTags/444';
my $people = [
	{ name => 'id', type => 'INTEGER', mode => 'REQUIRED' },
	{ name => 'email', type => 'STRING' },
	{ name => 'nin', type => 'STRING', description => 'national insurance number' },
	{ name => 'ext', type => 'STRING', policyTags => { names => [$pii2] } },
	{ name => 'extra', type => 'STRING' },
	{ name => 'legacy', type => 'STRING', policyTags => { names => [$other] } },
	{ name => '_airbyte_raw_id', type => 'STRING' },
	{ name => '_ab_cdc_updated_at', type => 'TIMESTAMP' },
];
$fake->bigquery_tables({ project => $project, dataset => $dataset, table => 'people', schema => { fields => $people } });
$node->safe_psql('postgres', q{CREATE TABLE people (id int PRIMARY KEY, email text, nin text, ext text, extra text)});
($ret, $out, $err) = $node->psql('postgres', qq{
SELECT count(*) FROM dfe_airbyte_load_config(
\$y\$shared:
  people: [id, email, nin, ext]
\$y\$,
\$y\$shared:
  people:
    - email
    - {name: nin, policy_tag: $pii2}
\$y\$, \$y\$shared:
  people: [extra]
\$y\$)});
is($ret, 0, 'three lists loaded, with a per-column policy tag');
($ret, $out, $err) = $node->psql('postgres', "SELECT column_name, action FROM dfe_airbyte_apply_policy_tags() WHERE table_name = 'people'");
is($out, join("\n", 'email|tagged', 'extra|tagged', 'legacy|already_tagged', 'nin|tagged'),
	'blocklisted columns and the unlisted column are tagged; the unlisted one with a foreign tag is left');
like($err, qr/NOTICE:  hid people\.extra, which is not in the allowlist: it is in dfe_airbyte\.excluded/,
	'the unlisted column is named, with where it came from (excluded, yet replicated)');
like($err, qr/people\.legacy is not in the allowlist but carries policy tag \Q$other\E, set outside dfe_airbyte: left as it is/,
	'a foreign tag on an unlisted column is kept and reported');
# the manual call records the unlisted column as the worker's repair does
is($node->safe_psql('postgres', "SELECT string_agg(object || ' ' || (data->>'origin' LIKE '%dfe_airbyte.excluded%')::text || ' ' || (detail LIKE '%not in the allowlist%')::text, ',') FROM dfe_airbyte.events WHERE kind = 'unlisted_column_hidden'"),
	'people.extra true true', 'one unlisted_column_hidden event, for people.extra, saying where it came from');
($ret, $out, $err) = $node->psql('postgres', "SELECT count(*) FROM dfe_airbyte_apply_policy_tags()");
is($node->safe_psql('postgres', "SELECT count(*) FROM dfe_airbyte.events WHERE kind = 'unlisted_column_hidden'"), '1',
	'applied again (already hidden): no second event');
my %pf = map { $_->{name} => $_ } @{ schema_of($dataset, 'people') };
is_deeply($pf{nin}{policyTags}, { names => [$pii2] }, 'nin: its own policy tag');
is_deeply($pf{email}{policyTags}, { names => [$hidden] }, 'email: the hidden tag');
is_deeply($pf{extra}{policyTags}, { names => [$hidden] }, 'extra (unlisted): the hidden tag');
is_deeply($pf{ext}{policyTags}, { names => [$pii2] }, 'ext: the tag someone else set is untouched');
ok(!$pf{_airbyte_raw_id}{policyTags} && !$pf{_ab_cdc_updated_at}{policyTags}, "Airbyte's own columns are not hidden");
is($node->safe_psql('postgres', "SELECT string_agg(column_name || '=' || policy_tag, ' ' ORDER BY column_name) FROM dfe_airbyte.policy_tag_state WHERE table_name = 'people'"),
	"email=$hidden extra=$hidden nin=$pii2", 'policy_tag_state remembers the tags the extension set');
($n) = calls(sub { $node->safe_psql('postgres', $apply) });
is($n->{patch}, 0, 'converged: a rerun sends no PATCH');

# a column unknown to the source table
$people->[4]{name} = 'old_col';
$fake->bigquery_tables({ project => $project, dataset => $dataset, table => 'people', schema => { fields => $people } });
($ret, $out, $err) = $node->psql('postgres', $apply);
like($err, qr/hid people\.old_col, which is not in the allowlist: it is not a column of the source table/,
	'an old column is named as such');
$people->[4]{name} = 'extra';
$fake->bigquery_tables({ project => $project, dataset => $dataset, table => 'people', schema => { fields => $people } });
$node->safe_psql('postgres', "ALTER TABLE people ADD COLUMN fresh text");
$fake->bigquery_update($project, $dataset, 'people', [ @$people, { name => 'fresh', type => 'STRING' } ]);
($ret, $out, $err) = $node->psql('postgres', $apply);
like($err, qr/hid people\.fresh, which is not in the allowlist: it is a column of the source table that is not allowlisted: Airbyte's schema propagation/,
	'a new source column behind the allowlist is named as schema propagation');

# un-blocklisting nin removes its own tag (ours), never ext's (someone else's)
$node->safe_psql('postgres', "DELETE FROM dfe_airbyte.blocklist WHERE table_name = 'people' AND column_name = 'nin'");
$node->safe_psql('postgres', "INSERT INTO dfe_airbyte.allowlist (table_name, column_name) VALUES ('people', 'extra'), ('people', 'fresh')");
($ret, $out, $err) = $node->psql('postgres', "SELECT column_name, action FROM dfe_airbyte_apply_policy_tags() WHERE table_name = 'people' AND action <> 'already_tagged'");
is($out, "extra|untagged\nfresh|untagged\nnin|untagged", 'allowlisted or un-blocklisted columns lose the tags the extension set');
%pf = map { $_->{name} => $_ } @{ schema_of($dataset, 'people') };
is_deeply($pf{nin}{policyTags}, { names => [] }, 'nin: its own tag removed');
is_deeply($pf{ext}{policyTags}, { names => [$pii2] }, 'ext: the same tag, set by someone else, stays');
is_deeply($pf{legacy}{policyTags}, { names => [$other] }, 'legacy: the foreign tag stays');

# the setting turns hiding unlisted columns off
$node->safe_psql('postgres', "DELETE FROM dfe_airbyte.allowlist WHERE table_name = 'people' AND column_name IN ('extra', 'fresh')");
$node->safe_psql('postgres', $apply);
set_conf(hide_unlisted_columns => 'off');
ok(DfeTest::poll_until($node, 'SHOW dfe_airbyte.hide_unlisted_columns', 'off', 30), 'hide_unlisted_columns off');
($ret, $out, $err) = $node->psql('postgres', "SELECT column_name, action FROM dfe_airbyte_apply_policy_tags() WHERE table_name = 'people' AND action <> 'already_tagged'");
is($out, "extra|untagged\nfresh|untagged", 'hide_unlisted_columns = off: unlisted columns lose the hidden tag');
set_conf(hide_unlisted_columns => 'on');
ok(DfeTest::poll_until($node, 'SHOW dfe_airbyte.hide_unlisted_columns', 'on', 30), 'hide_unlisted_columns on again');
$node->safe_psql('postgres', $apply);

# ------------------------------------------------------------------ rate limits
my $burst_fields = [ { name => 'id', type => 'INTEGER' }, map { { name => "c$_", type => 'STRING' } } 1 .. 8 ];
$fake->bigquery_tables({ project => $project, dataset => $dataset, table => 'burst', schema => { fields => $burst_fields } });
lists(allow => { burst => [ 'id', map { "c$_" } 1 .. 8 ] }, block => {});
$fake->config(bq_table_update_limit => 3, bq_table_update_window_s => 3);
set_conf(bigquery_table_update_limit => 3, bigquery_table_update_window => '3s');
ok(DfeTest::poll_until($node, 'SHOW dfe_airbyte.bigquery_table_update_window', '3s', 30), 'pacing: 3 updates per 3 s');

# a burst of 8 changes to one table, each its own run, as fast as they come,
# from one session (as the worker does): the process remembers its PATCHes
my $script = join('', map {
		"INSERT INTO dfe_airbyte.blocklist (table_name, column_name) VALUES ('burst', 'c$_');\n"
		  . "SELECT column_name || '=' || action FROM dfe_airbyte_apply_policy_tags() WHERE column_name = 'c$_';\n"
} 1 .. 8);
($ret, $out, $err) = $node->psql('postgres', $script);
is($ret, 0, 'a burst of 8 changes to one table: no run fails');
is($out, join("\n", map { "c$_=tagged" } 1 .. 8), 'a burst of 8 changes to one table: every run tags its column');
my $bt = $fake->bigquery_table($project, $dataset, 'burst');
is($bt->{rate_limited}, 0, 'paced under the per-table limit: BigQuery never had to refuse');
is(scalar(grep { ($_->{policyTags}{names}[0] // '') eq $hidden } @{ $bt->{schema}{fields} }), 8, 'all 8 columns tagged');

# Airbyte's own updates fill the window: 403 rateLimitExceeded is retried with backoff
set_conf(bigquery_table_update_limit => 64, http_max_retries => 10, http_retry_base_delay => '200ms');
ok(DfeTest::poll_until($node, 'SHOW dfe_airbyte.http_max_retries', '10', 30), 'retries raised');
$node->safe_psql('postgres', "DELETE FROM dfe_airbyte.blocklist WHERE table_name = 'burst' AND column_name = 'c1'");
$fake->bigquery_update($project, $dataset, 'burst') for 1 .. 3;
$mark = $fake->mark;
($ret, $out, $err) = $node->psql('postgres', "SELECT column_name, action FROM dfe_airbyte_apply_policy_tags() WHERE column_name = 'c1'");
is($out, 'c1|untagged', 'rate limited by Airbyte\'s own updates: the run still converges');
my @st = map { $_->{status} } @{ $fake->requests(since => $mark, method => 'PATCH') };
ok(@st >= 2 && $st[0] == 403 && $st[-1] == 200, "PATCH answered 403 rateLimitExceeded, then 200 (@st)");

# 400 rateLimitExceeded and 403 backendError are transient too; quotaExceeded is not
my $reason_body = sub {
	my ($code, $reason, $msg) = @_;
	return { error => { code => $code, message => $msg, status => 'PERMISSION_DENIED',
			errors => [ { message => $msg, domain => 'usageLimits', reason => $reason } ] } };
};
$node->safe_psql('postgres', "DELETE FROM dfe_airbyte.blocklist WHERE table_name = 'burst' AND column_name = 'c2'");
$fake->faults(
	{ method => 'PATCH', path => '/tables/burst$', status => 400, times => 1, body => $reason_body->(400, 'rateLimitExceeded', 'Exceeded rate limits: too many table update operations for this table') },
	{ method => 'PATCH', path => '/tables/burst$', status => 403, times => 1, body => $reason_body->(403, 'backendError', 'Backend error') });
($ret, $out, $err) = $node->psql('postgres', "SELECT column_name, action FROM dfe_airbyte_apply_policy_tags() WHERE column_name = 'c2'");
is($out, 'c2|untagged', '400 rateLimitExceeded and 403 backendError are retried');
$node->safe_psql('postgres', "DELETE FROM dfe_airbyte.blocklist WHERE table_name = 'burst' AND column_name = 'c3'");
$fake->faults({ method => 'PATCH', path => '/tables/burst$', status => 403, times => 1,
		body => $reason_body->(403, 'quotaExceeded', 'Quota exceeded: Your project exceeded quota for table update operations') });
$mark = $fake->mark;
($ret, $out, $err) = $node->psql('postgres', $apply);
isnt($ret, 0, 'quotaExceeded fails the run');
like($err, qr/burst: PATCH answered HTTP 403: Quota exceeded.*\(quotaExceeded: not retried/, 'quotaExceeded is named and not retried');
is(scalar @{ $fake->requests(since => $mark, method => 'PATCH') }, 1, 'quotaExceeded: one PATCH attempt only');
like($node->safe_psql('postgres', $apply), qr/^burst\|c3\|untagged$/m, 'the next run converges');
$fake->config(bq_table_update_limit => 5, bq_table_update_window_s => 10);

# ------------------------------------------------------------------ BIGQUERY_POLICY_TAG
# the name Terraform supplies from dfe-analytics 1.16, after BIGQUERY_HIDDEN_POLICY_TAG
$node->safe_psql('postgres', "ALTER SYSTEM SET dfe_airbyte.hidden_policy_tag = ''");
{
	local $ENV{BIGQUERY_POLICY_TAG} = $hidden;
	local $ENV{RAILS_ENV} = 'production';
	delete local $ENV{BIGQUERY_HIDDEN_POLICY_TAG};
	$node->restart;
	# RAILS_ENV is dfe_airbyte.rails_env's fallback: production's section is merged over shared
	($ret, $out, $err) = $node->psql('postgres', q{SELECT tables, columns FROM dfe_airbyte_load_config(NULL, NULL, E'shared:\n  burst: [x]\nproduction:\n  burst: [y, z]\n')});
	is($out, '1|2', 'RAILS_ENV=production: the production section replaces shared\'s list');
	$node->safe_psql('postgres', 'DELETE FROM dfe_airbyte.excluded');
	($ret, $out, $err) = $node->psql('postgres', "SELECT column_name || '=' || action FROM dfe_airbyte_apply_policy_tags() WHERE column_name = 'c4'");
	is($out, 'c4=already_tagged', 'BIGQUERY_POLICY_TAG is the hidden tag when nothing else is set');
	is($node->safe_psql('postgres', "SELECT count(*) FROM dfe_airbyte.config_problems WHERE object = 'dfe_airbyte.hidden_policy_tag'"),
		'0', 'config_problems is content with BIGQUERY_POLICY_TAG');
	local $ENV{BIGQUERY_HIDDEN_POLICY_TAG} = $pii2;
	$node->restart;
	($ret, $out, $err) = $node->psql('postgres', "SELECT column_name || '=' || action FROM dfe_airbyte_apply_policy_tags() WHERE column_name = 'c4'");
	is($out, 'c4=tagged', 'BIGQUERY_HIDDEN_POLICY_TAG comes first');
}

# ------------------------------------------------------------------ no token in the server log
my %secrets = ('federated-assertion-for-policy-tags' => 1);
for my $r (@{ $fake->requests })
{
	$secrets{$1} = 1 if ($r->{headers}{authorization} // '') =~ /^Bearer (\S+)/;
	$secrets{ $r->{json}{subject_token} } = 1 if ref $r->{json} eq 'HASH' && $r->{json}{subject_token};
}
my $log = slurp_file($node->logfile);
my @leaked = grep { index($log, $_) >= 0 } sort keys %secrets;
is_deeply(\@leaked, [], 'no token in the server log (' . scalar(keys %secrets) . ' checked)');

$node->stop;
done_testing();
