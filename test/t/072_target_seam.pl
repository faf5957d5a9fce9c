# The seam that runs a query on a target (src/target.c) and the multiplexed
# connection layer under it (src/target_conn.c), against real servers of
# PostgreSQL 15-18 (test/lib/DfeTarget.pm) and three faulty ones: a listener
# that accepts and never answers, a port nobody listens on, and a host name
# that does not resolve.  The C entry points are declared here (the
# extension does not install them): src/target_probe.c.
use strict;
use warnings;
use IO::Socket::INET;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use DfeTest;
use DfeTarget;

my @majors = DfeTarget::majors();
my @targets = map { DfeTarget->new("seam$_", major => $_) } @majors;
my $dir = PostgreSQL::Test::Utils::tempdir();
my $passfile = DfeTarget::write_passfile("$dir/pgpass", @targets);

my $node = DfeTest::new_node('control', conf => <<"CONF");
dfe_airbyte.passfile = '$passfile'
dfe_airbyte.target_timeout = '3s'
CONF
$node->safe_psql('postgres', q{
CREATE FUNCTION public.target_rows(target text, conninfo text, sql text, params text[] DEFAULT NULL)
  RETURNS SETOF text[] AS 'dfe_airbyte', 'dfe_airbyte_target_rows' LANGUAGE C;
CREATE FUNCTION public.target_probe(names text[], conninfos text[], sql text, rounds int DEFAULT 1,
                                    pause_ms int DEFAULT 0)
  RETURNS TABLE(name text, state text, elapsed_ms float8, server_version int,
                first_value text, errcode text, error text, round int)
  AS 'dfe_airbyte', 'dfe_airbyte_target_probe' LANGUAGE C;
SELECT pg_create_logical_replication_slot('airbyte_slot', 'pgoutput');
});

sub lit { my ($s) = @_; $s =~ s/'/''/g; return "'$s'" }

# psql with verbose errors so that the SQLSTATE shows; returns (ret, out, err)
sub run_sql
{
	my ($sql) = @_;
	return $node->psql('postgres', "\\set VERBOSITY verbose\n$sql");
}

# the same SQL, with a parameter whose type the server infers, on local and on every major
my $same = q{SELECT slot_name || ' ' || current_setting('search_path')
	FROM pg_catalog.pg_replication_slots WHERE slot_name = $1};
is($node->safe_psql('postgres', "SELECT (target_rows('local', NULL, ${\ lit($same)}, '{airbyte_slot}'))[1]"),
	'airbyte_slot pg_catalog,pg_temp', 'local: SPI, parameter type inferred, search_path pinned');
for my $t (@targets)
{
	my $ci = lit($t->conninfo);
	is($node->safe_psql('postgres', "SELECT (target_rows('$t->{name}', $ci, ${\ lit($same)}, '{airbyte_slot}'))[1]"),
		'airbyte_slot pg_catalog,pg_temp', "PG$t->{major}: the same SQL over libpq");
	is($node->safe_psql('postgres', "SELECT (target_rows('$t->{name}', $ci,
		'SELECT current_setting(''server_version_num'')::int / 10000, NULL::text, \$1::int + 1', '{41}'))::text"),
		"{$t->{major},NULL,42}", "PG$t->{major}: rows as text, NULL kept");
}

