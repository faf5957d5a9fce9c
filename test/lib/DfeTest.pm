=pod

=head1 DfeTest

Shared set-up for the dfe_airbyte TAP tests.

  use DfeTest;
  my $node = DfeTest::new_node('main', conf => "dfe_airbyte.check_interval = 1\n");
  $node->safe_psql('postgres', 'SELECT dfe_airbyte_worker_pid()');
  DfeTest::wait_for_worker($node);

new_node() initialises and starts a real PostgreSQL cluster ($PG_MAJOR, from the
private tmp_install that test/check prepared, found through PATH), UTF-8 in
the C.UTF-8 locale, with dfe_airbyte preloaded, wal_level = logical, the
worker pointed at the
database "postgres", and CREATE EXTENSION dfe_airbyte already run there.
Pass allows_streaming/extra options through %opts.

=cut

package DfeTest;

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use JSON::PP;

sub new_node
{
	my ($name, %opts) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	my %init = %{ $opts{init} // {} };
	$init{extra} = [ initdb_utf8(), @{ $init{extra} // [] } ];
	$node->init(allows_streaming => 'logical', %init);
	$node->append_conf('postgresql.conf', <<"CONF");
shared_preload_libraries = 'dfe_airbyte'
dfe_airbyte.database = 'postgres'
wal_level = logical
max_replication_slots = 30
max_wal_senders = 10
log_line_prefix = '%m [%p] %b '
restart_after_crash = on
CONF
	$node->append_conf('postgresql.conf', $opts{conf}) if $opts{conf};
	$node->start;
	$node->safe_psql('postgres', 'CREATE EXTENSION dfe_airbyte')
	  unless $opts{no_extension};
	return $node;
}

# initdb options for every test cluster: UTF-8 in the C.UTF-8 locale (built
# into Debian's libc), whatever locale the caller's environment names or
# lacks; with none, initdb would pick SQL_ASCII, where psql counts the bytes
# of "café" as columns.
sub initdb_utf8
{
	return ('--encoding=UTF8', '--locale=C.UTF-8');
}

# Wait until the network worker runs (optionally a different pid than $old_pid); returns its pid.
sub wait_for_worker
{
	my ($node, $old_pid) = @_;
	for (1 .. 300)
	{
		# plain psql: the server may be restarting after a crash
		my ($ret, $pid) = $node->psql('postgres', 'SELECT dfe_airbyte_worker_pid()');
		return $pid if $ret == 0 && $pid ne '' && (!defined $old_pid || $pid ne $old_pid);
		usleep(100_000);
	}
	die "dfe_airbyte worker did not start";
}

# Wait until the guard worker runs (optionally a different pid than $old_pid); returns its pid.
sub wait_for_guard
{
	my ($node, $old_pid) = @_;
	for (1 .. 300)
	{
		my ($ret, $pid) = $node->psql('postgres',
			"SELECT pid FROM dfe_airbyte.workers WHERE worker = 'guard'");
		return $pid if $ret == 0 && $pid ne '' && (!defined $old_pid || $pid ne $old_pid);
		usleep(100_000);
	}
	die "dfe_airbyte guard worker did not start";
}

# The pace of a test with remote targets: (check_interval, target_timeout,
# seconds to wait for a condition).  Under test/valgrind (which raises
# PG_TEST_TIMEOUT_DEFAULT) one SCRAM exchange of the control server takes
# seconds, so its checks are slower and its waits longer.
sub target_timing
{
	return ($ENV{PG_TEST_TIMEOUT_DEFAULT} // 0) >= 600 ? ('10s', '10s', 900) : ('1s', '2s', 120);
}

# Poll $sql until it returns $expected (string compare); returns true on success.
sub poll_until
{
	my ($node, $sql, $expected, $timeout_s) = @_;
	$timeout_s //= 60;
	my $deadline = time + $timeout_s;
	my $got = '';
	while (time < $deadline)
	{
		$got = $node->safe_psql('postgres', $sql);
		return 1 if $got eq $expected;
		usleep(100_000);
	}
	diag("poll_until: last result '$got', wanted '$expected' for: $sql");
	return 0;
}

# postgresql.conf lines for BigQuery against a FakeServer, with a Google
# credential configuration (Azure AD -> STS -> IAM, all on the fake) written
# to $dir/credentials.json and its federated token to $dir/federated.
# Returns the lines; the test appends its own settings after them.
sub bigquery_conf
{
	my ($fake, $dir, %opt) = @_;
	my $url = $fake->url;
	my $sa = $opt{service_account} // 'airbyte@proj.iam.gserviceaccount.com';
	my $assertion = $opt{assertion} // 'federated-assertion-for-tests';
	PostgreSQL::Test::Utils::append_to_file("$dir/federated", "$assertion\n");
	PostgreSQL::Test::Utils::append_to_file("$dir/credentials.json",
		JSON::PP->new->canonical->encode({
			type => 'external_account',
			audience => '//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/q',
			subject_token_type => 'urn:ietf:params:oauth:token-type:jwt',
			token_url => "$url/v1/token",
			credential_source => { url => "$url/tenant/oauth2/v2.0/token" },
			service_account_impersonation_url =>
			  "$url/v1/projects/-/serviceAccounts/$sa:generateAccessToken" }));
	return <<"CONF";
dfe_airbyte.bigquery_project = '@{[ $opt{project} // 'proj' ]}'
dfe_airbyte.bigquery_dataset = '@{[ $opt{dataset} // 'svc_airbyte_test' ]}'
dfe_airbyte.hidden_policy_tag = '$opt{hidden_tag}'
dfe_airbyte.bigquery_url = '$url'
dfe_airbyte.google_credentials = '$dir/credentials.json'
dfe_airbyte.azure_client_id = 'azure-client'
dfe_airbyte.azure_federated_token_file = '$dir/federated'
CONF
}

# Wait until a worker ('guard' or 'network') has been round its loop $n more
# times; returns true on success.  For the checks that something does NOT
# happen: instead of sleeping for a few check intervals, wait until the
# worker has actually looked that often.  A round is seen in
# pg_stat_activity as the end of the one transaction each round runs (the
# guard's slot check, the network worker's re-sync follow-up; spi_xact.c
# reports each as the activity); one more than $n is waited for, since the
# first may have begun before the call.
# each worker reports its name as its query at the end of every round of its
# loop (src/scheduler.c)
my %LOOP_ACTIVITY = (guard => 'dfe_airbyte guard', network => 'dfe_airbyte network worker');
sub wait_for_worker_loops
{
	my ($node, $kind, $n, $timeout_s) = @_;
	my $activity = $LOOP_ACTIVITY{$kind} // die "no worker $kind";
	my $since = $node->safe_psql('postgres', 'SELECT clock_timestamp()');
	my $deadline = time + ($timeout_s // 60);
	my %seen;
	while (time < $deadline)
	{
		my $at = $node->safe_psql('postgres', <<"SQL");
SELECT a.state_change FROM pg_stat_activity a JOIN dfe_airbyte.workers w USING (pid)
WHERE w.worker = '$kind' AND a.state = 'idle' AND a.query = '$activity' AND a.state_change > '$since'
SQL
		$seen{$at} = 1 if $at ne '';
		return 1 if keys %seen > $n;
		usleep(50_000);
	}
	diag("wait_for_worker_loops: the $kind worker went round " . scalar(keys %seen) . " times, wanted " . ($n + 1));
	return 0;
}

# Wait until the server log matches $re; returns true on success.
sub poll_log
{
	my ($node, $re, $timeout_s) = @_;
	my $deadline = time + ($timeout_s // 30);
	while (time < $deadline)
	{
		return 1 if slurp_file($node->logfile) =~ $re;
		usleep(100_000);
	}
	return 0;
}

# The bytes of process $pid's memory context named $name and all its
# children, and the process's grand total, from
# pg_log_backend_memory_contexts() (which writes them to the server log);
# undef when no such context was logged.
sub memory_context_bytes
{
	my ($node, $pid, $name, $timeout_s) = @_;
	my $from = -s $node->logfile;
	$node->safe_psql('postgres', "SELECT pg_log_backend_memory_contexts($pid)");
	my $deadline = time + ($timeout_s // 30);
	my $dump;
	while (time < $deadline)
	{
		open my $f, '<', $node->logfile or die $!;
		seek $f, $from, 0;
		my $text = do { local $/; <$f> };
		close $f;
		if ($text =~ /\[$pid\][^\n]*Grand total: (\d+) bytes/)
		{
			$dump = $text;
			last;
		}
		usleep(100_000);
	}
	return (undef, undef) unless defined $dump;
	my ($grand) = $dump =~ /\[$pid\][^\n]*Grand total: (\d+) bytes/;
	my ($sum, $at_level);
	for my $line (split /\n/, $dump)
	{
		next unless $line =~ /\[$pid\].*level: (\d+); (.*?): (\d+) total in/;
		my ($level, $ctx, $bytes) = ($1, $2, $3);
		if (defined $at_level)
		{
			last if $level <= $at_level;
			$sum += $bytes;
		}
		elsif ($ctx eq $name)
		{
			($sum, $at_level) = ($bytes, $level);
		}
	}
	return ($sum, $grand);
}

1;
