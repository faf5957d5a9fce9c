# Sync health, data flow checks and BigQuery policy tags per target, against
# two remote targets on real servers (test/lib/DfeTarget.pm) that share only
# the Airbyte server and the Google credentials: each has its own Airbyte
# connection, BigQuery dataset and hidden policy tag.  The worker polls each
# target's jobs into its own rows of dfe_airbyte.sync_jobs and
# dfe_airbyte.sync_health; the flow checks read the target's slot and
# heartbeat through the seam; the drift repair after a target's sync tags
# that target's dataset only; dfe_airbyte_apply_policy_tags('name') converges
# the named target's dataset; a stale target's event names it, and its own
# sync_stale_after applies.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;
use DfeTest;
use DfeTarget;
use FakeServer;

my @majors = DfeTarget::majors();
my ($ma, $mb) = ($majors[0], $majors[-1]);
my $ta = DfeTarget->new('synca', major => $ma);
my $tb = DfeTarget->new('syncb', major => $mb);

my $fake = FakeServer->start;
my $url = $fake->url;
my $dir = PostgreSQL::Test::Utils::tempdir;
my $passfile = DfeTarget::write_passfile("$dir/pgpass", $ta, $tb);
my $project = 'proj';
my $local_conn = $fake->config->{connection_id};
my %conn = (svc_a => 'aaaaaaaa-0000-4000-8000-00000000000a', svc_b => 'bbbbbbbb-0000-4000-8000-00000000000b');
my %dataset = (svc_a => 'svc_a_airbyte', svc_b => 'svc_b_airbyte');
my %tag = (svc_a => 'projects/proj/locations/europe-west2/taxonomies/111/policyTags/aaa',
	svc_b => 'projects/proj/locations/europe-west2/taxonomies/111/policyTags/bbb');

my $node = DfeTest::new_node('sync_targets', conf => DfeTest::bigquery_conf($fake, $dir,
		project => $project, dataset => 'local_airbyte',
		hidden_tag => 'projects/proj/locations/europe-west2/taxonomies/111/policyTags/222',
		assertion => 'federated-assertion-for-sync-targets') . <<"CONF");
dfe_airbyte.passfile = '$passfile'
dfe_airbyte.airbyte_url = '$url'
dfe_airbyte.airbyte_client_id = 'test-client'
dfe_airbyte.airbyte_client_secret = 'test-secret-value'
dfe_airbyte.connection_id = '$local_conn'
dfe_airbyte.sync_poll_interval = 1
dfe_airbyte.http_retry_base_delay = 50
dfe_airbyte.http_max_retries = 1
dfe_airbyte.http_timeout = 10
CONF

