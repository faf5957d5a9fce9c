# Sourced by test/check, test/demo, test/valgrind and test/bench/*.sh:
# dfe_reexec_as_test_user and dfe_perl_test_env (below).
#
# PostgreSQL refuses to run as root.  When the calling script runs as root,
# dfe_reexec_as_test_user installs the Debian packages (test/setup_debian.sh),
# creates the unprivileged user (DFE_TEST_USER, default dfe_airbyte_test),
# copies the tree to /tmp/dfe_airbyte-LABEL.XXXXXX and re-executes the script
# there as that user, passing CI, PG_MAJOR and every BENCH_*, DFE_*, TAP_* and
# PG_TEST_* variable along.  The copy is removed when the script succeeds and
# kept, with its logs, when it fails.  As any other user it returns and the
# script goes on.
#
#   . "$top/test/lib/as_test_user.sh"
#   dfe_reexec_as_test_user check test/check "$@"

dfe_reexec_as_test_user() {
    local label=$1 script=$2
    shift 2
    [ "$(id -u)" = 0 ] || return 0
    local top user work v
    top=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
    user=${DFE_TEST_USER:-dfe_airbyte_test}
    "$top/test/setup_debian.sh"
    id "$user" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "$user"
    work=$(mktemp -d "/tmp/dfe_airbyte-$label.XXXXXX")
    # build products stay behind: they may be for another PostgreSQL major
    tar -C "$top" --exclude=./tmp_install --exclude=./results --exclude=./.git \
        --exclude='./tmp_check*' --exclude=./valgrind-logs --exclude='*.o' --exclude='*.so' \
        --exclude='*.bc' --exclude=.deps -cf - . | tar -C "$work" -xf -
    # temporary files of the run (socket directories, the fake server's
    # files) inside the copy, so that they go with it
    mkdir "$work/.tmp"
    chown -R "$user" "$work"
    echo "running as $user in $work"
    local pass=("CI=${CI:-}" "PG_MAJOR=${PG_MAJOR:-15}" "TMPDIR=$work/.tmp")
    for v in $(compgen -e | grep -E '^(BENCH_|DFE_|TAP_|PG_TEST_)' || true); do
        pass+=("$v=${!v}")
    done
    local rc=0
    runuser -u "$user" -- env "${pass[@]}" bash "$work/$script" "$@" || rc=$?
    if [ "$rc" -eq 0 ]; then
        rm -rf "$work"
    else
        echo "$label failed: the copy it ran in is kept with its logs in $work" \
             "(regression.diffs, test/tmp_check/log/, test/profile-*/tmp_check/log/)"
    fi
    exit "$rc"
}

# Every cluster the tests and the demo create is UTF-8 in the C.UTF-8 locale,
# whatever the caller's environment: with no LANG, initdb would pick C and
# SQL_ASCII (where psql counts the bytes of "café" as columns), and with a
# forwarded locale that is not installed here (LANG=en_GB.UTF-8) it refuses
# to start.  C.UTF-8 is built into Debian's libc (libc-bin), so it is always
# installed.  The clients (psql, ruby) get the same.
dfe_utf8_env() {
    local v
    for v in $(compgen -e | grep -E '^LC_' || true); do unset "$v"; done
    export LANG=C.UTF-8 LC_ALL=C.UTF-8
}

# Builds the extension into tmp_install/ and exports what
# PostgreSQL::Test::Cluster needs (PATH, PERL5LIB, PG_REGRESS, and TESTDIR=$1
# for 15, TESTDATADIR=$1/tmp_check and TESTLOGDIR=$1/tmp_check/log for 16 and
# on: see test/check) and the UTF-8 locale; sets $bindir and $pgxs for the
# caller.
dfe_perl_test_env() {
    local top
    top=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
    dfe_utf8_env
    bindir=$("$top/test/tmp_install.sh" "$top/tmp_install")
    pgxs=$(dirname "$bindir")/lib/pgxs
    export PATH="$bindir:$PATH"
    export PERL5LIB="$top/test/lib:$pgxs/src/test/perl${PERL5LIB:+:$PERL5LIB}"
    export TESTDIR="$1" TESTDATADIR="$1/tmp_check" TESTLOGDIR="$1/tmp_check/log"
    export PG_REGRESS="$pgxs/src/test/regress/pg_regress"
}
