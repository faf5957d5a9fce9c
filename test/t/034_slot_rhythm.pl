# Airbyte's rhythm (README, "Airbyte's rhythm: growth and inactivity over
# whole sync intervals"): Airbyte connects once per
# scheduled sync, reads, and confirms at the START of the next sync what it
# read in the previous one, then leaves; so the slot is inactive between
# syncs and its retained WAL is a sawtooth over the schedule.  A day of
# 15-minute syncs (96), each by pg_recvlogical (a walsender, shown `active`
# as Airbyte's is) with --endpos at the position the previous sync reached:
# the slot must never be `inactive` or `warning`, and its time to limit must
# stay sane (never negative, never "a few intervals" right before a sync);
# once the consumer stops for several intervals it is `inactive` and its
# growth shows.
#
# Simulated time: the slot guard judges the slot only by the times it
# recorded (slot_samples.sampled_at, slot_state's first_seen_at and
# last_active_at) against now().  The test samples itself
# (dfe_airbyte_check_slots_now(), the guard's own sampling; the worker's
# check_interval is an hour) and moves that recorded history into the past
# to let time pass, so the day takes as long as its syncs and writes, not 24
# hours, and no step depends on how fast the machine is.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep time);
use IPC::Run;
use DfeTest;

my $interval = 15 * 60;    # dfe_airbyte.sync_interval, seconds: Airbyte's every 15 minutes
my $cycles = $ENV{DFE_RHYTHM_CYCLES} // 96;
my $limit_mb = 16;

my $node = DfeTest::new_node('rhythm', conf => <<"CONF");
# the test samples itself, at simulated times (see above)
dfe_airbyte.check_interval = 1h
dfe_airbyte.sync_interval = 15min
dfe_airbyte.slot_inactive_intervals = 3
dfe_airbyte.max_slot_wal_size = ${limit_mb}MB
dfe_airbyte.slot_limit_action = warn
# the test writes the WAL itself, a steady amount per interval: autovacuum's
# bursts (every page of the table again, after each CHECKPOINT) are real
# growth while the slot holds them, and would make the time to limit short
# for a while, rightly
autovacuum = off
CONF
DfeTest::wait_for_worker($node);

