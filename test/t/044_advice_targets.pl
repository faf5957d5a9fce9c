# Limit advice and slot growth per target, on real servers of PostgreSQL
# 15-18 with Azure's grants (test/lib/DfeTarget.pm): slot_limit_advice has a
# row per remote target whose disk is its disk_size less the use the slot
# guard measured there (src/slot_remote.c, src/slot_health.c); the health
# view fits a remote slot's growth from the target's own samples as it does
# the local one's and judges its status by the same rules (warning, inactive)
# with the target's own settings; config_problems reads the same disk facts and reports a
# target within Azure's read-only rule (95 % used or under 5 GiB free).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use DfeTest;
use DfeTarget;

my @majors = DfeTarget::majors();
plan skip_all => 'no target server of PostgreSQL 15-18 here' unless @majors;
my @targets = map { DfeTarget->new("advice$_", major => $_) } @majors;
my $dir = PostgreSQL::Test::Utils::tempdir();
my $passfile = DfeTarget::write_passfile("$dir/pgpass", @targets);
my $TB = 1024 * 1024 * 1024 * 1024;

my $node = DfeTest::new_node('control', conf => <<"CONF");
dfe_airbyte.passfile = '$passfile'
dfe_airbyte.check_interval = 1s
dfe_airbyte.target_timeout = 5s
CONF

