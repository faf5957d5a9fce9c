# Lists, stream configuration and config_problems per target, against real
# servers of PostgreSQL 15-18 with Azure's grants (test/lib/DfeTarget.pm):
# each target's lists are loaded without touching another's; the stream
# configuration comes from the target's own catalog (a table without a
# primary key becomes full_refresh_overwrite) and is byte-identical to what
# the local database gives for the same tables and lists; config_problems
# has rows per target, checks a remote disk against disk_size and Azure's
# read-only rule, and names a target it cannot reach in one row.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use DfeTest;
use DfeTarget;

my @majors = DfeTarget::majors();
my @targets = map { DfeTarget->new("lists$_", major => $_) } @majors;
my $dir = PostgreSQL::Test::Utils::tempdir();
my $passfile = DfeTarget::write_passfile("$dir/pgpass", @targets);

my $node = DfeTest::new_node('control', conf => <<"CONF");
dfe_airbyte.passfile = '$passfile'
dfe_airbyte.target_timeout = '5s'
CONF

sub lit { my ($s) = @_; $s =~ s/'/''/g; return "'$s'" }
sub sql { return $node->safe_psql('postgres', $_[0]) }

# the tables of DfeTarget's service database, in the control database too,
# so that the local stream configuration can be compared with the remote one
sql(q{
CREATE TABLE public.users (id bigserial PRIMARY KEY, email varchar NOT NULL,
    first_name varchar, created_at timestamp(6) NOT NULL, updated_at timestamp(6) NOT NULL);
CREATE TABLE public.courses (id bigserial PRIMARY KEY, name varchar,
    user_id bigint REFERENCES public.users, created_at timestamp(6), updated_at timestamp(6));
CREATE TABLE public.audit_logs (auditable_type varchar, auditable_id bigint, action varchar,
    created_at timestamp(6));
});

my $allow = "users: [email, id, first_name]\ncourses: [name, id, user_id]\naudit_logs: [action, created_at]\n";
my $block = "users: [email]\n";
my $excluded = "users: [created_at]\n";

# disk sizes: the first target has none, the others a 32GB disk and a slot
# limit (64GB) past Azure's read-only point
for my $i (0 .. $#targets)
{
	my $t = $targets[$i];
	my $settings = $i == 0 ? '{}' : '{"disk_size": "32GB", "max_slot_wal_size": "64GB", "slot_limit_action": "recreate"}';
	sql("SELECT dfe_airbyte_add_target('$t->{name}', ${\ lit($t->conninfo)}, '$settings')");
}

# --- lists: one target's load leaves the others alone ---------------------
sql("SELECT * FROM dfe_airbyte_load_config(${\ lit($allow)}, ${\ lit($block)}, ${\ lit($excluded)})");
for my $t (@targets)
{
	is(sql("SELECT string_agg(list || ':' || columns || '+' || added, ' ' ORDER BY list)
		FROM dfe_airbyte_load_config(${\ lit($allow)}, ${\ lit($block)}, ${\ lit($excluded)}, '$t->{name}')"),
		'allowlist:8+8 blocklist:1+1 excluded:1+1', "PG$t->{major}: its lists loaded");
}
SKIP:
{
	skip 'fewer than two target servers', 3 unless @targets >= 2;
	my ($a, $b) = @targets[0, 1];
	sql("SELECT * FROM dfe_airbyte_load_config('users: [id]', '', NULL, '$a->{name}')");
	is(sql("SELECT target || ' ' || count(*) FROM dfe_airbyte.allowlist
		WHERE target IN ('local', '$a->{name}', '$b->{name}') GROUP BY target ORDER BY target COLLATE \"C\""),
		"$a->{name} 1\n$b->{name} 8\nlocal 8", 'reloading one target changes only its allowlist');
	is(sql("SELECT string_agg(target, ' ' ORDER BY target COLLATE \"C\") FROM dfe_airbyte.blocklist"),
		join(' ', sort('local', map { $_->{name} } @targets[1 .. $#targets])), '... and only its blocklist');
	is(sql("SELECT count(*) FROM dfe_airbyte.excluded WHERE target = '$a->{name}'"), '1',
		'... its excluded list is kept when not given');
	sql("SELECT * FROM dfe_airbyte_load_config(${\ lit($allow)}, ${\ lit($block)}, ${\ lit($excluded)}, '$a->{name}')");
}

# --- stream configuration from each remote catalog ------------------------
my $local_json = sql('SELECT dfe_airbyte_stream_config_json()');
like($local_json, qr/"name":"audit_logs","syncMode":"full_refresh_overwrite"/, 'local: audit_logs has no primary key');
for my $t (@targets)
{
	my $json = sql("SELECT dfe_airbyte_stream_config_json('$t->{name}')");
	is($json, $local_json, "PG$t->{major}: the same PATCH body as the local database for the same tables and lists");
	is(sql("SELECT string_agg(s->>'name' || ' ' || (s->>'syncMode') || ' ' || coalesce(s->>'primaryKey', '-') || ' '
			|| (SELECT string_agg(f->'fieldPath'->>0, ',') FROM jsonb_array_elements(s->'selectedFields') f), E'\\n')
		FROM jsonb_array_elements(dfe_airbyte_stream_config('$t->{name}')->'configurations'->'streams') s"),
		join("\n",
			'audit_logs full_refresh_overwrite - action,created_at',
			'courses incremental_append [["id"]] _ab_cdc_lsn,_ab_cdc_deleted_at,_ab_cdc_updated_at,id,name,user_id',
			'users incremental_append [["id"]] _ab_cdc_lsn,_ab_cdc_deleted_at,_ab_cdc_updated_at,id,email,first_name',
			'airbyte_heartbeat full_refresh_overwrite [["id"]] id,last_heartbeat'),
		"PG$t->{major}: streams from the remote catalog (no primary key: full_refresh_overwrite)");
}
SKIP:
{
	skip 'no target server', 2 unless @targets;
	my $t = $targets[0];
	# a column only the remote table has: the remote catalog is what counts
	$t->node->safe_psql('service', 'ALTER TABLE public.users ADD COLUMN nickname varchar');
	sql("UPDATE dfe_airbyte.allowlist SET column_name = 'nickname' WHERE target = '$t->{name}' AND column_name = 'first_name'");
	like(sql("SELECT dfe_airbyte_stream_config_json('$t->{name}')"),
		qr/"name":"users".*\{"fieldPath":\["email"\]\},\{"fieldPath":\["nickname"\]\}/,
		'the remote column order, read from the remote catalog');
	like(sql('SELECT dfe_airbyte_stream_config_json()'), qr/"fieldPath":\["first_name"\]/,
		'the local configuration is unchanged');
	sql("SELECT * FROM dfe_airbyte_load_config(${\ lit($allow)}, NULL, NULL, '$t->{name}')");
	$t->node->safe_psql('service', 'ALTER TABLE public.users DROP COLUMN nickname');
}

# --- config_problems per target -------------------------------------------
sub problems
{
	my ($target, $where) = @_;
	return sql("SELECT string_agg(severity || ' ' || object || ': ' || problem, E'\\n' ORDER BY object, problem)
		FROM dfe_airbyte.config_problems WHERE target = '$target' AND ($where)");
}
for my $i (0 .. $#targets)
{
	my $t = $targets[$i];
	my $n = $t->{name};
	like(problems($n, "object = 'audit_logs'"),
		qr/^error audit_logs: allowlisted table "audit_logs" is not in publication "airbyte_publication".*\nwarning audit_logs: table "audit_logs" has no primary key/s,
		"PG$t->{major}: audit_logs out of the publication, without a primary key");
	is(problems($n, "object LIKE 'users.%' OR object LIKE 'courses.%'"),
		join("\n",
			'warning courses.created_at: column "created_at" of allowlisted table "courses" is in no list (allowlist, blocklist, excluded): it is not replicated',
			'warning courses.updated_at: column "updated_at" of allowlisted table "courses" is in no list (allowlist, blocklist, excluded): it is not replicated',
			'warning users.updated_at: column "updated_at" of allowlisted table "users" is in no list (allowlist, blocklist, excluded): it is not replicated'),
		"PG$t->{major}: columns in no list, from the remote catalog");
	if ($i == 0)
	{
		like(problems($n, "object = 'disk_size'"), qr/^warning disk_size: target "$n" has no disk_size/,
			"PG$t->{major}: no disk_size is a warning");
	}
	else
	{
		like(problems($n, "object = 'disk headroom'"),
			qr/^warning disk headroom: the slot may retain 64 GB before anything acts, more than the disk's headroom before Azure's read-only point/,
			"PG$t->{major}: a slot limit Azure's read-only rule hits first");
	}
}
# the heartbeat of a remote target, checked as the local one is
SKIP:
{
	skip 'no target server', 3 unless @targets;
	my $t = $targets[0];
	is(problems($t->{name}, "object = 'airbyte_heartbeat'"), '', "PG$t->{major}: its heartbeat is fine");
	$t->node->safe_psql('service', 'DELETE FROM public.airbyte_heartbeat; ALTER PUBLICATION airbyte_publication DROP TABLE public.airbyte_heartbeat');
	like(problems($t->{name}, "object = 'airbyte_heartbeat'"),
		qr/^error airbyte_heartbeat: table airbyte_heartbeat has no row with id = 1.*\nerror airbyte_heartbeat: table airbyte_heartbeat is not in publication "airbyte_publication"/s,
		"PG$t->{major}: no heartbeat row, heartbeat out of the publication");
	is(sql("SELECT count(*) FROM dfe_airbyte.config_problems WHERE object = 'airbyte_heartbeat' AND target <> '$t->{name}' AND target <> 'local'"),
		'0', '... only for that target');
	$t->node->safe_psql('service', 'INSERT INTO public.airbyte_heartbeat VALUES (1, now()); ALTER PUBLICATION airbyte_publication ADD TABLE public.airbyte_heartbeat');
}

# a remote target's own settings are checked in its scope, under its name
SKIP:
{
	skip 'no target server', 2 unless @targets;
	my $n = $targets[0]{name};
	sql("UPDATE dfe_airbyte.targets SET settings = settings || '{\"hidden_policy_tag\": \"not/a/tag\"}' WHERE name = '$n'");
	like(problems($n, "object = 'dfe_airbyte.hidden_policy_tag'"),
		qr/^error dfe_airbyte.hidden_policy_tag: the hidden policy tag "not\/a\/tag" is not of the form/,
		'a remote target\'s own setting, checked under its name');
	is(sql("SELECT count(*) FROM dfe_airbyte.config_problems WHERE problem LIKE '%not/a/tag%' AND target IS DISTINCT FROM '$n'"),
		'0', '... and only there');
	sql("UPDATE dfe_airbyte.targets SET settings = settings - 'hidden_policy_tag' WHERE name = '$n'");
}

# how long the view takes with every target (a measurement, not a check)
{
	my $t0 = time;
	my $n = sql('SELECT count(*) FROM dfe_airbyte.config_problems');
	note sprintf('config_problems: %d rows for local and %d remote target(s) in %.0f ms (psql included)',
		$n, scalar(@targets), (time - $t0) * 1000);
}

# the same checks for local, unchanged: the rows of 0.2.0 with target local
like(problems('local', "object = 'audit_logs'"), qr/has no primary key/, 'local: the same check');
is(sql("SELECT count(*) FROM dfe_airbyte.config_problems WHERE target = 'local' AND object IN ('disk_size')"), '0',
	'local: no disk_size row (its disk is read with statvfs)');

SKIP:
{
	skip 'no target server', 3 unless @targets;
	my $t = $targets[-1];
	my $n = $t->{name};
	# a target whose server is down: one row saying so, the others still checked
	$t->node->stop;
	# (its settings' rows, which need no connection, are left out: this
	# cluster has no BigQuery settings, so every target has some)
	my $not_settings = "object NOT LIKE 'dfe_airbyte.%'";
	my $rows = sql("SELECT severity || ' ' || object || ': ' || problem FROM dfe_airbyte.config_problems WHERE target = '$n' AND $not_settings");
	like($rows, qr/^error target $n: target "$n" could not be checked: could not/, 'an unreachable target: one row');
	is(sql("SELECT count(*) FROM dfe_airbyte.config_problems WHERE target = '$n' AND $not_settings"), '1', '... only one');
	note $rows;
	like(problems('local', "object = 'audit_logs'"), qr/has no primary key/, '... and the other targets are still checked');
	$t->node->start;
}

done_testing();