sub sql { return $node->safe_psql('postgres', $_[0]) }
sub lit { my ($s) = @_; $s =~ s/'/''/g; return "'$s'" }

# svc_b goes stale after 30 minutes (its own setting), the others after 45
for my $t ([ 'svc_a', $ta, {} ], [ 'svc_b', $tb, { sync_stale_after => '30' } ])
{
	my ($name, $target, $extra) = @$t;
	my $settings = JSON::PP->new->canonical->encode({ connection_id => $conn{$name},
		bigquery_dataset => $dataset{$name}, hidden_policy_tag => $tag{$name},
		slot_name => 'airbyte_slot', %$extra });
	sql("SELECT dfe_airbyte_add_target('$name', ${\ lit($target->conninfo)}, '$settings')");
}

# the lists of each target
sql(q{
INSERT INTO dfe_airbyte.allowlist (target, table_name, column_name) VALUES
  ('svc_a', 'users', 'id'), ('svc_a', 'users', 'email'), ('svc_a', 'users', 'first_name'),
  ('svc_b', 'courses', 'id'), ('svc_b', 'courses', 'name');
INSERT INTO dfe_airbyte.blocklist (target, table_name, column_name) VALUES
  ('svc_a', 'users', 'email'), ('svc_b', 'courses', 'name');
});

my $users = [ { name => 'id', type => 'INTEGER' }, { name => 'email', type => 'STRING' },
	{ name => 'first_name', type => 'STRING' } ];
my $courses = [ { name => 'id', type => 'INTEGER' }, { name => 'name', type => 'STRING' } ];
# the same tables in both datasets: only each target's lists may touch its own
$fake->bigquery_tables(map {
		({ project => $project, dataset => $dataset{$_}, table => 'users', schema => { fields => $users } },
		 { project => $project, dataset => $dataset{$_}, table => 'courses', schema => { fields => $courses } })
	} qw(svc_a svc_b));

# "dataset.table.column=tag" of every tagged column of both datasets
sub tags
{
	my @out;
	for my $ds (sort values %dataset)
	{
		for my $table (qw(courses users))
		{
			for my $f (@{ $fake->bigquery_table($project, $ds, $table)->{schema}{fields} })
			{
				push @out, map { "$ds.$table.$f->{name}=$_" } @{ $f->{policyTags}{names} // [] };
			}
		}
	}
	return join ' ', @out;
}

DfeTest::wait_for_worker($node);

# ------------------------------------------------------------ one sync_health row per target
ok(DfeTest::poll_until($node,
		"SELECT string_agg(target, ',' ORDER BY target) FROM dfe_airbyte.sync_health WHERE checked_at IS NOT NULL AND check_error IS NULL",
		'local,svc_a,svc_b', 60), 'the worker checks each target\'s jobs');
is(sql('SELECT string_agg(target, \',\' ORDER BY target) FROM dfe_airbyte.sync_health'), 'local,svc_a,svc_b',
	'sync_health: one row per target, target first');
is(sql("SELECT attname FROM pg_attribute WHERE attrelid = 'dfe_airbyte.sync_health'::regclass AND attnum = 1"),
	'target', 'sync_health: target is the first column');

# ------------------------------------------------------------ svc_a's syncs: its own rows
my $a1 = $fake->create_job(connectionId => $conn{svc_a}, status => 'succeeded')->{jobId};
ok(DfeTest::poll_until($node, "SELECT last_success_job_id FROM dfe_airbyte.sync_health WHERE target = 'svc_a'", $a1, 60),
	'svc_a: its success is seen');
is(sql("SELECT string_agg(target || ':' || job_id, ',') FROM dfe_airbyte.sync_jobs WHERE job_id = $a1"),
	"svc_a:$a1", 'sync_jobs: the job is svc_a\'s only');
is(sql("SELECT coalesce(last_job_id::text, '-') FROM dfe_airbyte.sync_health WHERE target IN ('svc_b')"), '-',
	'svc_b: no job of its connection');

# the drift repair after svc_a's sync tags svc_a's dataset only, with svc_a's tag
ok(DfeTest::poll_until($node, "SELECT count(*) FROM dfe_airbyte.policy_tag_state WHERE target = 'svc_a'", '1', 60),
	'svc_a: the drift repair recorded what it saw');
is(tags(), "svc_a_airbyte.users.email=$tag{svc_a}", 'the repair tagged svc_a\'s dataset with svc_a\'s tag, nothing else');

# the flow check read svc_a's slot and heartbeat on svc_a's server
ok(DfeTest::poll_until($node, "SELECT count(*) FROM dfe_airbyte.flow_checks WHERE target = 'svc_a'", '1', 60),
	'svc_a: a flow check after its success');
my $remote_lsn = $ta->node->safe_psql('service',
	"SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'airbyte_slot'");
my $remote_hb = $ta->node->safe_psql('service', 'SELECT max(last_heartbeat)::text FROM public.airbyte_heartbeat');
is(sql("SELECT confirmed_flush_lsn || ' ' || last_heartbeat FROM dfe_airbyte.flow_checks WHERE target = 'svc_a'"),
	"$remote_lsn $remote_hb", 'svc_a: the slot and heartbeat were read on svc_a\'s server');

# a second success: the slot and the heartbeat did not move on svc_a's server
my $a2 = $fake->create_job(connectionId => $conn{svc_a}, status => 'succeeded')->{jobId};
ok(DfeTest::poll_until($node, "SELECT count(*) FROM dfe_airbyte.flow_checks WHERE target = 'svc_a'", '2', 60),
	'svc_a: a second flow check');
is(sql("SELECT string_agg(kind || ':' || target, ' ' ORDER BY kind) FROM dfe_airbyte.events
		WHERE kind IN ('slot_not_advancing', 'heartbeat_not_running', 'sync_no_rows')"),
	'heartbeat_not_running:svc_a slot_not_advancing:svc_a', 'svc_a: its findings are its events');
is(sql("SELECT count(*) FROM dfe_airbyte.flow_checks WHERE target <> 'svc_a'"), '0', 'no flow check for the others');

# ------------------------------------------------------------ apply_policy_tags('svc_b')
is(sql("SELECT string_agg(table_name || '.' || column_name || '=' || action, ' ' ORDER BY 1)
		FROM dfe_airbyte_apply_policy_tags('svc_b')"),
	'courses.name=tagged', "apply_policy_tags('svc_b'): svc_b's blocklist");
is(tags(), "svc_a_airbyte.users.email=$tag{svc_a} svc_b_airbyte.courses.name=$tag{svc_b}",
	'svc_b\'s dataset got svc_b\'s tag; svc_a\'s was left alone');
is(sql("SELECT string_agg(target || ':' || table_name || '.' || column_name, ' ' ORDER BY target)
		FROM dfe_airbyte.policy_tag_state"),
	'svc_a:users.email svc_b:courses.name', 'policy_tag_state: each row names its target');
is(sql("SELECT count(*) FROM dfe_airbyte_apply_policy_tags('svc_a') WHERE action = 'already_tagged'"), '1',
	"apply_policy_tags('svc_a'): already tagged");
my ($ret, $out, $err) = $node->psql('postgres', "SELECT * FROM dfe_airbyte_apply_policy_tags('nosuch')");
like($err, qr/target "nosuch" does not exist/, 'an unknown target is refused');

# ------------------------------------------------------------ staleness per target
# watching for 40 minutes without a success: stale for svc_b (30 min), not
# for local (45 min); svc_a had its success just now
sql("UPDATE dfe_airbyte.sync_watch SET watching_since = now() - interval '40 minutes'");
ok(DfeTest::poll_until($node, "SELECT count(*) FROM dfe_airbyte.events WHERE kind = 'sync_stale'", '1', 60),
	'a stale event');
is(sql("SELECT target FROM dfe_airbyte.events WHERE kind = 'sync_stale'"), 'svc_b', 'the stale event is svc_b\'s');
like(sql("SELECT detail FROM dfe_airbyte.events WHERE kind = 'sync_stale'"), qr/sync_stale_after = 00:30:00/,
	'its message gives svc_b\'s own sync_stale_after');
ok($node->log_contains(qr/WARNING:  dfe_airbyte target "svc_b": no successful Airbyte sync seen since/),
	'the log line names the target');
is(sql("SELECT string_agg(target || '=' || stale, ' ' ORDER BY target) FROM dfe_airbyte.sync_health"),
	'local=false svc_a=false svc_b=true', 'sync_health: stale per target');

# svc_b's server down: its flow check fails inside the task's transaction;
# the task goes on for svc_b (its drift repair is svc_b's, not local's)
$tb->node->stop;
my $b1 = $fake->create_job(connectionId => $conn{svc_b}, status => 'succeeded')->{jobId};
ok(DfeTest::poll_log($node, qr/could not check the data flow of target "svc_b" after sync job $b1/, 60),
	'svc_b down: its flow check fails, naming it');
ok(DfeTest::poll_log($node, qr/sync job $b1 of target "(\w+)" succeeded; checking the policy tags/, 60),
	'svc_b down: the drift repair still runs');
like(slurp_file($node->logfile), qr/sync job $b1 of target "svc_b" succeeded; checking the policy tags/,
	'... for svc_b, after the error that was caught');
is(sql("SELECT string_agg(target, ',') FROM dfe_airbyte.sync_jobs WHERE job_id = $b1"), 'svc_b',
	'... and the job is svc_b\'s');

# dropping a target drops its rows
sql("SELECT dfe_airbyte_drop_target('svc_b')");
is(sql("SELECT count(*) FROM dfe_airbyte.sync_watch WHERE target = 'svc_b'")
	. sql("SELECT count(*) FROM dfe_airbyte.policy_tag_state WHERE target = 'svc_b'"), '00',
	'dropping svc_b drops its sync and policy tag rows');

done_testing();
