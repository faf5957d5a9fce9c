#!/usr/bin/env bash
# Benchmark: what an idle control database costs per remote target — CPU of
# the guard worker, of the network worker and of the whole control cluster,
# the workers' RSS and PSS, and the CPU our queries cost the target's
# server — with 0, 1, 5, 10 and 20 healthy targets at check_interval 10 s
# (the default) and 1 s, side by side in one run.  The network worker runs
# its per-target tasks as in production (the deploy watch reading
# schema_migrations every migration_poll_interval, sync health asking the
# fake Airbyte every sync_poll_interval, both at their defaults).  Targets
# are databases on one real server (test/lib/DfeTarget.pm; PostgreSQL 16
# when test/lib/target_servers.sh has fetched it).  Also checks that the
# guard's memory for its targets stays flat over the run.  Not part of
# test/check; about 9 minutes.
#
#   test/bench/target_idle.sh
#   BENCH_TARGETS="0 20" BENCH_INTERVALS="1s" BENCH_WINDOW_S=60 test/bench/target_idle.sh
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
. "$top/test/lib/as_test_user.sh"
dfe_reexec_as_test_user bench test/bench/target_idle.sh "$@"

cd "$top"
dfe_perl_test_env "$top/test/bench"
exec perl "$top/test/bench/target_idle.pl"
