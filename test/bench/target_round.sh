#!/usr/bin/env bash
# Benchmark skeleton: one multiplexed sampling round over 20 targets through
# src/target_conn.c (the layer the guard will sample targets with), with 20
# healthy targets and with 16 healthy plus 4 that hang (a loopback listener
# that accepts and never answers), side by side.  Healthy targets are
# databases on real servers of PostgreSQL 15-18 (test/lib/DfeTarget.pm).
# Not part of test/check.
#
#   test/bench/target_round.sh
#   BENCH_ROUNDS=20 BENCH_TARGET_TIMEOUT=2s test/bench/target_round.sh
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
. "$top/test/lib/as_test_user.sh"
dfe_reexec_as_test_user bench test/bench/target_round.sh "$@"

cd "$top"
dfe_perl_test_env "$top/test/bench"
exec perl "$top/test/bench/target_round.pl"
