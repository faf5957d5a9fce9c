#!/usr/bin/env bash
# Benchmark: dfe_airbyte_reconcile(). Source-side cost on a 10-million-row table (BENCH_ROWS)
# against the fake BigQuery (which runs the BigQuery side in the same
# cluster).  Prints, per mode, the source side's time and rows per second per
# core (the PostgreSQL queries run in one process: SPI plans no parallel
# query) next to a plain count(*) of the same table without parallel workers
# (the physical floor), and the BigQuery queries and bytes billed per mode
# on the fake, then the narrowing's queries for one wrong row.  Not part of
# test/check (several minutes).
#
#   sudo test/bench/reconcile.sh          # or as a developer: test/bench/reconcile.sh
#   BENCH_ROWS=1000000 test/bench/reconcile.sh
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
. "$top/test/lib/as_test_user.sh"
dfe_reexec_as_test_user bench test/bench/reconcile.sh "$@"

cd "$top"
dfe_perl_test_env "$top/test/bench"
exec perl "$top/test/bench/reconcile.pl"
