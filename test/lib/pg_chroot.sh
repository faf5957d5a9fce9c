# Sourced by test/check for `test/check --pg MAJOR` (MAJOR other than the
# host's): runs the suite on another PostgreSQL major in a Debian chroot.
#
# Debian ships one PostgreSQL major per release (15 in Debian 12, 17 in
# Debian 13 "trixie", 18 in unstable "sid"; 16 is in no suite of Debian's
# archive), so another major means another Debian.  The chroot is made with
# debootstrap from Debian's archive (the mirror is debootstrap's default, or
# DFE_DEBIAN_MIRROR), kept under DFE_CHROOT_CACHE (default
# /var/cache/dfe_airbyte) as chroot-MAJOR and made again when it is missing
# or older than DFE_CHROOT_MAX_DAYS days (default 7), so that a week-old
# chroot does not test against an old minor.  The packages are installed by
# test/setup_debian.sh inside it, the tree is bind-mounted read-only at /src,
# and test/check runs there as root, which re-runs itself as the test user
# as it does on the host.  Needs root (debootstrap, chroot, mount).

dfe_chroot_suite() {
    case $1 in
        17) echo trixie ;;
        18) echo sid ;;
        *) return 1 ;;
    esac
}

# dfe_chroot_mounted ROOT: is anything mounted at or under ROOT?
dfe_chroot_mounted() {
    awk -v r="$1" '$2 == r || index($2, r "/") == 1 { found = 1 } END { exit !found }' /proc/self/mounts
}

# unmounts everything at or under ROOT, the innermost first (ROOT itself is
# no mount point, so "umount -R ROOT" would not do)
dfe_chroot_umount() {
    local root=$1 m i
    for i in 1 2 3 4 5; do
        dfe_chroot_mounted "$root" || return 0
        for m in $(awk -v r="$root" '$2 == r || index($2, r "/") == 1 { print $2 }' /proc/self/mounts | tac); do
            umount "$m" 2>/dev/null || true
        done
        # a mount can stay busy while a process started in the chroot exits
        dfe_chroot_mounted "$root" && sleep 1
    done
    ! dfe_chroot_mounted "$root"
}

dfe_chroot_mount() {  # dfe_chroot_mount ROOT TOP
    local root=$1 top=$2
    mount -t proc proc "$root/proc"
    mount --rbind /dev "$root/dev"
    mount --make-rslave "$root/dev"
    mkdir -p "$root/src"
    mount --bind "$top" "$root/src"
    mount -o remount,bind,ro "$root/src"
    cp -L /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
}

# dfe_chroot_build MAJOR ROOT: debootstrap and the packages, unless a
# complete chroot younger than the limit is there.
dfe_chroot_build() {
    local major=$1 root=$2 top=$3 suite days=${DFE_CHROOT_MAX_DAYS:-7}
    suite=$(dfe_chroot_suite "$major")
    if [ -f "$root/.dfe_complete" ] && [ -z "$(find "$root/.dfe_complete" -mtime +"$days")" ]; then
        return 0
    fi
    echo "== building a Debian $suite chroot for PostgreSQL $major in $root (a few minutes, about 2.5 GB)"
    if ! command -v debootstrap >/dev/null; then
        echo "   installing debootstrap"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
    fi
    # never delete through a live bind mount of the tree
    dfe_chroot_umount "$root" || { echo "$root is still mounted; not rebuilding it" >&2; return 1; }
    rm -rf "$root"
    mkdir -p "$(dirname "$root")"
    local start=$SECONDS log="$root.debootstrap.log"
    echo "   debootstrap $suite (log: $log)"
    if ! debootstrap --variant=minbase --include=ca-certificates "$suite" "$root" \
            ${DFE_DEBIAN_MIRROR:-} >"$log" 2>&1; then
        tail -20 "$log" >&2
        return 1
    fi
    echo "   debootstrap took $((SECONDS - start)) s"
    # a test chroot only: the archive mirror reached may serve a suite whose
    # Release file is past its Valid-Until (unstable's is valid for a week);
    # signatures are still checked (apt.conf(5), Acquire::Check-Valid-Until)
    echo 'Acquire::Check-Valid-Until "false";' > "$root/etc/apt/apt.conf.d/99dfe-airbyte-test"
    dfe_chroot_mount "$root" "$top"
    local rc=0
    chroot "$root" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin PG_MAJOR="$major" DFE_TARGET_SERVERS=0 \
        bash /src/test/setup_debian.sh || rc=$?
    dfe_chroot_umount "$root"
    [ "$rc" -eq 0 ] || return "$rc"
    touch "$root/.dfe_complete"
    echo "   chroot ready after $((SECONDS - start)) s"
}

# dfe_chroot_check MAJOR ARGS...: test/check ARGS in the chroot; returns its
# exit status, and prints where its logs are.
dfe_chroot_check() {
    local major=$1 top cache root rc=0 v
    shift
    top=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
    if ! dfe_chroot_suite "$major" >/dev/null; then
        echo "test/check --pg $major: no Debian suite ships PostgreSQL $major (15: this Debian 12; 17, 18: a chroot)" >&2
        return 2
    fi
    if [ "$(id -u)" != 0 ]; then
        echo "test/check --pg $major needs root (debootstrap, chroot, mount): run it with sudo" >&2
        return 2
    fi
    cache=${DFE_CHROOT_CACHE:-/var/cache/dfe_airbyte}
    root=$cache/chroot-$major
    mkdir -p "$cache"
    # one run per chroot at a time: another one's unmount or rebuild would
    # pull the tree from under this one
    exec 9>"$root.lock"
    if ! flock -n 9; then
        echo "   waiting for another test/check --pg $major to finish ($root.lock)"
        flock 9
    fi
    dfe_chroot_build "$major" "$root" "$top" || return 1
    local pass=(PATH=/usr/sbin:/usr/bin:/sbin:/bin PG_MAJOR="$major" "CI=${CI:-}" DFE_TARGET_SERVERS=0)
    for v in $(compgen -e | grep -E '^(DFE_|TAP_|PG_TEST_)' || true); do
        pass+=("$v=${!v}")
    done
    echo "== PostgreSQL $major: test/check $* in $root (the tree at /src)"
    dfe_chroot_mount "$root" "$top"
    # setup_debian.sh again: quick when nothing is missing, and it brings a
    # package that a newer tree needs into an older chroot
    chroot "$root" env -i "${pass[@]}" bash -c 'bash /src/test/setup_debian.sh && exec bash /src/test/check "$@"' \
        check "$@" || rc=$?
    dfe_chroot_umount "$root" || echo "warning: could not unmount everything under $root" >&2
    [ "$rc" -ne 0 ] && echo "   (the logs of the failed run: $root/tmp/dfe_airbyte-check.*)"
    return "$rc"
}
