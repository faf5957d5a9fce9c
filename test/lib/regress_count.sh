# Sourced by test/check: dfe_regress_count counts pg_regress's results.
#
# pg_regress prints one line per test file, in one of two formats
# (src/test/regress/pg_regress.c; 16 made its output TAP):
#   up to 15:   "test lists                         ... ok           12 ms"
#               "     lists                         ... FAILED       12 ms"   (in a parallel group)
#               "test lists                         ... failed (ignored)"
#   16 and on:  "ok 1         - lists                                    12 ms"
#               "not ok 2     + lists                                    12 ms" ("+": in a parallel group)
# A file counted neither way (pg_regress stopped early, or a format not known
# here) is counted as failed, and so is a non-zero exit with no failure seen,
# so that a failure can never go unnoticed.
#
#   read -r p f < <(dfe_regress_count LOG NFILES EXIT_STATUS)
dfe_regress_count() {
    local log=$1 nfiles=$2 rc=$3 p f
    p=$(grep -cE '^(test +| +)[^ ].* \.\.\. ok( |$)|^ok [0-9]+ +[-+] ' "$log" || true)
    f=$(grep -cE '^(test +| +)[^ ].* \.\.\. (FAILED|failed)|^not ok [0-9]+ ' "$log" || true)
    [ $((p + f)) -lt "$nfiles" ] && f=$((nfiles - p))
    [ "$rc" -ne 0 ] && [ "$f" -eq 0 ] && f=1
    echo "$p $f"
}
