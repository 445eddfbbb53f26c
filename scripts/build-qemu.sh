#!/usr/bin/env bash
# Configure (once) and build QEMU for what this project needs.
#
#   scripts/build-qemu.sh SRC BUILD [NINJA_TARGET...]
#
# Default target: qemu-system-x86_64.  A target @SUITE (e.g. @qtest-x86_64)
# stands for every program of that meson test suite and what it depends on.
#
# The configuration is the x86_64 system emulator with default devices
# (vfio-user-pci among them) and only the optional features a user of a
# vfio-user device routinely needs in the same VM: user-mode networking
# (slirp: -netdev user), pixman (VGA and other display devices) and a VNC
# server to look at the display.  QEMU's own vfio-user server
# (-object x-vfio-user-server on the x-remote machine, which needs
# --enable-multiprocess) is built too, with the copy of libvfio-user in
# QEMU's tree (json-c and cmocka, see install-deps.sh): the series'
# functional test serves an emulated NVMe controller with it to a client
# QEMU (make check-functional).  Everything else stays off (no docs, no
# Rust, no GTK/SDL, no tools), which keeps a clean build near four minutes on
# two cores.  Firmware is looked up where Debian's packages install it
# (seabios, qemu-system-data, ipxe-qemu), as Debian's own QEMU does, so no
# -L is needed.  ccache is used when installed; CCACHE_BASEDIR (set by the
# Makefile) lets the patched, baseline and series-check trees share cache
# entries.
#
# QEMU_EXTRA_CONFIG (environment) adds configure options, e.g.
# "--enable-asan --enable-ubsan" for the sanitizer build the fuzzer runs
# against (`make qemu-asan`, build/qemu-asan/build); keep such a build in
# a directory of its own, a change of options reconfigures from scratch.
set -euo pipefail

src=$(cd "${1:?usage: build-qemu.sh SRC BUILD [TARGET...]}" && pwd)
build=${2:?usage: build-qemu.sh SRC BUILD [TARGET...]}
shift 2
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(qemu-system-x86_64)

[ -d /usr/lib/ccache ] && export PATH=/usr/lib/ccache:$PATH

# SeaBIOS first: Debian 12's qemu-system-data has a bios-microvm.bin too, a
# link to qboot, where QEMU 10.2 (and its bios-tables-test) has SeaBIOS's.
firmware_dirs=(/usr/share/seabios /usr/share/qemu /usr/lib/ipxe/qemu)
config_args=(--python=/usr/bin/python3 --target-list=x86_64-softmmu
             --without-default-features --enable-kvm --enable-tcg
             --disable-rust --disable-docs --disable-werror
             --disable-install-blobs
             --enable-slirp --enable-pixman --enable-vnc
             --enable-multiprocess --enable-vfio-user-server
             "--firmwarepath=$(IFS=:; echo "${firmware_dirs[*]}")")
# shellcheck disable=SC2206   # word splitting of the extra options is meant
[ -z "${QEMU_EXTRA_CONFIG:-}" ] || config_args+=(${QEMU_EXTRA_CONFIG})
want="$src ${config_args[*]}"

mkdir -p "$build"
build=$(cd "$build" && pwd)
if [ ! -f "$build/build.ninja" ] || [ "$(cat "$build/.configured-with" 2>/dev/null)" != "$want" ]; then
    echo "build-qemu: configuring $build"
    rm -rf "${build:?}"/*
    if ! (cd "$build" && "$src/configure" "${config_args[@]}") > "$build/configure.log" 2>&1; then
        tail -n 30 "$build/configure.log" >&2
        echo "build-qemu: configure failed (log: $build/configure.log)" >&2
        exit 1
    fi
    echo "$want" > "$build/.configured-with"
fi

# A QEMU started from its build tree finds its data through qemu-bundle/,
# which mirrors the install tree: every directory, the firmware path's too,
# is looked up below it.  Link the firmware directories there, so that the
# build tree finds Debian's firmware exactly as an installed QEMU would.
for d in "${firmware_dirs[@]}"; do
    mkdir -p "$build/qemu-bundle$(dirname "$d")"
    ln -sfn "$d" "$build/qemu-bundle$d"
done

# Regenerate build.ninja first if meson files changed (a new patch may add
# targets), then ask ninja only for targets this tree defines: the
# vfio-user qtest exists only once the series adds it.
if ! ninja -C "$build" build.ninja > "$build/ninja.log" 2>&1; then
    tail -n 30 "$build/ninja.log" >&2
    echo "build-qemu: meson reconfiguration failed (log: $build/ninja.log)" >&2
    exit 1
fi
# @SUITE: the test programs of a meson suite plus their dependencies (the
# emulator, helper programs), as ninja paths relative to the build tree.
suite_targets() {
    meson introspect --tests --targets "$build" 2>/dev/null | python3 -c '
import json, os, sys
suite, build = sys.argv[1], sys.argv[2]
info = json.load(sys.stdin)
files = {t["id"]: t["filename"] for t in info["targets"]}
out = set()
for t in info["tests"]:
    if suite not in t["suite"] and "qemu:" + suite not in t["suite"]:
        continue
    for f in [t["cmd"][0]] + [x for d in t["depends"] for x in files.get(d, [])]:
        if f.startswith(build + "/"):
            out.add(os.path.relpath(f, build))
print("\n".join(sorted(out)))
' "$1" "$build"
}
expanded=()
for t in "${targets[@]}"; do
    if [ "${t#@}" != "$t" ]; then
        mapfile -t more < <(suite_targets "${t#@}")
        [ ${#more[@]} -gt 0 ] || { echo "build-qemu: test suite ${t#@} is empty or unknown" >&2; exit 1; }
        expanded+=("${more[@]}")
    else
        expanded+=("$t")
    fi
done
targets=("${expanded[@]}")

have=()
for t in "${targets[@]}"; do
    if ninja -C "$build" -t query "$t" >/dev/null 2>&1; then
        have+=("$t")
    else
        echo "build-qemu: no target $t in this tree; skipped"
    fi
done
[ ${#have[@]} -gt 0 ] || exit 0
if [ ${#have[@]} -le 4 ]; then
    echo "build-qemu: ninja ${have[*]} in $build"
else
    echo "build-qemu: ninja ${#have[@]} targets (${have[0]} ... ${have[-1]}) in $build"
fi
if ! ninja -C "$build" -j"${JOBS:-$(nproc)}" "${have[@]}" > "$build/ninja.log" 2>&1; then
    grep -a -E 'error|FAILED' -A3 "$build/ninja.log" | head -n 60 >&2
    echo "build-qemu: build failed (log: $build/ninja.log)" >&2
    exit 1
fi
