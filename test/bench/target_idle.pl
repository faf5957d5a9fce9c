# The measuring half of test/bench/target_idle.sh (see there).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Time::HiRes qw(time usleep);
use DfeTest;
use DfeTarget;
use FakeServer;

# PostgreSQL::Test::Utils sends STDOUT to its log file: report on the terminal
my $out = Test::More->builder->output;
sub report { my $fmt = shift; print $out sprintf($fmt, @_) }

my @counts = split ' ', ($ENV{BENCH_TARGETS} || '0 1 5 10 20');
my @intervals = split ' ', ($ENV{BENCH_INTERVALS} || '10s 1s');
# a window per interval: six checks at 10 s, thirty at 1 s
my %window = ('10s' => $ENV{BENCH_WINDOW_S} || 60, '1s' => $ENV{BENCH_WINDOW_S} || 30);
my ($n_max) = sort { $b <=> $a } @counts;

my @majors = DfeTarget::majors() or die "no target servers: run test/lib/target_servers.sh";
my ($major) = grep { $_ == 16 } @majors;
$major //= $majors[0];
my $server = DfeTarget->new('idlesvc', major => $major);
# one slot per service database (Airbyte's, as each service has one); the
# guard keeps a connection per target, and so does the network worker
$server->node->append_conf('postgresql.conf', 'max_replication_slots = ' . ($n_max + 5)
	  . "\nmax_connections = " . (3 * $n_max + 20));
$server->node->restart;
my $dir = PostgreSQL::Test::Utils::tempdir();
my $passfile = DfeTarget::write_passfile("$dir/pgpass", $server);

my $fake = FakeServer->start;
my @targets;
for my $i (0 .. $n_max - 1)
{
	my $db = $i == 0 ? 'service' : "service$i";
	my $slot = $i == 0 ? 'airbyte_slot' : "airbyte_slot$i";
	if ($i > 0)
	{
		$server->node->safe_psql('postgres', "CREATE DATABASE $db TEMPLATE service");
		$server->node->safe_psql($db, "SELECT pg_create_logical_replication_slot('$slot', 'pgoutput')");
	}
	push @targets, { name => "t$i", db => $db, slot => $slot,
		conn => sprintf('%08d-0000-4000-8000-%012d', $i, $i), ci => $server->conninfo(dbname => $db) };
}

# the workers' defaults but check_interval, which each row sets
my $node = DfeTest::new_node('control', conf => <<"CONF");
log_min_messages = warning
dfe_airbyte.passfile = '$passfile'
dfe_airbyte.airbyte_url = '@{[ $fake->url ]}'
dfe_airbyte.airbyte_client_id = 'bench-client'
dfe_airbyte.airbyte_client_secret = 'bench-secret-value'
dfe_airbyte.connection_id = '@{[ $fake->config->{connection_id} ]}'
CONF
sub lit { my ($s) = @_; $s =~ s/'/''/g; return "'$s'" }
sub q1 { return $node->safe_psql('postgres', $_[0]) }

# a control database: "local" is not a service
q1("UPDATE dfe_airbyte.targets SET enabled = false WHERE name = 'local'");
for my $t (@targets)
{
	q1("INSERT INTO dfe_airbyte.targets (name, conninfo, settings, enabled) VALUES ('$t->{name}', ${\ lit($t->{ci})},
		'{\"connection_id\": \"$t->{conn}\", \"slot_name\": \"$t->{slot}\"}', false)");
}
DfeTest::wait_for_worker($node);

my $tck = `getconf CLK_TCK`;
chomp $tck;

sub stat_fields
{
	my ($pid) = @_;
	open my $f, '<', "/proc/$pid/stat" or return;
	my $line = <$f>;
	$line =~ s/^.*\) //s;    # the command name may hold spaces
	return split ' ', $line;    # from field 3 (state) on
}
# utime + stime of a process, in seconds
sub cpu_s { my @f = stat_fields($_[0]) or return 0; return ($f[11] + $f[12]) / $tck }

# a cluster's CPU: the postmaster, its reaped children (cutime, cstime) and its live ones
sub cluster_cpu_s
{
	my ($n) = @_;
	open my $p, '<', $n->data_dir . '/postmaster.pid' or die $!;
	my $pm = <$p>;
	chomp $pm;
	my @f = stat_fields($pm);
	my $sum = $f[11] + $f[12] + $f[13] + $f[14];
	for my $pid (map { m{/proc/(\d+)$} ? $1 : () } glob '/proc/[0-9]*')
	{
		my @c = stat_fields($pid) or next;
		$sum += $c[11] + $c[12] if $c[1] == $pm;
	}
	return $sum / $tck;
}

