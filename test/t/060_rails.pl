# Rails for real: Debian's ActiveRecord (ruby-activerecord, ruby-pg) runs
# migrations against a cluster with the extension and the fake Airbyte.
# - ActiveRecord's migration lock key is dfe_airbyte_migration_lock_key();
# - the README's deploy migration followed by a slow migration: the deploy
#   waits for ActiveRecord's own advisory lock and the connection PATCH
#   reaches Airbyte only after the last migration finished;
# - a migration that raises after queueing a deploy leaves no deploy
#   (ActiveRecord wraps each migration in a transaction);
# - the README's load_config + deploy migration and its rake hook, run as
#   written (only the migration version in brackets is replaced by the
#   installed ActiveRecord's).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use File::Temp qw(tempdir);
use Time::HiRes qw(usleep time);
use DfeTest;
use FakeServer;

my $top = $ENV{DFE_TOP} // '.';
my $runner = "$top/test/lib/ar_migrate.rb";
if (system('ruby', '-e', 'require "active_record"; require "pg"; require "rake"') != 0)
{
	# CI installs them (test/setup_debian.sh): there a missing one is a failure
	if ($ENV{CI}) { plan tests => 1; fail('ruby with ActiveRecord and pg is missing: run test/setup_debian.sh as root'); exit 0; }
	plan skip_all => 'ruby, ruby-activerecord or ruby-pg is missing';
}
my $ar_version = `ruby -e 'require "active_record"; print ActiveRecord::Migration.current_version'`;
my $ar_full = `ruby -e 'require "active_record"; print ActiveRecord.version'`;
note("ActiveRecord $ar_full, migration version [$ar_version]");

my $CONN = '11111111-1111-1111-1111-111111111111';
my $fake = FakeServer->start;
$fake->config(job_pending_seconds => 0.2, job_running_seconds => 1);
$fake->source_catalog({ users => [qw(id name email)] });

my $node = DfeTest::new_node('rails', conf => <<"CONF");
dfe_airbyte.airbyte_url = '@{[ $fake->url ]}'
dfe_airbyte.airbyte_client_id = 'test-client'
dfe_airbyte.airbyte_client_secret = 'test-secret-value'
dfe_airbyte.connection_id = '$CONN'
dfe_airbyte.job_poll_interval = 1
dfe_airbyte.http_retry_base_delay = 50
dfe_airbyte.http_timeout = 3
dfe_airbyte.http_max_retries = 2
dfe_airbyte.sync_poll_interval = 3600
dfe_airbyte.check_interval = 1
CONF
DfeTest::wait_for_worker($node);
$node->safe_psql('postgres', <<'SQL');
CREATE ROLE app LOGIN IN ROLE dfe_airbyte_admin;
GRANT CREATE ON SCHEMA public TO app;
SET ROLE app;
CREATE TABLE users (id bigint PRIMARY KEY, name text, email text);
RESET ROLE;
INSERT INTO dfe_airbyte.allowlist (table_name, column_name) VALUES ('users', 'id'), ('users', 'email');
SQL

sub sql { return $node->safe_psql('postgres', $_[0]) }

# ruby ar_migrate.rb @args as role app; returns (exit ok, output)
my %pgenv = (PGHOST => $node->host, PGPORT => $node->port, PGDATABASE => 'postgres', PGUSER => 'app');

sub ruby_cmd { return [ 'env', (map { "$_=$pgenv{$_}" } sort keys %pgenv), @_ ] }

sub ar_run
{
	my (@args) = @_;
	my $out = '';
	my $ok = IPC::Run::run(ruby_cmd('ruby', $runner, @args), '>', \$out, '2>&1');
	return ($ok, $out);
}

sub write_migration
{
	my ($dir, $version, $code) = @_;
	my ($class) = $code =~ /class\s+(\w+)\s*</ or die "no class in migration:\n$code";
	(my $file = $class) =~ s/(?<=[a-z0-9])([A-Z])/_$1/g;
	$file = lc $file;
	$code =~ s/ActiveRecord::Migration\[\d+\.\d+\]/ActiveRecord::Migration[$ar_version]/g;
	PostgreSQL::Test::Utils::append_to_file("$dir/${version}_$file.rb", $code);
	return $class;
}

