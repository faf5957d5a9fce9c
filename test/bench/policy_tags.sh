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
. "$top/test/lib/as_test_user.sh"
dfe_reexec_as_test_user bench test/bench/policy_tags.sh "$@"

cd "$top"
# measure the production build: no dfe_Assert() checks (src/dfe_assert.h)
export DFE_ASSERTS=0
dfe_perl_test_env "$top/test/bench"
exec perl "$top/test/bench/policy_tags.pl"
