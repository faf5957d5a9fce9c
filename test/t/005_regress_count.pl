# test/check counts pg_regress's results in both of its output formats (the
# one of 15 and the TAP of 16 and later): a failing regress file must be
# counted as failed, never as nothing.  First on examples of each format,
# then on a real pg_regress run of the major under test with one file that
# passes and one that fails.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use File::Temp qw(tempdir);
use IPC::Run;

my $top = $ENV{DFE_TOP} // '.';

# dfe_regress_count LOG NFILES EXIT_STATUS from test/lib/regress_count.sh
sub count
{
	my ($log_text, $nfiles, $rc) = @_;
	my $dir = tempdir(CLEANUP => 1);
	open(my $fh, '>', "$dir/log") or die $!;
	print $fh $log_text;
	close $fh;
	my $out = '';
	IPC::Run::run(
		[ 'bash', '-c', '. "$1"; dfe_regress_count "$2" "$3" "$4"', 'count',
		  "$top/test/lib/regress_count.sh", "$dir/log", $nfiles, $rc ],
		'>', \$out) or die "dfe_regress_count failed";
	chomp $out;
	return $out;
}

my $pg15 = <<'LOG';
============== running regression test queries        ==============
test airbyte                      ... ok           41 ms
test lists                        ... FAILED       78 ms
parallel group (2 tests):  slots slot_health
     slots                        ... ok           63 ms
     slot_health                  ... FAILED      230 ms
test bigquery                     ... failed (ignored)       14 ms
LOG
is(count($pg15, 5, 1), '2 3', 'PostgreSQL 15 format: ok, FAILED (also in a parallel group) and ignored failures');

my $pg16 = <<'LOG';
# using temp instance on port 55324 with PID 11983
ok 1         - airbyte                                    41 ms
not ok 2     - lists                                      78 ms
# parallel group (2 tests):  slots slot_health
ok 3         + slots                                      63 ms
not ok 4     + slot_health                               230 ms
1..4
# 2 of 4 tests failed.
LOG
is(count($pg16, 4, 1), '2 2', 'PostgreSQL 16+ TAP format: ok and not ok, also in a parallel group');
is(count("# initdb failed\n", 4, 2), '0 4', 'files with no result line count as failed');
is(count("ok 1         - airbyte  4 ms\n", 1, 2), '1 1', 'a non-zero exit with no failure seen counts one failure');

# the real pg_regress of this major: one file passes, one fails
my $dir = tempdir(CLEANUP => 1);
mkdir "$dir/$_" for qw(sql expected);
for my $t ([ 'passes', "SELECT 1 AS one;\n", "SELECT 1 AS one;\n one \n-----\n   1\n(1 row)\n\n" ],
	[ 'fails', "SELECT 2 AS two;\n", "SELECT 2 AS two;\n two \n-----\n   3\n(1 row)\n\n" ])
{
	my ($name, $sql, $expected) = @$t;
	open(my $fh, '>', "$dir/sql/$name.sql") or die $!;
	print $fh $sql;
	close $fh;
	open($fh, '>', "$dir/expected/$name.out") or die $!;
	print $fh $expected;
	close $fh;
}
my $bindir = `pg_config --bindir`;
chomp $bindir;
my $log = '';
IPC::Run::run(
	[ $ENV{PG_REGRESS}, "--temp-instance=$dir/instance", "--bindir=$bindir",
	  "--inputdir=$dir", "--outputdir=$dir", '--encoding=UTF8', 'passes', 'fails' ],
	'>', \$log, '2>&1');
my $rc = $? >> 8;
isnt($rc, 0, 'pg_regress exits non-zero when a file fails');
is(count($log, 2, $rc), '1 1', "the real pg_regress output is counted: 1 passed, 1 failed")
  or diag($log);

done_testing();
