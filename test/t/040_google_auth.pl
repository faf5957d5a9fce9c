# The Google credential chain against the fake Azure AD, token
# proxy, STS and IAM: every request checked field by field, the three
# credential_source kinds, token reuse and renewal, each step failing with
# an error that names it and never shows a token.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;
use DfeTest;
use FakeServer;

my $fake = FakeServer->start;
my $url = $fake->url;
my $dir = PostgreSQL::Test::Utils::tempdir;
my $cred_file = "$dir/credentials.json";
my $fed_file = "$dir/azure-federated-token";
my $sa = 'airbyte@proj.iam.gserviceaccount.com';
my $audience = '//iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/azure-cip-identity-pool/providers/azure-cip-oidc-provider';
my $assertion = 'eyJhbGciOiJSUzI1NiJ9.federated-assertion-one.sig';
my $json = JSON::PP->new->canonical;

sub write_file
{
	my ($path, $text) = @_;
	open my $fh, '>', $path or die "$path: $!";
	print $fh $text;
	close $fh;
}

# a credential configuration with the given credential_source (and overrides)
sub cred_config
{
	my ($source, %over) = @_;
	my %cfg = (
		type => 'external_account',
		audience => $audience,
		subject_token_type => 'urn:ietf:params:oauth:token-type:jwt',
		token_url => "$url/v1/token",
		credential_source => $source,
		service_account_impersonation_url =>
		  "$url/v1/projects/-/serviceAccounts/$sa:generateAccessToken");
	while (my ($k, $v) = each %over)
	{
		if (defined $v) { $cfg{$k} = $v } else { delete $cfg{$k} }
	}
	return $json->encode(\%cfg);
}

