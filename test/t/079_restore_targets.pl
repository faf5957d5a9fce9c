# A remote target restored from another server's backup, or a new server
# behind its address (src/restore.h, src/slot_remote.c), on real servers of
# the oldest and newest PostgreSQL majors here (test/lib/DfeTarget.pm), one
# after the other, with a role that has only Azure Flexible Server's grants:
#   - a recreation that ends Airbyte's walsender on the target emits
#     slot_walsender_terminated with the target, as the local one does;
#   - another server on the target's port (another system identifier), its
#     slot over the limit under slot_limit_action = recreate: 'restored' in
#     the health view with a hint naming dfe_airbyte_confirm_restore('t'),
#     one target_server_changed event, nothing recreated, no refresh asked
#     of Airbyte and no deploy run for the target;
#   - dfe_airbyte_confirm_restore('t') by a member of dfe_airbyte_admin
#     records the new identifier (restore_confirmed): the guard recreates
#     the slot, Airbyte is asked for the re-sync, the queued deploy runs;
#   - a higher timeline with the same identifier (a failover) holds nothing.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use DfeTest;
use DfeTarget;
use FakeServer;

my @majors = DfeTarget::majors();
plan skip_all => 'no target server of PostgreSQL 15-18 here' unless @majors;
@majors = ($majors[0], $majors[-1]) if @majors > 2;
my $dir = PostgreSQL::Test::Utils::tempdir();
my $passfile = "$dir/pgpass";

my $fake = FakeServer->start;
$fake->config(job_pending_seconds => 0.1, job_running_seconds => 0.5);
my $conn_id = $fake->config->{connection_id};

my ($interval, $ttimeout, $wait) = DfeTest::target_timing();
my $node = DfeTest::new_node('control', conf => <<"CONF");
dfe_airbyte.passfile = '$passfile'
dfe_airbyte.check_interval = $interval
dfe_airbyte.target_timeout = $ttimeout
dfe_airbyte.airbyte_url = '@{[ $fake->url ]}'
dfe_airbyte.airbyte_client_id = 'test-client'
dfe_airbyte.airbyte_client_secret = 'test-secret-value'
dfe_airbyte.connection_id = '00000000-0000-0000-0000-00000000beef'
dfe_airbyte.http_max_retries = 0
CONF
$node->safe_psql('postgres', 'CREATE ROLE dba LOGIN IN ROLE dfe_airbyte_admin; CREATE ROLE nobody LOGIN');