# the README's ```ruby blocks
my @ruby_blocks = slurp_file("$top/README.md") =~ /^```ruby\n(.*?)^```/msg;
my ($readme_deploy) = grep { /class \w+ < ActiveRecord::Migration/ && /dfe_airbyte_deploy\(\)/ } @ruby_blocks;
my ($readme_load) = grep { /dfe_airbyte_load_config\(/ && /dfe_airbyte_deploy\(\)/ } @ruby_blocks;
my ($readme_rake) = grep { /Rake::Task\["db:migrate"\]\.enhance/ } @ruby_blocks;
ok(defined $readme_deploy, "README: the deploy migration") or diag(join("\n---\n", @ruby_blocks));
ok(defined $readme_load, 'README: the load_config + deploy migration');
ok(defined $readme_rake, 'README: the rake hook');

sub deploy_count { return sql('SELECT count(*) FROM dfe_airbyte.deploys') }

sub patches
{
	my ($mark) = @_;
	return [ grep { $_->{method} eq 'PATCH' || $_->{path} =~ m{/connections/update$} }
		  @{ $fake->requests(since => $mark, path => qr{/connections}) } ];
}

# --- the lock key: ActiveRecord's own computation ----------------------------
{
	my ($ok, $out) = ar_run('lock_key');
	ok($ok, 'ActiveRecord computes its lock key') or diag($out);
	like($out, qr/^salt 2053462845$/m, 'ActiveRecord::Migrator::MIGRATOR_SALT is 2053462845');
	my ($key) = $out =~ /^lock_key (\d+)$/m;
	is(sql('SELECT dfe_airbyte_migration_lock_key()'), $key,
		"dfe_airbyte_migration_lock_key() = ActiveRecord's generate_migrator_advisory_lock_id (postgres)");
	sql(q{CREATE DATABASE "café_app_development" OWNER app});
	$node->safe_psql('café_app_development', 'CREATE EXTENSION dfe_airbyte');
	local $pgenv{PGDATABASE} = 'café_app_development';
	($ok, $out) = ar_run('lock_key');
	my ($key2) = $out =~ /^lock_key (\d+)$/m;
	is($node->safe_psql('café_app_development', 'SELECT dfe_airbyte_migration_lock_key()'), $key2 // 'none',
		'the same for a non-ASCII database name') or diag($out);
}

# --- the README's deploy migration, then a slow one ----------------------------
my $dir = tempdir(CLEANUP => 1);
my $marks = tempdir(CLEANUP => 1);
write_migration($dir, '20260101000001', $readme_deploy);
write_migration($dir, '20260101000002', <<"RUBY");
class SlowChange < ActiveRecord::Migration[6.1]
  def up
    add_column :users, :nickname, :text
    execute "SELECT pg_sleep(10)"
    File.write("$marks/slow_done", Time.now.to_f.to_s)
  end
end
RUBY
my $count = deploy_count();
my $mark = $fake->mark;
my $out = '';
my $h = IPC::Run::start(ruby_cmd('ruby', $runner, 'migrate', $dir), '>', \$out, '2>&1');
ok(DfeTest::poll_until($node, "SELECT count(*) FROM dfe_airbyte.deploys", $count + 1, 60),
	'the first migration queued a deploy (committed with it)');
my $id = sql('SELECT max(id) FROM dfe_airbyte.deploys');
ok(DfeTest::poll_until($node, "SELECT state || ' ' || step FROM dfe_airbyte.deploys WHERE id = $id",
		'running waiting_for_migrations', 30), 'while the slow migration runs, the deploy waits for the migrations');
my $key = sql('SELECT dfe_airbyte_migration_lock_key()');
my $holder = sql("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 "
	  . "AND ((classid::bigint << 32) | objid::bigint) = $key");
like($holder, qr/^\d+$/, "ActiveRecord holds its migration advisory lock ($key)");
ok(DfeTest::poll_until($node,
		"SELECT log::text LIKE '%waiting for the Rails migration in process $holder%' FROM dfe_airbyte.deploys WHERE id = $id",
		't', 30), "the deploy log names ActiveRecord's lock holder (process $holder)");
ok(!-e "$marks/slow_done", 'the slow migration still runs') or diag('the machine is too slow for this check');
is_deeply(patches($mark), [], 'no connection PATCH while the migrations run');
ok($h->finish, 'db:migrate succeeded') or diag($out);
my ($finished_at) = $out =~ /^finished_at (\S+)$/m;
my $slow_done = slurp_file("$marks/slow_done");
ok(DfeTest::poll_until($node, "SELECT state FROM dfe_airbyte.deploys WHERE id = $id", 'succeeded', 120),
	'the deploy succeeds after the migrations');
my $p = patches($mark);
is(scalar(@$p), 1, 'one connection PATCH');
cmp_ok($p->[0]{time} // 0, '>=', $slow_done,
	"the PATCH reached Airbyte after the last migration ended (PATCH at $p->[0]{time}, migration ended at $slow_done, db:migrate returned at $finished_at)");
like(sql("SELECT string_agg(e->>'message', E'\\n') FROM dfe_airbyte.deploys, jsonb_array_elements(log) e WHERE id = $id"),
	qr/the Rails migration has finished/, 'the deploy log says the migration finished');
is(sql(q{SELECT string_agg(version, ',' ORDER BY version) FROM schema_migrations}),
	'20260101000001,20260101000002', 'both migrations recorded');

# --- a migration that raises after queueing: no deploy -------------------------
my $dir2 = tempdir(CLEANUP => 1);
write_migration($dir2, '20260101000003', <<'RUBY');
class BrokenChange < ActiveRecord::Migration[6.1]
  def up
    execute "SELECT dfe_airbyte_deploy()"
    add_column :users, :broken, :text
    raise "this migration fails after queueing a deploy"
  end
end
RUBY
$count = deploy_count();
$mark = $fake->mark;
my ($ok, $out2) = ar_run('migrate', $dir2);
ok(!$ok, 'the broken migration fails');
like($out2, qr/this migration fails after queueing a deploy/, 'with its own error');
DfeTest::wait_for_worker_loops($node, 'network', 2);
is(deploy_count(), $count, 'no deploy row: the transaction of the migration rolled back');
is(sql(q{SELECT count(*) FROM pg_attribute WHERE attrelid = 'users'::regclass AND attname = 'broken'}), '0',
	'its DDL rolled back too');
is_deeply([ map { "$_->{method} $_->{path}" } @{ $fake->requests(since => $mark, path => qr{^/api/(public/)?v1/(?!applications)}) } ],
	[], 'no Airbyte call');

# --- the README's load_config + deploy migration, as written ----------------------
my $root = tempdir(CLEANUP => 1);
mkdir "$root/config";
my @files = $readme_load =~ m{"(config/[\w.]+\.yml)"}g;
ok(scalar(grep { $_ eq 'config/analytics.yml' } @files), 'the README reads config/analytics.yml: ' . join(' ', @files));
# analytics.yml is the allowlist; the hidden PII list (the gem tags
# analytics_hidden_pii.yml) names an allowlisted column; where the README
# also passes a third list (columns deliberately not replicated) it names a
# column that is not allowlisted
my $has_pii = grep { /pii/ } @files;
for my $f (@files)
{
	my @cols = $f eq 'config/analytics.yml' ? qw(id email name)
	  : $f =~ /pii/ || !$has_pii ? qw(email)
	  : qw(nickname);
	PostgreSQL::Test::Utils::append_to_file("$root/$f",
		"shared:\n  users:\n" . join('', map { "    - $_\n" } @cols));
}
my $dir3 = tempdir(CLEANUP => 1);
write_migration($dir3, '20260101000004',
	$readme_load =~ /class \w+/ ? $readme_load
	: "class LoadAnalyticsConfig < ActiveRecord::Migration[6.1]\n$readme_load\nend\n");
$count = deploy_count();
{
	local $pgenv{DFE_RAILS_ROOT} = $root;
	($ok, $out) = ar_run('migrate', $dir3);
}
ok($ok, "the README's load_config migration runs") or diag($out);
is(sql(q{SELECT string_agg(column_name, ',' ORDER BY column_name) FROM dfe_airbyte.allowlist WHERE table_name = 'users'}),
	'email,id,name', 'it loaded analytics.yml into the allowlist');
is(deploy_count(), $count + 1, 'and queued a deploy');
$id = sql('SELECT max(id) FROM dfe_airbyte.deploys');
ok(DfeTest::poll_until($node, "SELECT state FROM dfe_airbyte.deploys WHERE id = $id", 'succeeded', 120),
	'that deploy succeeds');

# --- the README's rake hook: a deploy after db:migrate ------------------------------
my $rakefile = "$root/airbyte.rake";
PostgreSQL::Test::Utils::append_to_file($rakefile, $readme_rake);
my $dir4 = tempdir(CLEANUP => 1);
write_migration($dir4, '20260101000005', <<'RUBY');
class AddUsersCreatedAt < ActiveRecord::Migration[6.1]
  def change
    add_column :users, :created_at, :timestamptz
  end
end
RUBY
$count = deploy_count();
($ok, $out) = ar_run('rake', $dir4, $rakefile);
ok($ok, "db:migrate with the README's rake hook") or diag($out);
is(deploy_count(), $count + 1, 'the hook queued a deploy after the migrations');
$id = sql('SELECT max(id) FROM dfe_airbyte.deploys');
ok(DfeTest::poll_until($node, "SELECT state FROM dfe_airbyte.deploys WHERE id = $id", 'succeeded', 120),
	'that deploy succeeds');

done_testing();
