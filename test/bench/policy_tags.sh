#!/usr/bin/env bash
# Benchmark: dfe_airbyte_apply_policy_tags() on 500 tables (and their 500
# legacy raw tables) against the fake BigQuery with 50 ms latency on every
# BigQuery request, at dfe_airbyte.policy_tag_concurrency = 1 (one table
# after the other, the dfe-analytics gem's way) and 16, side by side.
# Prints wall times, the GET/PATCH counts from the fake's stats, and the
# ratio.  Not part of test/check (it takes about two minutes).
#
#   sudo test/bench/policy_tags.sh        # or as a developer: test/bench/policy_tags.sh
#   BENCH_TABLES=100 BENCH_LATENCY_MS=20 BENCH_CONCURRENCY=32 test/bench/policy_tags.sh
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
test_user=${DFE_TEST_USER:-dfe_airbyte_test}

if [ "$(id -u)" = 0 ]; then
    # PostgreSQL refuses to run as root: run as the test user in a copy
    "$top/test/setup_debian.sh"
    id "$test_user" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "$test_user"
    work=$(mktemp -d /tmp/dfe_airbyte-bench.XXXXXX)
    tar -C "$top" --exclude=./tmp_install --exclude=./results --exclude=./.git --exclude=./tmp_check* -cf - . | tar -C "$work" -xf -
    chown -R "$test_user" "$work"
    echo "running the benchmark as $test_user in $work"
    exec runuser -u "$test_user" -- env BENCH_TABLES="${BENCH_TABLES:-}" BENCH_LATENCY_MS="${BENCH_LATENCY_MS:-}" \
        BENCH_CONCURRENCY="${BENCH_CONCURRENCY:-}" bash "$work/test/bench/policy_tags.sh" "$@"
fi

cd "$top"
bindir=$(test/tmp_install.sh "$top/tmp_install")
export PATH="$bindir:$PATH"
pgxs=$(dirname "$bindir")/lib/pgxs
export PERL5LIB="$top/test/lib:$pgxs/src/test/perl${PERL5LIB:+:$PERL5LIB}"
export TESTDIR="$top/test/bench" PG_REGRESS="$pgxs/src/test/regress/pg_regress"
exec perl "$top/test/bench/policy_tags.pl"
