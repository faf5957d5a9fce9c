# make installcheck as PGXS users run it: pg_regress against an already
# running server configured as README.md ("Installing") says —
# shared_preload_libraries, dfe_airbyte.database naming the service database
# (not contrib_regression), wal_level = logical, max_slot_wal_keep_size set —
# with the extension installed in it.  Every pg_regress file must pass there
# as it does in test/check's temporary instance.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use File::Temp qw(tempdir);
use DfeTest;

my $top = $ENV{DFE_TOP} // '.';
my $node = PostgreSQL::Test::Cluster->new('installcheck');
$node->init(extra => [ DfeTest::initdb_utf8() ]);
$node->append_conf('postgresql.conf', <<'CONF');
shared_preload_libraries = 'dfe_airbyte'
dfe_airbyte.database = 'register_production'
wal_level = logical
max_slot_wal_keep_size = 20GB
# the guard samples only when a test asks, as in test/regress.conf, so the
# slots file's output does not race the worker
dfe_airbyte.check_interval = 3600
CONF
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE register_production');
$node->safe_psql('register_production', 'CREATE EXTENSION dfe_airbyte');

my $out_dir = tempdir(CLEANUP => 1);
# as users run it: Debian's pg_config (psql and pg_regress from the system)
my $pg_config = '/usr/lib/postgresql/' . ($ENV{PG_MAJOR} // 15) . '/bin/pg_config';
my $out = '';
my $ok = IPC::Run::run(
	[ 'make', '-s', '-C', $top, 'installcheck', "PG_CONFIG=$pg_config",
	  "EXTRA_REGRESS_OPTS=--outputdir=$out_dir --host=" . $node->host . ' --port=' . $node->port ],
	'>', \$out, '2>&1');
# one line per file: "test NAME ... ok" up to 15, "ok N - NAME" / "not ok N - NAME"
# from 16 (pg_regress's output became TAP; test/lib/regress_count.sh)
my @tests;
for my $line (split /\n/, $out)
{
	if ($line =~ /^(?:test)?\s+(\w+)\s+\.\.\.\s+(\w+)/) { push @tests, $1, $2; }
	elsif ($line =~ /^(ok|not ok)\s+\d+\s+[-+]\s+(\w+)/) { push @tests, $2, $1 eq 'ok' ? 'ok' : 'FAILED'; }
}
cmp_ok(scalar(@tests) / 2, '>=', 5, 'make installcheck ran the pg_regress files') or diag($out);
while (my ($name, $result) = splice(@tests, 0, 2))
{
	is($result, 'ok', "installcheck: $name");
}
ok($ok, 'make installcheck succeeds') or diag($out . (-e "$out_dir/regression.diffs" ? slurp_file("$out_dir/regression.diffs") : ''));
is($node->safe_psql('postgres', q{SELECT count(*) FROM pg_database WHERE datname = 'contrib_regression'}), '1',
	'it ran in its own database, contrib_regression');
is($node->safe_psql('register_production', q{SELECT extversion FROM pg_extension WHERE extname = 'dfe_airbyte'}),
	$node->safe_psql('contrib_regression', q{SELECT extversion FROM pg_extension WHERE extname = 'dfe_airbyte'}),
	'the service database was left alone');

done_testing();