sub lit { my ($s) = @_; $s =~ s/'/''/g; return "'$s'" }
sub sql { return $node->safe_psql('postgres', $_[0]) }

# a 1TB disk, an 8GB limit that recreates, syncs every 2 s (growth is
# fitted over whole sync intervals)
for my $t (@targets)
{
	sql("SELECT dfe_airbyte_add_target('$t->{name}', ${\ lit($t->conninfo)},
		'{\"slot_name\": \"airbyte_slot\", \"max_slot_wal_size\": \"8GB\", \"slot_limit_action\": \"recreate\",
		  \"disk_size\": \"1TB\", \"sync_interval\": \"2s\"}')");
}
my $in = join(', ', map { "'$_->{name}'" } @targets);

# --- the advice: the disk from disk_size less the measured use ------------
ok(DfeTest::poll_until($node, "SELECT count(*) FROM dfe_airbyte.slot_limit_advice
	WHERE target IN ($in) AND disk_free_bytes IS NOT NULL", scalar(@targets), 120),
	'each remote target has its advice row once the guard measured its disk');
is(sql('SELECT string_agg(target, \',\' ORDER BY ord) FROM (SELECT target, row_number() OVER () AS ord
	FROM dfe_airbyte.slot_limit_advice) a'), join(',', 'local', sort map { $_->{name} } @targets),
	'local first, then the remote targets');
for my $t (@targets)
{
	my $used = $t->node->safe_psql('postgres', q{SELECT sum(pg_database_size(oid)) FROM pg_database WHERE datallowconn});
	my ($source, $total, $free, $reserve, $limit, $verdict) = split /\|/, sql("SELECT disk_source, disk_total_bytes,
		disk_free_bytes, reserve_bytes, current_limit_bytes, verdict FROM dfe_airbyte.slot_limit_advice WHERE target = '$t->{name}'");
	is("$source $total $limit", "disk_size $TB " . (8 * 1024**3), "PG$t->{major}: disk_size is the total, the limit the target's");
	cmp_ok($free, '<=', $TB - $used, "PG$t->{major}: free is disk_size less its databases (and WAL)");
	cmp_ok($free, '>', $TB - 10 * 1024**3, '... and not much less');
	is($reserve, int($TB / 20), '... Azure\'s reserve: 5 % of a 1TB disk');
	is($verdict, 'not_measured', '... no verdict before an hour of samples');
}

# an hour of samples: a sample two hours old at the start of the WAL
my $t0 = $targets[0];
sql("INSERT INTO dfe_airbyte.slot_samples (target, sampled_at, slot_name, active, retained_bytes, current_lsn)
	VALUES ('$t0->{name}', now() - interval '2 hours', 'airbyte_slot', false, 0, '0/0')");
is(sql("SELECT wal_measured_from || ' ' || (wal_bytes_per_day > 0) || ' ' || verdict FROM dfe_airbyte.slot_limit_advice
	WHERE target = '$t0->{name}'"), 'slot_samples true ok', "PG$t0->{major}: WAL per day from the target's samples, a verdict");
is(sql("SELECT wal_measured_from IS DISTINCT FROM 'slot_samples' FROM dfe_airbyte.slot_limit_advice WHERE target = 'local'"), 't',
	'... from its own samples only, not local\'s');

# --- growth of a remote slot (no consumer: it retains all new WAL) --------
my $growth = "SELECT count(*) FROM dfe_airbyte.replication_slot_health
	WHERE target IN ($in) AND slot_name = 'airbyte_slot' AND growth_bytes_per_hour > 0 AND time_to_limit IS NOT NULL";
my $deadline = time + 180;
my $got = 0;
while (time < $deadline)
{
	$_->node->safe_psql('service', q{SELECT pg_logical_emit_message(false, 'dfe', repeat('x', 200000))}) for @targets;
	$got = sql($growth);
	last if $got == @targets;
	select(undef, undef, undef, 0.5);
}
is($got, scalar(@targets), 'each remote slot\'s growth and time to its limit, from its own samples');
like(sql("SELECT limit_bytes || ' ' || sync_interval FROM dfe_airbyte.replication_slot_health
	WHERE target = '$t0->{name}' AND slot_name = 'airbyte_slot'"), qr/^8589934592 00:00:02$/,
	'... over the target\'s limit and sync interval');

# --- a remote slot judged by the local rules, with its target's settings --
# no consumer for slot_inactive_intervals (3) x its sync_interval (2 s): inactive
ok(DfeTest::poll_until($node, "SELECT count(*) FROM dfe_airbyte.replication_slot_health
	WHERE target IN ($in) AND slot_name = 'airbyte_slot' AND status = 'inactive'", scalar(@targets), 120),
	'each remote slot without a consumer is inactive after 3 of its sync intervals');
like(sql("SELECT hint FROM dfe_airbyte.replication_slot_health WHERE target = '$t0->{name}'"),
	qr/^No consumer has used slot airbyte_slot of target $t0->{name} for more than 00:00:06\. Check that the Airbyte connection/,
	'... with a hint naming the target');
for my $t (grep { $_->major >= 17 } @targets)
{
	is(sql("SELECT inactive_since IS NOT NULL AND invalidation_reason IS NULL FROM dfe_airbyte.replication_slot_health
		WHERE target = '$t->{name}'"), 't', "PG$t->{major}: inactive_since and invalidation_reason from the guard's samples");
}
# over its own warning fraction of its own limit (16 times what it retains
# now, warned at 1 %): warning, which comes before inactive
my $retained = sql("SELECT retained_bytes FROM dfe_airbyte.replication_slot_health WHERE target = '$t0->{name}'");
my $limit_mb = int($retained * 16 / 1024 / 1024) + 1;
sql("UPDATE dfe_airbyte.targets SET settings = settings
	|| '{\"max_slot_wal_size\": \"${limit_mb}MB\", \"slot_warning_fraction\": \"0.01\"}' WHERE name = '$t0->{name}'");
is(sql("SELECT status || ' ' || limit_bytes FROM dfe_airbyte.replication_slot_health WHERE target = '$t0->{name}'"),
	'warning ' . ($limit_mb * 1024 * 1024), "PG$t0->{major}: over the target's warning fraction of its limit: warning");
like(sql("SELECT hint FROM dfe_airbyte.replication_slot_health WHERE target = '$t0->{name}'"),
	qr/^The Airbyte slot of target $t0->{name} retains \d+% of target $t0->{name}'s max_slot_wal_size \(\d+ [kM]B\)\. .* per target $t0->{name}'s slot_limit_action \(recreate\)\.$/,
	'... with a hint naming the target and its settings');
is(sql("SELECT string_agg(DISTINCT status, ',') FROM dfe_airbyte.replication_slot_health
	WHERE target IN ($in) AND target <> '$t0->{name}'"), 'inactive', '... the other targets still inactive')
  if @targets > 1;
sql("UPDATE dfe_airbyte.targets SET settings = settings - 'slot_warning_fraction'
	|| '{\"max_slot_wal_size\": \"8GB\"}' WHERE name = '$t0->{name}'");

# --- config_problems: a disk within Azure's read-only rule ----------------
# 5130MB: 95 % used or 5 GiB free leaves 10 MB, less than any server uses
sql("UPDATE dfe_airbyte.targets SET settings = settings || '{\"disk_size\": \"5130MB\"}' WHERE name = '$t0->{name}'");
like(sql("SELECT severity || ' ' || problem FROM dfe_airbyte.config_problems
	WHERE target = '$t0->{name}' AND object = 'disk headroom'"),
	qr/^error the databases and WAL use \d+ MB of disk_size 5130 MB: past Azure's read-only point \(10 MB\)/,
	"PG$t0->{major}: past Azure's read-only point, from the measured use");
is(sql("SELECT disk_total_bytes || ' ' || headroom_bytes || ' ' || verdict FROM dfe_airbyte.slot_limit_advice
	WHERE target = '$t0->{name}'"), (5130 * 1024 * 1024) . ' 0 exceeds_headroom', '... and the advice says the same');
is(sql("SELECT count(*) FROM dfe_airbyte.config_problems WHERE object = 'disk headroom' AND target <> '$t0->{name}'"),
	'0', '... only for that target');

# local is as before: one row, its own disk
is(sql("SELECT disk_source FROM dfe_airbyte.slot_limit_advice WHERE target = 'local'"), 'statvfs', 'local: statvfs');
is(sql("SELECT count(*) FROM dfe_airbyte_disk_space()"), '1', 'dfe_airbyte_disk_space() is local\'s');

# the cost of the views with every target (a measurement, not a check)
for my $view (qw(slot_limit_advice replication_slot_health))
{
	my $ms = sql("EXPLAIN (ANALYZE, FORMAT JSON) SELECT * FROM dfe_airbyte.$view") =~ /"Execution Time": ([\d.]+)/ ? $1 : '?';
	diag "$view: $ms ms with local and " . scalar(@targets) . ' remote target(s)';
}
done_testing();