sub sql { return $node->safe_psql('postgres', $_[0]); }
sub lit { my ($s) = @_; $s =~ s/'/''/g; return "'$s'" }
sub wait_for { my ($q, $want, $what) = @_; ok(DfeTest::poll_until($node, $q, $want, $wait), $what); }
sub grow_wal { $_[0]->node->safe_psql('service',
	q{SELECT pg_logical_emit_message(false, 'dfe', repeat('x', 1000000)) FROM generate_series(1, 3)}); }
sub refreshes { return scalar @{ $fake->requests(since => $_[0], method => 'POST', path => qr{/connections/refresh}) }; }

# the whole story on one target of that major
sub restore_story
{
	my ($major) = @_;
	my $tn = "rest$major";
	my $old = DfeTarget->new("${tn}_a", major => $major);
	DfeTarget::write_passfile($passfile, $old);
	my $rounds = "SELECT count(DISTINCT sampled_at) FROM dfe_airbyte.slot_samples WHERE target = '$tn'";
	my $some_checks = sub { my $b = sql($rounds); wait_for("SELECT ($rounds) >= $b + 3", 't', $_[0]); };
	my $count_of = sub { return sql("SELECT count(*) FROM dfe_airbyte.$_[0] WHERE target = '$tn'" . ($_[1] // '')); };

	sql("SELECT dfe_airbyte_add_target('$tn', ${\ lit($old->conninfo)},
		'{\"slot_name\": \"airbyte_slot\", \"max_slot_wal_size\": \"1MB\", \"slot_limit_action\": \"recreate\",
		  \"max_slot_recreations_per_day\": \"10\", \"connection_id\": \"$conn_id\"}')");
	wait_for("SELECT system_identifier FROM dfe_airbyte.guard_targets WHERE target = '$tn'",
		$old->node->safe_psql('postgres', 'SELECT system_identifier FROM pg_control_system()'),
		"PG$major: the guard records the target's system identifier");

	# 1. a recreation ends Airbyte's walsender on the target: the local event
	my $wpid = $old->start_airbyte_walsender;
	grow_wal($old);
	wait_for("SELECT count(*) FROM dfe_airbyte.events WHERE kind = 'slot_walsender_terminated' AND target = '$tn'
		AND detail LIKE 'terminated process $wpid, which was using replication slot \"airbyte_slot\" (over dfe_airbyte.max_slot_wal_size, slot_limit_action = recreate)'",
		'1', 'the recreation ends the walsender: slot_walsender_terminated with the target');
	is(sql("SELECT data->>'active_pid' || ' ' || (data->>'reason') FROM dfe_airbyte.events
		WHERE kind = 'slot_walsender_terminated' AND target = '$tn'"),
		"$wpid over dfe_airbyte.max_slot_wal_size, slot_limit_action = recreate", '... with the same data as the local one');
	$old->stop_airbyte_walsender;
	wait_for("SELECT resync_job_status FROM dfe_airbyte.slot_recreations WHERE target = '$tn'", 'succeeded',
		'... the slot recreated and its re-sync done');

	# 2. another server behind the address, its slot over the limit
	my $port = $old->port;
	my $old_sysid = sql("SELECT system_identifier FROM dfe_airbyte.guard_targets WHERE target = '$tn'");
	$old->node->stop;
	my $new = DfeTarget->new("${tn}_b", major => $major, port => $port);
	DfeTarget::write_passfile($passfile, $new);
	grow_wal($new);
	my $new_sysid = $new->node->safe_psql('postgres', 'SELECT system_identifier FROM pg_control_system()');
	my $new_lsn = $new->node->safe_psql('service', "SELECT restart_lsn FROM pg_replication_slots WHERE slot_name = 'airbyte_slot'");
	my $mark = $fake->mark;
	my $recs = $count_of->('slot_recreations');
	wait_for("SELECT unconfirmed_system_identifier FROM dfe_airbyte.guard_targets WHERE target = '$tn'", $new_sysid,
		'another server answers: held, its identifier unconfirmed');
	wait_for("SELECT status FROM dfe_airbyte.replication_slot_health WHERE target = '$tn'", 'restored',
		"... 'restored' in the health view");
	like(sql("SELECT hint FROM dfe_airbyte.replication_slot_health WHERE target = '$tn'"),
		qr/SELECT dfe_airbyte_confirm_restore\('$tn'\)/, "... the hint names confirm_restore('$tn')");
	like(sql("SELECT severity || ': ' || hint FROM dfe_airbyte.config_problems WHERE target = '$tn' AND object = 'restored'"),
		qr/^error: .*SELECT dfe_airbyte_confirm_restore\('$tn'\)/, '... and config_problems says so');
	my $deploy = sql("SELECT dfe_airbyte_deploy(false, '$tn')");
	$some_checks->('the guard goes on sampling the held target');
	is($count_of->('events', " AND kind = 'target_server_changed'"), '1', 'one target_server_changed event, not one per check');
	is(sql("SELECT system_identifier FROM dfe_airbyte.guard_targets WHERE target = '$tn'"), $old_sysid,
		"the recorded identifier stays the history's");
	is($count_of->('slot_recreations'), $recs, 'nothing recreated');
	is($new->node->safe_psql('service', "SELECT restart_lsn FROM pg_replication_slots WHERE slot_name = 'airbyte_slot'"),
		$new_lsn, '... the slot over the limit is untouched');
	is(refreshes($mark), 0, 'nothing asked of Airbyte');
	is(sql("SELECT state FROM dfe_airbyte.deploys WHERE id = $deploy"), 'queued', 'no deploy runs for the held target');

	# 3. the confirmation, by a member of dfe_airbyte_admin (not a superuser)
	my ($ret, $out, $err) = $node->psql('postgres', "SELECT dfe_airbyte_confirm_restore('$tn')",
		extra_params => [ '-U', 'nobody' ]);
	like($err, qr/permission denied for function dfe_airbyte_confirm_restore/, 'PUBLIC may not confirm');
	($ret, $out, $err) = $node->psql('postgres', "SELECT dfe_airbyte_confirm_restore('$tn')",
		extra_params => [ '-U', 'dba' ]);
	like($out, qr/^restore confirmed by dba: the database of target "$tn" now belongs to server $new_sysid \(it was $old_sysid\)/,
		'the admin role confirms') or diag($err);
	is(sql("SELECT system_identifier || ' ' || (unconfirmed_system_identifier IS NULL)::int
		FROM dfe_airbyte.guard_targets WHERE target = '$tn'"), "$new_sysid 1", 'the new identifier is recorded');
	is($count_of->('events', " AND kind = 'restore_confirmed'"), '1', 'restore_confirmed event for the target');
	wait_for("SELECT count(*) FROM dfe_airbyte.slot_recreations WHERE target = '$tn' AND recreated_at IS NOT NULL",
		$recs + 1, 'then the guard recreates the slot over the limit');
	ok($fake->wait_for_requests(since => $mark, method => 'POST', path => qr{/connections/refresh}, timeout => $wait),
		'... and Airbyte is asked for the full re-sync');
	wait_for("SELECT state <> 'queued' FROM dfe_airbyte.deploys WHERE id = $deploy", 't', '... and the queued deploy runs');
	($ret, $out, $err) = $node->psql('postgres', "SELECT dfe_airbyte_confirm_restore('$tn')", extra_params => [ '-U', 'dba' ]);
	like($err, qr/nothing to confirm: target "$tn" was not restored/, 'nothing left to confirm');

	# 4. a failover (same identifier, higher timeline) is not a restore
	sql("UPDATE dfe_airbyte.guard_targets SET timeline = 0 WHERE target = '$tn'");
	wait_for("SELECT count(*) FROM dfe_airbyte.events WHERE kind = 'target_failover' AND target = '$tn'", '1',
		'a higher timeline: target_failover');
	is(sql("SELECT unconfirmed_system_identifier IS NULL FROM dfe_airbyte.guard_targets WHERE target = '$tn'"), 't',
		'... and no hold');
	isnt(sql("SELECT string_agg(DISTINCT status, ',') FROM dfe_airbyte.replication_slot_health WHERE target = '$tn'"),
		'restored', "... nor 'restored'");
	is(sql("SELECT count(*) FROM dfe_airbyte.config_problems WHERE target = '$tn' AND object = 'restored'"), '0',
		'... nor a restored row in config_problems');

	sql("SELECT dfe_airbyte_drop_target('$tn')");
	$new->node->stop;
	return;
}

restore_story($_) for @majors;

unlike(slurp_file($node->logfile), qr/PANIC|dfe_airbyte slot guard, target/, 'no target failed the guard');
done_testing();
