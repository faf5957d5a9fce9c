#!/usr/bin/env bash
# Benchmark: what dfe_airbyte_deploy() costs the migration that calls it,
# and what the worker costs the server.
#
#  1. latency of "BEGIN; SELECT dfe_airbyte_deploy(); COMMIT;" against a
#     plain "BEGIN; INSERT INTO a_table ...; COMMIT;", interleaved in one
#     pgbench run (so both see the same machine), p50/p95/p99 and ratios;
#  2. the worker's CPU (utime+stime from /proc/<pid>/stat) and RSS while
#     idle for 60 s, and during a deploy against the fake Airbyte.
# Not part of test/check (about two minutes).
#
#   sudo test/bench/deploy_latency.sh     # or as a developer: test/bench/deploy_latency.sh
#   BENCH_ITERATIONS=2000 BENCH_CLIENTS=1 BENCH_IDLE_SECONDS=60 test/bench/deploy_latency.sh
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
    exec runuser -u "$test_user" -- env BENCH_ITERATIONS="${BENCH_ITERATIONS:-}" BENCH_CLIENTS="${BENCH_CLIENTS:-}" \
        BENCH_IDLE_SECONDS="${BENCH_IDLE_SECONDS:-}" bash "$work/test/bench/deploy_latency.sh" "$@"
fi

cd "$top"
bindir=$(test/tmp_install.sh "$top/tmp_install")
export PATH="$bindir:$PATH"
pgxs=$(dirname "$bindir")/lib/pgxs
export PERL5LIB="$top/test/lib:$pgxs/src/test/perl${PERL5LIB:+:$PERL5LIB}"
export TESTDIR="$top/test/bench" PG_REGRESS="$pgxs/src/test/regress/pg_regress"
exec perl "$top/test/bench/deploy_latency.pl"