SKIP:
{
	skip 'no target server', 8 unless @targets;
	my $t = $targets[0];
	my $ci = lit($t->conninfo);
	my ($ret, $out, $err) = run_sql("SELECT target_rows('x', $ci, 'SELECT 1/0')");
	like($err, qr/ERROR:  22012: could not run the test query on target "x": division by zero/,
		"a remote error keeps its SQLSTATE");
	($ret, $out, $err) = run_sql("SELECT target_rows('x', $ci, 'INSERT INTO public.schema_migrations VALUES (''1'')')");
	like($err, qr/ERROR:  42501: .*permission denied for table schema_migrations/, 'a missing privilege: 42501');
	like($err, qr/HINT:  Grant the target's role what the README's "Targets" section lists/, '... with the grants as hint');

	# passwords only from the passfile, and never echoed
	for my $kw ('password=sekrit-4711', 'passfile=/tmp/x', 'sslpassword=sekrit-4711', 'service=svc')
	{
		($ret, $out, $err) = run_sql("SELECT target_rows('x', ${\ lit($t->conninfo . ' ' . $kw)}, 'SELECT 1')");
		like($err, qr/ERROR:  22023: the connection string of target "x" must not contain/, "rejected: $kw");
		unlike($err, qr/sekrit/, "... and the secret is not in the error ($kw)");
	}
	($ret, $out, $err) = run_sql("SELECT target_rows('x', 'host=a,b dbname=service', 'SELECT 1')");
	like($err, qr/names more than one host/, 'one host per target');

	# a wrong password: the server's refusal, as a connection error with a hint
	($ret, $out, $err) = run_sql("SELECT target_rows('x', ${\ lit($t->conninfo(user => 'airbyte_replication', dbname => 'nonexistent'))}, 'SELECT 1')");
	like($err, qr/ERROR:  08001: could not run the test query on target "x": .*database "nonexistent" does not exist/s,
		'a connection failure is 08001 with the server\'s reason');
	like($err, qr/HINT:  Check that the target's server is up/, '... and a hint');

	# a passfile that libpq would ignore is named, with its mode
	chmod 0644, $passfile;
	($ret, $out, $err) = run_sql("SELECT target_rows('x', $ci, 'SELECT 1')");
	like($err, qr/F0000: .*dfe_airbyte.passfile "\Q$passfile\E" is not a plain file of mode 0600 \(it has 0644\)/,
		'a passfile of mode 0644 is refused with a clear error');
	chmod 0600, $passfile;
}

# --- many targets at once: the faulty ones cost the healthy ones nothing ---
my $hang = IO::Socket::INET->new(Listen => 16, LocalAddr => '127.0.0.1', LocalPort => 0, Proto => 'tcp')
  or die "listen: $!";
my $hang_port = $hang->sockport;    # accepts (the kernel's backlog) and never answers
my $refused_port = PostgreSQL::Test::Cluster::get_free_port();
my %faulty = (
	hang    => "host=127.0.0.1 port=$hang_port dbname=service user=dfe_airbyte_remote",
	refused => "host=127.0.0.1 port=$refused_port dbname=service user=dfe_airbyte_remote",
	nodns   => "host=dfe-airbyte-test.invalid port=5432 dbname=service user=dfe_airbyte_remote",
);
my @names = ((map { $_->{name} } @targets), sort keys %faulty);
my @cis = ((map { $_->conninfo } @targets), map { $faulty{$_} } sort keys %faulty);
# a host name (looked up asynchronously, every address tried)
if (@targets)
{
	push @names, 'byname';
	push @cis, $targets[-1]->conninfo(host => 'localhost');
}
my $arr = sub { 'ARRAY[' . join(',', map { lit($_) } @_) . ']' };
my $probe = $node->safe_psql('postgres',
	"SELECT name, state, round(elapsed_ms), server_version / 10000, first_value, errcode, error
	 FROM target_probe(${\ $arr->(@names)}, ${\ $arr->(@cis)},
	   'SELECT count(*) FROM pg_catalog.pg_replication_slots WHERE slot_name = ''airbyte_slot''')");
note($probe);
my %row = map { my @f = split /\|/, $_, 7; ($f[0] => \@f) } split /\n/, $probe;
for my $t (@targets)
{
	my $r = $row{ $t->{name} };
	is("$r->[1] $r->[3] $r->[4]", "done $t->{major} 1", "probe: PG$t->{major} answered");
	cmp_ok($r->[2], '<', $row{hang}[2], "probe: PG$t->{major} answered before the hanging target's deadline");
}
is($row{hang}[1], 'timeout', 'probe: the silent listener times out');
like($row{hang}[6], qr/did not answer within 3000 ms/, '... with the deadline in the message');
cmp_ok($row{hang}[2], '>=', 3000, '... not before its deadline');
is("$row{refused}[1] $row{refused}[5]", 'failed 08001', 'probe: a refused port fails as 08001');
like($row{refused}[6], qr/Connection refused/, '... saying so');
like("$row{nodns}[1] $row{nodns}[6]", qr/^(failed could not resolve host name "dfe-airbyte-test.invalid"|timeout .*looking up its host name)/,
	'probe: an unresolvable name fails (or times out) in the lookup, not in libpq');
SKIP:
{
	skip 'no target server', 1 unless @targets;
	is("$row{byname}[1] $row{byname}[4]", 'done 1', 'probe: a target given by host name is reached');
}

# a kept connection whose server restarted meanwhile: the next round
# reconnects at once instead of reporting the target as failed
SKIP:
{
	skip 'no target server', 3 unless @targets;
	my $t = $targets[-1];
	my ($in2, $out2, $err2) = ('', '', '');
	my $probe_h = IPC::Run::start(
		[ 'psql', '-XAtq', '-d', $node->connstr('postgres'), '-c',
			"SELECT round, state, coalesce(error, '') FROM target_probe(ARRAY['restarted'], "
			. "ARRAY[${\ lit($t->conninfo)}], 'SELECT 1', 2, 30000) ORDER BY round" ],
		'<', \$in2, '>', \$out2, '2>', \$err2);
	ok($t->node->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE application_name = 'dfe_airbyte' AND state = 'idle'"),
		'round 1 answered, the connection is kept');
	$t->node->restart;
	$probe_h->finish;
	chomp $out2;
	is($out2, "1|done|\n2|done|", 'after the restart, round 2 reconnected and answered') or diag($err2);
	ok($t->node->poll_query_until('postgres',
		"SELECT count(*) = 0 FROM pg_stat_activity WHERE application_name = 'dfe_airbyte'"),
		'the probe closed its connection');
}

# a query waiting on a hanging target is cancelled promptly (interrupts checked)
$node->safe_psql('postgres', "ALTER SYSTEM SET dfe_airbyte.target_timeout = '10min'");
$node->reload;
my ($in, $out, $err) = ('', '', '');
my $h = IPC::Run::start(
	[ 'psql', '-XAtq', '-d', $node->connstr('postgres'), '-c',
		"SET application_name = 'probe_cancel'; SELECT * FROM target_probe(ARRAY['hang'], ARRAY[${\ lit($faulty{hang})}], 'SELECT 1')" ],
	'<', \$in, '>', \$out, '2>', \$err);
ok($node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_stat_activity WHERE application_name = 'probe_cancel' AND wait_event = 'Extension'"),
	'the probe waits on the hanging target');
$node->safe_psql('postgres', "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE application_name = 'probe_cancel'");
ok($node->poll_query_until('postgres',
	"SELECT count(*) = 0 FROM pg_stat_activity WHERE application_name = 'probe_cancel' AND state = 'active'"),
	'... and a cancel ends it');
$h->finish;
like($err, qr/canceling statement due to user request/, '... as a cancelled statement');
close $hang;

done_testing();
