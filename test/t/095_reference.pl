# The documentation matches the installed extension:
# - every function of the extension (pg_depend on the extension), every table
#   and view of schema dfe_airbyte (with each column) and every dfe_airbyte.*
#   setting is documented in docs/reference.md;
# - nothing stale: every dfe_airbyte_* function and dfe_airbyte.* object or
#   setting that docs/reference.md or README.md names exists;
# - README.md is at most 45 KB, and every relative link of README.md and
#   docs/*.md resolves, file and #anchor (GitHub's heading anchors);
# - no citation of the project's own contract or tracker (its section signs,
#   "issue N"): docs cite real sources.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use File::Basename qw(dirname);
use File::Spec;
use DfeTest;

my $top = $ENV{DFE_TOP} // '.';
my $node = DfeTest::new_node('reference');
sub sql { return $node->safe_psql('postgres', $_[0]) }

my $reference = slurp_file("$top/docs/reference.md");
my $readme = slurp_file("$top/README.md");

# The text of a markdown section: from the heading matching $re to the next
# heading of the same or a higher level.
sub section
{
	my ($text, $re) = @_;
	my @lines = split /\n/, $text;
	my ($level, @out);
	my $in_code = 0;
	for my $line (@lines)
	{
		$in_code = !$in_code if $line =~ /^```/;
		if (!$in_code && $line =~ /^(#+) (.*)/)
		{
			my ($l, $title) = (length $1, $2);
			last if defined $level && $l <= $level;
			$level = $l if !defined $level && $title =~ $re;
		}
		push @out, $line if defined $level;
	}
	return join("\n", @out);
}

# ---------------------------------------------------------------- the installed objects
my @functions = split /\n/, sql(<<'SQL');
SELECT DISTINCT p.proname FROM pg_catalog.pg_depend d
  JOIN pg_catalog.pg_proc p ON d.classid = 'pg_catalog.pg_proc'::regclass AND d.objid = p.oid
 WHERE d.refclassid = 'pg_catalog.pg_extension'::regclass AND d.deptype = 'e'
   AND d.refobjid = (SELECT oid FROM pg_catalog.pg_extension WHERE extname = 'dfe_airbyte')
 ORDER BY 1
SQL
my @relations = split /\n/, sql(<<'SQL');
SELECT c.relname || ' ' || CASE c.relkind WHEN 'v' THEN 'view' ELSE 'table' END
  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'dfe_airbyte' AND c.relkind IN ('r', 'p', 'v', 'm')
 ORDER BY 1
SQL
my @settings = split /\n/, sql(
	q{SELECT name FROM pg_catalog.pg_settings WHERE name LIKE 'dfe\_airbyte.%' ORDER BY 1});
# the secret settings are GUC_NO_SHOW_ALL, so pg_settings does not list them
my @secrets = qw(dfe_airbyte.airbyte_client_secret dfe_airbyte.google_credentials dfe_airbyte.passfile);
for my $s (@secrets)
{
	is(sql("SELECT current_setting('$s', true) IS NOT NULL"), 't', "secret setting $s exists");
	push @settings, $s;
}
cmp_ok(scalar @functions, '>=', 20, 'the extension has its functions: ' . scalar @functions);
cmp_ok(scalar @relations, '>=', 15, 'schema dfe_airbyte has its tables and views: ' . scalar @relations);
cmp_ok(scalar @settings, '>=', 40, 'the dfe_airbyte.* settings are registered: ' . scalar @settings);

# ---------------------------------------------------------------- everything is documented
my $functions_doc = section($reference, qr/^Functions$/);
ok(length $functions_doc, 'docs/reference.md has a Functions section');
for my $f (@functions)
{
	like($functions_doc, qr/`\Q$f\E[`(]/, "function $f is in docs/reference.md, Functions");
}

# a documented signature "`name(arguments) → result`" lists the arguments
# the installed function has (names, types, defaults)
my %arguments = map { split /\t/, $_, 2 } split /\n/, sql(<<'SQL');
SELECT p.proname || E'\t' || pg_catalog.pg_get_function_arguments(p.oid)
  FROM pg_catalog.pg_depend d
  JOIN pg_catalog.pg_proc p ON d.classid = 'pg_catalog.pg_proc'::regclass AND d.objid = p.oid
 WHERE d.refclassid = 'pg_catalog.pg_extension'::regclass AND d.deptype = 'e'
   AND d.refobjid = (SELECT oid FROM pg_catalog.pg_extension WHERE extname = 'dfe_airbyte')
SQL
my $signatures = 0;
while ($functions_doc =~ /^`(dfe_airbyte_\w+)\(([^)]*)\)\s*→/mg)
{
	my ($name, $documented) = ($1, $2);
	$documented =~ s/\s+/ /g;
	# OUT arguments are the result columns, documented after the arrow
	my @installed = grep { !/^OUT / } split /, /, ($arguments{$name} // '(none)');
	my @documented = split /, /, $documented;
	for my $i (0 .. $#installed)
	{
		next unless defined $documented[$i];
		my ($n, $t, $d) = $installed[$i] =~ /^(\w+) (.+?)(?: DEFAULT (.+))?$/;
		my ($dn, $dt, $dd) = $documented[$i] =~ /^(\w+) (.+?)(?: DEFAULT (.+))?$/;
		next unless defined $dd && defined $d && "$n $t" eq "$dn $dt";
		# the same default written another way ('1 hour' for '01:00:00'::interval)
		$documented[$i] = $installed[$i]
		  if sql("SELECT ($dd)::$t IS NOT DISTINCT FROM ($d)::$t") eq 't';
	}
	is("@documented", "@installed", "the documented arguments of $name are the installed ones");
	$signatures++;
}
cmp_ok($signatures, '>=', 20, "signatures compared: $signatures");

my $relations_doc = section($reference, qr/^Tables and views$/);
ok(length $relations_doc, 'docs/reference.md has a Tables and views section');
for my $r (@relations)
{
	my ($name, $kind) = split / /, $r;
	my $doc = section($relations_doc, qr/`dfe_airbyte\.\Q$name\E`/);
	ok(length $doc, "$kind dfe_airbyte.$name has a heading in docs/reference.md, Tables and views");
	my @columns = split /\n/, sql(<<"SQL");
SELECT a.attname FROM pg_catalog.pg_attribute a
 WHERE a.attrelid = 'dfe_airbyte.$name'::regclass AND a.attnum > 0 AND NOT a.attisdropped
 ORDER BY a.attnum
SQL
	my @missing = grep { $doc !~ /\b\Q$_\E\b/ } @columns;
	is("@missing", '', "every column of $kind dfe_airbyte.$name is documented there");
}

my $settings_doc = section($reference, qr/^Settings$/);
ok(length $settings_doc, 'docs/reference.md has a Settings section');
for my $s (@settings)
{
	like($settings_doc, qr/^\| `\Q$s\E` \|[^|]+\|[^|]+\|[^|]*\|/m,
		"setting $s has a row (default, context, env) in docs/reference.md, Settings");
}

# ---------------------------------------------------------------- nothing stale
my %function = map { $_ => 1 } @functions;
my %relation = map { (split / /)[0] => 1 } @relations;
my %setting = map { $_ => 1 } @settings;
# names that look like objects but are not: roles, the test user, files
my %not_objects = map { $_ => 1 } qw(dfe_airbyte_admin dfe_airbyte_remote dfe_airbyte_test
  dfe_airbyte.so dfe_airbyte.control);

my %docs = ('docs/reference.md' => $reference, 'README.md' => $readme);
for my $file (sort keys %docs)
{
	my $text = $docs{$file};
	# the exporter's metrics are named dfe_airbyte_* too
	$text =~ s/^## Exporter metrics\n.*?(?=^## )//ms;
	my %named = map { $_ => 1 } $text =~ /\b(dfe_airbyte_[a-z0-9_]+)/g;
	my @stale = grep { !$function{$_} && !$not_objects{$_} } sort keys %named;
	is("@stale", '', "$file names no dfe_airbyte_* function that does not exist");
	my %dotted = map { $_ => 1 } $text =~ /\b(dfe_airbyte\.[a-z0-9_]++)(?!\*)/g;
	@stale = grep {
		my ($n) = /^dfe_airbyte\.(.*)/;
		!$relation{$n} && !$setting{$_} && !$not_objects{$_}
	} sort keys %dotted;
	is("@stale", '', "$file names no dfe_airbyte.* table, view or setting that does not exist");
}

# ---------------------------------------------------------------- size, links, citations
my $size = -s "$top/README.md";
cmp_ok($size, '<=', 45 * 1024, "README.md is at most 45 KB ($size bytes)");

# GitHub's anchor of a heading: lower case, punctuation dropped, spaces to '-',
# a repeated heading gets -1, -2, ...
sub anchors
{
	my ($path) = @_;
	my (%seen, %anchors);
	my $in_code = 0;
	for my $line (split /\n/, slurp_file($path))
	{
		$in_code = !$in_code if $line =~ /^```/;
		next if $in_code || $line !~ /^#{1,6} (.*)/;
		my $slug = lc $1;
		$slug =~ s/^\s+|\s+$//g;
		$slug =~ s/[^\w\- ]//g;
		$slug =~ tr/ /-/;
		my $n = $seen{$slug}++;
		$anchors{ $n ? "$slug-$n" : $slug } = 1;
	}
	return \%anchors;
}

my @md = ('README.md', map { "docs/" . (File::Spec->splitpath($_))[2] } glob("$top/docs/*.md"));
my (@broken, $links);
for my $file (@md)
{
	my $text = slurp_file("$top/$file");
	$text =~ s/^```.*?^```//msg;    # code blocks hold no links
	while ($text =~ /\[[^\]]*\]\(([^)\s]+)\)/g)
	{
		my $target = $1;
		next if $target =~ /^[a-z]+:/;    # https:, mailto:
		$links++;
		my ($path, $anchor) = split /#/, $target, 2;
		my $full = $path eq '' ? "$top/$file" : File::Spec->catfile($top, dirname($file), $path);
		if (!-e $full)
		{
			push @broken, "$file: $target (no such file)";
		}
		elsif (defined $anchor && $full =~ /\.md$/ && !anchors($full)->{$anchor})
		{
			push @broken, "$file: $target (no such heading)";
		}
	}
}
cmp_ok($links, '>', 100, "links checked in README.md and docs/*.md: $links");
is(join("\n", @broken), '', 'every relative link and anchor resolves');

my @citations;
for my $file (@md)
{
	my $n = 0;
	for my $line (split /\n/, slurp_file("$top/$file"))
	{
		$n++;
		push @citations, "$file:$n: $line"
		  if $line =~ /SPEC\s*§|\bSPEC\.md\b|(?<![\w\/#-])[Ii]ssues? \d+/;
	}
}
is(join("\n", @citations), '', 'no citation of the contract\'s sections or of tracker numbers in README.md or docs/');

done_testing();
