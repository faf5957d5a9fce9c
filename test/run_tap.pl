#!/usr/bin/perl
# Runs TAP test files with TAP::Harness and prints, as its last line,
# "tap: N passed, N failed" counting assertions (a file that dies or plans
# more than it runs counts as one failure more).
use strict;
use warnings;
use TAP::Harness;

# Two files at a time by default (TAP_JOBS): most of a TAP file's time is
# spent waiting on a worker, a fake server or a simulated sync schedule, not
# on the CPU, so the suite's wall time nearly halves on a 2-core machine.
# Every test waits with generous deadlines, never tight timing.
my $harness = TAP::Harness->new({
    verbosity => ($ENV{TAP_VERBOSE} ? 1 : 0),
    lib => [],
    jobs => ($ENV{TAP_JOBS} // 2),
    # each file's wall time, to see which ones make the suite slow
    timer => 1,
});
# each run is named after its Airbyte profile (test/check runs the Airbyte
# files once per profile)
my $profile = $ENV{DFE_AIRBYTE_PROFILE};
my @tests = map { defined $profile ? [ $_, "$_ [airbyte $profile]" ] : $_ } @ARGV;
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
