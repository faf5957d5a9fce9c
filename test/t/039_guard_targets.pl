# The slot guard over remote targets (src/slot_remote.c) on real servers of
# PostgreSQL 15-18 (test/lib/DfeTarget.pm), beside three faulty targets: a
# listener that accepts and never answers, a port nobody listens on, and a
# host name that does not resolve.  The faulty ones are reported
# unreachable (once, not every check) and cost the healthy ones nothing:
# those keep being sampled every check and their slot conditions are acted
# on.  Then faults of a healthy target: its slot dropped behind the guard's
# back, a server restart, a server down and back.
use strict;
use warnings;
use IO::Socket::INET;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use DfeTest;
use DfeTarget;

my @majors = DfeTarget::majors();
plan skip_all => 'no target server of PostgreSQL 15-18 here' unless @majors;
my @targets = map { DfeTarget->new("guard$_", major => $_) } @majors;
my $dir = PostgreSQL::Test::Utils::tempdir();
my $passfile = DfeTarget::write_passfile("$dir/pgpass", @targets);

my ($interval, $ttimeout, $wait) = DfeTest::target_timing();
my $node = DfeTest::new_node('control', conf => <<"CONF");
dfe_airbyte.passfile = '$passfile'
dfe_airbyte.check_interval = $interval
dfe_airbyte.target_timeout = $ttimeout
CONF

