#!/usr/bin/perl
# Runs TAP test files with TAP::Harness and prints, as its last line,
# "tap: N passed, N failed" counting assertions (a file that dies or plans
# more than it runs counts as one failure more).
use strict;
use warnings;
use TAP::Harness;

# progress as it happens, also through a pipe (test/check tees it)
$| = 1;

# Three files at a time by default (TAP_JOBS): most of a TAP file's time is
# spent waiting on a worker, a fake server or a simulated sync schedule, not
# on the CPU (the files use about a quarter of a 2-core machine two at a
# time), so on 2 cores three at a time take no longer each than two do and
# the suite's wall time drops by a third (docs/development.md, "How long the
# suite takes").  Every test waits with generous deadlines, never tight timing.
# A file runs on the Airbyte profile its argument names ("0.60:test/t/F.pl"),
# else on $ENV{DFE_AIRBYTE_PROFILE} (default 2.x), each profile's clusters
# and logs under its own TESTDIR (test/profile-P/ for the older profiles,
# $ENV{TESTDIR} for the default one): test/check hands every (profile, file)
# run to one harness, so that every job slot stays busy to the end.
my $default_profile = $ENV{DFE_AIRBYTE_PROFILE} // '2.x';
my $default_testdir = $ENV{TESTDIR};
my $testroot = $ENV{DFE_TOP} ? "$ENV{DFE_TOP}/test" : 'test';
# what a file missing from test/tap_seconds counts as: long, so it starts early
my $UNLISTED_SECONDS = 60;
sub profile_of
{
	my ($arg) = @_;
	return $arg =~ /^([^:\/]+):(.+)$/ ? ($1, $2) : ($default_profile, $arg);
}
my $harness = TAP::Harness->new({
    verbosity => ($ENV{TAP_VERBOSE} ? 1 : 0),
    lib => [],
    jobs => ($ENV{TAP_JOBS} // 3),
    # each file's wall time, to see which ones make the suite slow
    timer => 1,
    exec => sub {
        my ($h, $arg) = @_;
        my ($profile, $file) = profile_of($arg);
        my $testdir = $profile eq $default_profile && defined $default_testdir
          ? $default_testdir : "$testroot/profile-$profile";
        mkdir $testdir;
        # TESTDIR is what PostgreSQL 15's PostgreSQL::Test::Utils reads; from
        # 16 on it reads TESTDATADIR and TESTLOGDIR instead (as PGXS's
        # prove_check sets them) and would otherwise put tmp_check relative
        # to the working directory
        return [ 'env', "DFE_AIRBYTE_PROFILE=$profile", "TESTDIR=$testdir",
                 "TESTDATADIR=$testdir/tmp_check", "TESTLOGDIR=$testdir/tmp_check/log", $^X, $file ];
    },
});
# Longest first (test/tap_seconds): with the long files started last, one
# slot would run the last of them alone while the other stays idle.  A file
# not listed there counts as long, and ties keep the order they were given in.
my %seconds;
if (open my $fh, '<', "$testroot/tap_seconds")
{
	while (<$fh>)
	{
		$seconds{$1} = $2 if /^(\S+)\s+(\d+)\s*$/;
	}
	close $fh;
}
sub seconds_of
{
	my ($f) = (profile_of($_[0]))[1] =~ m{([^/]+)\.pl$};
	return $seconds{ $f // '' } // $UNLISTED_SECONDS;
}
my @order = map { $_->[0] } sort { $b->[1] <=> $a->[1] || $a->[2] <=> $b->[2] }
  map { [ $ARGV[$_], seconds_of($ARGV[$_]), $_ ] } 0 .. $#ARGV;
# each run is named after its Airbyte profile (test/check runs the Airbyte
# files once per profile)
my @tests = map { my ($p, $f) = profile_of($_); [ $_, "$f [airbyte $p]" ] } @order;
my $agg = $harness->runtests(@tests);
my ($passed, $failed) = (0, 0);
for my $file ($agg->descriptions) {
    my ($parser) = $agg->parsers($file);
    $passed += scalar $parser->passed;
    $failed += scalar $parser->failed;
    $failed += 1 if $parser->has_problems && !$parser->failed;
}
print "tap: $passed passed, $failed failed\n";
exit($failed ? 1 : 0);
