#!/usr/bin/env bash
# Make sure the Debian packages this project needs are installed.
#
#   scripts/install-deps.sh [GROUP...]   groups: build check bench (default: build)
#
# As root, missing packages are installed (adding the apt sources the project
# needs: deb-src lines to fetch the QEMU source package, bookworm-backports for
# meson >= 1.5).  As any other user, nothing is changed: the script lists the
# exact packages and apt lines and fails.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)

# QEMU build: compiler tool chain, meson >= 1.5 (backports), and what QEMU's
# meson.build requires of the system for this configuration: glib and zlib
# always, libfdt for any system emulator (without it meson tries to fetch the
# dtc subproject from the network, which the +ds tarball leaves out),
# libslirp and pixman for the user networking and display QEMU is built with;
# flex/bison and dtc for the pc-bios/dtb step; pycotap, which QEMU's
# configure installs into its build venv (mkvenv) and fails without; json-c
# and cmocka for building libvfio-user, the copy in QEMU's tree (also built
# into QEMU itself for its vfio-user server, --enable-vfio-user-server) and
# the current one (their meson.build wants cmocka even with its tests off),
# git to fetch the current one; binutils' ar, which QEMU's functional tests
# use to unpack the .deb files they boot (gcc brings it).  scripts/check-fresh.sh
# proves the list on a minimal Debian 12 that has nothing else.
pkgs_build=(gcc make git ninja-build meson python3 python3-venv pkg-config
            libglib2.0-dev zlib1g-dev libfdt-dev flex bison device-tree-compiler
            bzip2 xz-utils ccache ca-certificates python3-pycotap libslirp-dev
            libpixman-1-dev libjson-c-dev libcmocka-dev)
# Running QEMU and the tests: the firmware the build looks for in Debian's
# places (SeaBIOS and its VGA BIOSes, QEMU's option ROMs, iPXE's NIC ROMs),
# the guest image ingredients, static libc for the in-guest program.
pkgs_check=(seabios qemu-system-data ipxe-qemu busybox-static cpio libc6-dev)
# Benchmarks: the plot; perf for bench/profile-message.py.
pkgs_bench=(python3-matplotlib linux-perf)

# Packages that must come from bookworm-backports (bookworm's own are too old).
backports=(meson python3-pycotap)
meson_min=1.5

groups=("$@")
[ ${#groups[@]} -gt 0 ] || groups=(build)

want=()
for g in "${groups[@]}"; do
    case "$g" in
    build) want+=("${pkgs_build[@]}") ;;
    check) want+=("${pkgs_build[@]}" "${pkgs_check[@]}") ;;
    bench) want+=("${pkgs_build[@]}" "${pkgs_check[@]}" "${pkgs_bench[@]}") ;;
    *) echo "install-deps: unknown group '$g' (build, check, bench)" >&2; exit 2 ;;
    esac
done
mapfile -t want < <(printf '%s\n' "${want[@]}" | sort -u)

installed() {
    [ "$(dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null)" = "ii " ]
}

missing=()
for p in "${want[@]}"; do
    installed "$p" || missing+=("$p")
done

meson_too_old=false
if installed meson; then
    v=$(dpkg-query -W -f='${Version}' meson)
    if dpkg --compare-versions "$v" lt "$meson_min"; then
        meson_too_old=true
        missing+=(meson)
    fi
fi

# Is the QEMU source package reachable (deb-src)?  Only needed to fetch it;
# scripts/fetch-qemu.sh falls back to ../shared/qemu with a warning.
sources_file=/etc/apt/sources.list.d/vfio-user-dma.sources
need_sources=false
[ -e "$sources_file" ] || need_sources=true

# ccache makes its compiler links (/usr/lib/ccache/cc is the one QEMU's build
# calls) for the compilers present when its package trigger runs.  Installed
# together with gcc on a fresh system it runs before gcc registers cc, so the
# link is missing and every build runs uncached.
need_ccache_links() {
    installed ccache && [ -x /usr/bin/cc ] && [ ! -e /usr/lib/ccache/cc ]
}

if [ ${#missing[@]} -eq 0 ] && ! $need_sources && ! need_ccache_links; then
    exit 0
fi

apt_lines="Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm sid
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg"

if [ "$(id -u)" -ne 0 ]; then
    {
        echo "install-deps: not root; these steps are needed first:"
        if $need_sources; then
            echo "  1. create $sources_file with:"
            sed 's/^/       /' <<<"$apt_lines"
        fi
        if [ ${#missing[@]} -gt 0 ]; then
            local_bp=() local_main=()
            for p in "${missing[@]}"; do
                if [[ " ${backports[*]} " == *" $p "* ]]; then local_bp+=("$p"); else local_main+=("$p"); fi
            done
            echo "  2. apt-get update"
            [ ${#local_main[@]} -eq 0 ] || echo "     apt-get install -y ${local_main[*]}"
            [ ${#local_bp[@]} -eq 0 ] || echo "     apt-get install -y -t bookworm-backports ${local_bp[*]}"
            $meson_too_old && echo "     (meson >= $meson_min is required; bookworm has an older one)"
        fi
        if need_ccache_links; then
            echo "  3. update-ccache-symlinks   (ccache has no link for cc: builds run uncached)"
        fi
    } >&2
    # Without the ccache link builds still work, only slower.
    [ ${#missing[@]} -eq 0 ] && ! $need_sources && exit 0
    exit 1
fi

if $need_sources; then
    echo "install-deps: adding $sources_file (deb-src for the QEMU source package, bookworm-backports)"
    printf '%s\n' "$apt_lines" > "$sources_file"
fi
if [ ${#missing[@]} -gt 0 ] || $need_sources; then
    echo "install-deps: apt-get update"
    apt-get update -qq
fi
if [ ${#missing[@]} -gt 0 ]; then
    # Backports packages are named with -t; the rest come from bookworm.
    bp=() main=()
    for p in "${missing[@]}"; do
        if [[ " ${backports[*]} " == *" $p "* ]]; then bp+=("$p"); else main+=("$p"); fi
    done
    export DEBIAN_FRONTEND=noninteractive
    if [ ${#main[@]} -gt 0 ]; then
        echo "install-deps: installing ${main[*]}"
        apt-get install -y -qq --no-install-recommends "${main[@]}" >/dev/null
    fi
    if [ ${#bp[@]} -gt 0 ]; then
        echo "install-deps: installing from bookworm-backports: ${bp[*]}"
        apt-get install -y -qq --no-install-recommends -t bookworm-backports "${bp[@]}" >/dev/null
    fi
fi
if need_ccache_links; then
    echo "install-deps: update-ccache-symlinks (ccache had no link for cc)"
    update-ccache-symlinks
fi
"$here/install-deps.sh" "${groups[@]}" >/dev/null 2>&1 || {
    echo "install-deps: packages still missing after install" >&2
    exit 1
}
