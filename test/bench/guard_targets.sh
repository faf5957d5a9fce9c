#!/usr/bin/env bash
# Benchmark: the slot guard worker over 20 remote targets (src/slot_remote.c)
# — its reaction to a slot passing its limit on healthy targets with all 20
# healthy and with 4 of them replaced by loopback listeners that accept and
# never answer, side by side; and the guard's idle CPU and memory per
# target.  Healthy targets are databases on real servers of PostgreSQL
# 15-18 (test/lib/DfeTarget.pm).  Not part of test/check.
#
#   test/bench/guard_targets.sh
#   BENCH_CHECK_INTERVAL=1s BENCH_TARGET_TIMEOUT=2s BENCH_IDLE_S=60 test/bench/guard_targets.sh
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
. "$top/test/lib/as_test_user.sh"
dfe_reexec_as_test_user bench test/bench/guard_targets.sh "$@"

cd "$top"
dfe_perl_test_env "$top/test/bench"
exec perl "$top/test/bench/guard_targets.pl"
