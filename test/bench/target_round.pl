# The measuring half of test/bench/target_round.sh (see there).
use strict;
use warnings;
use IO::Socket::INET;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use DfeTest;
use DfeTarget;

# PostgreSQL::Test::Utils sends STDOUT to its log file: report on the terminal
my $out = Test::More->builder->output;
sub report { my $fmt = shift; print $out sprintf($fmt, @_) }

my $rounds = $ENV{BENCH_ROUNDS} || 10;
my $timeout = $ENV{BENCH_TARGET_TIMEOUT} || '2s';
my $n_total = 20;
my $n_hang = 4;

my @majors = DfeTarget::majors() or die "no target servers: run test/lib/target_servers.sh";
my @servers = map { DfeTarget->new("bench$_", major => $_) } @majors;
my $dir = PostgreSQL::Test::Utils::tempdir();
my $passfile = DfeTarget::write_passfile("$dir/pgpass", @servers);

# 20 healthy targets: databases spread over the servers (one backend each,
# as 20 servers would have)
my @healthy;
for my $i (0 .. $n_total - 1)
{
	my $s = $servers[ $i % @servers ];
	my $db = 'service' . int($i / @servers);
	$s->node->safe_psql('postgres', "CREATE DATABASE $db TEMPLATE service") if $db ne 'service0';
	push @healthy, [ "t$i", $s->conninfo(dbname => $db eq 'service0' ? 'service' : $db) ];
}
my @listeners = map {
	IO::Socket::INET->new(Listen => 16, LocalAddr => '127.0.0.1', LocalPort => 0, Proto => 'tcp') or die $!
} 1 .. $n_hang;
my @hanging = map { [ "hang$_", "host=127.0.0.1 port=" . $listeners[$_]->sockport . " dbname=service user=x" ] }
  0 .. $n_hang - 1;

my $node = DfeTest::new_node('bench', conf => <<"CONF");
log_min_messages = warning
dfe_airbyte.passfile = '$passfile'
dfe_airbyte.target_timeout = '$timeout'
CONF
$node->safe_psql('postgres', q{
CREATE FUNCTION public.target_probe(names text[], conninfos text[], sql text, rounds int DEFAULT 1)
  RETURNS TABLE(name text, state text, elapsed_ms float8, server_version int,
                first_value text, errcode text, error text, round int)
  AS 'dfe_airbyte', 'dfe_airbyte_target_probe' LANGUAGE C;
});

sub lit { my ($s) = @_; $s =~ s/'/''/g; return "'$s'" }
my $sample = q{SELECT count(*) FROM pg_catalog.pg_replication_slots s
  WHERE pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), s.restart_lsn) >= 0};

sub run_scenario
{
	my ($label, @t) = @_;
	my $names = 'ARRAY[' . join(',', map { lit($_->[0]) } @t) . ']';
	my $cis = 'ARRAY[' . join(',', map { lit($_->[1]) } @t) . ']';
	# per round: slowest healthy target, slowest of all (the round's length), healthy answers
	my $res = $node->safe_psql('postgres', "
		SELECT round,
		       max(elapsed_ms) FILTER (WHERE name LIKE 't%'),
		       max(elapsed_ms),
		       count(*) FILTER (WHERE name LIKE 't%' AND state = 'done'),
		       count(*) FILTER (WHERE name LIKE 'hang%' AND state = 'timeout')
		  FROM target_probe($names, $cis, ${\ lit($sample)}, $rounds)
		 GROUP BY round ORDER BY round");
	my @rows = map { [ split /\|/ ] } split /\n/, $res;
	my @steady = sort { $a <=> $b } map { $_->[1] } @rows[ 1 .. $#rows ];
	my $p50 = @steady ? $steady[ int($#steady / 2) ] : 0;
	my $max = @steady ? $steady[-1] : 0;
	report("%-28s round 1 (connect): healthy max %7.1f ms, round %7.1f ms | rounds 2-%d: healthy max p50 %6.1f ms, max %6.1f ms | healthy answered %d/%d, hanging timed out %d/%d\n",
		$label, $rows[0][1], $rows[0][2], $rounds, $p50, $max,
		$rows[-1][3], scalar(grep { $_->[0] =~ /^t/ } @t), $rows[-1][4], scalar(grep { $_->[0] =~ /^hang/ } @t));
	return;
}

report("targets: %d on PostgreSQL %s; target_timeout %s; %d rounds\n",
	$n_total, join(', ', @majors), $timeout, $rounds);
run_scenario('20 healthy', @healthy);
run_scenario('16 healthy + 4 hanging', @healthy[ 0 .. $n_total - $n_hang - 1 ], @hanging);
$_->node->stop for @servers;
$node->stop;
