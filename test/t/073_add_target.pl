# dfe_airbyte_add_target() against real servers of PostgreSQL 15-18
# (test/lib/DfeTarget.pm): a role with Azure's grants is registered, one that
# lacks them is refused with every missing grant named, a superuser is
# refused, a passfile libpq would ignore is named; a registered target is
# then reached by its name through the seam.  Run as dfe_airbyte_admin, not
# as a superuser.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use DfeTest;
use DfeTarget;

my @majors = DfeTarget::majors();
my @targets = map { DfeTarget->new("add$_", major => $_) } @majors;
my $member = DfeTarget->new('addmember', major => $majors[0] // 15, signal => 'membership');
my $dir = PostgreSQL::Test::Utils::tempdir();
my $passfile = DfeTarget::write_passfile("$dir/pgpass", @targets, $member);

my $node = DfeTest::new_node('control', conf => "dfe_airbyte.passfile = '$passfile'\n");
$node->safe_psql('postgres', q{
CREATE ROLE ops LOGIN IN ROLE dfe_airbyte_admin;
CREATE FUNCTION public.target_rows(target text, conninfo text, sql text, params text[] DEFAULT NULL)
  RETURNS SETOF text[] AS 'dfe_airbyte', 'dfe_airbyte_target_rows' LANGUAGE C;
});

sub lit { my ($s) = @_; $s =~ s/'/''/g; return "'$s'" }

sub as_ops
{
	my ($sql) = @_;
	return $node->psql('postgres', "\\set VERBOSITY verbose\n$sql", extra_params => [ '-U', 'ops' ]);
}

for my $t (@targets, $member)
{
	my $name = $t->{name};
	my ($ret, $out, $err) = as_ops("SELECT dfe_airbyte_add_target('$name', ${\ lit($t->conninfo)},
		'{\"slot_name\": \"airbyte_slot\", \"max_slot_wal_size\": \"8GB\", \"disk_size\": \"32GB\"}')");
	is($ret, 0, "PG$t->{major} ($t->{signal}): added by dfe_airbyte_admin") or diag($err);
	like($err, qr/NOTICE:  00000: target "$name" added: PostgreSQL $t->{major}\.\d+[^,]*, role "dfe_airbyte_remote"/,
		"PG$t->{major}: the notice names the server and the role");
	is($node->safe_psql('postgres', "SELECT split_part(server_version, '.', 1), settings->>'disk_size', created_by
		FROM dfe_airbyte.targets WHERE name = '$name'"), "$t->{major}|32GB|ops", "PG$t->{major}: the row");
	# reached by its name, through the registered connection string
	is($node->safe_psql('postgres', "SELECT (target_rows('$name', NULL,
		'SELECT max(version) FROM public.schema_migrations'))[1]"),
		'20240201000000', "PG$t->{major}: the registered target answers by name");
}

SKIP:
{
	skip 'no target server', 12 unless @targets;
	my $t = $targets[-1];
	my ($ret, $out, $err) = as_ops("SELECT dfe_airbyte_add_target('$t->{name}', ${\ lit($t->conninfo)})");
	like($err, qr/ERROR:  42710: target "$t->{name}" already exists/, 'a name is registered once');

	# a role without the grants: every missing one named, with its statement
	$t->node->safe_psql('service', 'CREATE ROLE weak LOGIN');    # trust over TCP on the test server
	($ret, $out, $err) = as_ops("SELECT dfe_airbyte_add_target('weak', ${\ lit($t->conninfo(user => 'weak'))})");
	like($err, qr/ERROR:  42501: the role "weak" of target "weak" lacks privileges the guard needs/, 'a weak role is refused');
	like($err, qr/ALTER ROLE weak WITH REPLICATION;/, '... naming REPLICATION');
	like($err, qr/GRANT pg_monitor TO weak;/, '... pg_monitor');
	like($err, qr/GRANT pg_read_all_data TO weak;/, '... pg_read_all_data');
	like($err, qr/pg_signal_backend or membership in Airbyte's replication role/, '... and the right to end the walsender');
	$t->node->safe_psql('service', 'ALTER ROLE weak REPLICATION; GRANT pg_monitor, pg_read_all_data TO weak');
	($ret, $out, $err) = as_ops("SELECT dfe_airbyte_add_target('weak', ${\ lit($t->conninfo(user => 'weak'))})");
	unlike($err, qr/pg_monitor TO|REPLICATION;/, 'granted privileges are no longer named');
	like($err, qr/pg_signal_backend or membership/, '... the missing one still is');

	# the server's superuser is refused (Azure has none to give)
	my $su = $t->node->safe_psql('postgres', 'SELECT current_user');
	($ret, $out, $err) = as_ops("SELECT dfe_airbyte_add_target('su', ${\ lit($t->conninfo(user => $su))})");
	like($err, qr/ERROR:  42501: the role "\Q$su\E" of target "su" is a superuser/, 'a superuser role is refused');
	is($node->safe_psql('postgres', "SELECT count(*) FROM dfe_airbyte.targets WHERE name IN ('weak', 'su')"), '0',
		'nothing refused was registered');

	# a passfile libpq would ignore
	chmod 0640, $passfile;
	($ret, $out, $err) = as_ops("SELECT dfe_airbyte_add_target('other', ${\ lit($t->conninfo)})");
	like($err, qr/ERROR:  F0000: dfe_airbyte.passfile "\Q$passfile\E" is not a plain file of mode 0600 \(it has 0640\)/,
		'a passfile of mode 0640 is named');
	chmod 0600, $passfile;

	# the table itself: dfe_airbyte_admin may switch a target off, not write a row
	($ret, $out, $err) = as_ops("INSERT INTO dfe_airbyte.targets (name, conninfo) VALUES ('x', 'host=x password=y')");
	like($err, qr/permission denied for table targets/, 'rows only through dfe_airbyte_add_target()');
}

SKIP:
{
	skip 'no target server', 3 unless @targets;
	my $t = $targets[0];
	my ($ret, $out, $err) = as_ops("UPDATE dfe_airbyte.targets SET enabled = false WHERE name = '$t->{name}'");
	is($ret, 0, 'dfe_airbyte_admin switches a target off');
	($ret, $out, $err) = $node->psql('postgres', "SELECT target_rows('$t->{name}', NULL, 'SELECT 1')");
	like($err, qr/target "$t->{name}" is disabled/, 'a disabled target is not queried');
	($ret, $out, $err) = as_ops("SELECT dfe_airbyte_drop_target('$t->{name}')");
	is($node->safe_psql('postgres', "SELECT count(*) FROM dfe_airbyte.targets WHERE name = '$t->{name}'"), '0',
		'dfe_airbyte_drop_target() removes it');
}

done_testing();
