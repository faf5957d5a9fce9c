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
# objects built against another major's headers must not be linked here
# (make alone would find them up to date)
if [ "$(cat "$top/.pg_major_built" 2>/dev/null)" != "$major" ]; then
    make -C "$top" -s PG_CONFIG="$pgbin/pg_config" clean >/dev/null
    echo "$major" > "$top/.pg_major_built"
fi
make -C "$top" -s PG_CONFIG="$pgbin/pg_config" ${MAKE_EXTRA:-} >/dev/null
make -C "$top" -s PG_CONFIG="$pgbin/pg_config" DESTDIR="$dest" install >/dev/null
echo "$dest/usr/lib/postgresql/$major/bin"
