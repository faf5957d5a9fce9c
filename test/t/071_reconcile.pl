# dfe_airbyte_reconcile() against the fake BigQuery, whose jobs.query runs
# the extension's GoogleSQL in PostgreSQL (test/fake/bigquery_jobs.py).  The
# "final tables" are Airbyte-shaped append tables (one row per change,
# _ab_cdc_lsn, _ab_cdc_deleted_at, _airbyte_extracted_at) in schema
# svc_airbyte_test of the same cluster, written here as Airbyte would.
# Covers: equal tables (count and checksum, type edge cases), one changed
# row, one missing, one extra (deleted at the source) confirmed only after a
# further sync (reconcile_mismatch event), deleted then re-inserted, a busy
# table (rows changed after the cut-off), a table without a primary key, a
# hidden column left out, a text key, the byte cap (bytesBilledLimitExceeded
# not retried, and refused after the dry run), the narrowing, and keys left
# in an older _airbyte_generation_id by a refresh (old_generation).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use DfeTest;
use FakeServer;

my $fake = FakeServer->start;
my $dir = PostgreSQL::Test::Utils::tempdir;
my $hidden = 'projects/proj/locations/europe-west2/taxonomies/111/policyTags/222';
my $node = DfeTest::new_node('reconcile', conf => DfeTest::bigquery_conf($fake, $dir,
		hidden_tag => $hidden) . <<"CONF");
dfe_airbyte.http_retry_base_delay = '50ms'
dfe_airbyte.http_max_retries = 3
timezone = 'Europe/London'
dfe_airbyte.check_interval = 1
# the worker's reconciliations are tested at the end
dfe_airbyte.reconcile_interval = 0
CONF
$fake->config(bq_sql_dsn => $node->connstr('postgres'), bq_location => 'europe-west2');

sub sql { return $node->safe_psql('postgres', $_[0]); }

# the final table of a source table: Airbyte's append layout
sub final_table
{
	my ($name, $cols) = @_;
	sql(<<"SQL");
CREATE TABLE svc_airbyte_test.$name (_airbyte_raw_id text NOT NULL DEFAULT gen_random_uuid()::text,
  _airbyte_extracted_at timestamptz NOT NULL DEFAULT clock_timestamp(), _airbyte_meta jsonb NOT NULL DEFAULT '{}',
  _airbyte_generation_id bigint DEFAULT 0, $cols, _ab_cdc_lsn numeric, _ab_cdc_updated_at text, _ab_cdc_deleted_at text);
SQL
}

sql(<<'SQL');
CREATE SCHEMA svc_airbyte_test;
CREATE SEQUENCE svc_airbyte_test.lsn START 1000;
CREATE TABLE public.applications (id bigint PRIMARY KEY, status text, score numeric(10,2), amount numeric,
  ok boolean, doc jsonb, created_at timestamp(3), seen_at timestamptz, born date, uid uuid, email text,
  tags text[], updated_at timestamp);
INSERT INTO public.applications
SELECT g, CASE WHEN g % 7 = 0 THEN NULL WHEN g % 11 = 0 THEN '' ELSE 'status ' || g END,
       g * 1.25, CASE WHEN g % 5 = 0 THEN 1.0000000001 ELSE g / 3.0 END, g % 2 = 0,
       jsonb_build_object('n', g, 'a', jsonb_build_array(1, 'x')),
       '2024-03-31 00:59:59.123'::timestamp + g * interval '1 hour',
       '2024-10-27 00:30:00.654321+00'::timestamptz + g * interval '17 minutes',
       date '2024-02-28' + g, md5(g::text)::uuid, 'user' || g || '@example.com',
       ARRAY['a', 'b'], '2024-01-01'::timestamp
  FROM generate_series(1, 300) g;
