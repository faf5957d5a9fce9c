#!/usr/bin/env bash
# Benchmark: dfe_airbyte_reconcile().  1. The source side's cost on a
# 10-million-row table (BENCH_ROWS) in count and checksum mode, in rows per
# second per core (the extension's queries run through SPI in one process)
# next to a plain count(*) without parallel workers (the physical floor);
# BigQuery's side is refused after its dry run there, so only the source
# side runs.  2. Whole runs against the fake BigQuery (which runs the
# BigQuery side in a second database of the cluster) on BENCH_BQ_ROWS rows
# (1 million): queries and bytes per mode, and the narrowing's queries for
# one wrong row.  Not part of test/check (about 15 minutes).
#
#   sudo test/bench/reconcile.sh          # or as a developer: test/bench/reconcile.sh
#   BENCH_ROWS=1000000 BENCH_BQ_ROWS=100000 test/bench/reconcile.sh
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
. "$top/test/lib/as_test_user.sh"
dfe_reexec_as_test_user bench test/bench/reconcile.sh "$@"

cd "$top"
dfe_perl_test_env "$top/test/bench"
exec perl "$top/test/bench/reconcile.pl"
