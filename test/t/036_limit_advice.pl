# Limit advice: the WAL written per day measured from the
# guard's samples of pg_current_wal_lsn(), the disk (here a quota set with
# dfe_airbyte.disk_free_override), the recommended limit by the README's
# formula, and config_problems when the bound exceeds the disk's headroom or
# nothing bounds the slot.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use DfeTest;

my $GB = 1024 * 1024 * 1024;
my $node = DfeTest::new_node('advice', conf => <<"CONF");
dfe_airbyte.check_interval = 1s
dfe_airbyte.disk_free_override = 7GB
dfe_airbyte.max_slot_wal_size = 10GB
dfe_airbyte.slot_limit_action = warn
CONF
DfeTest::wait_for_worker($node);
sub sql { return $node->safe_psql('postgres', $_[0]); }

sql(q{SELECT pg_create_logical_replication_slot('airbyte_slot', 'pgoutput')});
# recreate only once the slot exists (recreate would create a missing one)
sql(q{ALTER SYSTEM SET dfe_airbyte.slot_limit_action = 'recreate'});
$node->reload;
ok(DfeTest::poll_until($node, q{SELECT limit_action FROM dfe_airbyte_slot_guard_settings()}, 'recreate'), 'recreate');
ok(DfeTest::poll_until($node, q{SELECT count(*) > 0 FROM dfe_airbyte.slot_samples WHERE current_lsn IS NOT NULL}, 't'),
	'the guard samples the server\'s WAL position');

is(sql(q{SELECT disk_source || ' ' || disk_free_bytes || ' ' || coalesce(disk_total_bytes::text, '-') FROM dfe_airbyte.slot_limit_advice}),
	"dfe_airbyte.disk_free_override " . (7 * $GB) . " -", 'the quota is the free space');
# headroom = free + what the slot holds - 5 GiB (no disk size known)
is(sql(q{SELECT reserve_bytes = 5::bigint * 1024^3 AND headroom_bytes = disk_free_bytes + slot_retained_bytes - reserve_bytes
FROM dfe_airbyte.slot_limit_advice}), 't', 'reserve 5 GiB, headroom by the formula');

# a sample from two hours ago at the start of the WAL: the rate is the WAL
# written since, per day
sql(q{INSERT INTO dfe_airbyte.slot_samples (sampled_at, slot_name, active, retained_bytes, current_lsn)
VALUES (now() - interval '2 hours', 'airbyte_slot', false, 0, '0/0')});
my ($per_day, $from, $rec, $headroom, $verdict, $expect_day) = split /\|/, sql(q{SELECT wal_bytes_per_day, wal_measured_from,
	recommended_limit_bytes, headroom_bytes, verdict,
	(SELECT (current_lsn - '0/0') / date_part('epoch', sampled_at - (now() - interval '2 hours')) * 86400
	   FROM dfe_airbyte.slot_samples ORDER BY sampled_at DESC LIMIT 1)
FROM dfe_airbyte.slot_limit_advice});
is($from, 'slot_samples', 'measured from the samples');
cmp_ok(abs($per_day - $expect_day), '<=', 0.01 * $expect_day + 1000, 'WAL per day: the first and last samples\' LSNs over their time');
cmp_ok($per_day, '>', 0, 'some WAL a day');
# min(max(2 days, 1 GiB), headroom / 2), whole MB
my $two_days = 2 * $per_day > $GB ? 2 * $per_day : $GB;
my $want = int((($headroom / 2 < $two_days) ? $headroom / 2 : $two_days) / (1024 * 1024)) * 1024 * 1024;
is($rec, $want, 'recommended: two days of WAL at most half the headroom');
is($verdict, 'exceeds_headroom', 'a 10 GB limit on a 7 GB quota: the disk fills first');
like(sql(q{SELECT problem || ' / ' || hint FROM dfe_airbyte.config_problems WHERE object = 'disk headroom'}),
	qr/^the slot may retain 10 GB before anything acts, more than the disk's headroom .* Lower dfe_airbyte\.max_slot_wal_size to \d+MB/,
	'config_problems: the limit exceeds the headroom');

# a big enough disk, but a limit that only warns and no server backstop
sql(q{ALTER SYSTEM SET dfe_airbyte.disk_free_override = '500GB'});
sql(q{ALTER SYSTEM SET dfe_airbyte.slot_limit_action = 'warn'});
$node->reload;
ok(DfeTest::poll_until($node, q{SELECT verdict FROM dfe_airbyte.slot_limit_advice}, 'unbounded'),
	'warn bounds nothing: unbounded');
like(sql(q{SELECT problem FROM dfe_airbyte.config_problems WHERE object = 'max_slot_wal_keep_size' AND problem LIKE 'nothing bounds%'}),
	qr/nothing bounds the WAL the Airbyte slot may retain/, 'config_problems: nothing bounds the slot');
is(sql(q{SELECT count(*) FROM dfe_airbyte.config_problems WHERE object = 'disk headroom'}), '0',
	'no headroom row then');

# a server backstop that fits: ok once the limit holds two days
sql(q{ALTER SYSTEM SET max_slot_wal_keep_size = '60GB'});
$node->reload;
ok(DfeTest::poll_until($node, q{SELECT verdict FROM dfe_airbyte.slot_limit_advice}, 'ok'),
	'max_slot_wal_keep_size bounds it, two days fit: ok');
is(sql(q{SELECT count(*) FROM dfe_airbyte.config_problems WHERE problem LIKE 'nothing bounds%' OR object = 'disk headroom'}),
	'0', 'and config_problems says nothing about it');

$node->stop;
done_testing();
