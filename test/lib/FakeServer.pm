=pod

=head1 FakeServer

Runs test/fake (the fake Airbyte, Azure AD, token proxy, Google
STS/IAM and BigQuery) in the background for a TAP test and drives its
control API.  Core Perl modules only.

  use FakeServer;
  my $fake = FakeServer->start;                  # or (tls_cert => C, tls_key => K, log => PATH)
  my $url  = $fake->url;                         # http://127.0.0.1:PORT
  $fake->config(job_final_status => 'failed', token_expires_in => 5);
  $fake->source_catalog({ users => [qw(id name email)] });
  $fake->faults({ method => 'GET', path => '^/api/public/v1/jobs$', status => 503, times => 2 });
  my $mark = $fake->mark;                        # newest request seq so far
  ...
  my $reqs = $fake->requests(since => $mark, path => qr{/jobs});
  my $stats = $fake->stats;                      # { "GET /api/public/v1/jobs" => 3, ... }
  $fake->control(POST => '/_fake/airbyte/jobs', { status => 'running', frozen => JSON::PP::true });
  $fake->stop;                                   # also done on DESTROY and at END

start(port => N) listens on a fixed port (default: any free one), e.g. to
restart a killed server at the same URL; start(jobs => [{status =>
'succeeded'}, ...]) makes those jobs (as create_job would) before the server
answers anything, so a client polling a job never sees the restarted server
without it (Airbyte keeps its jobs across a restart).  start() waits up to 60 s for the server to announce its port and dies with
the server's stderr otherwise.  With tls_cert/tls_key the server speaks
HTTPS on ->port (->url is https://...); since HTTP::Tiny has no TLS support
here, the control calls then go to a second, plain-HTTP port that serves
only /_fake/.

control($method, $path, $data) returns the decoded JSON answer and dies on
any non-2xx answer; $path may omit the leading "/_fake".  requests() returns
an array ref of recorded requests (seq, time, method, path, query, args,
headers, body, json, status, fault) whose seq is greater than `since`,
optionally filtered by `method` (string) and `path` (regex); in list context
it also returns `next`, the newest seq so far, to pass as `since` later
(mark() returns that alone).  Mind list context: is_deeply(scalar
$fake->requests, ...).

The server's Python is $ENV{PYTHON} // 'python3'.

=cut

package FakeServer;

use strict;
use warnings;
use Carp qw(croak);
use File::Basename qw(dirname);
use File::Spec;
use File::Temp qw(tempdir);
use HTTP::Tiny;
use IO::Socket::INET;
use JSON::PP;
use POSIX qw(WNOHANG);
use Time::HiRes qw(usleep time);

my $SCRIPT = File::Spec->rel2abs(
	File::Spec->catfile(dirname(__FILE__), File::Spec->updir, 'fake'));

# live servers, stopped at END even if a test dies before ->stop
my %LIVE;

sub start
{
	my ($class, %opts) = @_;
	my $dir = tempdir('fake-server-XXXXXX', TMPDIR => 1, CLEANUP => 1);
	my $port_file = "$dir/port";
	my $control_file = "$dir/control_port";
	my $tls = defined $opts{tls_cert};
	croak 'tls_cert and tls_key go together' if $tls != defined $opts{tls_key};

	my @cmd = ($ENV{PYTHON} // 'python3', $SCRIPT,
		'--host', '127.0.0.1', '--port', $opts{port} // 0, '--port-file', $port_file);
	push @cmd, '--log', $opts{log} if defined $opts{log};
	if ($opts{jobs})
	{
		open my $fh, '>', "$dir/jobs.json" or croak "$dir/jobs.json: $!";
		print $fh JSON::PP->new->encode([ map { _job_body(%$_) } @{ $opts{jobs} } ]);
		close $fh;
		push @cmd, '--jobs', "$dir/jobs.json";
	}
	push @cmd, '--tls-cert', $opts{tls_cert}, '--tls-key', $opts{tls_key},
	  '--control-port-file', $control_file
	  if $tls;

	my $stderr = "$dir/stderr";
	my $pid = fork // croak "fork: $!";
	if ($pid == 0)
	{
		open STDIN, '<', '/dev/null';
		open STDOUT, '>>', $stderr;
		open STDERR, '>>', $stderr;
		exec @cmd or POSIX::_exit(127);
	}

	my $self = bless {
		pid => $pid, owner => $$, dir => $dir, tls => $tls,
		stderr_file => $stderr,
		http => HTTP::Tiny->new(timeout => 30, agent => 'FakeServer.pm'),
	}, $class;
	$LIVE{"$self"} = $self;

	# generous: a loaded machine (several test files at once) can take
	# seconds to start Python and import the fake's modules
	my $deadline = time + 60;
	until (-s $port_file && (!$tls || -s $control_file))
	{
		if (waitpid($pid, WNOHANG) == $pid || time > $deadline)
		{
			my $why = $? ? "exited with status $?" : 'did not start within 60 s';
			delete $self->{pid} if waitpid($pid, WNOHANG) != 0;
			$self->stop;
			croak "fake server $why: " . _slurp($stderr);
		}
		usleep(20_000);
	}
	$self->{port} = _read_port($port_file);
	$self->{control_port} = $tls ? _read_port($control_file) : $self->{port};
	return $self;
}

sub _slurp
{
	my ($file) = @_;
	open my $fh, '<', $file or return '';
	local $/;
	return scalar <$fh>;
}

sub _read_port
{
	my ($file) = @_;
	my $port = _slurp($file);
	$port =~ /^(\d+)/ or croak "bad port file $file";
	return $1;
}

# The Airbyte profile the fake models (env DFE_AIRBYTE_PROFILE, which
# test/check sets per run; default 2.x), and whether it is at least $v
# ("1.8"): tests that depend on a version ask here.
my %PROFILE_VERSION = ('0.60' => '0.60.1', '1.1' => '1.1.0', '1.2' => '1.2.0', '1.8' => '1.8.0', '2.x' => '2.0.0');
sub airbyte_profile { return $ENV{DFE_AIRBYTE_PROFILE} // '2.x'; }
sub airbyte_version { my $p = airbyte_profile(); return $PROFILE_VERSION{$p} // $p; }
sub profile_at_least
{
	my ($want) = @_;
	my @have = split /\./, airbyte_version();
	my @w = split /\./, ($PROFILE_VERSION{$want} // $want);
	for my $i (0 .. 2)
	{
		my ($h, $x) = ($have[$i] // 0, $w[$i] // 0);
		return $h > $x if $h != $x;
	}
	return 1;
}

# dead_url(): ($url, $socket) where nothing answers (connection refused) for as
# long as $socket lives: its port is bound but not listening, so unlike the
# port of a stopped server no later server on the machine can take it.
sub dead_url
{
	my $sock = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Proto => 'tcp')
	  or croak "bind: $!";
	return ('http://127.0.0.1:' . $sock->sockport, $sock);
}

sub port { $_[0]{port} }
sub pid { $_[0]{pid} }
sub stderr { _slurp($_[0]{stderr_file}) }

sub url
{
	my ($self) = @_;
	return ($self->{tls} ? 'https' : 'http') . "://127.0.0.1:$self->{port}";
}

sub control
{
	my ($self, $method, $path, $data) = @_;
	$path = "/_fake$path" unless $path =~ m{^/_fake(/|$)};
	my %req = (headers => { 'Content-Type' => 'application/json' });
	$req{content} = JSON::PP->new->canonical->encode($data) if defined $data;
	my $res = $self->{http}->request($method,
		"http://127.0.0.1:$self->{control_port}$path", \%req);
	croak "fake server $method $path: $res->{status} $res->{reason}: "
	  . ($res->{content} // '')
	  unless $res->{success};
	return length($res->{content} // '') ? decode_json($res->{content}) : undef;
}

sub reset { $_[0]->control(POST => '/reset') }
sub stats { $_[0]->control(GET => '/stats') }
sub clear_faults { $_[0]->control(DELETE => '/faults') }
sub revoke_tokens { $_[0]->control(POST => '/airbyte/revoke_tokens') }
sub connection { $_[0]->control(GET => '/airbyte/connection') }

# config(key => value, ...): merges; returns the whole config
sub config
{
	my ($self, %kv) = @_;
	return $self->control(POST => '/config', \%kv);
}

# faults({path => ..., kind => ...}, ...): appends rules in order
sub faults
{
	my ($self, @rules) = @_;
	return $self->control(POST => '/faults', { rules => \@rules });
}

sub requests
{
	my ($self, %opts) = @_;
	my $got = $self->control(GET => '/requests?since=' . ($opts{since} // 0));
	my @reqs = @{ $got->{requests} };
	@reqs = grep { $_->{method} eq uc $opts{method} } @reqs if defined $opts{method};
	@reqs = grep { $_->{path} =~ $opts{path} } @reqs if defined $opts{path};
	return wantarray ? (\@reqs, $got->{next}) : \@reqs;
}

# the newest request seq so far: requests(since => $fake->mark) later gives
# only what came after this point
sub mark { $_[0]->control(GET => '/requests/next')->{next} }

# wait_for_requests(since => $mark, path => qr{...}, method => 'GET', count => N,
# timeout => S): waits until at least N such requests (default 1) came after
# $mark; true on success.  A client that calls every check interval has
# looked N times: tests wait for that rather than sleep.
sub wait_for_requests
{
	my ($self, %opts) = @_;
	my $want = delete $opts{count} // 1;
	my $deadline = time + (delete $opts{timeout} // 60);
	my $got = 0;
	while (time < $deadline)
	{
		$got = scalar @{ $self->requests(%opts) };
		return 1 if $got >= $want;
		usleep(50_000);
	}
	Carp::carp("wait_for_requests: $got of $want requests");
	return 0;
}

# source_catalog({table => [columns]}, also_cache => 1, no_primary_key => [tables])
# (tables without a primary key are offered only in full refresh, without
# _ab_cdc_* fields, as Airbyte's Postgres source does; the heartbeat is one)
sub source_catalog
{
	my ($self, $tables, %opts) = @_;
	return $self->control(POST => '/airbyte/source_catalog',
		{ tables => $tables, also_cache => $opts{also_cache} ? JSON::PP::true : JSON::PP::false,
		  no_primary_key => $opts{no_primary_key} // [] });
}

# create_job(status => 'running', frozen => 1, ...): returns the job
sub create_job
{
	my ($self, %job) = @_;
	return $self->control(POST => '/airbyte/jobs', _job_body(%job));
}

sub _job_body
{
	my (%job) = @_;
	$job{frozen} = $job{frozen} ? JSON::PP::true : JSON::PP::false if exists $job{frozen};
	return \%job;
}

# bigquery_tables({project, dataset, table, schema => {fields => [...]}}, ...)
sub bigquery_tables
{
	my ($self, @tables) = @_;
	return $self->control(POST => '/bigquery/tables', { tables => \@tables });
}

# an update by someone else (Airbyte's destination): counts in the per-table
# rate window; with $fields the schema is replaced (a column replaced untagged)
sub bigquery_update
{
	my ($self, $project, $dataset, $table, $fields) = @_;
	my $q = join '&', map { "$_->[0]=" . _uri_escape($_->[1]) }
	  ([ project => $project ], [ dataset => $dataset ], [ table => $table ]);
	return $self->control(POST => "/bigquery/table/update?$q", $fields ? { fields => $fields } : {});
}

sub bigquery_table
{
	my ($self, $project, $dataset, $table) = @_;
	my $q = join '&', map { "$_->[0]=" . _uri_escape($_->[1]) }
	  ([ project => $project ], [ dataset => $dataset ], [ table => $table ]);
	return $self->control(GET => "/bigquery/table?$q");
}

sub _uri_escape
{
	my ($s) = @_;
	$s =~ s/([^A-Za-z0-9\-._~])/sprintf('%%%02X', ord $1)/ge;
	return $s;
}

sub stop
{
	my ($self) = @_;
	delete $LIVE{"$self"};
	my $pid = delete $self->{pid};
	# a forked child (e.g. of a test helper) must not stop its parent's server
	return if !$pid || $self->{owner} != $$;
	kill 'TERM', $pid;
	my $deadline = time + 10;
	while (time < $deadline)
	{
		return if waitpid($pid, WNOHANG) != 0;
		usleep(20_000);
	}
	kill 'KILL', $pid;
	waitpid($pid, 0);
	return;
}

sub DESTROY
{
	local ($., $@, $!, $^E, $?);
	$_[0]->stop;
}

END
{
	local $?;
	$_->stop for values %LIVE;
}

1;
