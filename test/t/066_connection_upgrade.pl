# The connection pieces of the 0.1.0 -> 0.2.0 upgrade: an upgraded install
# has the same connection_watch, sync_health, slot_recreations constraint,
# functions and grants as a fresh one.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use DfeTest;

my $node = DfeTest::new_node('upgrade', no_extension => 1);
$node->safe_psql('postgres', "CREATE EXTENSION dfe_airbyte VERSION '0.1.0'");
$node->safe_psql('postgres', "INSERT INTO dfe_airbyte.slot_recreations (slot_name, reason) VALUES ('airbyte_slot', 'lost')");
$node->safe_psql('postgres', 'ALTER EXTENSION dfe_airbyte UPDATE');
$node->safe_psql('postgres', 'CREATE DATABASE fresh');
$node->safe_psql('fresh', 'CREATE EXTENSION dfe_airbyte');

my $q = <<'SQL';
SELECT 'view ' || pg_get_viewdef('dfe_airbyte.sync_health'::regclass)
UNION ALL
SELECT 'column ' || attnum || ' ' || attname || ' ' || format_type(atttypid, atttypmod)
  FROM pg_attribute WHERE attrelid = 'dfe_airbyte.connection_watch'::regclass AND attnum > 0
UNION ALL
SELECT 'constraint ' || conname || ' ' || pg_get_constraintdef(oid)
  FROM pg_constraint WHERE conrelid IN ('dfe_airbyte.slot_recreations'::regclass, 'dfe_airbyte.connection_watch'::regclass)
UNION ALL
SELECT 'function ' || pg_get_functiondef(p.oid) || ' ' || coalesce(array_to_string(p.proacl, ','), '')
  FROM pg_proc p WHERE proname IN ('dfe_airbyte_deploy_plan', 'dfe_airbyte_repair')
UNION ALL
SELECT 'acl ' || c.relname || ' ' || array_to_string(c.relacl, ',')
  FROM pg_class c WHERE c.oid IN ('dfe_airbyte.connection_watch'::regclass, 'dfe_airbyte.sync_health'::regclass)
ORDER BY 1
SQL
my $upgraded = $node->safe_psql('postgres', $q);
my $fresh = $node->safe_psql('fresh', $q);
like($fresh, qr/connection_status/, 'fresh: sync_health has connection_status');
is($upgraded, $fresh, 'upgraded = fresh for the connection objects');
is($node->safe_psql('postgres', 'SELECT count(*) FROM dfe_airbyte.connection_watch'), '1', 'upgraded: the watch row');
is($node->safe_psql('postgres', 'SELECT reason FROM dfe_airbyte.slot_recreations'), 'lost', 'data kept');
is($node->safe_psql('postgres', "SELECT count(*) FROM dfe_airbyte_repair() WHERE step = 'slot'"), '1', 'repair works after the upgrade');
$node->stop;
done_testing();