sub form_decode
{
	my ($body) = @_;
	my %f;
	for my $pair (split /&/, $body)
	{
		my ($k, $v) = map { my $s = $_ // ''; $s =~ tr/+/ /; $s =~ s/%([0-9A-Fa-f]{2})/chr hex $1/ge; $s }
		  split /=/, $pair, 2;
		$f{$k} = $v;
	}
	return \%f;
}

write_file($fed_file, "$assertion\n");
write_file($cred_file, cred_config({ url => "$url/tenant-1/oauth2/v2.0/token" }));

my $node = DfeTest::new_node('google_auth', conf => <<"CONF");
dfe_airbyte.google_credentials = '$cred_file'
dfe_airbyte.azure_client_id = 'azure-client-id-1'
dfe_airbyte.azure_federated_token_file = '$fed_file'
dfe_airbyte.http_retry_base_delay = '50ms'
dfe_airbyte.http_max_retries = 2
CONF

my $check = 'SELECT credential_source, service_account, from_cache FROM dfe_airbyte_google_auth_check()';
my $STS = 'POST /v1/token';
my $IAM = 'POST /v1/projects/-/serviceAccounts/*:generateAccessToken';
my $AZ = 'POST /*/oauth2/v2.0/token';

# ---------------------------------------------------------------- Azure AD
my $mark = $fake->mark;
is($node->safe_psql('postgres', $check), "azure_ad|$sa|f", 'Azure AD chain gives a token');

my $az = $fake->requests(since => $mark, path => qr{/oauth2/v2\.0/token$});
is(scalar @$az, 1, 'one Azure AD request');
is($az->[0]{method}, 'POST', 'Azure AD: POST');
is($az->[0]{path}, '/tenant-1/oauth2/v2.0/token', 'Azure AD: the URL of credential_source.url');
like($az->[0]{headers}{'content-type'}, qr{^application/x-www-form-urlencoded}, 'Azure AD: form-encoded');
is_deeply(form_decode($az->[0]{body}), {
		grant_type => 'client_credentials',
		client_id => 'azure-client-id-1',
		scope => 'api://AzureADTokenExchange/.default',
		client_assertion_type => 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
		client_assertion => $assertion,
	}, 'Azure AD: every form field, the assertion read from the federated token file and trimmed');

my $sts = $fake->requests(since => $mark, path => qr{^/v1/token$});
is(scalar @$sts, 1, 'one STS request');
like($sts->[0]{headers}{'content-type'}, qr{^application/json}, 'STS: JSON body');
my $sts_body = $sts->[0]{json};
like($sts_body->{subject_token}, qr/^azure-\d+$/, 'STS: subject token is the Azure AD access token');
is_deeply($sts_body, {
		grant_type => 'urn:ietf:params:oauth:grant-type:token-exchange',
		audience => $audience,
		scope => 'https://www.googleapis.com/auth/cloud-platform',
		requested_token_type => 'urn:ietf:params:oauth:token-type:access_token',
		subject_token => $sts_body->{subject_token},
		subject_token_type => 'urn:ietf:params:oauth:token-type:jwt',
	}, 'STS: every field');

my $iam = $fake->requests(since => $mark, path => qr{generateAccessToken$});
is(scalar @$iam, 1, 'one IAM request');
is($iam->[0]{path}, "/v1/projects/-/serviceAccounts/$sa:generateAccessToken", 'IAM: the impersonation URL');
like($iam->[0]{headers}{authorization}, qr/^Bearer sts-\S+$/, 'IAM: Bearer STS token');
is_deeply($iam->[0]{json},
	{ scope => ['https://www.googleapis.com/auth/cloud-platform'], lifetime => '3600s' },
	'IAM: scope and lifetime');

# the expiry comes from expireTime; renewal 5 minutes before it
is($node->safe_psql('postgres',
		"SELECT expires_at > now() + interval '55 minutes' AND expires_at <= now() + interval '61 minutes',"
		  . " expires_at - renew_after FROM dfe_airbyte_google_auth_check()"),
	't|00:05:00', 'expireTime parsed; renewed 5 minutes before it');

# ---------------------------------------------------------------- reuse
$mark = $fake->mark;
my $stats0 = $fake->stats;
is($node->safe_psql('postgres', join(';', ($check) x 5)),
	join("\n", "azure_ad|$sa|f", ("azure_ad|$sa|t") x 4),
	'one session: the first call runs the chain, the next four reuse the token');
my $stats1 = $fake->stats;
is(($stats1->{$STS} // 0) - ($stats0->{$STS} // 0), 1, 'one STS exchange for five calls');
is(($stats1->{$IAM} // 0) - ($stats0->{$IAM} // 0), 1, 'one impersonation for five calls');

# the federated token file is read again for every chain (the kubelet rotates it)
write_file($fed_file, "  second-assertion-value-2  \n");
$mark = $fake->mark;
$node->safe_psql('postgres', $check);
$az = $fake->requests(since => $mark, path => qr{/oauth2/v2\.0/token$});
is(form_decode($az->[0]{body})->{client_assertion}, 'second-assertion-value-2',
	'the rotated federated token is used, trimmed');
write_file($fed_file, "$assertion\n");

# ---------------------------------------------------------------- renewal
# a short-lived token is renewed half-way through its life
$fake->config(impersonate_expires_in => 6);
$mark = $fake->mark;
is($node->safe_psql('postgres', <<'SQL'),
SELECT from_cache FROM dfe_airbyte_google_auth_check();
SELECT renew_after < expires_at AND expires_at < now() + interval '7 s' FROM dfe_airbyte_google_auth_check();
SELECT pg_sleep(greatest(0, extract(epoch FROM renew_after - clock_timestamp())) + 0.3)
  FROM dfe_airbyte_google_auth_check() WHERE from_cache;
SELECT from_cache FROM dfe_airbyte_google_auth_check();
SQL
	"f\nt\n\nf", 'after renew_after the next call runs the chain again');
is(scalar @{ $fake->requests(since => $mark, path => qr{^/v1/token$}) }, 2, 'two STS exchanges: first and renewal');
$fake->config(impersonate_expires_in => 3600);

# ---------------------------------------------------------------- token proxy (url)
my $proxy_secret = 'proxy-header-secret-4711';
$fake->config(proxy_required_headers => { 'X-Proxy-Key' => $proxy_secret }, proxy_token => 'proxy-subject-token-json');
write_file($cred_file, cred_config({
			url => "$url/azure-token-proxy.json",
			headers => { 'X-Proxy-Key' => $proxy_secret },
			format => { type => 'json', subject_token_field_name => 'access_token' } }));
$mark = $fake->mark;
is($node->safe_psql('postgres', $check), "url|$sa|f", 'proxy url, JSON format');
my $proxy = $fake->requests(since => $mark, path => qr{^/azure-token-proxy});
is(scalar @$proxy, 1, 'one proxy request');
is($proxy->[0]{method}, 'GET', 'proxy: GET');
is($proxy->[0]{headers}{'x-proxy-key'}, $proxy_secret, 'proxy: credential_source.headers sent');
is($fake->requests(since => $mark, path => qr{^/v1/token$})->[0]{json}{subject_token},
	'proxy-subject-token-json', 'STS got the token from the JSON field');
is(scalar @{ $fake->requests(since => $mark, path => qr{oauth2}) }, 0, 'no Azure AD request');

# text format (the default)
$fake->config(proxy_token => 'proxy-subject-token-text');
write_file($cred_file, cred_config({ url => "$url/azure-token-proxy", headers => { 'X-Proxy-Key' => $proxy_secret } }));
$mark = $fake->mark;
is($node->safe_psql('postgres', $check), "url|$sa|f", 'proxy url, text format');
is($fake->requests(since => $mark, path => qr{^/v1/token$})->[0]{json}{subject_token},
	'proxy-subject-token-text', 'STS got the body as the token');

# wrong header: the step is named, the header value is not shown
write_file($cred_file, cred_config({ url => "$url/azure-token-proxy", headers => { 'X-Proxy-Key' => 'wrong-secret-value-99' } }));
my ($ret, $out, $err) = $node->psql('postgres', $check);
like($err, qr/subject token request \(credential_source\.url\) failed: HTTP 401/, 'proxy refusal names the step and status');
unlike($err, qr/wrong-secret-value-99/, 'the header value is not in the error');

# ---------------------------------------------------------------- file
write_file("$dir/subject-token", "file-subject-token-1234\n");
write_file($cred_file, cred_config({ file => "$dir/subject-token" }));
$mark = $fake->mark;
is($node->safe_psql('postgres', $check), "file|$sa|f", 'credential_source.file');
is($fake->requests(since => $mark, path => qr{^/v1/token$})->[0]{json}{subject_token},
	'file-subject-token-1234', 'STS got the file contents, trimmed');

write_file("$dir/subject-token.json", '{"id_token": "file-json-token-5678"}');
write_file($cred_file, cred_config({ file => "$dir/subject-token.json",
			format => { type => 'json', subject_token_field_name => 'id_token' } }));
$mark = $fake->mark;
is($node->safe_psql('postgres', $check), "file|$sa|f", 'credential_source.file, JSON format');
is($fake->requests(since => $mark, path => qr{^/v1/token$})->[0]{json}{subject_token},
	'file-json-token-5678', 'STS got the JSON field of the file');

write_file("$dir/subject-token.json", '{"other": "x"}');
($ret, $out, $err) = $node->psql('postgres', $check);
like($err, qr/gave no "id_token" field/, 'JSON file without the field: clear error');

# inline JSON instead of a path
$node->append_conf('postgresql.conf', "dfe_airbyte.google_credentials = '"
	  . cred_config({ file => "$dir/subject-token" }) . "'\n");
$node->reload;
ok($node->poll_query_until('postgres',
		"SELECT current_setting('dfe_airbyte.google_credentials') LIKE '{%'"), 'inline JSON configured');
is($node->safe_psql('postgres', $check), "file|$sa|f", 'inline credential JSON works');
$node->append_conf('postgresql.conf', "dfe_airbyte.google_credentials = '$cred_file'\n");
$node->reload;
ok($node->poll_query_until('postgres',
		"SELECT current_setting('dfe_airbyte.google_credentials') = '$cred_file'"), 'back to the file');

# ---------------------------------------------------------------- configuration errors
sub config_error_like
{
	my ($text, $re, $name) = @_;
	write_file($cred_file, $text);
	my ($r, $o, $e) = $node->psql('postgres', $check);
	like($e, $re, $name);
	unlike($e, qr/\Q$proxy_secret\E/, "$name: no secret in the message");
	return $e;
}
my $src = { url => "$url/azure-token-proxy", headers => { 'X-Proxy-Key' => $proxy_secret } };
config_error_like(cred_config($src, token_url => undef), qr/ERROR:  Google credential configuration has no "token_url"/,
	'missing token_url is named');
config_error_like(cred_config($src, audience => undef), qr/has no "audience"/, 'missing audience is named');
config_error_like(cred_config(undef), qr/has no "credential_source"/, 'missing credential_source is named');
config_error_like(cred_config({ headers => { 'X-Proxy-Key' => $proxy_secret } }),
	qr/has no "credential_source.url" or "credential_source.file"/, 'credential_source without url or file');
config_error_like(cred_config($src, type => 'service_account'),
	qr/has type "service_account", expected "external_account"/, 'wrong type');
my $e = config_error_like('{"type": "external_account", "audience": "' . $proxy_secret . '", ',
	qr/is not a valid JSON object/, 'malformed JSON');
like($e, qr/near character \d+/, 'malformed JSON: the position, not the text');
unlink($cred_file);
($ret, $out, $err) = $node->psql('postgres', $check);
like($err, qr/could not open Google credential configuration file ".*credentials\.json": No such file/,
	'missing file is named');

# ---------------------------------------------------------------- each step failing
write_file($cred_file, cred_config({ url => "$url/tenant-1/oauth2/v2.0/token" }));

# 1. Azure AD refuses the assertion
$fake->config(federated_token => 'some-other-assertion');
($ret, $out, $err) = $node->psql('postgres', $check);
like($err, qr/ERROR:  Azure AD token request failed: HTTP 401/, 'Azure AD failure: step and status');
like($err, qr/AADSTS700024/, 'Azure AD failure: the server message');
like($err, qr/CONTEXT:  getting a Google access token: step 1/, 'Azure AD failure: context names the step');
unlike($err, qr/federated-assertion-one/, 'Azure AD failure: no assertion in the message');
$fake->config(federated_token => undef);

# 2. STS refuses the subject token; its message quotes the token, which is redacted
$fake->config(sts_expected_subject_token => 'not-the-token-we-send');
($ret, $out, $err) = $node->psql('postgres', $check);
like($err, qr/ERROR:  Google STS token exchange failed: HTTP 400/, 'STS failure: step and status');
like($err, qr/subject_token must be not-the-token-we-send, got \[redacted\]/, 'STS failure: server message, token redacted');
unlike($err, qr/azure-\d+/, 'STS failure: no subject token in the message');
$fake->config(sts_expected_subject_token => undef);

# 3. impersonation denied
$fake->config(service_account => 'someone-else@proj.iam.gserviceaccount.com');
($ret, $out, $err) = $node->psql('postgres', $check);
like($err, qr/ERROR:  Google service account impersonation failed: HTTP 403/, 'IAM failure: step and status');
like($err, qr/iam\.serviceAccounts\.getAccessToken' denied/, 'IAM failure: the server message');
like($err, qr/step 3/, 'IAM failure: context names the step');
unlike($err, qr/sts-\S+-\d+/, 'IAM failure: no STS token in the message');
$fake->config(service_account => $sa);

# transient failures are retried
$fake->faults({ method => 'POST', path => '^/v1/token$', status => 503, times => 1 },
	{ method => 'POST', path => 'generateAccessToken$', status => 500, times => 1 });
is($node->safe_psql('postgres', $check), "azure_ad|$sa|f", '5xx on STS and IAM: retried, token obtained');

# unset settings are named
$node->append_conf('postgresql.conf', "dfe_airbyte.azure_client_id = ''\n");
$node->reload;
ok($node->poll_query_until('postgres', "SELECT current_setting('dfe_airbyte.azure_client_id') = ''"), 'client id unset');
($ret, $out, $err) = $node->psql('postgres', $check);
like($err, qr/dfe_airbyte.azure_client_id is not set/, 'missing Azure client id is named');

# permissions: not for PUBLIC
$node->safe_psql('postgres', 'CREATE ROLE plain LOGIN');
($ret, $out, $err) = $node->psql('postgres', $check, extra_params => [ '-U', 'plain' ]);
like($err, qr/permission denied for function dfe_airbyte_google_auth_check/, 'non-admin role: permission denied');

# ---------------------------------------------------------------- no token in any log
my @secrets = ($assertion, 'second-assertion-value-2', $proxy_secret, 'proxy-subject-token-json',
	'file-subject-token-1234');
for my $r (@{ $fake->requests })
{
	push @secrets, $r->{json}{subject_token} if ref $r->{json} eq 'HASH' && $r->{json}{subject_token};
	push @secrets, $1 if ($r->{headers}{authorization} // '') =~ /^Bearer (\S+)/;
}
my $log = slurp_file($node->logfile);
my @leaked = grep { index($log, $_) >= 0 } @secrets;
is_deeply(\@leaked, [], 'no token, assertion or header secret in the server log (' . scalar(@secrets) . ' checked)');

$node->stop;
done_testing();
