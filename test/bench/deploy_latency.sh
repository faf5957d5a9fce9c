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
. "$top/test/lib/as_test_user.sh"
dfe_reexec_as_test_user bench test/bench/deploy_latency.sh "$@"

cd "$top"
# measure the production build: no dfe_Assert() checks (src/dfe_assert.h)
export DFE_ASSERTS=0
dfe_perl_test_env "$top/test/bench"
exec perl "$top/test/bench/deploy_latency.pl"
