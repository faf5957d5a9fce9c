#!/usr/bin/env bash
# Builds the extension and installs it into a private copy of Debian's
# PostgreSQL $PG_MAJOR (default 15) under $1 (default ./tmp_install), the way
# PostgreSQL's own "make check" uses tmp_install.  PostgreSQL finds its share
# and lib directories relative to its binaries, so the copy loads our
# extension without anything being written to /usr and without root.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
dest=${1:-$top/tmp_install}
major=${PG_MAJOR:-15}
pgbin=/usr/lib/postgresql/$major/bin
if [ ! -x "$dest/usr/lib/postgresql/$major/bin/postgres" ] ||
   [ "$pgbin/postgres" -nt "$dest/usr/lib/postgresql/$major/bin/postgres" ]; then
    rm -rf "$dest"
    mkdir -p "$dest/usr/lib/postgresql" "$dest/usr/share/postgresql"
    cp -a "/usr/lib/postgresql/$major" "$dest/usr/lib/postgresql/"
    cp -a "/usr/share/postgresql/$major" "$dest/usr/share/postgresql/"
fi
# The tests run the assert build (dfe_Assert() checks, src/dfe_assert.h);
# DFE_ASSERTS=0 builds as production does (the benchmarks).  Both commands
# get the same choice: "make install" rebuilds when it changes, and so when
# the server version does (.dfe_build_flags, Makefile).
asserts=${DFE_ASSERTS-1}
make -C "$top" -s PG_CONFIG="$pgbin/pg_config" DFE_ASSERTS="$asserts" ${MAKE_EXTRA:-} >/dev/null
make -C "$top" -s PG_CONFIG="$pgbin/pg_config" DFE_ASSERTS="$asserts" DESTDIR="$dest" install >/dev/null
echo "$dest/usr/lib/postgresql/$major/bin"
