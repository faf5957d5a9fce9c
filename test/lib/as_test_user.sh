# Sourced by test/check, test/demo, test/valgrind and test/bench/*.sh:
# dfe_reexec_as_test_user and dfe_perl_test_env (below).
#
# PostgreSQL refuses to run as root.  When the calling script runs as root,
# dfe_reexec_as_test_user installs the Debian packages (test/setup_debian.sh),
# creates the unprivileged user (DFE_TEST_USER, default dfe_airbyte_test),
# copies the tree to /tmp/dfe_airbyte-LABEL.XXXXXX and re-executes the script
# there as that user, passing CI and every BENCH_*, DFE_*, TAP_* and PG_TEST_*
# variable along.  As any other user it returns and the script goes on.
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
    tar -C "$top" --exclude=./tmp_install --exclude=./results --exclude=./.git \
        --exclude='./tmp_check*' --exclude=./valgrind-logs -cf - . | tar -C "$work" -xf -
    chown -R "$user" "$work"
    echo "running as $user in $work"
    local pass=("CI=${CI:-}")
    for v in $(compgen -e | grep -E '^(BENCH_|DFE_|TAP_|PG_TEST_)' || true); do
        pass+=("$v=${!v}")
    done
    exec runuser -u "$user" -- env "${pass[@]}" bash "$work/$script" "$@"
}

# Builds the extension into tmp_install/ and exports what
# PostgreSQL::Test::Cluster needs (PATH, PERL5LIB, TESTDIR=$1, PG_REGRESS);
# sets $bindir and $pgxs for the caller.
dfe_perl_test_env() {
    local top
    top=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
    bindir=$("$top/test/tmp_install.sh" "$top/tmp_install")
    pgxs=$(dirname "$bindir")/lib/pgxs
    export PATH="$bindir:$PATH"
    export PERL5LIB="$top/test/lib:$pgxs/src/test/perl${PERL5LIB:+:$PERL5LIB}"
    export TESTDIR="$1" PG_REGRESS="$pgxs/src/test/regress/pg_regress"
}