sub sql { return $node->safe_psql('postgres', $_[0]); }
# the answer of the last statement (a check returns a row of no columns first)
sub last_line { return (split /\n/, $_[0])[-1] // ''; }

# The simulated clock: now() plus what the test let pass.  Letting $s seconds
# pass moves every time the guard recorded $s seconds into the past: the
# samples of the last 10 intervals only (the view looks back 7.5), so that
# these updates write about the same WAL each time; rewriting every sample
# would add WAL that grows with the day, and the slot retains it.
my $passed = 0;
sub sim_now { return time + $passed; }
sub let_pass
{
	my ($s) = @_;
	$passed += $s;
	sql(qq{UPDATE dfe_airbyte.slot_samples SET sampled_at = sampled_at - interval '$s seconds'
WHERE sampled_at > now() - 10 * interval '$interval seconds';
UPDATE dfe_airbyte.slot_state SET first_seen_at = first_seen_at - interval '$s seconds',
       last_active_at = last_active_at - interval '$s seconds',
       condition_since = condition_since - interval '$s seconds',
       notified_at = notified_at - interval '$s seconds'});
}

sql(q{CREATE TABLE public.orders (id bigserial PRIMARY KEY, note text)});
sql(q{CREATE PUBLICATION airbyte_publication FOR TABLE public.orders});
sql(q{SELECT pg_create_logical_replication_slot('airbyte_slot', 'pgoutput')});

is(sql(q{SELECT sync_interval, interval_source, inactive_intervals FROM dfe_airbyte_slot_rhythm()}),
	"00:15:00|dfe_airbyte.sync_interval|3", 'the schedule comes from dfe_airbyte.sync_interval');
is(sql(q{SELECT inactive_after FROM dfe_airbyte_slot_guard_settings()}), '00:45:00',
	'inactive after 3 sync intervals');

# one "sync": what Airbyte does when the schedule fires
my $connstr = $node->connstr('postgres');
sub sync_to
{
	my ($endpos) = @_;
	my ($out, $err);
	my $ok = IPC::Run::run(
		[ 'pg_recvlogical', '-d', $connstr, '-S', 'airbyte_slot', '--start', '-n',
		  '-o', 'proto_version=1', '-o', 'publication_names=airbyte_publication',
		  '-E', $endpos, '-f', '/dev/null' ],
		'>', \$out, '2>', \$err, IPC::Run::timeout(60));
	diag("pg_recvlogical: $err") unless $ok;
	return $ok;
}

# The service writes about 250 kB of WAL per half interval (WAL never stops
# between syncs).  The CHECKPOINT logs a running-transactions record, so the
# slot's restart_lsn can follow what the consumer confirms at once.
sub write_wal
{
	return sql(q{INSERT INTO public.orders (note) SELECT repeat('x', 100) FROM generate_series(1, 500);
CHECKPOINT;
SELECT pg_current_wal_lsn()});
}

# a check of the slot guard, then the slot's row as it sees it
my $ttl_sql = q{SELECT FROM dfe_airbyte_check_slots_now();
SELECT status, coalesce(extract(epoch FROM time_to_limit)::bigint::text, ''),
       retained_bytes, coalesce(peak_retained_bytes::text, '')
FROM dfe_airbyte.replication_slot_health WHERE slot_name = 'airbyte_slot'};

my $read_upto = sql('SELECT pg_current_wal_lsn()');
my (%statuses, @bad, $min_ttl_s, $syncs_ok, $last_sync_at);
$syncs_ok = 0;
sub judge
{
	my ($when) = @_;
	my ($status, $ttl, $retained, $peak) = split /\|/, last_line(sql($ttl_sql));
	note("$when: $status ttl=$ttl retained=$retained peak=$peak") if $ENV{DFE_RHYTHM_DEBUG};
	$statuses{$status}++;
	push @bad, "$when: status $status (retained $retained)" if $status ne 'ok';
	if ($ttl ne '')
	{
		push @bad, "$when: negative time to limit $ttl" if $ttl < 0;
		$min_ttl_s = $ttl if !defined $min_ttl_s || $ttl < $min_ttl_s;
	}
}
for my $i (1 .. $cycles)
{
	my $now_lsn = sql('SELECT pg_current_wal_lsn()');
	# the sync: confirm what the previous one read, read up to now, leave
	$syncs_ok++ if sync_to($read_upto);
	$read_upto = $now_lsn;
	$last_sync_at = sim_now();
	judge("sync $i");
	write_wal();
	let_pass($interval / 2);
	sql('SELECT FROM dfe_airbyte_check_slots_now()');    # the guard's checks go on between syncs
	write_wal();
	# and just before the next sync, at the sawtooth's peak
	let_pass($interval / 2 - 10);
	judge('before sync ' . ($i + 1));
	let_pass(10);
}
is($syncs_ok, $cycles, "all $cycles syncs of the simulated day ran");
is_deeply(\@bad, [], 'never inactive, warning or a negative time to limit while Airbyte syncs')
  or diag(explain(\%statuses));
# a healthy sawtooth does not grow: no time to limit, or a distant one.  A
# fit over the rise between two syncs would say ~30 intervals here.
ok(!defined $min_ttl_s || $min_ttl_s >= 60 * $interval,
	'time to limit stays sane over the sawtooth (none, or more than 60 intervals)')
  or diag("shortest time to limit: $min_ttl_s s");
note('shortest time to limit over the day: ' . ($min_ttl_s // 'none') . ' s');
is(sql(q{SELECT status FROM dfe_airbyte.replication_slot_health WHERE slot_name = 'airbyte_slot'}),
	'ok', 'ok at the end of the day');
cmp_ok(sql(q{SELECT count(*) FROM dfe_airbyte.slot_samples WHERE slot_name = 'airbyte_slot' AND current_lsn IS NOT NULL}),
	'>', $cycles, 'samples carry the server\'s WAL position');

# Airbyte stops (connection disabled, an outage): no consumer, WAL goes on
my $inactive_at;
my $grows = 0;
for (1 .. 20)
{
	write_wal();
	let_pass($interval / 2);
	write_wal();
	my ($status, $growth, $ttl) = split /\|/, last_line(sql(q{SELECT FROM dfe_airbyte_check_slots_now();
SELECT status, coalesce(growth_bytes_per_hour, 0) > 0, time_to_limit IS NOT NULL
FROM dfe_airbyte.replication_slot_health WHERE slot_name = 'airbyte_slot'}));
	$inactive_at //= sim_now() if $status eq 'inactive';
	$grows = 1 if $growth eq 't' && $ttl eq 't';
	last if defined $inactive_at && $grows;
	let_pass($interval / 2);
}
ok(defined $inactive_at, 'no consumer for several intervals: inactive');
cmp_ok(($inactive_at // 0) - $last_sync_at, '>=', 3 * $interval,
	'not inactive before 3 sync intervals without a consumer');
ok($grows, 'the peaks rise: growth and a time to limit are shown');
like(sql(q{SELECT hint FROM dfe_airbyte.replication_slot_health WHERE slot_name = 'airbyte_slot'}),
	qr/No consumer has used slot airbyte_slot for more than 00:45:00/, 'the hint says for how long');

# the consumer comes back: ok again at its next sync
sync_to(sql('SELECT pg_current_wal_lsn()'));
sql('SELECT FROM dfe_airbyte_check_slots_now()');
is(sql(q{SELECT status FROM dfe_airbyte.replication_slot_health WHERE slot_name = 'airbyte_slot'}),
	'ok', 'a sync makes it ok again');

$node->stop;
done_testing();