# Rss and Pss of a process, in MB
sub mem_mb
{
	my ($pid) = @_;
	my %m;
	open my $f, '<', "/proc/$pid/smaps_rollup" or return (0, 0);
	for (<$f>) { $m{$1} = $2 if /^(Rss|Pss):\s+(\d+) kB/ }
	return (($m{Rss} // 0) / 1024, ($m{Pss} // 0) / 1024);
}

# sessions the target server has seen (pg_stat_database, PostgreSQL 14 on), less this one
sub target_sessions
{
	return $server->node->safe_psql('postgres', 'SELECT sum(sessions) - 1 FROM pg_stat_database');
}

sub worker_pid { return q1("SELECT pid FROM dfe_airbyte.workers WHERE worker = '$_[0]'") }

# every enabled target sampled by the guard and looked at by the deploy
# watch since $since: the first connections are made before the window
sub warmed_up
{
	my ($n, $since) = @_;
	return 1 if $n == 0;
	my $names = join(',', map { "'$_->{name}'" } @targets[ 0 .. $n - 1 ]);
	return DfeTest::poll_until($node, "SELECT (SELECT count(*) FROM dfe_airbyte.guard_targets
			WHERE target IN ($names) AND reachable AND checked_at > '$since')
		+ (SELECT count(*) FROM dfe_airbyte.migration_watch WHERE target IN ($names) AND checked_at > '$since')",
		2 * $n, 180);
}

my ($guard, $net) = (worker_pid('guard'), worker_pid('network'));
my (@rows, %base);
my $ctx_name = 'dfe_airbyte remote slot guard';
my ($ctx_first) = DfeTest::memory_context_bytes($node, $guard, $ctx_name);
for my $interval (@intervals)
{
	q1("ALTER SYSTEM SET dfe_airbyte.check_interval = '$interval'");
	q1('SELECT pg_reload_conf()');
	for my $n (@counts)
	{
		my $since = q1('SELECT clock_timestamp()');
		q1("UPDATE dfe_airbyte.targets SET enabled = (name <> 'local' AND substr(name, 2)::int < $n)");
		warmed_up($n, $since) or die "targets not reached: $n at $interval";
		sleep 2;
		my ($ctx0) = DfeTest::memory_context_bytes($node, $guard, $ctx_name);
		my $s0 = target_sessions();
		my @c0 = (cpu_s($guard), cpu_s($net), cluster_cpu_s($node), cluster_cpu_s($server->node), time);
		sleep $window{$interval};
		my @c1 = (cpu_s($guard), cpu_s($net), cluster_cpu_s($node), cluster_cpu_s($server->node), time);
		my $wall = $c1[4] - $c0[4];
		my $sessions = target_sessions() - $s0 - 1;
		my %r = (n => $n, interval => $interval, wall => $wall,
			guard => ($c1[0] - $c0[0]) / $wall * 100, net => ($c1[1] - $c0[1]) / $wall * 100,
			control => ($c1[2] - $c0[2]) / $wall * 100, target => ($c1[3] - $c0[3]) / $wall * 100,
			sessions => $sessions / $wall * 60);
		@r{qw(guard_rss guard_pss)} = mem_mb($guard);
		@r{qw(net_rss net_pss)} = mem_mb($net);
		($r{ctx1}) = DfeTest::memory_context_bytes($node, $guard, $ctx_name);
		$r{ctx0} = $ctx0;
		$base{$interval} //= \%r if $n == 0;
		push @rows, \%r;
	}
}
my ($ctx_last, $grand_last) = DfeTest::memory_context_bytes($node, $guard, $ctx_name);

report("idle control database per remote target: PostgreSQL %s targets (databases on one server), "
	  . "migration_poll_interval 5 s, sync_poll_interval 60 s\n", $major);
report("CPU as %% of one core (control: the whole control cluster, workers included; target: the whole target server);\n"
	  . "RSS/PSS in MB; +name: the increment over 0 targets at the same interval, per target\n");
report("%7s %8s %6s | %6s %6s %8s %7s | %9s %9s | %9s %9s | %7s %7s %8s %7s | %s\n",
	'targets', 'interval', 'wall s', 'guard', 'net', 'control', 'target', 'guard RSS', 'guard PSS',
	'net RSS', 'net PSS', '+guard', '+net', '+control', '+target', 'target sessions/min');
for my $r (@rows)
{
	my $b = $base{ $r->{interval} };
	my $per = sub { my ($k) = @_; return $r->{n} && $b ? sprintf('%.3f', ($r->{$k} - $b->{$k}) / $r->{n}) : '-' };
	report("%7d %8s %6.0f | %6.3f %6.3f %8.3f %7.3f | %9.1f %9.1f | %9.1f %9.1f | %7s %7s %8s %7s | %.1f\n",
		$r->{n}, $r->{interval}, $r->{wall}, @$r{qw(guard net control target guard_rss guard_pss net_rss net_pss)},
		$per->('guard'), $per->('net'), $per->('control'), $per->('target'), $r->{sessions});
}
report("guard's \"%s\" context (with its children), bytes at each window's start -> end:\n", $ctx_name);
report("  %2d targets, %3s: %s -> %s\n", $_->{n}, $_->{interval}, $_->{ctx0} // '?', $_->{ctx1} // '?') for @rows;
report("  whole run: %s -> %s bytes; the guard's grand total at the end %s bytes\n",
	$ctx_first // '?', $ctx_last // '?', $grand_last // '?');
$server->node->stop;
$node->stop;
