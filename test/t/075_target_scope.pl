# target_scope (src/target_scope.c): a task acting for one target.  Inside
# the scope the target's settings (dfe_airbyte.targets.settings) override
# the global ones and the current target is the target; after the scope,
# and after an error inside it (in a function, a savepoint, a worker task
# spanning transactions), the global values and "local" are back; events
# carry the target; one target's error does not stop the others; the
# network worker keeps one session per target across its tasks.  The C
# entry points are declared here (the extension does not install them):
# src/target_scope_probe.c.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use DfeTest;
use DfeTarget;

my @majors = DfeTarget::majors();
plan skip_all => 'no target server' unless @majors;
my ($ta, $tc) = map { DfeTarget->new("scope$_", major => $majors[0]) } ('a', 'c');
my $dir = PostgreSQL::Test::Utils::tempdir();
my $passfile = DfeTarget::write_passfile("$dir/pgpass", $ta, $tc);

my $node = DfeTest::new_node('control', conf => <<"CONF");
dfe_airbyte.passfile = '$passfile'
dfe_airbyte.target_timeout = '5s'
dfe_airbyte.slot_name = 'global_slot'
dfe_airbyte.max_slot_wal_size = '1GB'
dfe_airbyte.migration_poll_interval = 1
CONF

sub lit { my ($s) = @_; $s =~ s/'/''/g; return "'$s'" }
sub sql { return $node->safe_psql('postgres', $_[0]) }

sql(qq{
CREATE FUNCTION public.scope_settings(target text, gucs text[])
  RETURNS text AS 'dfe_airbyte', 'dfe_airbyte_scope_settings' LANGUAGE C;
CREATE FUNCTION public.scope_worker(gucs text[]) RETURNS int
  AS 'dfe_airbyte', 'dfe_airbyte_scope_worker' LANGUAGE C;
CREATE FUNCTION public.scope_current() RETURNS text
  AS 'dfe_airbyte', 'dfe_airbyte_scope_current' LANGUAGE C;
SELECT dfe_airbyte_add_target('scope_a', ${\ lit($ta->conninfo)}, '{"slot_name": "slot_a", "max_slot_wal_size": "2GB"}');
SELECT dfe_airbyte_add_target('scope_c', ${\ lit($tc->conninfo)}, '{"max_slot_wal_size": "3GB"}');
-- a target nobody listens for: its queries fail
INSERT INTO dfe_airbyte.targets (name, conninfo, settings)
  VALUES ('scope_b', 'host=127.0.0.1 port=1 dbname=service user=nobody', '{"slot_name": "slot_b"}');
});

my $gucs = q{'{dfe_airbyte.slot_name,dfe_airbyte.max_slot_wal_size}'};
my $global = 'dfe_airbyte.slot_name=global_slot dfe_airbyte.max_slot_wal_size=1024';
my $after = q{SELECT scope_current() || ' ' || current_setting('dfe_airbyte.slot_name') || ' '
	|| current_setting('dfe_airbyte.max_slot_wal_size')};

# --- in a function, as the SQL entry points do ---------------------------
is(sql("SELECT scope_settings('scope_a', $gucs)"),
	'current=scope_a dfe_airbyte.slot_name=slot_a dfe_airbyte.max_slot_wal_size=2048 db=service',
	"inside the scope: the target's settings, the target, its database");
is(sql("SELECT scope_settings('scope_c', $gucs)"),
	'current=scope_c dfe_airbyte.slot_name=global_slot dfe_airbyte.max_slot_wal_size=3072 db=service',
	'a setting the target does not override keeps the global value');
is(sql("SELECT scope_settings('local', $gucs)"), "current=local $global db=postgres",
	'local: the global settings, this database');
is(sql("SELECT scope_settings('scope_a', $gucs) IS NOT NULL; $after"), "t\nlocal global_slot 1GB",
	'after the scope, in the same session: the global values, local');
is(sql("BEGIN; SELECT scope_settings('scope_a', $gucs) IS NOT NULL; $after; COMMIT"), "t\nlocal global_slot 1GB",
	'... and in the same transaction');

# after an error inside the scope
my ($ret, $out, $err) = $node->psql('postgres', "SELECT scope_settings('scope_a', '{dfe_airbyte.slot_name,!}');\n$after;", on_error_stop => 0);
like($err, qr/failing inside the scope of "scope_a"/, 'an error inside the scope');
is($out, 'local global_slot 1GB', '... then the global values and local in the same session');
($ret, $out, $err) = $node->psql('postgres', "SELECT scope_settings('scope_b', $gucs);\n$after;", on_error_stop => 0);
like($err, qr/could not read the database name on target "scope_b"/, 'an unreachable target fails inside its scope');
is($out, 'local global_slot 1GB', '... then the global values and local');
# an error caught by a savepoint (or a PL/pgSQL exception block): the
# transaction goes on, and what it does next is not the target's
($ret, $out, $err) = $node->psql('postgres', "BEGIN;\nSAVEPOINT s;\n"
	. "SELECT scope_settings('scope_a', '{dfe_airbyte.slot_name,!}');\nROLLBACK TO s;\n$after;\nCOMMIT;\n$after;", on_error_stop => 0);
is($out, "local global_slot 1GB\nlocal global_slot 1GB", 'after ROLLBACK TO SAVEPOINT: local and the global values');
is(sql(q{DO $$ BEGIN PERFORM scope_settings('scope_a', '{dfe_airbyte.slot_name,!}');
	EXCEPTION WHEN raise_exception THEN NULL; END $$; } . $after), 'local global_slot 1GB',
	'after a PL/pgSQL exception block: the same');

# --- in a worker, as the workers' tasks do -------------------------------
sql("SELECT scope_worker($gucs)");
is(sql(q{SELECT string_agg(target || ': ' || detail, E'\n' ORDER BY id) FROM dfe_airbyte.events WHERE kind = 'scope_probe'}),
	join("\n",
		"local: current=local $global",
		'scope_a: current=scope_a dfe_airbyte.slot_name=slot_a dfe_airbyte.max_slot_wal_size=2048',
		'scope_b: current=scope_b dfe_airbyte.slot_name=slot_b dfe_airbyte.max_slot_wal_size=1024',
		'scope_c: current=scope_c dfe_airbyte.slot_name=global_slot dfe_airbyte.max_slot_wal_size=3072'),
	'each task: its target, its settings over the global ones, the events carry the target');
is(sql(q{SELECT string_agg(target || ': ' || detail, E'\n' ORDER BY id) FROM dfe_airbyte.events WHERE kind = 'scope_probe_db'}),
	"local: postgres\nscope_a: service\nscope_c: service",
	'the second transaction reaches each target; the unreachable one fails there');
like(slurp_file($node->logfile), qr/WARNING:  dfe_airbyte target "scope_b": could not read the database name on target "scope_b"/,
	"its error is a WARNING naming the target");
is(sql(q{SELECT target || ': ' || detail FROM dfe_airbyte.events WHERE kind = 'scope_probe_after'}),
	"local: current=local $global", 'after every task, outside any scope: local, the global values');

# --- the network worker keeps its session to a target across tasks ------
# (src/target.c): its deploy watch reads scope_a's schema_migrations every
# second, over one connection, not one new session per look
sub watch_after
{
	my ($since) = @_;
	return DfeTest::poll_until($node, "SELECT checked_at > '$since' FROM dfe_airbyte.migration_watch "
		. "WHERE target = 'scope_a'", 't', 90);
}
sub service_sessions
{
	return $ta->node->safe_psql('postgres', q{SELECT sessions FROM pg_stat_database WHERE datname = 'service'});
}
ok(watch_after('-infinity'), 'the network worker watches scope_a');
my $s0 = service_sessions();
my $t0 = sql('SELECT now()');
ok(watch_after(sql("SELECT '$t0'::timestamptz + interval '12 seconds'")), '... for 12 s, a look a second');
my $new_sessions = service_sessions() - $s0;
cmp_ok($new_sessions, '<=', 3, "12 s of looks opened at most 3 sessions on the target ($new_sessions)");

# its server restarts: the kept connection breaks, the next look reconnects
$ta->node->restart;
$ta->node->safe_psql('service', q{INSERT INTO public.schema_migrations VALUES ('20240401000000')});
ok(DfeTest::poll_until($node, q{SELECT version FROM dfe_airbyte.migration_watch WHERE target = 'scope_a'},
		'20240401000000', 90), 'after the restart of its server the watch reconnects and sees the new version');

done_testing();