CREATE TABLE public.nokey (a int, b text);
INSERT INTO public.nokey SELECT g, 'b' || g FROM generate_series(1, 20) g;
CREATE TABLE public.by_text (code text PRIMARY KEY, label text);
INSERT INTO public.by_text SELECT 'code-' || g, 'label ' || g FROM generate_series(1, 50) g;
CREATE TABLE public.big (id bigint PRIMARY KEY, v text, updated_at timestamptz);
INSERT INTO public.big SELECT g, 'value ' || g, '2024-01-01' FROM generate_series(1, 60000) g;
INSERT INTO dfe_airbyte.allowlist (table_name, column_name)
SELECT 'applications', unnest(ARRAY['id', 'status', 'score', 'amount', 'ok', 'doc', 'created_at', 'seen_at',
                                    'born', 'uid', 'email', 'tags', 'updated_at'])
UNION ALL SELECT 'nokey', unnest(ARRAY['a', 'b'])
UNION ALL SELECT 'by_text', unnest(ARRAY['code', 'label'])
UNION ALL SELECT 'big', unnest(ARRAY['id', 'v', 'updated_at']);
INSERT INTO dfe_airbyte.blocklist (table_name, column_name) VALUES ('applications', 'email');
SQL
final_table('applications', 'id bigint, status text, score numeric, amount numeric, ok boolean, doc text,
  created_at timestamp, seen_at timestamptz, born date, uid text, email text, tags jsonb, updated_at timestamp');
final_table('nokey', 'a bigint, b text');
final_table('by_text', 'code text, label text');
final_table('big', 'id bigint, v text, updated_at timestamptz');

# what Airbyte's destination writes for a snapshot of these rows (json and
# uuid as text, numbers rounded to 9 decimals, arrays as JSON)
sub sync_rows
{
	my ($where) = @_;
	$where //= 'true';
	sql(<<"SQL");
INSERT INTO svc_airbyte_test.applications (id, status, score, amount, ok, doc, created_at, seen_at, born, uid,
  email, tags, updated_at, _ab_cdc_lsn)
SELECT id, status, score, round(amount, 9), ok, doc::text, created_at, seen_at, born, uid::text, email,
       to_jsonb(tags), updated_at, nextval('svc_airbyte_test.lsn') FROM public.applications WHERE $where;
SQL
}

sub delete_rows
{
	my ($table, $key, @keys) = @_;
	sql("INSERT INTO svc_airbyte_test.$table ($key, _ab_cdc_lsn, _ab_cdc_deleted_at) VALUES "
		  . join(', ', map { "('$_', nextval('svc_airbyte_test.lsn'), now()::text)" } @keys));
}

# a successful sync as the worker records it: its start is the cut-off
my $job = 1;
sub sync_succeeded
{
	my ($started) = @_;
	$job++;
	sql("INSERT INTO dfe_airbyte.sync_jobs (job_id, status, started_at) VALUES ($job, 'succeeded', "
		  . ($started // 'now()') . ")");
}

sub reconcile
{
	my ($table, $mode) = @_;
	my $out = sql("SELECT matched, source_rows, bigquery_rows, mismatches, bytes_billed > 0, detail"
		  . " FROM dfe_airbyte_reconcile('$table', '$mode')");
	return [ split /\|/, $out, 6 ];
}

sub queries_run
{
	return scalar @{ $fake->requests(method => 'POST', path => qr{/queries$}, since => $_[0]) };
}

sync_rows();
sql(<<'SQL');
INSERT INTO svc_airbyte_test.nokey (a, b) SELECT a, b FROM public.nokey;
INSERT INTO svc_airbyte_test.by_text (code, label, _ab_cdc_lsn) SELECT code, label, 1 FROM public.by_text;
INSERT INTO svc_airbyte_test.big (id, v, updated_at, _ab_cdc_lsn) SELECT id, v, updated_at, 1 FROM public.big;
SQL
sync_succeeded();

# ------------------------------------------------------------ equal tables
my $r = reconcile('applications', 'count');
is_deeply([ @$r[0 .. 4] ], [ 't', 300, 300, 0, 't' ], 'count: equal tables match');
$r = reconcile('applications', 'checksum');
is($r->[0], 't', 'checksum: equal tables match, every type written as Airbyte writes it') or diag($r->[5]);
like($r->[5], qr/not compared: email \(hidden policy tag\), tags \(type _text not compared\)/,
	'the hidden column and the array are left out, and said');
is(sql("SELECT status, matched, source_rows, bigquery_queries FROM dfe_airbyte.reconciliation WHERE table_name = 'applications'"),
	'match|t|300|1', 'dfe_airbyte.reconciliation: one BigQuery query when the table matches');

# the policy tag is real in the fake: a query reading email is refused
$fake->bigquery_tables({ project => 'proj', dataset => 'svc_airbyte_test', table => 'applications',
	schema => { fields => [ { name => 'email', type => 'STRING', policyTags => { names => [$hidden] } } ] } });
is(reconcile('applications', 'checksum')->[0], 't', 'the hidden column is never read');

# ------------------------------------------------------------ dry run
my $mark = $fake->mark;
my $dry = sql("SELECT matched IS NULL, bigquery_rows IS NULL, bytes_billed >= 10485760, detail"
	  . " FROM dfe_airbyte_reconcile('applications', 'checksum', dry_run => true)");
like($dry, qr/^t\|t\|t\|estimated: .*dry run: BigQuery would bill at most \d+ bytes/, 'a dry run estimates');
my @posts = map { $_->{body} // '' } @{ $fake->requests(method => 'POST', path => qr{/queries$}, since => $mark) };
is(scalar @posts, 1, 'a dry run sends one query');
like($posts[0], qr/"dryRun":\s*true/, '... with dryRun');
like($posts[0], qr/"location":\s*"europe-west2"/, '... in the policy tag\'s location');

# ------------------------------------------------------------ one changed row
sql(<<'SQL');
INSERT INTO svc_airbyte_test.applications (id, status, score, amount, ok, doc, created_at, seen_at, born, uid,
  updated_at, _ab_cdc_lsn)
SELECT id, 'wrong', score, round(amount, 9), ok, doc::text, created_at, seen_at, born, uid::text, updated_at,
       nextval('svc_airbyte_test.lsn') FROM public.applications WHERE id = 42;
SQL
is(reconcile('applications', 'count')->[0], 't', 'count mode does not see a changed value');
$r = reconcile('applications', 'checksum');
is_deeply([ @$r[0 .. 3] ], [ 'f', 300, 300, 1 ], 'checksum mode finds one changed row');
is(sql("SELECT status, keys, key_ranges FROM dfe_airbyte.reconciliation WHERE table_name = 'applications'"),
	'mismatch_candidate|{"changed 42"}|{"[42, 43)"}', 'narrowed to the key and its range, no values');
unlike($r->[5], qr/wrong/, 'no column value in the result');
sync_rows('id = 42');

# ------------------------------------------------------------ a TOAST placeholder
sql("UPDATE svc_airbyte_test.applications SET status = '__debezium_unavailable_value'"
	  . " WHERE id = 50 AND _ab_cdc_lsn = (SELECT max(_ab_cdc_lsn) FROM svc_airbyte_test.applications WHERE id = 50)");
$r = reconcile('applications', 'checksum');
like($r->[5], qr/1 row\(s\) hold __debezium_unavailable_value, Debezium's placeholder for an unchanged TOAST value: ALTER TABLE public.applications REPLICA IDENTITY FULL/,
	'a TOAST placeholder is reported as what it is');
is(sql("SELECT keys FROM dfe_airbyte.reconciliation WHERE table_name = 'applications'"), '{"changed 50"}',
	'... and its key');
sync_rows('id = 50');

# ------------------------------------------------------------ NULL is not ''
sql("UPDATE svc_airbyte_test.applications SET status = '' WHERE id = 7");   # NULL at the source
reconcile('applications', 'checksum');
is(sql("SELECT keys FROM dfe_airbyte.reconciliation WHERE table_name = 'applications'"), '{"changed 7"}',
	'NULL and the empty string differ');
sync_rows('id = 7');

# ------------------------------------------------------------ one missing row
sql("DELETE FROM svc_airbyte_test.applications WHERE id = 100");
$r = reconcile('applications', 'count');
is_deeply([ @$r[0 .. 3] ], [ 'f', 300, 299, 1 ], 'count mode finds a missing row');
is(sql("SELECT keys FROM dfe_airbyte.reconciliation WHERE table_name = 'applications'"), '{"missing 100"}',
	'the missing key is named');
sync_rows('id = 100');

# ------------------------------------------------------------ deleted, then re-inserted
delete_rows('applications', 'id', 120);
sync_rows('id = 120');
is(reconcile('applications', 'checksum')->[0], 't', 'a key deleted then re-inserted is live');
sql("DELETE FROM public.applications WHERE id = 130");
delete_rows('applications', 'id', 130);
is(reconcile('applications', 'checksum')->[0], 't',
	'a deleted key stays deleted (the delete is applied after picking the latest version)');

# ------------------------------------------------------------ one extra row, confirmed after the next sync
sql("DELETE FROM public.applications WHERE id = 140");   # the delete never reaches BigQuery
$r = reconcile('applications', 'count');
is_deeply([ @$r[0 .. 3] ], [ 'f', 298, 299, 1 ], 'a row deleted at the source and live in BigQuery');
is(sql("SELECT status, keys FROM dfe_airbyte.reconciliation WHERE table_name = 'applications'"),
	'mismatch_candidate|{"extra 140"}', 'first seen: a candidate');
reconcile('applications', 'count');
is(sql("SELECT status FROM dfe_airbyte.reconciliation WHERE table_name = 'applications'"),
	'mismatch_candidate', 'still a candidate without a further sync');
is(sql("SELECT count(*) FROM dfe_airbyte.events WHERE kind = 'reconcile_mismatch'"), '0', 'no event yet');
sync_succeeded();
reconcile('applications', 'count');
is(sql("SELECT status FROM dfe_airbyte.reconciliation WHERE table_name = 'applications'"),
	'mismatch', 'still there after a further successful sync: a mismatch');
like(sql("SELECT severity || ' ' || object || ' ' || detail FROM dfe_airbyte.events WHERE kind = 'reconcile_mismatch'"),
	qr/^warning applications .*extra 140/, 'reconcile_mismatch names the table and the key');
delete_rows('applications', 'id', 140);
is(reconcile('applications', 'count')->[0], 't', 'matches again once the delete arrived');

# ------------------------------------------------------------ a busy table
sql("UPDATE public.applications SET status = 'changed after the sync', updated_at = now() AT TIME ZONE 'UTC'"
	  . " WHERE id IN (1, 2, 3)");
$r = reconcile('applications', 'checksum');
is($r->[0], 't', 'rows changed since the last sync started are left out on both sides');
like($r->[5], qr/3 row\(s\) changed since the last successful sync left out/, '... and counted');
sync_rows('id IN (1, 2, 3)');
# the next sync starts after them (and after the cut-off's minute of margin)
sync_succeeded("now() + interval '2 minutes'");
$r = reconcile('applications', 'checksum');
is($r->[0], 't', 'compared again after the next sync');
unlike($r->[5], qr/left out/, '... with nothing left out');

# ------------------------------------------------------------ no primary key
$r = reconcile('nokey', 'checksum');
is_deeply([ @$r[0 .. 2] ], [ 't', 20, 20 ], 'a table without a primary key: counts');
like($r->[5], qr/no primary key: compared by count only/, '... said');
sql("INSERT INTO public.nokey VALUES (21, 'b21')");
is(reconcile('nokey', 'count')->[0], 'f', '... and a count that differs is found');

# ------------------------------------------------------------ a text key (hash buckets)
sql("DELETE FROM svc_airbyte_test.by_text WHERE code = 'code-17';"
	  . " UPDATE svc_airbyte_test.by_text SET label = 'x' WHERE code = 'code-33'");
reconcile('by_text', 'checksum');
is(sql("SELECT array_to_string(keys, ',') FROM dfe_airbyte.reconciliation WHERE table_name = 'by_text'"),
	'missing code-17,changed code-33', 'text keys: bucketed by key hash, then named');

# ------------------------------------------------------------ narrowing
sql("UPDATE svc_airbyte_test.big SET v = 'oops' WHERE id = 43210");
$mark = $fake->mark;
$r = reconcile('big', 'checksum');
is_deeply([ @$r[0 .. 3] ], [ 'f', 60000, 60000, 1 ], 'one wrong row in 60000');
is(sql("SELECT keys, key_ranges, bigquery_queries FROM dfe_airbyte.reconciliation WHERE table_name = 'big'"),
	'{"changed 43210"}|{"[43201, 43216)"}|2', 'found in two BigQuery queries (buckets, then keys)');
is(queries_run($mark), 4, 'each dry-run first');

# a second level: 6000 dense keys and one far away put 6000 rows in the
# first bucket (over the 5000 listed at once): sub-buckets, then keys
sql("CREATE TABLE public.sparse (id bigint PRIMARY KEY, v text);"
	  . " INSERT INTO public.sparse SELECT g, 'v' || g FROM generate_series(1, 6000) g;"
	  . " INSERT INTO public.sparse VALUES (1000000000, 'far');"
	  . " INSERT INTO dfe_airbyte.allowlist VALUES ('sparse', 'id'), ('sparse', 'v')");
final_table('sparse', 'id bigint, v text');
sql("INSERT INTO svc_airbyte_test.sparse (id, v, _ab_cdc_lsn) SELECT id, v, 1 FROM public.sparse;"
	  . " UPDATE svc_airbyte_test.sparse SET v = 'oops' WHERE id = 4000");
reconcile('sparse', 'checksum');
is(sql("SELECT keys, key_ranges, bigquery_queries FROM dfe_airbyte.reconciliation WHERE table_name = 'sparse'"),
	'{"changed 4000"}|{"[3816, 7631)"}|3', 'a crowded bucket is split again: three queries, then the key');

# ------------------------------------------------------------ the byte cap
sql("ALTER SYSTEM SET dfe_airbyte.reconcile_max_bytes_billed = '1MB'; SELECT pg_reload_conf()");
DfeTest::poll_until($node, 'SHOW dfe_airbyte.reconcile_max_bytes_billed', '1MB');
$mark = $fake->mark;
$r = reconcile('by_text', 'count');
is($r->[0], '', 'over the cap: not compared');
like($r->[5], qr/^over_budget: .*BigQuery refused a query over maximumBytesBilled: Query exceeded limit for bytes billed: 1048576\. 10485760 or higher required/,
	'bytesBilledLimitExceeded is reported');
my @bodies = map { $_->{body} // '' } @{ $fake->requests(method => 'POST', path => qr{/queries$}, since => $mark) };
is(scalar(grep { !/dryRun/ } @bodies), 1, 'bytesBilledLimitExceeded (HTTP 500) is not retried');
like((grep { !/dryRun/ } @bodies)[0], qr/"maximumBytesBilled":\s*"1048576"/, 'the query carried maximumBytesBilled');
$mark = $fake->mark;
$r = reconcile('big', 'count');
like($r->[5], qr/^over_budget: a query would process \d+ bytes: over dfe_airbyte.reconcile_max_bytes_billed/,
	'a dry run over the cap stops before the query');
is(scalar(grep { !/dryRun/ } map { $_->{body} // '' }
	  @{ $fake->requests(method => 'POST', path => qr{/queries$}, since => $mark) }), 0, '... which is never sent');
sql("ALTER SYSTEM RESET dfe_airbyte.reconcile_max_bytes_billed; SELECT pg_reload_conf()");
DfeTest::poll_until($node, 'SHOW dfe_airbyte.reconcile_max_bytes_billed', '50GB');

# ------------------------------------------------------------ jobComplete false
$fake->config(bq_query_pending_polls => 2);
$mark = $fake->mark;
is(reconcile('by_text', 'count')->[0], 'f', 'an unfinished query is followed with getQueryResults');
ok(scalar @{ $fake->requests(method => 'GET', path => qr{/queries/job_fake_\d+$}, since => $mark) } >= 2,
	'... polled until complete');
$fake->config(bq_query_pending_polls => 0);

# ------------------------------------------------------------ generations after a refresh
# Airbyte's "refresh and retain records" re-reads every source row into a
# new _airbyte_generation_id and keeps the old rows: a key whose latest
# version is of an older generation was deleted at the source.
sql("CREATE TABLE public.refreshed (id bigint PRIMARY KEY, v text);"
	  . " INSERT INTO public.refreshed SELECT g, 'v' || g FROM generate_series(1, 10) g;"
	  . " INSERT INTO dfe_airbyte.allowlist VALUES ('refreshed', 'id'), ('refreshed', 'v')");
final_table('refreshed', 'id bigint, v text');
sql(<<'SQL');
INSERT INTO svc_airbyte_test.refreshed (id, v, _ab_cdc_lsn, _airbyte_generation_id)
SELECT g, 'v' || g, g, 0 FROM generate_series(1, 14) g;        -- 11 to 14: deletes Airbyte missed
INSERT INTO svc_airbyte_test.refreshed (id, v, _ab_cdc_lsn, _airbyte_generation_id)
SELECT id, v, 100 + id, 1 FROM public.refreshed                -- the refresh: generation 1
UNION ALL SELECT 20, 'v20', 200, 1;                            -- live in generation 1 only
SQL
$r = reconcile('refreshed', 'checksum');
is_deeply([ @$r[0 .. 3] ], [ 'f', 10, 15, 5 ], 'generations: five keys BigQuery holds and the source does not');
is(sql("SELECT array_to_string(keys, ',') FROM dfe_airbyte.reconciliation WHERE table_name = 'refreshed'"),
	'old_generation 11,old_generation 12,old_generation 13,old_generation 14,extra 20',
	'keys only in an older generation are old_generation, the newest generation\'s are extra');
like($r->[5], qr/1 extra in BigQuery .*; 4 key\(s\) old_generation: live in BigQuery only in a generation older than the table's newest \(1\).*key ranges \[11, 15\)$/,
	'... counted, with their key ranges');
unlike($r->[5], qr/v1[1-4]/, '... and no values');
delete_rows('refreshed', 'id', 11 .. 14, 20);
$r = reconcile('refreshed', 'checksum');
is($r->[0], 't', 'equal tables with two generations match') or diag($r->[5]);
unlike($r->[5], qr/old_generation/, '... and say nothing of generations');

# a final table written before generations existed: no column, "extra" as before
sql("CREATE TABLE public.nogen (id bigint PRIMARY KEY, v text);"
	  . " INSERT INTO public.nogen SELECT g, 'v' || g FROM generate_series(1, 5) g;"
	  . " INSERT INTO dfe_airbyte.allowlist VALUES ('nogen', 'id'), ('nogen', 'v');"
	  . " CREATE TABLE svc_airbyte_test.nogen (_airbyte_raw_id text, _airbyte_extracted_at timestamptz DEFAULT now(),"
	  . " id bigint, v text, _ab_cdc_lsn numeric, _ab_cdc_deleted_at text);"
	  . " INSERT INTO svc_airbyte_test.nogen (id, v, _ab_cdc_lsn) SELECT g, 'v' || g, g FROM generate_series(1, 6) g");
$r = reconcile('nogen', 'checksum');
is_deeply([ @$r[0 .. 3] ], [ 'f', 5, 6, 1 ], 'without _airbyte_generation_id: compared as before');
is(sql("SELECT keys FROM dfe_airbyte.reconciliation WHERE table_name = 'nogen'"), '{"extra 6"}',
	'... the key BigQuery holds alone is extra');
sql("DELETE FROM dfe_airbyte.allowlist WHERE table_name IN ('refreshed', 'nogen')");

# ------------------------------------------------------------ all tables, history, errors
is(sql("SELECT string_agg(table_name || ':' || coalesce(matched::text, 'null'), ',' ORDER BY table_name)"
	  . " FROM dfe_airbyte_reconcile()"), 'applications:true,big:true,by_text:false,nokey:false,sparse:true',
	'without a table name: every allowlisted table');
ok(sql("SELECT count(*) FROM dfe_airbyte.reconcile_runs") > 10, 'every run is kept in reconcile_runs');
my ($ret, $out, $err) = $node->psql('postgres', "SELECT * FROM dfe_airbyte_reconcile('nope')");
like($err, qr/table "nope" is not allowlisted for target "local"/, 'a table that is not allowlisted');
($ret, $out, $err) = $node->psql('postgres', "SELECT * FROM dfe_airbyte_reconcile('big', 'sum')");
like($err, qr/unknown reconciliation mode "sum"/, 'an unknown mode');
($ret, $out, $err) = $node->psql('postgres', "SELECT * FROM dfe_airbyte_reconcile('big', target => 'svc2')");
like($err, qr/target "svc2" does not exist/, 'a target that is not registered');
sql("CREATE TABLE public.gone (id int PRIMARY KEY); INSERT INTO dfe_airbyte.allowlist VALUES ('gone', 'id')");
like(sql("SELECT detail FROM dfe_airbyte_reconcile('gone')"), qr/^error: .*Not found: Table/,
	'a final table missing in BigQuery is that table\'s error');

# ------------------------------------------------------------ the worker
# a candidate is checked again after the next successful sync, and becomes a
# mismatch; a table reconciled within reconcile_interval is left alone
my $apps_at = sql("SELECT finished_at FROM dfe_airbyte.reconciliation WHERE table_name = 'applications'");
is(sql("SELECT status FROM dfe_airbyte.reconciliation WHERE table_name = 'by_text'"), 'mismatch_candidate',
	'by_text: a candidate');
sql("INSERT INTO dfe_airbyte.slot_recreations (slot_name, reason, recreated_at) VALUES ('airbyte_slot', 'lost', now())");
sql("ALTER SYSTEM SET dfe_airbyte.reconcile_interval = '1h'; SELECT pg_reload_conf()");
DfeTest::poll_until($node, 'SHOW dfe_airbyte.reconcile_interval', '1h');
sync_succeeded();
# while the re-sync is owed the worker waits; a wait cannot be polled for,
# so the re-sync finishes here and what follows is checked
sql("UPDATE dfe_airbyte.slot_recreations SET resync_state = 'started', resync_finished_at = now()");
ok(DfeTest::poll_until($node, "SELECT status FROM dfe_airbyte.reconciliation WHERE table_name = 'by_text'",
	'mismatch', 60), 'the worker re-checks the candidate after the next sync: a mismatch');
ok(DfeTest::poll_until($node, "SELECT count(*) > 0 FROM dfe_airbyte.events WHERE kind = 'reconcile_mismatch'"
	  . " AND object = 'by_text'", 't', 60), 'reconcile_mismatch for by_text');
is(sql("SELECT finished_at FROM dfe_airbyte.reconciliation WHERE table_name = 'applications'"), $apps_at,
	'a table reconciled within reconcile_interval is not reconciled again');
is(sql("SELECT mode FROM dfe_airbyte.reconcile_runs WHERE table_name = 'by_text' ORDER BY id DESC LIMIT 1"),
	'count', 'the worker reconciles in count mode');

done_testing();
