# TLS is always verified: a self-signed certificate is refused with an error
# that names the call and says what to do, without a retry storm; trusting
# the certificate with dfe_airbyte.http_ca_file makes the same call work
# while host name verification stays on.  Only http(s) URLs are accepted,
# and no ordinary role can point the extension at another URL.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use DfeTest;
use FakeServer;

my $openssl = `sh -c 'command -v openssl' 2>/dev/null`;
chomp $openssl;
plan skip_all => 'openssl is not installed (test/setup_debian.sh installs it)' unless $openssl;

my $dir = PostgreSQL::Test::Utils::tempdir;
my ($cert, $key) = ("$dir/cert.pem", "$dir/key.pem");
system($openssl, qw(req -x509 -newkey rsa:2048 -nodes -subj /CN=127.0.0.1),
	'-addext', 'subjectAltName=IP:127.0.0.1', qw(-days 1 -keyout), $key, '-out', $cert) == 0
  or die "openssl req failed: $?";

my $fake = FakeServer->start(tls_cert => $cert, tls_key => $key);
my $url = $fake->url;
my $port = $fake->port;
like($url, qr{^https://127\.0\.0\.1:\d+$}, 'the fake speaks https');
my $conn = $fake->config->{connection_id};

my $node = DfeTest::new_node('tls', conf => <<"CONF");
dfe_airbyte.airbyte_url = '$url'
dfe_airbyte.airbyte_client_id = 'test-client'
dfe_airbyte.airbyte_client_secret = 'test-secret-value'
dfe_airbyte.connection_id = '$conn'
dfe_airbyte.sync_poll_interval = 1
dfe_airbyte.http_retry_base_delay = 50
dfe_airbyte.http_max_retries = 3
dfe_airbyte.http_connect_timeout = 5
dfe_airbyte.http_timeout = 10
CONF
DfeTest::wait_for_worker($node);

sub sql { return $node->safe_psql('postgres', $_[0]) }

sub reload_with
{
	my ($setting, $value) = @_;
	sql("ALTER SYSTEM SET $setting = '$value'");
	sql('SELECT pg_reload_conf()');
	ok(DfeTest::poll_until($node, "SHOW $setting", $value, 30), "$setting = $value after the reload");
}

# ------------------------------------------------------------------ not trusted
my $mark = $fake->mark;
my ($ret, $out, $err) = $node->psql('postgres', 'SELECT dfe_airbyte_start_sync()');
isnt($ret, 0, 'self-signed certificate: dfe_airbyte_start_sync() fails');
# libcurl's wording: "SSL certificate problem: ..." in 7.88 and 8.14
# (Debian 12, 13), "SSL certificate OpenSSL verify result: ..." in 8.23
# (Debian unstable, with PostgreSQL 18)
like($err, qr/ERROR:  the Airbyte token request failed: SSL certificate (problem|OpenSSL verify result): self.signed certificate/,
	'the error names the call and the certificate problem');
like($err, qr/DETAIL:  POST \Q$url\E\/api\/public\/v1\/applications\/token; 1 attempt\(s\), no HTTP answer/,
	'one attempt: a certificate problem is not retried');
like($err, qr/HINT:  .*dfe_airbyte\.http_ca_file/, 'the hint says how to trust a private CA');
is_deeply(scalar $fake->requests(since => $mark), [], 'no request reached the fake');
ok(DfeTest::poll_until($node,
		"SELECT check_error ~ 'SSL certificate (problem|OpenSSL verify result)' FROM dfe_airbyte.sync_health", 't', 30),
	'the worker reports the certificate problem in sync_health');
is_deeply(scalar $fake->requests(since => $mark), [], 'nor from the worker');

# ------------------------------------------------------------------ trusted
reload_with('dfe_airbyte.http_ca_file', $cert);
$mark = $fake->mark;
my $job = sql('SELECT dfe_airbyte_start_sync()');
like($job, qr/^\d+$/, 'with the CA trusted dfe_airbyte_start_sync() returns a job id');
my @calls = map { "$_->{method} $_->{path}" } @{ $fake->requests(since => $mark, path => qr{^/api/}) };
ok((grep { $_ eq 'POST /api/public/v1/jobs' } @calls), 'the sync was started over TLS');
is($fake->control(GET => '/airbyte/jobs')->{jobs}[-1]{jobId}, $job, 'the job exists in the fake');
ok(DfeTest::poll_until($node, 'SELECT check_error IS NULL FROM dfe_airbyte.sync_health', 't', 30),
	'the worker trusts the CA too after the reload');

# host name verification stays on: the certificate is for 127.0.0.1 only
reload_with('dfe_airbyte.airbyte_url', "https://localhost:$port");
$mark = $fake->mark;
($ret, $out, $err) = $node->psql('postgres', 'SELECT dfe_airbyte_start_sync()');
isnt($ret, 0, 'trusted CA, wrong host name: refused');
like($err, qr/ERROR:  the Airbyte token request failed: .*(subject name|does not match|localhost)/,
	'the error says the name does not match the certificate');
like($err, qr/HINT:  .*not issued for the host name in the URL/, 'the hint mentions the host name');
is_deeply(scalar $fake->requests(since => $mark), [], 'no request was sent');

# a CA file that does not exist is a clear error too, not a fall-back to no verification
reload_with('dfe_airbyte.airbyte_url', $url);
reload_with('dfe_airbyte.http_ca_file', "$dir/no-such-ca.pem");
($ret, $out, $err) = $node->psql('postgres', 'SELECT dfe_airbyte_start_sync()');
isnt($ret, 0, 'missing CA file: refused');
like($err, qr/ERROR:  the Airbyte token request failed: .*(CA|certificate)/i, 'the error is about the CA file');
like($err, qr/1 attempt\(s\)/, 'and is not retried');
like($err, qr/HINT:  dfe_airbyte\.http_ca_file could not be read as a CA bundle/, 'the hint names the setting');
reload_with('dfe_airbyte.http_ca_file', $cert);

# ------------------------------------------------------------------ only http and https
for my $bad ("ftp://127.0.0.1:$port/", 'file:///etc/passwd')
{
	reload_with('dfe_airbyte.airbyte_url', $bad);
	$mark = $fake->mark;
	($ret, $out, $err) = $node->psql('postgres', 'SELECT dfe_airbyte_start_sync()');
	isnt($ret, 0, "$bad: refused");
	like($err, qr/ERROR:  the Airbyte token request: only http and https URLs are allowed/,
		"$bad: the error names the call and the rule");
	like($err, qr/HINT:  Check the dfe_airbyte URL settings/, "$bad: the hint says what to check");
	unlike($err, qr/root:/, "$bad: nothing of the target is shown");
	is_deeply(scalar $fake->requests(since => $mark), [], "$bad: no request was made");
}
reload_with('dfe_airbyte.airbyte_url', $url);
like(sql('SELECT dfe_airbyte_start_sync()'), qr/^\d+$/, 'back on the https URL it works again');

# ------------------------------------------------------------------ nobody else may change the URL
sql('CREATE ROLE plain LOGIN; CREATE ROLE app LOGIN IN ROLE dfe_airbyte_admin');
for my $role (qw(plain app))
{
	for my $stmt ("SET dfe_airbyte.airbyte_url = 'http://127.0.0.1:1/'",
		"SELECT set_config('dfe_airbyte.airbyte_url', 'http://127.0.0.1:1/', false)",
		"ALTER ROLE $role SET dfe_airbyte.airbyte_url = 'http://127.0.0.1:1/'",
		"ALTER SYSTEM SET dfe_airbyte.airbyte_url = 'http://127.0.0.1:1/'",
		"SET dfe_airbyte.http_ca_file = '/etc/passwd'")
	{
		($ret, $out, $err) = $node->psql('postgres', $stmt, extra_params => [ '-U', $role ]);
		isnt($ret, 0, "$role: '$stmt' fails");
		like($err, qr/ERROR:  (parameter "dfe_airbyte\.[a-z_]+" cannot be changed now|permission denied|must be superuser)/,
			"$role: '$stmt' says why");
	}
	($ret, $out, $err) = $node->psql('postgres', 'SHOW dfe_airbyte.airbyte_url', extra_params => [ '-U', $role ]);
	is($out, $url, "$role: the URL is unchanged");
}
# a URL given at connection start (PGOPTIONS) is refused too
{
	local $ENV{PGOPTIONS} = '-c dfe_airbyte.airbyte_url=http://127.0.0.1:1/';
	($ret, $out, $err) = $node->psql('postgres', 'SHOW dfe_airbyte.airbyte_url', extra_params => [ '-U', 'plain' ]);
	isnt($ret, 0, 'plain: a URL in the connection options is refused');
	like($err, qr/parameter "dfe_airbyte\.airbyte_url" cannot be changed now/, 'plain: and says why');
}
is(sql("SELECT count(*) FROM pg_db_role_setting WHERE array_to_string(setconfig, ',') LIKE '%airbyte_url%'"), '0',
	'no per-role URL was stored');

$node->stop;
unlike(slurp_file($node->logfile), qr/test-secret-value/, 'secret not in the server log');
done_testing();
