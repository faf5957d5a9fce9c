#!/usr/bin/env bash
# Benchmark: how fast the slot guard reacts to the Airbyte slot passing its
# limit, with Airbyte healthy and during three outages side by side:
# every Airbyte call hanging (with a deploy stuck in one), connection
# refused, and DNS failing (airbyte.invalid).  Reaction time = the
# slot_recreated event's time minus the commit of the WAL that crossed the
# limit, under slot_limit_action = recreate.  Not part of test/check (about
# two minutes).
#
#   test/bench/guard_reaction.sh
#   BENCH_TRIALS=20 BENCH_CHECK_INTERVAL=1 test/bench/guard_reaction.sh
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
. "$top/test/lib/as_test_user.sh"
dfe_reexec_as_test_user bench test/bench/guard_reaction.sh "$@"

cd "$top"
# measure the production build: no dfe_Assert() checks (src/dfe_assert.h)
export DFE_ASSERTS=0
dfe_perl_test_env "$top/test/bench"
exec perl "$top/test/bench/guard_reaction.pl"