sub lit { my ($s) = @_; $s =~ s/'/''/g; return "'$s'" }

my $small = $targets[0];    # its Airbyte slot may retain 1MB: passed as soon as WAL is written
for my $t (@targets)
{
	my $limit = $t == $small ? '1MB' : '8GB';
	$node->safe_psql('postgres', "SELECT dfe_airbyte_add_target('$t->{name}', ${\ lit($t->conninfo)},
		'{\"slot_name\": \"airbyte_slot\", \"max_slot_wal_size\": \"$limit\"}')");
}

# the faulty ones are registered behind dfe_airbyte_add_target()'s back: it would refuse them
my $hang = IO::Socket::INET->new(Listen => 16, LocalAddr => '127.0.0.1', LocalPort => 0, Proto => 'tcp')
  or die "listen: $!";
my $hang_port = $hang->sockport;
my $refused_port = PostgreSQL::Test::Cluster::get_free_port();
my %faulty = (
	hang    => "host=127.0.0.1 port=$hang_port dbname=service user=dfe_airbyte_remote",
	refused => "host=127.0.0.1 port=$refused_port dbname=service user=dfe_airbyte_remote",
	nodns   => "host=dfe-airbyte-test.invalid port=5432 dbname=service user=dfe_airbyte_remote",
);
$node->safe_psql('postgres', "INSERT INTO dfe_airbyte.targets (name, conninfo) VALUES "
	  . join(', ', map { "('$_', ${\ lit($faulty{$_})})" } sort keys %faulty));

my $healthy = join(',', map { $_->{name} } @targets);
ok(DfeTest::poll_until($node, q{SELECT string_agg(target || ':' || reachable, ',' ORDER BY target)
	FROM dfe_airbyte.guard_targets},
	join(',', sort(map({ "$_->{name}:true" } @targets), map({ "$_:false" } keys %faulty))), $wait),
	'each target reached or not, as it is');
is($node->safe_psql('postgres', q{SELECT string_agg(target || ' ' || coalesce(last_errcode, '?'), ',' ORDER BY target)
	FROM dfe_airbyte.guard_targets WHERE NOT reachable}) =~ /^hang 08\w{3},nodns 08\w{3},refused 08\w{3}$/ ? 1 : 0, 1,
	'unreachable with a connection SQLSTATE');

# the healthy ones keep being sampled every check while the others hang
my $rounds_sql = "SELECT count(DISTINCT sampled_at) FROM dfe_airbyte.slot_samples WHERE target = '$targets[-1]{name}'";
my $before = $node->safe_psql('postgres', $rounds_sql);
ok(DfeTest::poll_until($node, "SELECT ($rounds_sql) >= $before + 3", 't', $wait),
	'a healthy target is sampled check after check beside the hanging one');

# a check's copies (queries, errors) are given back, not kept: over ten more
# checks of healthy and faulty targets the guard's memory for its targets
# does not grow (pg_log_backend_memory_contexts)
my $guard = $node->safe_psql('postgres', "SELECT pid FROM dfe_airbyte.workers WHERE worker = 'guard'");
my ($mem0) = DfeTest::memory_context_bytes($node, $guard, 'dfe_airbyte remote slot guard');
$before = $node->safe_psql('postgres', $rounds_sql);
ok(DfeTest::poll_until($node, "SELECT ($rounds_sql) >= $before + 10", 't', $wait), 'ten more checks');
my ($mem1) = DfeTest::memory_context_bytes($node, $guard, 'dfe_airbyte remote slot guard');
diag('the guard\'s remote slot guard context: ' . ($mem0 // '?') . ' bytes, ten checks later ' . ($mem1 // '?'));
ok(defined $mem0 && defined $mem1 && $mem1 == $mem0, "the guard's memory for its targets stays flat over ten checks");
is($node->safe_psql('postgres', q{SELECT string_agg(target, ',' ORDER BY target) FROM dfe_airbyte.events
	WHERE kind = 'target_unreachable'}), 'hang,nodns,refused', 'one unreachable event per faulty target, not one per check');
unlike($node->safe_psql('postgres', q{SELECT string_agg(detail, ' ') FROM dfe_airbyte.events WHERE kind = 'target_unreachable'}),
	qr/password|sekrit/i, '... without a secret');

# the health view: a row per remote slot from the latest samples, the faulty targets unreachable
is($node->safe_psql('postgres', "SELECT string_agg(target || ':' || slot_name || ':' || status, ',' ORDER BY target)
	FROM dfe_airbyte.replication_slot_health WHERE target IN ('" . join("','", map { $_->{name} } @targets[1 .. $#targets]) . "')"),
	join(',', map { "$_->{name}:airbyte_slot:ok" } @targets[1 .. $#targets]), 'remote slots in the health view')
  if @targets > 1;
is($node->safe_psql('postgres', q{SELECT string_agg(target || ':' || status, ',' ORDER BY target)
	FROM dfe_airbyte.replication_slot_health WHERE target IN ('hang', 'nodns', 'refused')}),
	'hang:unreachable,nodns:unreachable,refused:unreachable', 'the faulty targets are unreachable in the health view');
like($node->safe_psql('postgres', q{SELECT hint FROM dfe_airbyte.replication_slot_health WHERE target = 'refused'}),
	qr/cannot reach target refused .*last reached never/s, '... with a hint saying since when');

# the small target's slot passes its limit (no consumer): acted on with its own settings
my $t0 = time;
$small->node->safe_psql('service', q{SELECT pg_logical_emit_message(false, 'dfe', repeat('x', 1000000)) FROM generate_series(1, 3)});
ok(DfeTest::poll_until($node, "SELECT count(*) > 0 FROM dfe_airbyte.events
	WHERE kind = 'slot_limit_exceeded' AND target = '$small->{name}'", 't', $wait),
	"PG$small->{major}: over its own limit, reported beside the hanging targets");
diag(sprintf('reaction of a healthy target beside three faulty ones: %.1f s (check_interval %s, target_timeout %s)', time - $t0, $interval, $ttimeout));
is($node->safe_psql('postgres', "SELECT count(*) FROM dfe_airbyte.events
	WHERE kind = 'slot_limit_exceeded' AND target <> '$small->{name}'"), '0', 'no other target is over its limit');
is($node->safe_psql('postgres', "SELECT status FROM dfe_airbyte.replication_slot_health WHERE target = '$small->{name}'"),
	'critical', '... and critical in the health view');

SKIP:
{
	skip 'one target server only', 4 unless @targets > 1;
	my $t = $targets[1];
	# the slot dropped behind the guard's back: missing, then restored
	$t->node->safe_psql('service', "SELECT pg_drop_replication_slot('airbyte_slot')");
	ok(DfeTest::poll_until($node, "SELECT count(*) > 0 FROM dfe_airbyte.events
		WHERE kind = 'slot_missing' AND target = '$t->{name}'", 't', $wait), "PG$t->{major}: a dropped slot is reported");
	is($node->safe_psql('postgres', "SELECT slot_name || ':' || status FROM dfe_airbyte.replication_slot_health
		WHERE target = '$t->{name}'"), 'airbyte_slot:lost', '... as lost in the health view');
	$t->node->safe_psql('service', "SELECT pg_create_logical_replication_slot('airbyte_slot', 'pgoutput')");
	ok(DfeTest::poll_until($node, "SELECT count(*) > 0 FROM dfe_airbyte.events
		WHERE kind = 'slot_restored' AND target = '$t->{name}'", 't', $wait), '... and its return');

	# a server restart between two checks: the kept connection is reopened
	my $last = $node->safe_psql('postgres', "SELECT max(sampled_at) FROM dfe_airbyte.slot_samples WHERE target = '$t->{name}'");
	$t->node->restart;
	ok(DfeTest::poll_until($node, "SELECT max(sampled_at) > '$last'::timestamptz + interval '2 seconds'
		FROM dfe_airbyte.slot_samples WHERE target = '$t->{name}'", 't', $wait), "PG$t->{major}: sampled again after a restart");
}

# a server down, then back: unreachable, then reachable again (an event each)
my $down = $targets[-1];
my $count = sub {
	my ($kind) = @_;
	return $node->safe_psql('postgres', "SELECT count(*) FROM dfe_airbyte.events WHERE kind = '$kind' AND target = '$down->{name}'");
};
my ($unreach, $reach) = ($count->('target_unreachable'), $count->('target_reachable'));
$down->node->stop;
ok(DfeTest::poll_until($node, "SELECT count(*) FROM dfe_airbyte.events
	WHERE kind = 'target_unreachable' AND target = '$down->{name}'", $unreach + 1, $wait), "PG$down->{major}: down, unreachable");
$down->node->start;
ok(DfeTest::poll_until($node, "SELECT count(*) FROM dfe_airbyte.events
	WHERE kind = 'target_reachable' AND target = '$down->{name}'", $reach + 1, $wait), '... back, reachable');
is($node->safe_psql('postgres', "SELECT reachable AND unreachable_since IS NULL AND last_reached_at > now() - interval '1 minute'
	FROM dfe_airbyte.guard_targets WHERE target = '$down->{name}'"), 't', '... and so recorded');

# the local slot guard went on as in 0.2.0: no warning about the guard itself
unlike(slurp_file($node->logfile), qr/dfe_airbyte slot guard, target/, 'no target failed the guard with an error');

# terminate on a remote target: Airbyte's walsender there is ended by a role
# that only has pg_signal_backend (max_slot_wal_size 0: any retained WAL is over)
my $w = $targets[-1];
my $wpid = $w->start_airbyte_walsender;
$node->safe_psql('postgres', qq{UPDATE dfe_airbyte.targets
	SET settings = settings || '{"max_slot_wal_size": "0", "slot_limit_action": "terminate"}' WHERE name = '$w->{name}'});
ok(DfeTest::poll_until($node, "SELECT count(*) > 0 FROM dfe_airbyte.events WHERE kind = 'slot_walsender_terminated'
	AND target = '$w->{name}' AND detail LIKE 'terminated process $wpid,%'", 't', $wait),
	"PG$w->{major}: terminate ends Airbyte's walsender on the target");
ok(DfeTest::poll_until($w->node, "SELECT count(*) FROM pg_stat_activity WHERE pid = $wpid", '0', 60), '... it is gone');
$w->stop_airbyte_walsender;

# one check's sampling on demand, of any target
is($node->safe_psql('postgres', "SELECT slots FROM dfe_airbyte_check_slots_now('$targets[-1]{name}')"), '1',
	'dfe_airbyte_check_slots_now(target) samples a remote target');
my ($ret, $out, $err) = $node->psql('postgres', "\\set VERBOSITY verbose\nSELECT * FROM dfe_airbyte_check_slots_now('hang')");
like($err, qr/ERROR:  08\w{3}: could not sample the replication slots of target "hang"/, '... and says why it cannot reach one');
is($node->safe_psql('postgres', 'SELECT slots >= 0 FROM dfe_airbyte_check_slots_now()'), 't', '... local by default');

# which server answers: its identity recorded; another server behind the
# target's address (a restore, a new server) is reported
is($node->safe_psql('postgres', "SELECT system_identifier FROM dfe_airbyte.guard_targets WHERE target = '$small->{name}'"),
	$small->node->safe_psql('postgres', 'SELECT system_identifier FROM pg_control_system()'),
	"PG$small->{major}: the server's system identifier, read with pg_monitor's rights");
SKIP:
{
	skip 'one target server only', 1 unless @targets > 1;
	$node->safe_psql('postgres', "UPDATE dfe_airbyte.targets SET conninfo = ${\ lit($targets[1]->conninfo)}
		WHERE name = '$small->{name}'");
	ok(DfeTest::poll_until($node, "SELECT count(*) FROM dfe_airbyte.events WHERE kind = 'target_server_changed'
		AND target = '$small->{name}'", '1', $wait), 'another server behind a target is reported');
}

# a dropped target takes its history along
$node->safe_psql('postgres', "SELECT dfe_airbyte_drop_target('$small->{name}')");
is($node->safe_psql('postgres', "SELECT count(*) FROM dfe_airbyte.slot_samples WHERE target = '$small->{name}'"), '0',
	'dropping a target drops its samples');

close $hang;
done_testing();
