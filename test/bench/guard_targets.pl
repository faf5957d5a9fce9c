# The measuring half of test/bench/guard_targets.sh (see there).
use strict;
use warnings;
use IO::Socket::INET;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Time::HiRes qw(time usleep);
use DfeTest;
use DfeTarget;

# PostgreSQL::Test::Utils sends STDOUT to its log file: report on the terminal
my $out = Test::More->builder->output;
sub report { my $fmt = shift; print $out sprintf($fmt, @_) }

my $interval = $ENV{BENCH_CHECK_INTERVAL} || '1s';
my $timeout = $ENV{BENCH_TARGET_TIMEOUT} || '2s';
my $idle_s = $ENV{BENCH_IDLE_S} || 60;
my $n_total = 20;
my $n_hang = 4;

my @majors = DfeTarget::majors() or die "no target servers: run test/lib/target_servers.sh";
my @servers = map { DfeTarget->new("gbench$_", major => $_) } @majors;
my $dir = PostgreSQL::Test::Utils::tempdir();
my $passfile = DfeTarget::write_passfile("$dir/pgpass", @servers);

# 20 healthy targets: databases spread over the servers, each with its own
# Airbyte slot (slot names are per server)
my @healthy;
for my $i (0 .. $n_total - 1)
{
	my $s = $servers[ $i % @servers ];
	my $db = $i < @servers ? 'service' : "service$i";
	$s->node->safe_psql('postgres', "CREATE DATABASE $db TEMPLATE service") if $db ne 'service';
	push @healthy, { name => "t$i", server => $s, db => $db, ci => $s->conninfo(dbname => $db) };
}
my @listeners = map {
	IO::Socket::INET->new(Listen => 64, LocalAddr => '127.0.0.1', LocalPort => 0, Proto => 'tcp') or die $!
} 1 .. $n_hang;

my $node = DfeTest::new_node('gbench', conf => <<"CONF");
log_min_messages = warning
dfe_airbyte.passfile = '$passfile'
dfe_airbyte.check_interval = '$interval'
dfe_airbyte.target_timeout = '$timeout'
CONF
sub lit { my ($s) = @_; $s =~ s/'/''/g; return "'$s'" }
sub q1 { return $node->safe_psql('postgres', $_[0]) }

# a fresh slot per target and round (its retained WAL starts at zero), limit 1MB
sub fresh_slots
{
	my ($round) = @_;
	for my $t (@healthy)
	{
		my $slot = "slot_$t->{name}_$round";
		my $old = "slot_$t->{name}_" . ($round - 1);
		# the servers keep few slots (as Azure does): the last round's go first
		$t->{server}->node->safe_psql($t->{db}, "SELECT pg_drop_replication_slot(slot_name)
			FROM pg_replication_slots WHERE slot_name = '$old'");
		$t->{server}->node->safe_psql($t->{db}, "SELECT pg_create_logical_replication_slot('$slot', 'pgoutput')");
		q1("UPDATE dfe_airbyte.targets SET settings = jsonb_build_object('slot_name', '$slot', 'max_slot_wal_size', '1MB')
			WHERE name = '$t->{name}'");
	}
}

for my $t (@healthy)
{
	q1("INSERT INTO dfe_airbyte.targets (name, conninfo) VALUES ('$t->{name}', ${\ lit($t->{ci})})");
}
for my $i (0 .. $n_hang - 1)
{
	q1("INSERT INTO dfe_airbyte.targets (name, conninfo, enabled) VALUES ('hang$i',
		'host=127.0.0.1 port=${\ $listeners[$i]->sockport} dbname=service user=x', false)");
}

# Each server writes 3MB of WAL at a random point of the guard's cycle: every
# healthy target on it passes its limit; the reaction is from just before
# the write to the target's slot_limit_exceeded event.
sub reactions
{
	my ($round, @targets) = @_;
	my @r;
	for my $s (@servers)
	{
		usleep(int(rand(1_000_000)));
		my $mine = join(',', map { "'$_->{name}'" } grep { $_->{server} == $s } @targets);
		next unless $mine;
		my $t0 = q1('SELECT now()::text');
		$s->node->safe_psql('service', q{SELECT pg_logical_emit_message(false, 'b', repeat('x', 1000000)) FROM generate_series(1, 3)});
		my $n = scalar(split /,/, $mine);
		DfeTest::poll_until($node, "SELECT count(DISTINCT target) FROM dfe_airbyte.events
			WHERE kind = 'slot_limit_exceeded' AND target IN ($mine) AND at >= '$t0'", $n, 120) or die "no reaction";
		push @r, split /\n/, q1("SELECT extract(epoch FROM min(at) - '$t0'::timestamptz) FROM dfe_airbyte.events
			WHERE kind = 'slot_limit_exceeded' AND target IN ($mine) AND at >= '$t0' GROUP BY target");
	}
	return sort { $a <=> $b } @r;
}

sub scenario
{
	my ($round, $label, $hang) = @_;
	fresh_slots($round);
	q1("UPDATE dfe_airbyte.targets SET enabled = (name NOT LIKE 't%' OR substr(name, 2)::int < " . ($n_total - $hang) . ")
		WHERE name <> 'local'");
	q1("UPDATE dfe_airbyte.targets SET enabled = " . ($hang ? 'true' : 'false') . " WHERE name LIKE 'hang%'");
	# two checks with every slot seen first
	DfeTest::poll_until($node, "SELECT count(*) >= " . ($n_total - $hang) . " FROM dfe_airbyte.slot_state
		WHERE slot_name LIKE 'slot\\_%\\_$round'", 't', 120) or die 'slots not seen';
	my @r = reactions($round, @healthy[ 0 .. $n_total - $hang - 1 ]);
	report("%-26s reaction on %2d healthy targets: median %.2f s, max %.2f s (check_interval %s, target_timeout %s)\n",
		$label, scalar(@r), $r[ int($#r / 2) ], $r[-1], $interval, $timeout);
	return;
}

report("guard over %d targets on PostgreSQL %s\n", $n_total, join(', ', @majors));
scenario(1, '20 healthy', 0);
scenario(2, '16 healthy + 4 hanging', $n_hang);

# idle: CPU and memory of the guard with 20 healthy targets
q1("UPDATE dfe_airbyte.targets SET enabled = name NOT LIKE 'hang%'");
my $pid = q1("SELECT pid FROM dfe_airbyte.workers WHERE worker = 'guard'");
my $tck = `getconf CLK_TCK`;
chomp $tck;
sub cpu_ticks { open my $f, '<', "/proc/$pid/stat" or die $!; my @f = split ' ', scalar <$f>; return $f[13] + $f[14] }
sub rss_kb { open my $f, '<', "/proc/$pid/status" or die $!; for (<$f>) { return $1 if /^VmRSS:\s+(\d+)/ } return 0 }
sleep 5;
my ($c0, $w0) = (cpu_ticks(), time);
sleep $idle_s;
my ($c1, $w1) = (cpu_ticks(), time);
my $cpu = ($c1 - $c0) / $tck / ($w1 - $w0) * 100;
report("idle guard, %d healthy targets, %ds: %.2f %% of a core (%.3f %% per target), RSS %d MB\n",
	$n_total, $idle_s, $cpu, $cpu / $n_total, rss_kb() / 1024);
$_->node->stop for @servers;
$node->stop;
