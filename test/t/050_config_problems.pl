# dfe_airbyte.config_problems, settings part: what pg_regress cannot set
# (server settings, environment fallbacks, secrets).  Rows name the setting
# and what is wrong, never a secret's value.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use DfeTest;

my $secret = 'S3cr3t-client-value';
my $cred_marker = 'cred-marker-7d1f';

# environment fallbacks the postmaster inherits
local $ENV{AIRBYTE_CONFIGURATION} = 'this is not json';
local $ENV{BIGQUERY_AIRBYTE_DATASET} = 'service_airbyte_test';

my $node = DfeTest::new_node('problems', conf => <<"CONF");
dfe_airbyte.airbyte_url = 'ftp://airbyte.example.org'
dfe_airbyte.airbyte_client_id = 'client'
dfe_airbyte.airbyte_client_secret = '$secret'
dfe_airbyte.bigquery_project = 'project'
dfe_airbyte.hidden_policy_tag = 'projects/p/taxonomies/t'
dfe_airbyte.google_credentials = '{"type": "external_account", "audience": "$cred_marker"'
dfe_airbyte.max_slot_wal_size = '1GB'
max_slot_wal_keep_size = '10GB'
CONF

my $all_sql = q{SELECT string_agg(concat_ws(' ', severity, object, problem, hint), E'\n') FROM dfe_airbyte.config_problems};

sub problems
{
	return $node->safe_psql('postgres',
		"SELECT severity || ' ' || object || ': ' || problem FROM dfe_airbyte.config_problems"
		  . " WHERE object LIKE 'dfe_airbyte.%' OR object IN ('wal_level', 'max_slot_wal_keep_size')"
		  . " ORDER BY object, problem");
}

my $rows = problems();
like($rows, qr/^error dfe_airbyte.airbyte_url: the Airbyte server URL does not start with http:\/\/ or https:\/\/$/m,
	'non-http Airbyte URL');
like($rows, qr/^error dfe_airbyte.connection_id: .*AIRBYTE_CONFIGURATION is not a JSON object with a CONNECTION_ID/m,
	'unusable AIRBYTE_CONFIGURATION');
like($rows, qr/^error dfe_airbyte.hidden_policy_tag: .*is not of the form projects\/P\/locations/m,
	'malformed policy tag');
like($rows, qr/^error dfe_airbyte.google_credentials: the Google credential configuration is not a valid JSON object$/m,
	'broken credential JSON');
unlike($rows, qr/bigquery_dataset/, 'BIGQUERY_AIRBYTE_DATASET from the environment counts');
unlike($rows, qr/client_id|client_secret|bigquery_project/, 'settings that are set are not reported');
unlike($rows, qr/max_slot_wal|wal_level/, 'WAL limits set and wal_level logical: no rows');

my $all = $node->safe_psql('postgres', $all_sql);
unlike($all, qr/\Q$secret\E/, 'the client secret never appears');
unlike($all, qr/\Q$cred_marker\E/, 'the credential configuration never appears');

# plain http elsewhere than localhost, and a credential file that cannot be read
$node->safe_psql('postgres', q{
	ALTER SYSTEM SET dfe_airbyte.airbyte_url = 'http://airbyte.example.org';
	ALTER SYSTEM SET dfe_airbyte.google_credentials = '/nonexistent/dir/creds-7d1f.json';
	ALTER SYSTEM SET dfe_airbyte.hidden_policy_tag = 'projects/p/locations/europe-west2/taxonomies/1/policyTags/2';
});
$node->reload;
ok($node->poll_query_until('postgres',
	"SELECT setting LIKE 'http:%' FROM pg_settings WHERE name = 'dfe_airbyte.airbyte_url'"), 'reloaded');
$rows = problems();
like($rows, qr/^warning dfe_airbyte.airbyte_url: the Airbyte server URL uses plain http:\/\//m, 'plain http warned');
like($rows, qr/^error dfe_airbyte.google_credentials: the server cannot read the Google credential configuration file it names: No such file or directory$/m,
	'unreadable credential file');
unlike($rows, qr/hidden_policy_tag/, 'well-formed policy tag accepted');
$all = $node->safe_psql('postgres', $all_sql);
unlike($all, qr/creds-7d1f/, 'the credential file path never appears');

# a readable credential file, https and localhost http are fine
my $creds = $node->data_dir . '/creds.json';
open(my $fh, '>', $creds) or die "cannot write $creds: $!";
print $fh qq({"type": "external_account"}\n);
close($fh);
$node->safe_psql('postgres', qq{
	ALTER SYSTEM SET dfe_airbyte.airbyte_url = 'http://127.0.0.1:8000';
	ALTER SYSTEM SET dfe_airbyte.google_credentials = 'creds.json';
});
$node->reload;
ok($node->poll_query_until('postgres',
	"SELECT setting LIKE 'http://127%' FROM pg_settings WHERE name = 'dfe_airbyte.airbyte_url'"), 'reloaded again');
$rows = problems();
unlike($rows, qr/airbyte_url|google_credentials/, 'local http URL and readable relative credential file accepted');
$node->stop;

# a server without logical decoding, and the extension in a database the worker does not use
my $replica = DfeTest::new_node('replica_wal', conf => "wal_level = replica\nmax_wal_senders = 10\n");
$replica->safe_psql('postgres', 'CREATE DATABASE other');
$replica->safe_psql('other', 'CREATE EXTENSION dfe_airbyte');
$rows = $replica->safe_psql('other',
	"SELECT severity || ' ' || object || ': ' || problem FROM dfe_airbyte.config_problems ORDER BY object, problem");
like($rows, qr/^error wal_level: wal_level is not logical/m, 'wal_level replica is an error');
like($rows, qr/^error dfe_airbyte.database: the background worker works in database "postgres", not in this one \("other"\)/m,
	'extension used in a database the worker does not serve');
like($rows, qr/^warning max_slot_wal_keep_size: /m, 'no server backstop');
like($rows, qr/^warning dfe_airbyte.max_slot_wal_size: /m, 'no per-service limit');
$replica->stop;

done_testing();
